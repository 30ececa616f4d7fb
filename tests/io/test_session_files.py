"""Session folders under hostile conditions: foreign folders, crashes mid-save, symlinks, oversized
and tampered files. Every refusal is checked for its type, its message and an unchanged folder."""
import io
import json
import os
import zipfile

import numpy as np
import pytest
import torch
from safetensors.torch import load as load_tensors, save as save_tensors

import regional_widgets as rw
from regional_widgets.io import session_files
from regional_widgets.io.paths import FileSafetyError
from regional_widgets.io.session_files import SessionFileError

MODEL = rw.models.ToyWorld(n_exemplars=20, image_size=16)
N = 16


def make(mode="faithful", node="RegionalSamplerAdvanced", steps=4, **params):
    m1, m2 = np.zeros((N, N), np.float32), np.zeros((N, N), np.float32)
    m1[8:], m2[:6, :6] = 1, 0.5
    regions = [rw.Region(m1, rw.SamplerConfig("dpmpp_2m", positive="grass")),
               rw.Region(m2, rw.SamplerConfig("euler", positive="brick"))]
    return rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, N, N), base=rw.SamplerConfig(positive="sky"),
                                     regions=regions, node=node, mode=mode, steps=steps, **params)


def stepped(k=2, **kw):
    s = make(**kw)
    for _ in range(k):
        s.step()
    return s


def same(a, b):
    """Two sessions with equal parameters, regions and state."""
    assert a.node == b.node and a.mode == b.mode and a.parameters() == b.parameters() and a.quirks == b.quirks
    assert a.base == b.base and a.cursor == b.cursor
    for ra, rb in zip(a.regions, b.regions, strict=True):
        assert ra.config == rb.config and np.array_equal(ra.mask, rb.mask)
    for name in ("latent", "denoised", "sigma_map", "times_map", "result"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None and y is None) or torch.equal(x, y), name
    assert (a.sigma, a.sigma_next) == (b.sigma, b.sigma_next)


def index(folder):
    return json.loads((folder / "session.json").read_text())


def data_file(folder, key):
    return folder / index(folder)["files"][key]


# ---- save: only into our own folders, atomically --------------------------------------------------

def test_save_refuses_a_folder_that_is_not_ours(tmp_path, unchanged):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    with unchanged(tmp_path), pytest.raises(FileSafetyError, match=r"not empty and not a regional_widgets session "
                                                                   r"folder \(no session.json\).*thesis.tex"):
        stepped().save(tmp_path / "mine")
    (tmp_path / "mine" / "session.json").write_text(json.dumps({"format": "someone.else", "version": 1}))
    with unchanged(tmp_path), pytest.raises(FileSafetyError, match="session.json is not a session index of ours"):
        stepped().save(tmp_path / "mine")
    (tmp_path / "file").write_text("x")
    with unchanged(tmp_path), pytest.raises(FileSafetyError, match="exists and is not a folder"):
        stepped().save(tmp_path / "file")


def test_save_over_our_session_replaces_only_our_files(tmp_path):
    folder = tmp_path / "s"
    stepped(1).save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["latents.safetensors", "masks.npz", "session.json"]
    (folder / "notes.txt").write_text("the user's")
    before = os.stat(folder / "notes.txt").st_mtime_ns
    newer = stepped(3)
    newer.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["latents.1.safetensors", "masks.1.npz", "notes.txt",
                                                         "session.json"]
    assert (folder / "notes.txt").read_text() == "the user's" and os.stat(folder / "notes.txt").st_mtime_ns == before
    same(rw.RegionalSamplerSession.load(folder, MODEL), newer)
    stepped(2).save(folder)  # back to the first names
    assert sorted(p.name for p in folder.iterdir()) == ["latents.safetensors", "masks.npz", "notes.txt",
                                                         "session.json"]


@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_a_crash_mid_save_leaves_the_old_session(tmp_path, monkeypatch, unchanged, fail_at):
    folder = tmp_path / "s"
    old = stepped(1)
    old.save(folder)
    real, calls = os.replace, []

    def crash(src, dst):
        calls.append(dst)
        if len(calls) == fail_at:  # 1: masks, 2: latents, 3: the index switch
            raise OSError("simulated crash")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    with unchanged(folder), pytest.raises(OSError, match="simulated crash"):
        stepped(3, steps=5).save(folder)
    monkeypatch.setattr(os, "replace", real)
    same(rw.RegionalSamplerSession.load(folder, MODEL), old)


def test_a_hard_crash_leaves_unreferenced_files_that_later_saves_leave_alone(tmp_path, monkeypatch):
    folder = tmp_path / "s"
    old = stepped(1)
    old.save(folder)
    real_replace, calls = os.replace, []

    def crash(src, dst):
        calls.append(dst)
        if str(dst).endswith("session.json"):
            raise KeyboardInterrupt  # the process dies before the switch ...
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash)
    monkeypatch.setattr(session_files.Path, "unlink", lambda *a, **k: None)  # ... and cleans nothing up
    with pytest.raises(KeyboardInterrupt):
        stepped(2).save(folder)
    monkeypatch.undo()
    orphans = {"masks.1.npz", "latents.1.safetensors"}
    assert orphans <= {p.name for p in folder.iterdir()}
    same(rw.RegionalSamplerSession.load(folder, MODEL), old)
    snapshot = {name: (folder / name).read_bytes() for name in orphans}
    newer = stepped(3)
    newer.save(folder)  # takes names nobody uses; the orphans stay as they were
    assert index(folder)["files"] == {"masks": "masks.2.npz", "latents": "latents.2.safetensors"}
    assert {name: (folder / name).read_bytes() for name in orphans} == snapshot
    same(rw.RegionalSamplerSession.load(folder, MODEL), newer)


def test_a_crash_after_the_switch_leaves_the_new_session(tmp_path, monkeypatch):
    folder = tmp_path / "s"
    stepped(1).save(folder)
    newer = stepped(3)
    monkeypatch.setattr(session_files.Path, "unlink", lambda *a, **k: (_ for _ in ()).throw(OSError("gone")))
    newer.save(folder)  # removing the stale files fails: harmless
    monkeypatch.undo()
    same(rw.RegionalSamplerSession.load(folder, MODEL), newer)


def test_save_never_writes_through_a_symlink(tmp_path, unchanged):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.npz").write_bytes(b"precious")
    folder = tmp_path / "s"
    stepped(1).save(folder)
    os.symlink(outside / "precious.npz", folder / "masks.1.npz")  # planted where the next save would write
    stepped(2).save(folder)
    assert (outside / "precious.npz").read_bytes() == b"precious"
    assert os.readlink(folder / "masks.1.npz") == str(outside / "precious.npz")
    assert index(folder)["files"]["masks"] == "masks.2.npz"  # the symlinked name is skipped, not written through
    (folder / "session.json").unlink()
    os.symlink(outside / "precious.npz", folder / "session.json")
    with unchanged(tmp_path), pytest.raises(FileSafetyError, match="'session.json': is a symlink"):
        stepped(2).save(folder)


# ---- load: no symlinks, bounded, every field checked ----------------------------------------------

@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "s"
    stepped(2).save(folder)
    return folder


@pytest.mark.parametrize("name", ["session.json", "masks.npz", "latents.safetensors"])
def test_load_follows_no_symlink(saved, tmp_path, unchanged, name):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.replace(saved / name, outside / name)
    os.symlink(outside / name, saved / name)
    with unchanged(tmp_path), pytest.raises(FileSafetyError, match=f"'{name}': is a symlink"):
        rw.RegionalSamplerSession.load(saved, MODEL)


def test_load_refuses_data_files_named_outside_the_folder(saved, unchanged):
    for name in ("../masks.npz", "/etc/passwd", "sub/masks.npz"):
        doc = index(saved)
        doc["files"]["masks"] = name
        (saved / "session.json").write_text(json.dumps(doc))
        with unchanged(saved), pytest.raises(SessionFileError, match="session.json: files.masks: expected a name"):
            rw.RegionalSamplerSession.load(saved, MODEL)


def test_load_bounds_the_json(saved, unchanged):
    (saved / "session.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with unchanged(saved), pytest.raises(SessionFileError, match="nested 100000 levels deep, over the limit of 64"):
        rw.RegionalSamplerSession.load(saved, MODEL)
    with open(saved / "session.json", "wb") as file:
        file.truncate(session_files.MAX_JSON_BYTES + 1)
    with unchanged(saved), pytest.raises(SessionFileError, match=f"over the limit of {session_files.MAX_JSON_BYTES}"):
        rw.RegionalSamplerSession.load(saved, MODEL)


def _npz(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _npy_header_only(shape, dtype="<f4") -> bytes:
    """A .npy member whose header claims ``shape`` (1.6 GB for 20000^2 float32) and holds no data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def test_a_huge_npz_mask_is_refused_from_its_header(saved, unchanged):
    """The member holds no data at all: reading (or allocating) it would fail differently."""
    masks = data_file(saved, "masks")
    with zipfile.ZipFile(masks, "w") as archive:
        archive.writestr("region_1.npy", _npy_header_only((20000, 20000)))
        archive.writestr("region_2.npy", _npy_header_only((N, N)) + bytes(N * N * 4))
    with unchanged(saved), pytest.raises(SessionFileError, match=r"masks.npz: region_1: expected a float32 mask of "
                                                               r"16x16 \(the image size the latent implies\), got "
                                                               r"float32 \[20000, 20000\]"):
        rw.RegionalSamplerSession.load(saved, MODEL)


GOOD = np.zeros((N, N), np.float32)


@pytest.mark.parametrize("arrays, match", [
    ({"region_1": GOOD, "region_2": np.zeros((5, 5), np.float32)}, r"region_2: expected a float32 mask of 16x16.*\[5, 5\]"),
    ({"region_1": GOOD, "region_2": GOOD.astype(np.int32)}, r"region_2: expected a float32 mask .* got int32"),
    ({"region_1": GOOD, "region_2": GOOD.astype(np.float64)}, r"region_2: expected a float32 mask .* got float64"),
    ({"region_1": GOOD, "region_2": np.full((N, N), np.nan, np.float32)}, r"region_2: expected values in \[0, 1\]"),
    ({"region_1": GOOD, "region_2": np.full((N, N), 2.0, np.float32)}, r"region_2: expected values in \[0, 1\]"),
    ({"region_1": GOOD}, r"expected 2 masks \(region_1 .. region_2\), found region_1.npy"),
    ({"region_1": GOOD, "region_2": GOOD, "region_3": GOOD}, r"expected 2 masks"),
    ({"region_1": GOOD, "region_2": np.array([{"x": 1}], dtype=object)}, r"region_2: expected a float32 mask .*object"),
])
def test_tampered_masks_are_refused(saved, unchanged, arrays, match):
    data_file(saved, "masks").write_bytes(_npz(**arrays))  # an object array is pickled in the file
    with unchanged(saved), pytest.raises(SessionFileError, match="masks.npz: " + match):
        rw.RegionalSamplerSession.load(saved, MODEL)


def _tamper_latents(folder, change):
    path = data_file(folder, "latents")
    tensors = dict(load_tensors(path.read_bytes()))
    change(tensors)
    path.write_bytes(save_tensors(tensors))


def _put(name, value):
    return lambda t: t.__setitem__(name, value)


LATENT = (1, 3, N, N)


@pytest.mark.parametrize("change, match", [
    (_put("state.latent", torch.full(LATENT, float("nan"))), r"state.latent: expected finite values"),
    (_put("state.latent", torch.full(LATENT, float("inf"))), r"state.latent: expected finite values"),
    (_put("state.latent", torch.zeros(LATENT, dtype=torch.int32)), r"state.latent: dtype I32 is not one"),
    (_put("state.latent", torch.zeros(LATENT, dtype=torch.float16)), r"state.latent: dtype F16 is not one"),
    (_put("state.latent", torch.zeros(LATENT, dtype=torch.int64)), r"state.latent: expected F32 \[1, 3, 16, 16\]"),
    (_put("state.denoised", torch.zeros(1, 3, 8, 8)), r"state.denoised: expected F32 \[1, 3, 16, 16\].*got F32 \[1, 3, 8, 8\]"),
    (_put("state.sigma_map", torch.zeros(N, N + 1)), r"state.sigma_map: expected F32 \[16, 16\]"),
    (_put("state.sigma_map", -torch.ones(N, N)), r"state.sigma_map: expected values >= 0"),
    (_put("state.times_map", torch.full((N, N), float("nan"))), r"state.times_map: expected finite"),
    (lambda t: t.pop("state.base_latent"), r"state.base_latent: missing at sub-step 10"),
    (lambda t: t.pop("state.sigma_map"), r"state.sigma_map: missing"),
    (lambda t: t.pop("state.latent"), r"state.latent: missing"),
    (lambda t: t.pop("latent_image"), r"latent_image: missing"),
    (_put("state.result", torch.zeros(LATENT)), r"state.result: unexpected before the end"),
    (_put("state.surprise", torch.zeros(LATENT)), r"state.surprise: not a tensor a session stores"),
    (_put("latent_image", torch.zeros(1, 4, N, N)), r"latent_image: expected a \[B, 3, h, w\] latent"),
    (_put("latent_image", torch.zeros(1, 3, 8, 8)), r"state\.\w+: expected F32 \[1, 3, 8, 8\]"),
])
def test_tampered_latents_are_refused(saved, unchanged, change, match):
    _tamper_latents(saved, change)
    with unchanged(saved), pytest.raises(SessionFileError, match="latents.safetensors.*" + match):
        rw.RegionalSamplerSession.load(saved, MODEL)


def test_a_lying_or_huge_safetensors_header_is_refused(saved, unchanged):
    path = data_file(saved, "latents")
    data = path.read_bytes()
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    header["latent_image"]["shape"] = [4096, 3, 4096, 4096]  # 2^36 values claimed
    raw = json.dumps(header).encode()
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + data[8 + size:])
    with unchanged(saved), pytest.raises(SessionFileError, match=r"latent_image: expected a \[B, 3, h, w\] latent of "
                                                               r"at most 268435456 values"):
        rw.RegionalSamplerSession.load(saved, MODEL)
    path.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    with unchanged(saved), pytest.raises(SessionFileError, match="a header over 1048576 bytes"):
        rw.RegionalSamplerSession.load(saved, MODEL)
    path.write_bytes(data[:-100])
    with unchanged(saved), pytest.raises(SessionFileError, match="shorter than its header says"):
        rw.RegionalSamplerSession.load(saved, MODEL)


def _tamper_doc(folder, change):
    doc = index(folder)
    change(doc)
    (folder / "session.json").write_text(json.dumps(doc))


def _set(*path_and_value):
    *path, value = path_and_value

    def change(doc):
        for key in path[:-1]:
            doc = doc[key]
        doc[path[-1]] = value
    return change


@pytest.mark.parametrize("change, error, match", [
    (_set("state", "sigma", "bogus"), SessionFileError, r"state.sigma: expected null or a finite number >= 0"),
    (_set("state", "sigma", -1.0), SessionFileError, r"state.sigma: expected null or a finite number >= 0"),
    (_set("state", "sigma_next", float("nan")), SessionFileError, r"state.sigma_next: expected null or a finite"),
    (_set("state", "passes", ["nope"]), SessionFileError, r"state.passes: expected a list of at most 3 sampler"),
    (_set("state", "passes", ["euler"]), SessionFileError, r"state.passes: expected \[\] after a composite"),
    (_set("state", "model_calls", -1), SessionFileError, r"state.model_calls: expected a non-negative integer"),
    (_set("state", "model_calls", 1.5), SessionFileError, r"state.model_calls: expected a non-negative integer"),
    (lambda d: d["state"].pop("sigma"), SessionFileError, r"state: missing sigma"),
    (_set("quirks", "mask_wh_swap", "no"), SessionFileError, r"quirks.mask_wh_swap: expected true or false"),
    (_set("quirks", "extra_quirk", True), SessionFileError, r"quirks: unknown extra_quirk"),
    (_set("mode", "coherent"), SessionFileError, r"extra: missing; a coherent session at sub-step 10 needs its "
                                                 r"sampler states \(was it saved in faithful mode\?\)"),
    (_set("mode", "weird"), SessionFileError, r"mode: expected faithful or coherent"),
    (_set("cursor", 999), SessionFileError, r"cursor: 999 is outside this run's 0..16"),
    (_set("cursor", -1), SessionFileError, r"cursor: expected a non-negative integer"),
    (_set("cursor", True), SessionFileError, r"cursor: expected a non-negative integer"),
    (_set("cursor", 0), SessionFileError, r"state.base_latent: unexpected at sub-step 0"),
    (lambda d: d["parameters"].pop("steps"), SessionFileError, r"parameters: missing steps"),
    (_set("parameters", "hack", 1), SessionFileError, r"parameters: unknown hack"),
    (_set("parameters", "steps", -3), ValueError, r"steps"),
    (_set("parameters", "steps", [4]), SessionFileError, r"parameters.steps: expected a plain value"),
    (_set("base", "cfg", 1e9), SessionFileError, r"base.cfg: expected a number"),
    (lambda d: d["base"].pop("cfg"), SessionFileError, r"base: missing cfg"),
    (_set("regions", 0, "rogue", 1), SessionFileError, r"regions\[1\]: unknown rogue"),
    (_set("batch_index", [10**7]), SessionFileError, r"batch_index: expected null or a list of integers in 0..4095"),
    (_set("batch_index", [0, 1]), SessionFileError, r"batch_index: 2 entries for a batch of 1"),
    (_set("latent_channels", 4), SessionFileError, r"model: the session was saved with a 4-channel model"),
    (_set("surprise", 1), SessionFileError, r"\(top level\): unknown surprise"),
    (_set("format", "other"), SessionFileError, r"not a regional_widgets.session file"),
    (_set("version", 3), SessionFileError, r"not a regional_widgets.session file of version 1 or 2"),
    (_set("node", "KSampler"), SessionFileError, r"node: expected RegionalSamplerAdvanced or RegionalSampler"),
    (_set("extra", {"value": 1}), SessionFileError, r"extra: a faithful session stores no sampler states"),
])
def test_tampered_index_fields_are_refused(saved, unchanged, change, error, match):
    _tamper_doc(saved, change)
    with unchanged(saved), pytest.raises(error, match=match):
        rw.RegionalSamplerSession.load(saved, MODEL)


def test_deep_json_inside_a_valid_index_is_refused(saved, unchanged):
    deep = {"value": 1}
    for _ in range(200):
        deep = {"list": [deep]}
    _tamper_doc(saved, _set("extra", deep))
    with unchanged(saved), pytest.raises(SessionFileError, match="over the limit of 64"):
        rw.RegionalSamplerSession.load(saved, MODEL)


@pytest.fixture
def saved_coherent(tmp_path):
    folder = tmp_path / "c"
    s = make(mode="coherent")
    for _ in range(3):
        s.substep()  # mid-step: base and two regions done, the blend next
    s.save(folder)
    return folder, s


def test_coherent_round_trip_and_tampered_sampler_states(saved_coherent, unchanged):
    folder, s = saved_coherent
    same(rw.RegionalSamplerSession.load(folder, MODEL), s)
    for change, match in [
            (_set("extra", "dict", "outputs", {"list": []}), r"extra.outputs: expected 3 outputs"),
            (lambda d: d["extra"]["dict"]["parts"]["list"].pop(), r"extra.parts: expected 3 entries"),
            (_set("extra", None), r"extra: missing; a coherent session at sub-step 3"),
            (_set("mode", "faithful"), r"extra: a faithful session stores no sampler states"),
            (_set("extra", "dict", "x", {"tensor": "nowhere"}), r"missing tensor 'nowhere'"),
            (_set("extra", "dict", "x", {"pickle": "os.system"}), r"extra: unknown stored kind 'pickle'")]:
        doc = index(folder)
        text = (folder / "session.json").read_text()
        change(doc)
        (folder / "session.json").write_text(json.dumps(doc))
        with unchanged(folder), pytest.raises(SessionFileError, match=match):
            rw.RegionalSamplerSession.load(folder, MODEL)
        (folder / "session.json").write_text(text)


def test_a_fifo_or_folder_in_place_of_a_file_is_refused(saved, unchanged):
    masks = data_file(saved, "masks")
    masks.unlink()
    os.mkfifo(masks)  # opening it for reading would block forever
    with unchanged(saved), pytest.raises(FileSafetyError, match="'masks.npz': not a regular file"):
        rw.RegionalSamplerSession.load(saved, MODEL)


def test_version_1_folders_still_load_and_are_replaced_as_ours(tmp_path):
    folder = tmp_path / "v1"
    s = stepped(2)
    s.save(folder)
    doc = index(folder)
    del doc["files"]
    doc["version"] = 1
    (folder / "session.json").write_text(json.dumps(doc))  # the fixed names of version 1
    same(rw.RegionalSamplerSession.load(folder, MODEL), s)
    newer = stepped(3)
    newer.save(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["latents.1.safetensors", "masks.1.npz", "session.json"]
    same(rw.RegionalSamplerSession.load(folder, MODEL), newer)


def test_a_latent_load_would_refuse_is_not_saved(tmp_path):
    s = rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, N, N).half(), regions=[])
    with pytest.raises(SessionFileError, match=r"latent_image: a torch.float16 latent cannot be saved"):
        s.save(tmp_path / "h")
    assert not (tmp_path / "h").exists()


def test_io_never_imports_the_session_or_the_widgets():
    import ast
    import pathlib

    import regional_widgets.io as package

    for source in pathlib.Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = [("." * node.level) + (node.module or "")]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                assert not any(part in ("session", "widgets") for part in name.strip(".").split(".")), \
                    (source.name, name)


def _package_imports(text: str) -> list:
    """Every import of a regional_widgets module in an io source, as an absolute dotted name."""
    import ast

    found = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            base = {0: "", 1: "regional_widgets.io", 2: "regional_widgets"}.get(node.level)
            assert base is not None, f"an import {node.level} levels up: {ast.unparse(node)}"
            names = [".".join(p for p in (base, node.module) if p)]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [name for name in names if name.split(".")[0] == "regional_widgets"]
    return found


def test_io_imports_nothing_of_the_package_but_io_and_sampling():
    """io sits on `sampling` alone (ARCHITECTURE.md); what a session's configs and quirks hold comes in as
    `session_format.DocFields`, never by importing the engines."""
    import pathlib

    import regional_widgets.io as package

    # the check sees a layer breach, through every spelling of an import
    for breach in ("from ..node_params import Quirks", "from .. import session", "import regional_widgets.plot",
                   "from regional_widgets import widgets", "def f():\n    from ..models import base"):
        assert any(name.split(".")[1:2] not in (["io"], ["sampling"]) for name in _package_imports(breach)), breach
    outside, seen = [], []
    for source in sorted(pathlib.Path(package.__file__).parent.glob("*.py")):
        for name in _package_imports(source.read_text()):
            seen.append(name)
            if name.split(".")[1:2] not in (["io"], ["sampling"]):
                outside.append((source.name, name))
    assert outside == []
    assert "regional_widgets.sampling.samplers" in seen and "regional_widgets.io.paths" in seen


def test_the_session_layer_says_what_a_config_holds(saved):
    """`check_doc` asks the `DocFields` it is given, not a class of its own, whether a config is acceptable."""
    from regional_widgets.io.session_format import DocFields, check_doc

    def doc():
        return index(saved)

    def refuse(config):
        raise ValueError("cfg: refused by the caller")

    keys = tuple(doc()["base"])
    quirks = tuple(doc()["quirks"])
    check_doc(doc(), MODEL.latent_channels, fields=DocFields(keys, lambda config: None, quirks))
    with pytest.raises(SessionFileError, match=r"^session.json: base\.cfg: refused by the caller$"):
        check_doc(doc(), MODEL.latent_channels, fields=DocFields(keys, refuse, quirks))
    with pytest.raises(SessionFileError, match=r"^session.json: base: unknown cfg"):
        check_doc(doc(), MODEL.latent_channels, fields=DocFields(tuple(k for k in keys if k != "cfg"),
                                                                 lambda config: None, quirks))
    with pytest.raises(SessionFileError, match=r"^session.json: quirks: unknown "):
        check_doc(doc(), MODEL.latent_channels, fields=DocFields(keys, lambda config: None, quirks[1:]))
