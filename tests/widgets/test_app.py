"""RegionalSamplerApp: the composed widget over one session."""
import os
import subprocess
import sys

import numpy as np
import pytest

import regional_widgets as rw
from regional_widgets.widgets import Inspector, MaskCanvas, RegionPanel, RegionalSamplerApp, StepControls

from .sessions import MODEL, make_session


@pytest.fixture(scope="module")
def app():
    return RegionalSamplerApp.from_model(MODEL, size=64, regions=2)


def test_from_model_opens_on_region_1_with_starter_prompts(app):
    s = app.session
    assert isinstance(app.canvas, MaskCanvas) and isinstance(app.panel, RegionPanel)
    assert isinstance(app.controls, StepControls) and isinstance(app.inspector, Inspector)
    assert app.canvas.active_region == 1 and app.panel.selected == 1
    assert app.controls.step_button.description == "Step"
    assert s.node == "RegionalSamplerAdvanced" and s.steps == 20 and s.num_steps == 20
    assert s.latent_image.shape == (1, MODEL.latent_channels, 64, 64)
    assert [r.config.positive for r in s.regions] == ["grass", "brick"] and s.base.positive == "sky"
    assert all(r.mask.shape == (64, 64) and not r.mask.any() for r in s.regions)
    assert app.layout.max_width == "1000px"


def test_the_app_steps_and_the_inspector_follows_while_shown():
    app = RegionalSamplerApp(make_session(), inspector_backend="image")
    assert app.tabs.selected_index == 0 and not app.inspector.follow  # the regions tab opens first
    before = app.inspector.images["decoded"].copy()
    app.controls.step_button.click()
    assert app.session.step_index == 1 and app.controls.history.value == 1
    assert np.array_equal(before, app.inspector.images["decoded"])  # hidden: no work
    app.tabs.selected_index = 1  # shown: it catches up at once, then follows
    after_1 = app.inspector.images["decoded"].copy()
    assert np.allclose(after_1, MODEL.decode(app.session.latent)[0].numpy())
    app.controls.step_button.click()
    assert not np.array_equal(after_1, app.inspector.images["decoded"])


def test_panel_selection_and_canvas_region_are_linked():
    app = RegionalSamplerApp(make_session(), inspector_backend="image")
    app.panel.rows[2].select_button.click()
    assert app.canvas.active_region == 2
    app.canvas.active_region = 1
    assert app.panel.selected == 1
    app.panel.select(2)
    app.panel.rows[2].remove_button.click()
    assert len(app.session.regions) == 1 and app.canvas.active_region == 1 and app.panel.selected == 1
    app.panel.add_button.click()
    assert app.canvas.active_region == 2 == app.panel.selected


def test_painting_then_stepping_uses_the_painted_mask():
    app = RegionalSamplerApp(make_session(), inspector_backend="image")
    mask = np.zeros((64, 64), np.float32)
    mask[:10, :10] = 1
    app.tabs.selected_index = 1
    app.session.regions[0].mask = mask
    assert np.array_equal(app.session.regions[0].mask, mask)
    assert np.allclose(app.inspector.images["masks"], rw.plot.mask_overlay([m.numpy() for m in app.session.masks]))


def test_starter_prompts_follow_the_vocabulary():
    from regional_widgets.widgets.app import starter_prompts

    assert starter_prompts(MODEL, 4) == ["sky", "grass", "brick", "water"]

    class Words:
        vocabulary = ("red", "circle")

    assert starter_prompts(Words(), 3) == ["red", "circle", "red"]
    assert starter_prompts(object(), 2) == ["sky", "grass"]


def test_the_package_exports_the_app_lazily():
    assert rw.RegionalSamplerApp is RegionalSamplerApp
    assert "RegionalSamplerApp" in rw.__all__
    code = ("import sys, regional_widgets\n"
            "print(sorted(m for m in ('ipywidgets', 'ipycanvas', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.stdout.strip() == "[]"
