"""Session files: a folder with ``session.json`` (the index: parameters, state scalars, and the
names of its data files), the masks (``masks*.npz``, float32, exact) and the latents
(``latents*.safetensors``: the input latent and the state at the saved sub-step).

Saving never deletes or overwrites what it did not write. It writes into an empty (or new) folder
or over a session folder of ours (one whose ``session.json`` carries our ``format`` key), and
refuses any other non-empty folder. Each file is written atomically (`paths.write_atomic`); the
new data files get names the old index does not use, and the switch is the atomic replacement of
``session.json``. Only then are the old data files (those the old index named) removed. A crash
at any point leaves the old complete session or the new one; at worst unreferenced data files of
ours remain, and the next save leaves them alone.

Loading reads only regular files inside the folder (no symlinks: `paths`), never pickle, and
validates every field against what a session produces (JSON keys and types, tensor names, dtypes
and shapes from the file headers before any array is read, then finiteness and ranges, then the
fields the saved sub-step implies) before anything is built. A damaged, tampered or mismatched
file raises `SessionFileError` naming the file and field; a refused path raises
`paths.FileSafetyError`.

This module reads and writes the folder; what its files may hold and the checks of it are in
`session_format` (``session.json``, the latents header) and `session_state` (the run state at the
saved sub-step), whose names are re-exported here.
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from .paths import FileSafetyError, FileTooLargeError, inside, open_read, parse_json, read_bytes, write_atomic
from .session_format import (DATA_FILES, FORMAT, INDEX, MAX_HEADER_BYTES, MAX_JSON_BYTES, MODES,
                             PARAMETRISATION_NAMES, STATE_MAPS, V1_FILES, VERSION, DocFields, SessionFileError,
                             check_doc, check_header, check_model_spec, describe_model_sampling, files_of)
from .session_state import check_extra, check_state, pack_tree, unpack_tree

__all__ = [  # the folder here; its format in session_format, the run state in session_state
    "write_session", "read_session", "read_model_spec", "SessionFileError", "DocFields", "check_doc", "check_header",
    "describe_model_sampling", "check_state", "check_extra", "pack_tree", "unpack_tree", "FORMAT", "VERSION",
    "INDEX", "MODES", "MAX_JSON_BYTES", "MAX_HEADER_BYTES", "PARAMETRISATION_NAMES"]


# ---- writing ------------------------------------------------------------------------------------

def _ours(folder: Path):
    """The data file names the folder's index lists, None for an empty folder; refuses anything else."""
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return None
    refusal = (f"{str(folder)!r}: not empty and not a regional_widgets session folder ({{why}}); save writes "
               f"only into an empty or new folder, or over a session it wrote. Found: {', '.join(entries[:5])}"
               + (", ..." if len(entries) > 5 else ""))
    if INDEX not in entries:
        raise FileSafetyError(refusal.format(why=f"no {INDEX}"))
    try:
        doc = parse_json(read_bytes(folder, INDEX, MAX_JSON_BYTES))
        files = files_of(doc)
    except (OSError, ValueError) as err:
        if isinstance(err, FileSafetyError):
            raise
        raise FileSafetyError(refusal.format(why=f"{INDEX} is not a session index of ours: {err}")) from None
    return files



def _free_name(folder: Path, key: str, taken) -> str:
    stem, ext = V1_FILES[key].split(".", 1)
    for k in range(10**6):
        name = f"{stem}.{ext}" if k == 0 else f"{stem}.{k}.{ext}"
        if name not in taken and not (folder / name).is_symlink() and not inside(folder, name).exists():
            return name
    raise FileSafetyError(f"{str(folder)!r}: no free name for the {key} file")


def write_session(path, doc: dict, masks: dict, tensors: dict) -> None:
    """Write a session folder: new data files, then the index switched atomically, then old files removed."""
    from safetensors.torch import save as save_tensors

    folder = Path(path)
    dtype = tensors["latent_image"].dtype
    if dtype not in (torch.float32, torch.float64):  # what load accepts: refuse before writing anything
        raise SessionFileError(f"latent_image: a {dtype} latent cannot be saved (float32 or float64)")
    if folder.is_symlink() and not folder.exists():
        raise FileSafetyError(f"{str(folder)!r}: a dangling symlink")
    if folder.exists() and not folder.is_dir():
        raise FileSafetyError(f"{str(folder)!r}: exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    old = _ours(folder)
    taken = set(old.values()) if old else set()
    names = {key: _free_name(folder, key, taken) for key in DATA_FILES}
    doc = dict(doc, format=FORMAT, version=VERSION, files=names)
    # safetensors refuses tensors that share storage: store independent copies
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **masks)
    data = {"masks": buffer.getvalue(), "latents": save_tensors(tensors)}
    index = json.dumps(doc, indent=2, allow_nan=False).encode()
    written = []
    try:
        for key in DATA_FILES:
            written.append(write_atomic(folder, names[key], data[key]))
        write_atomic(folder, INDEX, index, replace_ok=lambda _: old is not None)
    except BaseException:
        if _index_files(folder) != names:  # not switched: the new data files are unreferenced
            for file in written:
                file.unlink(missing_ok=True)
        raise
    for name in taken - set(names.values()):
        try:
            inside(folder, name).unlink(missing_ok=True)
        except (OSError, FileSafetyError):
            pass  # a stale file of ours that cannot go is harmless: nothing refers to it


def _index_files(folder):
    try:
        return files_of(parse_json(read_bytes(folder, INDEX, MAX_JSON_BYTES)))
    except (OSError, ValueError):
        return None


# ---- reading ------------------------------------------------------------------------------------

def read_session(path, *, channels: int, downscale: int, fields: DocFields, model_sampling=None, check_model=None):
    """``(doc, masks, tensors)`` from a session folder, every field checked (see `check_doc`) and every
    array's dtype and shape checked from its header before it is read. ``fields``: what a config and the
    quirks hold (the session layer's `DocFields`); ``model_sampling``: the loading model's
    (`describe_model_sampling`), checked against the saved one where the file has it; ``check_model``:
    the session layer's check of the saved model spec (`check_doc`)."""
    doc = _read_index(path)
    files = files_of(doc)
    check_doc(doc, channels, model_sampling, fields=fields, check_model=check_model)
    folder = Path(path)
    tensors = _read_latents(folder, files["latents"], channels)
    latent = tensors["latent_image"]
    batch_index = doc.get("batch_index")
    if batch_index is not None and len(batch_index) != latent.shape[0]:
        raise SessionFileError(f"{INDEX}: batch_index: {len(batch_index)} entries for a batch of {latent.shape[0]}")
    size = (latent.shape[-2] * downscale, latent.shape[-1] * downscale)
    masks = _read_masks(folder, files["masks"], len(doc["regions"]), size)
    return doc, masks, tensors


def read_model_spec(path):
    """The model spec a session folder's index records (a dict, checked as `check_doc` checks it), or None
    for a file that records none (written before the key, or by a model that cannot be described as data).
    Reads ``session.json`` only; a damaged or foreign index raises `SessionFileError`."""
    doc = _read_index(path)
    files_of(doc)
    if "model" not in doc:
        return None
    check_model_spec(doc["model"])
    return doc["model"]


def _read_index(path) -> dict:
    folder = Path(path)
    if not folder.is_dir():
        raise SessionFileError(f"path: {str(path)!r} is not a session folder (expected {INDEX} and the "
                               "masks and latents files it names inside)")
    try:
        raw = read_bytes(folder, INDEX, MAX_JSON_BYTES)
    except FileNotFoundError:
        raise SessionFileError(f"{INDEX}: missing in {str(folder)!r}") from None
    except FileTooLargeError as err:
        raise SessionFileError(f"{INDEX}: {err}") from None
    try:
        doc = parse_json(raw)
    except (ValueError, RecursionError) as err:
        raise SessionFileError(f"{INDEX}: cannot be read as JSON ({err})") from None
    return doc



def _read_latents(folder, name, channels) -> dict:
    """The safetensors file, its header checked (names, dtypes, shapes, offsets) before the data is read."""
    from safetensors.torch import load as load_tensors

    where = f"{name}"
    try:
        file = open_read(folder, name, 2**40)
    except FileNotFoundError:
        raise SessionFileError(f"{where}: missing") from None
    with file:
        head = file.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= size <= MAX_HEADER_BYTES:
            raise SessionFileError(f"{where}: cannot be read (not a safetensors file, or a header over "
                                   f"{MAX_HEADER_BYTES} bytes)")
        raw = file.read(size)
        try:
            header = parse_json(raw, max_depth=4)
        except (ValueError, RecursionError) as err:
            raise SessionFileError(f"{where}: cannot be read (header: {err})") from None
        end = check_header(where, header, channels)
        body = file.read(end + 1)
    if len(raw) != size or len(body) != end:
        raise SessionFileError(f"{where}: cannot be read (the file is {'longer' if len(body) > end else 'shorter'} "
                               "than its header says)")
    try:
        tensors = load_tensors(head + raw + body)
    except Exception as err:  # noqa: BLE001 - any failure here means a damaged file
        raise SessionFileError(f"{where}: cannot be read ({type(err).__name__}: {err})") from None
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise SessionFileError(f"{where}: {key}: expected finite values (found NaN or inf)")
        if key.startswith("state.") and key[6:] in STATE_MAPS and bool((tensor < 0).any()):
            raise SessionFileError(f"{where}: {key}: expected values >= 0")
    return tensors



def _read_masks(folder, name, count: int, size: tuple) -> dict:
    """The npz's members, each header checked (float32, ``size``) before its array is read."""
    where = name
    expected = {f"region_{j}.npy" for j in range(1, count + 1)}
    nbytes = size[0] * size[1] * 4
    try:
        file = open_read(folder, name, 2**40)
    except FileNotFoundError:
        raise SessionFileError(f"{where}: missing") from None
    masks = {}
    with file:
        try:
            archive = zipfile.ZipFile(file)
        except (zipfile.BadZipFile, OSError, ValueError) as err:
            raise SessionFileError(f"{where}: cannot be read ({type(err).__name__}: {err})") from None
        with archive:
            members = {info.filename: info for info in archive.infolist()}
            if set(members) != expected:
                raise SessionFileError(f"{where}: expected {count} masks (region_1 .. region_{count}), found "
                                       f"{', '.join(sorted(members)[:5]) or 'none'}")
            for member, info in sorted(members.items()):
                key = member[:-4]
                if info.file_size > nbytes + 4096:
                    raise SessionFileError(f"{where}: {key}: {info.file_size} bytes; a {size[1]}x{size[0]} float32 "
                                           f"mask needs {nbytes}")
                try:
                    with archive.open(info) as stream:
                        version = np.lib.format.read_magic(stream)
                        if version not in ((1, 0), (2, 0)):
                            raise ValueError(f"unsupported .npy version {version}")
                        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                       else np.lib.format.read_array_header_2_0)
                        dims, fortran, dtype = read_header(stream)
                        if dtype != np.dtype("<f4") or tuple(dims) != size:
                            raise SessionFileError(
                                f"{where}: {key}: expected a float32 mask of {size[1]}x{size[0]} (the image size the "
                                f"latent implies), got {dtype} {list(dims)}")
                        array = np.frombuffer(stream.read(nbytes + 1), dtype="<f4")
                except SessionFileError:
                    raise
                except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
                    raise SessionFileError(f"{where}: {key}: cannot be read ({type(err).__name__}: {err})") from None
                if array.size != size[0] * size[1]:
                    raise SessionFileError(f"{where}: {key}: the data does not match its header")
                array = array.reshape(size, order="F" if fortran else "C").astype(np.float32)
                if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
                    raise SessionFileError(f"{where}: {key}: expected values in [0, 1]")
                masks[key] = array
    return masks

