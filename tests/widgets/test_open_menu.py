"""The app's Open row (upload a ComfyUI image/workflow or a mask PNG) and its ComfyUI PNG in the Save menu."""
import datetime
import io
import json

import ipywidgets as widgets
import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import regional_widgets as rw
from regional_widgets.widgets import RegionalSamplerApp

from .sessions import make_session


def upload(app, name, data):
    app.open_menu.upload.value = ({"name": name, "type": "", "size": len(data), "content": memoryview(data),
                                   "last_modified": datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)},)


@pytest.fixture
def app(tmp_path):
    return RegionalSamplerApp(make_session(), inspector_backend="image", save_folder=tmp_path)


def other_session():
    session = make_session(steps=7, noise_seed=99, overlap_factor=3)
    session.regions[0].mask = np.round(np.random.default_rng(3).random((64, 64)) * 255).astype(np.float32) / 255
    session.base = rw.SamplerConfig("heun", "karras", 3.5, "night", "sun")
    return session


def test_open_row_sits_above_the_save_menu(app):
    assert isinstance(app.open_menu.upload, widgets.FileUpload)
    assert app.open_menu.upload.accept == ".png,.json" and not app.open_menu.upload.multiple
    assert app.children.index(app.open_menu) == app.children.index(app.save_menu) - 1


def test_save_the_comfy_png_then_upload_it(app, tmp_path):
    other = other_session()
    saved = RegionalSamplerApp(other, inspector_backend="image", save_folder=tmp_path).save_menu
    paths = saved.save("ComfyUI image (PNG with workflow)")
    assert [p.name for p in paths] == ["comfyui.png", "comfyui_region1.png", "comfyui_region2.png"]
    with Image.open(paths[0]) as image:
        assert {"prompt", "workflow"} <= set(image.info)
    assert saved.save("ComfyUI image (PNG with workflow)")[0].name == "comfyui-2.png"  # never over the first
    old = app.session
    upload(app, "comfyui.png", paths[0].read_bytes())
    assert app.session is not old and app.open_menu.upload.value == ()
    assert app.session.parameters() == other.parameters() and app.session.base == other.base
    np.testing.assert_array_equal(app.session.regions[0].mask, other.regions[0].mask)  # masks from the folder
    assert app.canvas.session is app.session and app.controls.session is app.session
    assert app.save_menu.session is app.session and app.panel.session is app.session
    assert "opened node" in app.open_menu.message.value and "not mapped" not in app.open_menu.message.value
    app.session.step()
    assert app.session.step_index == 1 and old.step_index == 0


def test_upload_a_workflow_whose_masks_are_elsewhere(app, tmp_path):
    other = other_session()
    (tmp_path / "made").mkdir()
    other.to_comfy(tmp_path / "made" / "flow.json", format="ui")
    upload(app, "flow.json", (tmp_path / "made" / "flow.json").read_bytes())
    assert app.session.parameters() == other.parameters()
    assert [float(r.mask.sum()) for r in app.session.regions] == [0.0, 0.0]
    assert "not mapped" in app.open_menu.message.value and "starts empty" in app.open_menu.message.value
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["flow.json", "flow_region1.png", "flow_region2.png",
                                                          "made"]  # nothing written by the upload


def test_upload_a_mask_png_for_the_selected_region(app):
    app.panel.selected = 2
    mask = np.zeros((64, 64), np.uint8)
    mask[10:30, 5:50] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, "PNG")
    before = app.session.regions[0].mask.copy()
    upload(app, "mask.png", buffer.getvalue())
    np.testing.assert_array_equal(app.session.regions[1].mask, mask / 255)
    np.testing.assert_array_equal(app.session.regions[0].mask, before)
    assert "mask" in app.open_menu.message.value


@pytest.mark.parametrize("name, data, words", [
    ("x.json", b"{not json", ["could not open x.json", "JSON"]),
    ("x.png", b"\x89PNG\r\n\x1a\nbroken", ["could not open x.png", "damaged PNG"]),
    ("x.png", b"GIF89a....", ["could not open x.png", "not a PNG"]),
    ("big.json", b"{" + b" " * 2**25, ["over the limit of 33554432"]),
])
def test_bad_uploads_are_said_and_change_nothing(app, tmp_path, name, data, words):
    session = app.session
    upload(app, name, data)
    assert app.session is session and app.open_menu.upload.value == ()
    for word in words:
        assert word in app.open_menu.message.value, app.open_menu.message.value
    assert not list(tmp_path.iterdir())


def test_a_png_with_a_bad_prompt_chunk_is_not_taken_for_a_mask(app):
    info = PngInfo()
    info.add_text("prompt", json.dumps({"1": {"class_type": "KSampler", "inputs": {}}}))
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, "PNG", pnginfo=info)
    before = [r.mask.copy() for r in app.session.regions]
    upload(app, "k.png", buffer.getvalue())
    assert "could not open k.png" in app.open_menu.message.value and "found none" in app.open_menu.message.value
    for a, b in zip(before, app.session.regions):
        np.testing.assert_array_equal(a, b.mask)
