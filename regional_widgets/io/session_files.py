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
"""
from __future__ import annotations

import io
import json
import math
import re
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..node_params import Quirks, SamplerConfig
from ..sampling.checks import is_int
from ..sampling.samplers import SAMPLER_NAMES
from .comfy import SAMPLER_NODES, SCHEMAS, Literal
from .paths import FileSafetyError, FileTooLargeError, inside, open_read, parse_json, read_bytes, write_atomic

FORMAT = "regional_widgets.session"
VERSION = 2  # 2: session.json names its data files; 1 (fixed names) is still read
INDEX = "session.json"
MODES = ("faithful", "coherent")
MAX_JSON_BYTES = 8 * 2**20
MAX_HEADER_BYTES = 2**20  # a safetensors header (JSON): ours are a few kB
MAX_LATENT_ELEMENTS = 2**28  # 1 GiB of float32: B x C x h x w of the largest latent loaded
MAX_BATCH_INDEX = 4096  # EmptyLatentImage's largest batch
_DATA = {"masks": r"masks(\.[0-9]{1,6})?\.npz", "latents": r"latents(\.[0-9]{1,6})?\.safetensors"}
_V1_FILES = {"masks": "masks.npz", "latents": "latents.safetensors"}
_LATENT_LIKE = ("latent", "base_latent", "denoised", "result")
_MAPS = ("sigma_map", "base_sigma_map", "times_map")
_ST_DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}
_LATENT_DTYPES = ("F32", "F64")
_CONFIG_KEYS = tuple(SamplerConfig().to_dict())
_REGION_KEYS = ("config", "variation_seed", "variation_strength", "variation_method")
_STATE_KEYS = ("sigma", "sigma_next", "model_calls", "passes")
_DOC_KEYS = ("format", "version", "files", "node", "parameters", "base", "regions", "batch_index", "latent_channels",
             "quirks", "cursor", "state", "mode", "extra", "model_sampling")
_OPTIONAL_DOC_KEYS = ("model_sampling",)  # the model's family and schedule; files written before it lack it
PARAMETRISATION_NAMES = {"eps": "EPS", "v": "V-prediction", "const": "flow (CONST)"}


class SessionFileError(ValueError):
    """A session file that is missing, damaged, tampered with or does not fit the model."""


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
        files = _files_of(doc)
    except (OSError, ValueError) as err:
        if isinstance(err, FileSafetyError):
            raise
        raise FileSafetyError(refusal.format(why=f"{INDEX} is not a session index of ours: {err}")) from None
    return files


def _files_of(doc) -> dict:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") not in (1, VERSION):
        raise SessionFileError(f"{INDEX}: not a {FORMAT} file of version 1 or {VERSION}")
    if doc["version"] == 1:
        return dict(_V1_FILES)
    files = doc.get("files")
    if not isinstance(files, dict) or set(files) != set(_DATA):
        raise SessionFileError(f"{INDEX}: files: expected {{'masks': ..., 'latents': ...}}, got {str(files)[:80]}")
    for key, pattern in _DATA.items():
        if not isinstance(files[key], str) or not re.fullmatch(pattern, files[key]):
            raise SessionFileError(f"{INDEX}: files.{key}: expected a name like {_V1_FILES[key]!r}, "
                                   f"got {str(files[key])[:80]!r}")
    return files


def _free_name(folder: Path, key: str, taken) -> str:
    stem, ext = _V1_FILES[key].split(".", 1)
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
    names = {key: _free_name(folder, key, taken) for key in _DATA}
    doc = dict(doc, format=FORMAT, version=VERSION, files=names)
    # safetensors refuses tensors that share storage: store independent copies
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    buffer = io.BytesIO()
    np.savez(buffer, **masks)
    data = {"masks": buffer.getvalue(), "latents": save_tensors(tensors)}
    index = json.dumps(doc, indent=2, allow_nan=False).encode()
    written = []
    try:
        for key in _DATA:
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
        return _files_of(parse_json(read_bytes(folder, INDEX, MAX_JSON_BYTES)))
    except (OSError, ValueError):
        return None


# ---- reading ------------------------------------------------------------------------------------

def read_session(path, *, channels: int, downscale: int, model_sampling=None):
    """``(doc, masks, tensors)`` from a session folder, every field checked (see `check_doc`) and every
    array's dtype and shape checked from its header before it is read. ``model_sampling``: the loading
    model's (`describe_model_sampling`), checked against the saved one where the file has it."""
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
    files = _files_of(doc)
    check_doc(doc, channels, model_sampling)
    tensors = _read_latents(folder, files["latents"], channels)
    latent = tensors["latent_image"]
    batch_index = doc.get("batch_index")
    if batch_index is not None and len(batch_index) != latent.shape[0]:
        raise SessionFileError(f"{INDEX}: batch_index: {len(batch_index)} entries for a batch of {latent.shape[0]}")
    size = (latent.shape[-2] * downscale, latent.shape[-1] * downscale)
    masks = _read_masks(folder, files["masks"], len(doc["regions"]), size)
    return doc, masks, tensors


def _fail(field, expected, value):
    raise SessionFileError(f"{INDEX}: {field}: expected {expected}, got {str(value)[:80]!r}")


def _is_number(value, lo=-math.inf, hi=math.inf) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and lo <= value <= hi


def _check_keys(field, value, keys, optional=()):
    if not isinstance(value, dict):
        _fail(field, "an object", value)
    missing = [k for k in keys if k not in value and k not in optional]
    unknown = sorted(set(value) - set(keys))
    if missing or unknown:
        raise SessionFileError(f"{INDEX}: {field}: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(unknown)}"] if unknown
                                                                     else [])))


def _check_config(field, value):
    _check_keys(field, value, _CONFIG_KEYS)
    try:
        SamplerConfig(**value)
    except (TypeError, ValueError) as err:
        raise SessionFileError(f"{INDEX}: {field}.{err}") from None


def describe_model_sampling(model_sampling) -> dict:
    """A model sampling as session.json keeps it: ``{"parametrisation", "schedule"}`` (its repr)."""
    return {"parametrisation": model_sampling.parametrisation, "schedule": repr(model_sampling)}


def _check_model_sampling(saved, current) -> None:
    _check_keys("model_sampling", saved, ("parametrisation", "schedule"))
    if saved["parametrisation"] not in PARAMETRISATION_NAMES or not isinstance(saved["schedule"], str):
        _fail("model_sampling", "a parametrisation (eps, v, const) and a schedule text", saved)
    if current is None:
        return
    if saved["parametrisation"] != current["parametrisation"]:
        raise SessionFileError(f"model: the session was saved with a {PARAMETRISATION_NAMES[saved['parametrisation']]} "
                               f"model, this one is {PARAMETRISATION_NAMES.get(current['parametrisation'], '?')}")
    if saved["schedule"] != current["schedule"]:
        raise SessionFileError(f"model: the session was saved with the model sampling {saved['schedule']}, this "
                               f"model has {current['schedule']}")


def check_doc(doc: dict, channels: int, model_sampling=None) -> None:
    """Every key and type of ``session.json`` (values the session validates again when it is built).
    ``model_sampling``: the loading model's (`describe_model_sampling`), to compare with the saved one."""
    v1 = doc.get("version") == 1
    _check_keys("(top level)", doc, _DOC_KEYS,
                optional=("files", "mode", "extra", "quirks") + _OPTIONAL_DOC_KEYS if v1 else _OPTIONAL_DOC_KEYS)
    if "model_sampling" in doc:
        _check_model_sampling(doc["model_sampling"], model_sampling)
    if doc["node"] not in SAMPLER_NODES:
        _fail("node", " or ".join(SAMPLER_NODES), doc["node"])
    names = [n for n, spec in SCHEMAS[doc["node"]].required.items() if isinstance(spec, Literal)]
    _check_keys("parameters", doc["parameters"], names)
    for name, value in doc["parameters"].items():
        if not isinstance(value, (bool, int, float, str)) or (isinstance(value, float) and not math.isfinite(value)):
            _fail(f"parameters.{name}", "a plain value", value)
    _check_config("base", doc["base"])
    if not isinstance(doc["regions"], list):
        _fail("regions", "a list", doc["regions"])
    for j, region in enumerate(doc["regions"], 1):
        _check_keys(f"regions[{j}]", region, _REGION_KEYS)
        _check_config(f"regions[{j}].config", region["config"])
    batch_index = doc["batch_index"]
    if batch_index is not None and (not isinstance(batch_index, list)
                                    or not all(is_int(b, 0, MAX_BATCH_INDEX - 1) for b in batch_index)):
        _fail("batch_index", f"null or a list of integers in 0..{MAX_BATCH_INDEX - 1}", batch_index)
    if not is_int(doc["latent_channels"], 1, 4096):
        _fail("latent_channels", "a positive integer", doc["latent_channels"])
    if doc["latent_channels"] != channels:
        raise SessionFileError(f"model: the session was saved with a {doc['latent_channels']}-channel model, "
                               f"this one has {channels}")
    quirks = doc.get("quirks", {})
    _check_keys("quirks", quirks, tuple(Quirks().to_dict()), optional=tuple(Quirks().to_dict()) if v1 else ())
    for name, value in quirks.items():
        if not isinstance(value, bool):
            _fail(f"quirks.{name}", "true or false", value)
    if not is_int(doc["cursor"], 0, 10**9):
        _fail("cursor", "a non-negative integer", doc["cursor"])
    state = doc["state"]
    _check_keys("state", state, _STATE_KEYS)
    for name in ("sigma", "sigma_next"):
        if state[name] is not None and not _is_number(state[name], 0.0):
            _fail(f"state.{name}", "null or a finite number >= 0", state[name])
    if not is_int(state["model_calls"], 0, 2**53):
        _fail("state.model_calls", "a non-negative integer", state["model_calls"])
    passes = state["passes"]
    if not isinstance(passes, list) or len(passes) > 3 or not all(p in SAMPLER_NAMES for p in passes):
        _fail("state.passes", "a list of at most 3 sampler names", passes)
    if doc.get("mode", "faithful") not in MODES:
        _fail("mode", " or ".join(MODES), doc.get("mode"))


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
        end = _check_header(where, header, channels)
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
        if key.startswith("state.") and key[6:] in _MAPS and bool((tensor < 0).any()):
            raise SessionFileError(f"{where}: {key}: expected values >= 0")
    return tensors


def _check_header(where, header, channels) -> int:
    """Names, dtypes and shapes a session writes; returns the data length the header implies."""
    if not isinstance(header, dict):
        raise SessionFileError(f"{where}: cannot be read (the header is not an object)")
    header = {k: v for k, v in header.items() if k != "__metadata__"}
    entries = {}
    for key, info in header.items():
        if isinstance(info, dict) and info.get("dtype") not in _ST_DTYPES:
            raise SessionFileError(f"{where}: {key}: dtype {str(info.get('dtype'))[:20]} is not one a session stores "
                                   f"({', '.join(_ST_DTYPES)})")
        ok = isinstance(info, dict) and set(info) == {"dtype", "shape", "data_offsets"} \
            and isinstance(info["shape"], list) \
            and all(is_int(n, 0, 2**40) for n in info["shape"]) and isinstance(info["data_offsets"], list) \
            and len(info["data_offsets"]) == 2 and all(is_int(n, 0, 2**50) for n in info["data_offsets"])
        if not ok:
            raise SessionFileError(f"{where}: {key}: a malformed header entry {str(info)[:80]}")
        entries[key] = (info["dtype"], tuple(info["shape"]), tuple(info["data_offsets"]))
    if "latent_image" not in entries:
        raise SessionFileError(f"{where}: latent_image: missing")
    dtype, shape, _ = entries["latent_image"]
    if len(shape) != 4 or shape[1] != channels or 0 in shape or math.prod(shape) > MAX_LATENT_ELEMENTS:
        raise SessionFileError(f"{where}: latent_image: expected a [B, {channels}, h, w] latent of at most "
                               f"{MAX_LATENT_ELEMENTS} values, got shape {list(shape)}")
    if dtype not in _LATENT_DTYPES:
        raise SessionFileError(f"{where}: latent_image: expected float32 or float64, got {dtype}")
    if "state.latent" not in entries:
        raise SessionFileError(f"{where}: state.latent: missing")
    end = 0
    for key, (kind, dims, (begin, stop)) in entries.items():
        expected = _expected(key, shape, dtype)
        if expected is None:
            raise SessionFileError(f"{where}: {key}: not a tensor a session stores")
        if not expected(kind, dims):
            raise SessionFileError(f"{where}: {key}: expected {_describe(key, shape, dtype)}, got {kind} "
                                   f"{list(dims)}")
        if stop - begin != math.prod(dims) * torch.tensor([], dtype=_ST_DTYPES[kind]).element_size():
            raise SessionFileError(f"{where}: {key}: data offsets do not match its shape")
        end = max(end, stop)
    return end


def _expected(key, shape, dtype):
    if key == "latent_image":
        return lambda kind, dims: True
    if key.startswith("state."):
        name = key[6:]
        if name in _LATENT_LIKE:
            return lambda kind, dims: kind == dtype and dims == shape
        if name in _MAPS:
            return lambda kind, dims: kind == "F32" and dims == shape[-2:]
        return None
    if key == "extra" or key.startswith("extra."):  # coherent mode: sampler states
        return lambda kind, dims: (kind == dtype and dims == shape) or (
            len(dims) <= 1 and math.prod(dims) <= 100_000 and kind in _ST_DTYPES)
    return None


def _describe(key, shape, dtype) -> str:
    if key[6:] in _MAPS:
        return f"F32 {list(shape[-2:])} (the latent's h x w)"
    if key.startswith("extra"):
        return f"{dtype} {list(shape)} or a small 1-D tensor"
    return f"{dtype} {list(shape)} (the latent's dtype and shape)"


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


# ---- the state the saved sub-step implies ------------------------------------------------------

def check_state(doc: dict, tensors: dict, *, mode: str, kinds: list, done: bool, restore_latent: bool) -> None:
    """The state fields present or absent as a session at this sub-step has them.

    ``kinds``: the kinds of the sub-steps made so far (``ops[:cursor]``), ``done``: the run's end.
    """
    where = doc["files"]["latents"] if "files" in doc else _V1_FILES["latents"]
    state = doc["state"]
    cursor = len(kinds)
    have = {name: f"state.{name}" in tensors for name in _LATENT_LIKE}
    if mode == "faithful":
        need_base = restore_latent and "base" in kinds
        if doc.get("extra") is not None:
            raise SessionFileError(f"{INDEX}: extra: a faithful session stores no sampler states (mode switched?)")
        if state["passes"] and (cursor == 0 or kinds[-1] == "composite"):
            _fail("state.passes", "[] after a composite or at the start", state["passes"])
    else:
        need_base = "blend" in kinds
        if cursor and doc.get("extra") is None:
            raise SessionFileError(f"{INDEX}: extra: missing; a coherent session at sub-step {cursor} needs its "
                                   "sampler states (was it saved in faithful mode?)")
        if state["passes"]:
            _fail("state.passes", "[] in coherent mode", state["passes"])
    if have["base_latent"] != need_base:
        raise SessionFileError(f"{where}: state.base_latent: {'missing' if need_base else 'unexpected'} at "
                               f"sub-step {cursor} of a {mode} run")
    if have["result"] != done:
        raise SessionFileError(f"{where}: state.result: {'missing at the end' if done else 'unexpected before the end'}"
                               " of the run")
    for name in _MAPS:
        if f"state.{name}" not in tensors:
            raise SessionFileError(f"{where}: state.{name}: missing")
    if cursor == 0:
        for name in ("denoised", "sigma", "sigma_next"):
            present = have["denoised"] if name == "denoised" else state[name] is not None
            if present:
                raise SessionFileError(f"{INDEX}: state.{name}: unexpected at the start of the run")
        if state["model_calls"]:
            _fail("state.model_calls", "0 at the start of the run", state["model_calls"])
        if doc.get("extra") is not None:
            raise SessionFileError(f"{INDEX}: extra: unexpected at the start of the run")
    elif mode == "coherent" and not have["denoised"]:
        raise SessionFileError(f"{where}: state.denoised: missing after a coherent sub-step")


def check_extra(plain, latent_shape, parts: int, kinds: list) -> None:
    """Coherent mode's stored sampler states: the keys, counts and shapes the sub-step implies."""
    field = f"{INDEX}: extra"
    if not isinstance(plain, dict) or not {"x", "parts", "outputs"} <= set(plain) \
            or set(plain) - {"x", "parts", "outputs", "denoised", "first", "first_uncond"}:
        raise SessionFileError(f"{field}: expected x, parts, outputs (and first), got "
                               f"{sorted(plain) if isinstance(plain, dict) else type(plain).__name__}")
    since_blend = len(kinds) - (max(k for k, kind in enumerate(kinds) if kind == "blend") + 1 if "blend" in kinds
                                else 0)

    def tensor(name, value):
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(latent_shape):
            raise SessionFileError(f"{field}.{name}: expected a tensor of the latent's shape {list(latent_shape)}")

    tensor("x", plain["x"])
    if not isinstance(plain["parts"], (list, tuple)) or len(plain["parts"]) != parts:
        raise SessionFileError(f"{field}.parts: expected {parts} entries (the base and each region)")
    for k, part in enumerate(plain["parts"]):
        if part is None:
            continue
        if not isinstance(part, dict) or not isinstance(part.get("sampler"), str) \
                or part["sampler"] not in SAMPLER_NAMES or not is_int(part.get("i"), 0, 10**5) \
                or not isinstance(part.get("memory"), dict):
            raise SessionFileError(f"{field}.parts[{k}]: expected a sampler state (sampler, x, sigmas, i, memory, ...)")
        tensor(f"parts[{k}].x", part.get("x"))
    outputs = plain["outputs"]
    if not isinstance(outputs, (list, tuple)) or len(outputs) != since_blend:
        raise SessionFileError(f"{field}.outputs: expected {since_blend} outputs (part steps since the last blend)")
    for k, out in enumerate(outputs):
        tensor(f"outputs[{k}]", out)
    x0s = plain.get("denoised", ())  # the parts' x0 predictions since the blend (absent in older files)
    if not isinstance(x0s, (list, tuple)) or len(x0s) not in (0, since_blend):
        raise SessionFileError(f"{field}.denoised: expected {since_blend} predictions (part steps since the last blend)")
    for k, value in enumerate(x0s):
        tensor(f"denoised[{k}]", value)
    first = plain.get("first")
    if since_blend == 0 and first is not None:
        raise SessionFileError(f"{field}.first: unexpected after a blend")
    if since_blend:
        if not isinstance(first, (list, tuple)) or len(first) != parts:
            raise SessionFileError(f"{field}.first: expected {parts} first evaluations in the middle of a step")
        for k, value in enumerate(first):  # the denoised prediction, or (denoised, uncond) for CFG++ samplers
            if isinstance(value, (list, tuple)) and len(value) == 2:
                tensor(f"first[{k}][0]", value[0])
                if value[1] is not None:
                    tensor(f"first[{k}][1]", value[1])
            else:
                tensor(f"first[{k}]", value)


# ---- coherent mode's nested state as JSON + tensors --------------------------------------------

def pack_tree(value, prefix: str, tensors: dict):
    """A JSON-able skeleton of nested dicts/lists/tuples/scalars; tensors go to ``tensors``."""
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value
        return {"tensor": prefix}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{prefix}: only string keys can be stored")
        return {"dict": {k: pack_tree(v, f"{prefix}.{k}", tensors) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {kind: [pack_tree(v, f"{prefix}.{n}", tensors) for n, v in enumerate(value)]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"{prefix}: cannot store a {type(value).__name__}")


def unpack_tree(doc, tensors: dict):
    """The inverse of `pack_tree`; a missing tensor or an unknown node raises SessionFileError."""
    if not isinstance(doc, dict) or len(doc) != 1:
        raise SessionFileError(f"{INDEX}: extra: malformed stored value {str(doc)[:80]}")
    (kind, body), = doc.items()
    if kind == "tensor":
        if not isinstance(body, str) or body not in tensors:
            raise SessionFileError(f"latents: missing tensor {str(body)[:80]!r}")
        return tensors[body]
    if kind == "dict" and isinstance(body, dict):
        return {k: unpack_tree(v, tensors) for k, v in body.items()}
    if kind in ("list", "tuple") and isinstance(body, list):
        items = [unpack_tree(v, tensors) for v in body]
        return tuple(items) if kind == "tuple" else items
    if kind == "value" and (body is None or isinstance(body, (bool, int, float, str))):
        return body
    raise SessionFileError(f"{INDEX}: extra: unknown stored kind {kind!r}")
