"""MaskToolbar on its own and linked to a MaskCanvas: the canvas's traits and the toolbar's views
move together both ways; the canvas's tool is an Enum of the painter's tools."""
import numpy as np
import pytest
from traitlets import TraitError

import regional_widgets as rw
from regional_widgets.widgets import MaskCanvas
from regional_widgets.widgets import MaskToolbar
from regional_widgets.widgets.painter import TOOLS

from .test_mask_canvas import MODEL, N, drag


@pytest.fixture
def session():
    return rw.RegionalSamplerSession(
        MODEL, rw.empty_latent(MODEL, N, N), base=rw.SamplerConfig(positive="sky"),
        regions=[rw.Region(np.zeros((N, N), np.float32), rw.SamplerConfig(positive="grass")) for _ in range(2)],
        steps=4)


def test_toolbar_alone():
    toolbar = MaskToolbar(n_regions=3, max_brush_size=20)
    assert [b.description for b in toolbar.region_buttons] == ["1", "2", "3"]
    assert toolbar.size_slider.max == 20 and toolbar.undo_button.disabled and toolbar.redo_button.disabled
    assert [value for _, value in toolbar.tool_buttons.options] == list(TOOLS)
    toolbar.region_buttons[1].click()
    assert toolbar.active_region == 2
    assert toolbar.region_buttons[1].layout.border.startswith("3px solid black")
    assert toolbar.region_buttons[0].layout.border.endswith("transparent")
    toolbar.tool_buttons.value = "fill"
    assert toolbar.tool == "fill"
    toolbar.can_undo = True
    assert not toolbar.undo_button.disabled
    toolbar.n_regions = 1
    assert len(toolbar.region_buttons) == 1 and toolbar.region_box.children == tuple(toolbar.region_buttons)
    with pytest.raises(TraitError):
        toolbar.tool = "spray"


def test_canvas_tool_is_an_enum_of_the_painters_tools(session):
    canvas = MaskCanvas(session)
    with pytest.raises(TraitError, match="tool"):
        canvas.tool = "spray"
    assert canvas.tool == "brush" and canvas.toolbar.tool == "brush" and canvas.painter.tool == "brush"


def test_toolbar_and_canvas_are_linked_both_ways(session):
    canvas = MaskCanvas(session)
    toolbar = canvas.toolbar
    assert toolbar in canvas.children and toolbar.n_regions == 2 and toolbar.max_brush_size == N // 2
    canvas.tool = "ellipse"
    assert toolbar.tool_buttons.value == "ellipse"
    toolbar.tool_buttons.value = "fill"
    assert canvas.tool == "fill" and canvas.painter.tool == "fill"
    toolbar.size_slider.value = 9
    assert canvas.brush_size == 9 and canvas.painter.brush_size == 9
    canvas.opacity, canvas.show_grown = 0.25, False
    assert toolbar.opacity_slider.value == 0.25 and toolbar.grown_box.value is False
    toolbar.region_buttons[1].click()
    assert canvas.active_region == 2 and canvas.painter.active == 2
    assert toolbar.undo_button.disabled and not canvas.can_undo
    canvas.tool = "brush"
    drag(canvas, [(10, 10), (20, 20)])
    assert session.regions[1].mask.any()
    assert canvas.can_undo and not toolbar.undo_button.disabled and toolbar.redo_button.disabled
    toolbar.undo_button.click()
    assert not session.regions[1].mask.any() and not toolbar.redo_button.disabled
    with pytest.raises(TraitError):
        canvas.can_undo = True  # read-only: the painter's history decides


def test_the_toolbar_follows_the_regions(session):
    canvas = MaskCanvas(session)
    canvas.active_region = 2
    session.regions = [*session.regions, rw.Region(np.zeros((N, N), np.float32), rw.SamplerConfig(positive="sand"))]
    assert canvas.toolbar.n_regions == 3 and len(canvas.region_buttons) == 3
    session.regions = session.regions[:1]
    assert canvas.active_region == 1 and canvas.toolbar.active_region == 1 and len(canvas.region_buttons) == 1
