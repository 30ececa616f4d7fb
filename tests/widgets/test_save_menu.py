"""The app's Save menu: session folder, GIF, ComfyUI workflow beside the notebook, never overwriting."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import regional_widgets as rw
from regional_widgets.widgets import RegionalSamplerApp, SaveMenu
from regional_widgets.widgets.save_menu import KINDS, fresh_path

from .sessions import MODEL, make_session


@pytest.fixture
def app(tmp_path):
    app = RegionalSamplerApp(make_session(), inspector_backend="image", save_folder=tmp_path)
    app.session.step()
    return app


def test_the_menu_is_in_the_app_and_lists_the_four_kinds(app):
    assert isinstance(app.save_menu, SaveMenu) and app.save_menu in app.children
    assert list(app.save_menu.kind.options) == ["Session folder", "GIF of the run", "ComfyUI workflow (API JSON)",
                                                "ComfyUI image (PNG with workflow)"]
    assert app.save_menu.save_button.description == "Save"


def test_save_session_folder_then_a_fresh_name(app, tmp_path):
    menu = app.save_menu
    menu.save_button.click()  # the dropdown opens on the session folder
    assert menu.written == [tmp_path / "session"]
    assert str((tmp_path / "session").resolve()) in menu.message.value and menu.message.value.startswith("wrote")
    loaded = rw.RegionalSamplerSession.load(tmp_path / "session", MODEL)
    assert loaded.step_index == 1 and loaded.cursor == app.session.cursor
    before = (tmp_path / "session" / "session.json").read_text()
    app.session.step()
    menu.save_button.click()
    assert menu.written == [tmp_path / "session-2"]
    assert (tmp_path / "session" / "session.json").read_text() == before  # the first one untouched
    assert rw.RegionalSamplerSession.load(tmp_path / "session-2", MODEL).step_index == 2


def test_save_gif_replays_a_copy_and_leaves_the_app_where_it_was(app, tmp_path):
    session = app.session
    cursor, latent = session.cursor, session.latent.clone()
    (tmp_path / "run.gif").write_bytes(b"not mine")
    app.save_menu.kind.value = "GIF of the run"
    app.save_menu.save_button.click()
    assert app.save_menu.written == [tmp_path / "run-2.gif"], app.save_menu.message.value
    assert (tmp_path / "run.gif").read_bytes() == b"not mine"
    with Image.open(tmp_path / "run-2.gif") as gif:
        assert gif.n_frames == session.num_steps
    assert session.cursor == cursor and bool((session.latent == latent).all())


def test_save_comfy_workflow_with_its_masks_never_overwriting(app, tmp_path):
    (tmp_path / "workflow_region1.png").write_bytes(b"someone else's mask")  # taken: the next stem is used
    paths = app.save_menu.save("ComfyUI workflow (API JSON)")
    assert paths[0] == tmp_path / "workflow-2.json"
    assert sorted(p.name for p in paths[1:]) == ["workflow-2_region1.png", "workflow-2_region2.png"]
    graph = json.loads(paths[0].read_text())
    assert any(node["class_type"].startswith("RegionalSampler") for node in graph.values())
    back = rw.RegionalSamplerSession.from_comfy(paths[0], MODEL)
    np.testing.assert_array_equal(back.regions[0].mask, app.session.regions[0].mask)
    assert (tmp_path / "workflow_region1.png").read_bytes() == b"someone else's mask"
    for p in paths:
        assert str(p.resolve()) in app.save_menu.message.value


def test_what_cannot_be_saved_is_said_not_raised(tmp_path):
    app = RegionalSamplerApp(make_session(mode="coherent"), inspector_backend="image", save_folder=tmp_path)
    assert app.save_menu.save("ComfyUI workflow (API JSON)") == []
    assert "could not save" in app.save_menu.message.value and "coherent" in app.save_menu.message.value
    assert not list(tmp_path.iterdir())


def test_default_folder_is_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = RegionalSamplerApp(make_session(), inspector_backend="image")
    assert app.save_menu.save("Session folder") == [tmp_path / "session"]
    assert os.path.isdir(tmp_path / "session")


def test_fresh_path_counts_up():
    taken = {"a/run.gif", "a/run-2.gif", "a/session"}
    from pathlib import Path

    is_taken = lambda p: str(p) in taken  # noqa: E731
    assert fresh_path(Path("a"), "run.gif", is_taken) == Path("a/run-3.gif")
    assert fresh_path(Path("a"), "session", is_taken) == Path("a/session-2")
    assert fresh_path(Path("a"), "workflow.json", is_taken) == Path("a/workflow.json")
    assert set(KINDS) == {"Session folder", "GIF of the run", "ComfyUI workflow (API JSON)",
                          "ComfyUI image (PNG with workflow)"}
