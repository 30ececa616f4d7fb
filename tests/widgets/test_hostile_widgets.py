"""Hostile values through the widgets: shown inline, the session unchanged, panel and canvas together."""
import pytest
from traitlets import link

from regional_widgets import params
from regional_widgets.session import ParameterError, RegionalSamplerSession
from regional_widgets.widgets import MaskCanvas, RegionPanel, StepControls

from ..session.snapshots import changed, snapshot
from .sessions import make_session


def test_every_parameter_input_is_built_from_its_trait():
    s = make_session()
    c = StepControls(s)
    traits = params.parameter_traits(RegionalSamplerSession)
    kinds = {"Checkbox": "bool", "Dropdown": "choice", "IntText": "int", "FloatText": "float"}
    for name, field in c.fields.items():
        trait = traits[name]
        assert kinds[type(field.widget).__name__] == trait.kind, name
        assert field.widget.description == (trait.label or name)
        if trait.kind == "choice":
            assert tuple(field.widget.options) == trait.options


@pytest.mark.parametrize("name", ["mode", "additional_mode", "additional_sampler"])
def test_a_dropdown_set_to_none_shows_the_error_and_changes_nothing(name):
    s = make_session()
    s.step()
    c = StepControls(s)
    before = snapshot(s)
    c.fields[name].widget.value = None  # what a cleared dropdown sends
    assert c.param_error.message.startswith(f"{name}: unknown value None; accepted: ")
    assert changed(before, snapshot(s)) == []
    assert c.fields[name].widget.value == getattr(s, name)  # the widget shows the session's value again


def test_panel_selection_out_of_range_is_refused_and_never_parts_from_the_canvas():
    s = make_session()
    panel, canvas = RegionPanel(s), MaskCanvas(s)
    link((panel, "selected"), (canvas, "active_region"))
    panel.selected = 2
    for bad in (99, 0, -1, 3):
        with pytest.raises(ParameterError, match=rf"selected: expected an integer in 1\.\.2, got {bad}"):
            panel.selected = bad
        assert panel.selected == canvas.active_region == 2
    canvas.active_region = 1
    assert panel.selected == 1
    s.regions = s.regions[:1]
    assert panel.selected == canvas.active_region == 1


@pytest.mark.parametrize("name", ["sampler", "scheduler", "variation_method"])
def test_a_region_dropdown_set_to_none_shows_the_error_and_changes_nothing(name):
    s = make_session()
    s.step()
    row = RegionPanel(s).rows[1]
    before = snapshot(s)
    row.fields[name].widget.value = None
    assert row.error.message.startswith(f"{name}: unknown ") and "None" in row.error.message
    assert changed(before, snapshot(s)) == []
