"""Hostile files for the ComfyUI import/export, mask PNGs and the path helper: symlinks, foreign
files, other formats named .png, oversized images, odd node ids and names, deep JSON, cycles.
Every refusal is checked for its type, its message and an unchanged folder (and no session built)."""
import json
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import regional_widgets as rw
from regional_widgets.io import paths
from regional_widgets.io.comfy import ComfyWorkflowError
from regional_widgets.io.masks import MAX_PIXELS, read_mask_png, write_mask_png
from regional_widgets.io.paths import FileSafetyError

from .test_comfy import HAND_WRITTEN, MODEL, edited, hand_written, make_session, write  # noqa: F401 - a fixture

EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n0 0 moveto 64 64 lineto stroke\nshowpage\n"


def png_header(width, height) -> bytes:
    """A PNG whose header claims ``width x height`` (8-bit grey) and whose data is one empty row."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1))) + chunk(b"IEND", b""))


@pytest.fixture
def no_session(monkeypatch):
    """Fail the test if a session is built (imports must validate everything first)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a session was built")
    monkeypatch.setattr(rw.RegionalSamplerSession, "__init__", refuse)


# ---- export: never through a symlink, never over a foreign file ----------------------------------

def test_to_comfy_refuses_planted_symlinks_and_foreign_files(tmp_path, unchanged):
    folder, outside = tmp_path / "out", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    (outside / "victim.txt").write_text("keep me")
    session = make_session("RegionalSamplerAdvanced", 2)
    os.symlink(outside / "victim.txt", folder / "flow_region2.png")
    with unchanged(tmp_path), pytest.raises(FileSafetyError, match="'flow_region2.png': is a symlink"):
        session.to_comfy(folder / "flow.json")
    (folder / "flow_region2.png").unlink()
    os.symlink(outside / "victim.txt", folder / "flow.json")
    with unchanged(tmp_path), pytest.raises(FileSafetyError, match="'flow.json': is a symlink"):
        session.to_comfy(folder / "flow.json")
    (folder / "flow.json").unlink()
    (folder / "flow.json").write_text(HAND_WRITTEN)  # the user's own workflow of that name
    with unchanged(tmp_path), pytest.raises(FileSafetyError, match="'flow.json': already exists .* not written by "
                                                                   "regional_widgets; not overwritten"):
        session.to_comfy(folder / "flow.json")
    (folder / "flow.json").unlink()
    Image.new("RGB", (4, 4)).save(folder / "flow_region1.png")  # someone else's PNG
    with unchanged(tmp_path), pytest.raises(FileSafetyError, match="'flow_region1.png': already exists"):
        session.to_comfy(folder / "flow.json")


def test_to_comfy_replaces_its_own_export(tmp_path):
    first = make_session("RegionalSamplerAdvanced", 2)
    first.to_comfy(tmp_path / "flow.json")
    second = make_session("RegionalSamplerAdvanced", 2, steps=9)
    written = second.to_comfy(tmp_path / "flow.json")
    assert [p.name for p in written] == ["flow.json", "flow_region1.png", "flow_region2.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.json", "flow_region1.png", "flow_region2.png"]
    back = rw.RegionalSamplerSession.from_comfy(tmp_path / "flow.json", MODEL)
    assert back.steps == 9 and back.parameters() == second.parameters()


# ---- import: inside the mask folder, PNG only, the latent's size -----------------------------------

def test_from_comfy_follows_no_symlinked_mask_or_folder(hand_written, tmp_path_factory, unchanged, no_session):
    folder, *_ = hand_written
    outside = tmp_path_factory.mktemp("outside")
    os.replace(folder / "grass.png", outside / "grass.png")
    os.symlink(outside / "grass.png", folder / "grass.png")
    with unchanged(folder), pytest.raises(FileSafetyError, match=r"node 23 \(LoadImageMask\) input image: "
                                                                 r"'grass.png': is a symlink"):
        rw.RegionalSamplerSession.from_comfy(folder / "flow.json", MODEL)
    (folder / "grass.png").unlink()
    os.replace(outside / "grass.png", folder / "grass.png")
    os.replace(folder / "sub", outside / "sub")
    os.symlink(outside / "sub", folder / "sub")  # a symlinked subfolder
    with unchanged(folder), pytest.raises(FileSafetyError, match=r"node 24 .*'sub/sun.png': is a symlink"):
        rw.RegionalSamplerSession.from_comfy(folder / "flow.json", MODEL)
    elsewhere = tmp_path_factory.mktemp("json")
    os.symlink(folder / "flow.json", elsewhere / "flow.json")
    with unchanged(folder), pytest.raises(FileSafetyError, match="'flow.json': is a symlink"):
        rw.RegionalSamplerSession.from_comfy(elsewhere / "flow.json", MODEL, mask_folder=folder)


def test_an_eps_named_png_is_never_decoded(hand_written, unchanged, no_session, monkeypatch):
    from PIL import EpsImagePlugin

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: pytest.fail("Ghostscript started"))
    folder, *_ = hand_written
    (folder / "grass.png").write_bytes(EPS)
    with unchanged(folder), pytest.raises(ComfyWorkflowError, match=r"node 23 .* grass.png: mask: not a PNG image"):
        rw.RegionalSamplerSession.from_comfy(folder / "flow.json", MODEL)
    with pytest.raises(ValueError, match="mask: not a PNG image"):  # the mask canvas reads through the same code
        read_mask_png(EPS)
    with pytest.raises(ValueError, match="mask: not a PNG image"):
        read_mask_png(str(folder / "grass.png"))


def test_mask_sizes_are_checked_before_decoding(hand_written, unchanged, no_session, tmp_path_factory):
    folder, *_ = hand_written
    (folder / "grass.png").write_bytes(png_header(12000, 12000))  # 144 megapixels if decoded
    with unchanged(folder), pytest.raises(ComfyWorkflowError, match=r"node 23 .* grass.png: mask: the image is "
                                                                    r"12000x12000 but the latent implies 64x64"):
        rw.RegionalSamplerSession.from_comfy(folder / "flow.json", MODEL)
    with pytest.raises(ValueError, match=rf"mask: the image is 12000x12000 = 144000000 pixels, over the limit of "
                                         rf"{MAX_PIXELS} pixels"):
        read_mask_png(png_header(12000, 12000))  # the canvas: no expected size, the documented maximum
    assert Image.MAX_IMAGE_PIXELS is not None  # Pillow's own guard is left on ...
    with pytest.raises(ValueError, match="mask: refused by Pillow's decompression-bomb guard"):
        read_mask_png(png_header(20000, 20000), size=(20000, 20000))  # ... and reported when it fires


def test_a_mask_of_the_wrong_size_or_an_odd_width_is_refused(hand_written, unchanged, no_session):
    folder, *_ = hand_written
    path = write(folder, edited(lambda g: g["5"]["inputs"].update(width=17)))
    with unchanged(folder), pytest.raises(ComfyWorkflowError, match=r"node 23 .* grass.png: mask: the image is 64x64 "
                                                                    r"but the latent implies 17x64"):
        rw.RegionalSamplerSession.from_comfy(path, MODEL)
    Image.new("RGB", (32, 64)).save(folder / "sub" / "sun.png")
    path = write(folder, json.loads(HAND_WRITTEN))
    with unchanged(folder), pytest.raises(ComfyWorkflowError, match=r"node 24 .*sun.png: mask: the image is 32x64 but "
                                                                    r"the latent implies 64x64"):
        rw.RegionalSamplerSession.from_comfy(path, MODEL)


# ---- import: the graph -----------------------------------------------------------------------------

def renamed(graph, old, new):
    """The graph with node ``old`` renamed ``new`` (links too)."""
    graph = {new if k == old else k: v for k, v in graph.items()}
    for node in graph.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and len(value) == 2 and value[0] == old:
                node["inputs"][name] = [new, value[1]]
    return graph


def test_odd_node_ids(hand_written, unchanged):
    folder, grass, sun = hand_written
    graph = renamed(renamed(json.loads(HAND_WRITTEN), "21", "²"), "23", "ノード:5")
    session = rw.RegionalSamplerSession.from_comfy(write(folder, graph), MODEL)
    np.testing.assert_allclose(session.regions[0].mask, grass, atol=1e-6)
    for bad, match in [("x" * 300, r"node id 'x{64}'\.\.\.: expected 1..64 printable characters"),
                       ("a\x00b", r"node id 'a\\x00b': expected 1..64 printable"), ("", r"node id ''")]:
        path = write(folder, renamed(json.loads(HAND_WRITTEN), "21", bad))
        with unchanged(folder), pytest.raises(ComfyWorkflowError, match=match):
            rw.RegionalSamplerSession.from_comfy(path, MODEL)


@pytest.mark.parametrize("image, match", [
    ("a" * 300 + ".png", r"a name of 304 characters; expected at most 1024, each folder or file name at "
                         r"most 255 bytes"),
    ("sub/" * 300 + "x.png", r"a name of 1205 characters"),
    ("grass\x00.png", r"control characters in the file name"),
    ("/etc/passwd", r"expected a file name inside the input folder"),
    ("C:/Windows/win.ini", r"expected a file name inside the input folder"),
])
def test_odd_image_names(hand_written, unchanged, no_session, image, match):
    folder, *_ = hand_written
    path = write(folder, edited(lambda g: g["23"]["inputs"].update(image=image)))
    with unchanged(folder), pytest.raises(ComfyWorkflowError, match=r"node 23 \(LoadImageMask\) input image: " + match):
        rw.RegionalSamplerSession.from_comfy(path, MODEL)


def test_deep_and_huge_workflow_json(tmp_path, unchanged, no_session):
    (tmp_path / "deep.json").write_text("[" * 50_000 + "]" * 50_000)
    with unchanged(tmp_path), pytest.raises(ComfyWorkflowError, match="deep.json: cannot be read as JSON "
                                                                      r"\(nested 50000 levels deep, over the limit of 64\)"):
        rw.RegionalSamplerSession.from_comfy(tmp_path / "deep.json", MODEL)
    with open(tmp_path / "huge.json", "wb") as file:
        file.truncate(64 * 2**20)
    with unchanged(tmp_path), pytest.raises(ComfyWorkflowError, match=r"huge.json: .* 67108864 bytes, over the limit "
                                                                      r"of 33554432 bytes"):
        rw.RegionalSamplerSession.from_comfy(tmp_path / "huge.json", MODEL)


def test_combine_cycles_are_named(hand_written, unchanged, no_session):
    folder, *_ = hand_written

    def two_node_cycle(graph):
        graph["31"] = {"class_type": "CombineRegionalPrompts", "inputs": {"regional_prompts1": ["20", 0]}}
        graph["20"]["inputs"]["regional_prompts3"] = ["31", 0]

    path = write(folder, edited(two_node_cycle))
    with unchanged(folder), pytest.raises(ComfyWorkflowError, match=r"node 20 \(CombineRegionalPrompts\): its "
                                                                    r"regional_prompts inputs form a cycle "
                                                                    r"\(20 -> 31 -> 20\)"):
        rw.RegionalSamplerSession.from_comfy(path, MODEL)
    path = write(folder, edited(lambda g: g["20"]["inputs"].update(regional_prompts3=["20", 0])))
    with unchanged(folder), pytest.raises(ComfyWorkflowError, match=r"cycle \(20 -> 20\)"):
        rw.RegionalSamplerSession.from_comfy(path, MODEL)


def test_a_long_chain_of_combines_is_no_recursion(hand_written):
    folder, grass, sun = hand_written
    graph = json.loads(HAND_WRITTEN)
    previous = "20"
    for k in range(3000):  # deeper than Python's recursion limit
        graph[f"c{k}"] = {"class_type": "CombineRegionalPrompts", "inputs": {"regional_prompts1": [previous, 0]}}
        previous = f"c{k}"
    graph["3"]["inputs"]["regional_prompts"] = [previous, 0]
    session = rw.RegionalSamplerSession.from_comfy(write(folder, graph), MODEL)
    assert len(session.regions) == 2
    np.testing.assert_allclose(session.regions[1].mask, sun, atol=1e-6)


# ---- the path helper itself -------------------------------------------------------------------------

def test_inside_refuses_escapes_symlinks_and_long_names(tmp_path):
    (tmp_path / "d").mkdir()
    os.symlink(tmp_path, tmp_path / "d" / "up")
    for name, match in [("../x", "outside the folder"), ("/etc/passwd", "outside the folder"), ("", "outside"),
                        ("C:/x", "outside the folder"), ("up/x", r"'up/x': is a symlink"),
                        ("y" * 256, "a name longer than 255 bytes")]:
        with pytest.raises(FileSafetyError, match=match):
            paths.inside(tmp_path / "d", name)
    assert paths.inside(tmp_path / "d", "sub/new.png") == (tmp_path / "d" / "sub" / "new.png").resolve()


def test_write_atomic_never_replaces_a_foreign_file(tmp_path, unchanged, monkeypatch):
    (tmp_path / "theirs.png").write_bytes(b"theirs")
    with unchanged(tmp_path), pytest.raises(FileSafetyError, match="'theirs.png': already exists"):
        paths.write_atomic(tmp_path, "theirs.png", b"ours")
    monkeypatch.setattr(os, "replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with unchanged(tmp_path), pytest.raises(OSError, match="disk full"):  # no temporary file left behind
        paths.write_atomic(tmp_path, "new.png", b"ours")


def test_read_limits_and_special_files(tmp_path):
    (tmp_path / "big").write_bytes(b"x" * 101)
    with pytest.raises(FileSafetyError, match="'big': 101 bytes, over the limit of 100 bytes"):
        paths.read_bytes(tmp_path, "big", 100)
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(FileSafetyError, match="'fifo': not a regular file"):
        paths.read_bytes(tmp_path, "fifo", 100)
    assert paths.json_depth(b'{"a": "[[[[", "b": [[1]]}') == 3
    with pytest.raises(ValueError, match="nested 65 levels deep, over the limit of 64"):
        paths.parse_json(b"[" * 65 + b"]" * 65)


def test_written_masks_carry_the_signature_and_read_back():
    png = write_mask_png(np.eye(4, dtype=np.float32), "RGB")
    import io

    assert Image.open(io.BytesIO(png)).info["Software"] == "regional_widgets"
    np.testing.assert_array_equal(read_mask_png(png, "red", size=(4, 4)), np.eye(4))
