"""RegionPanel: edits assign new configs and region traits; errors show in the row and revert."""
import numpy as np
import pytest
import torch

import regional_widgets as rw
from regional_widgets.sampling import SAMPLER_NAMES, SCHEDULER_NAMES
from regional_widgets.session import ParameterError
from regional_widgets.widgets import RegionPanel, region_hex

from .sessions import MODEL, make_session


@pytest.fixture
def session():
    return make_session()


def test_one_row_for_the_base_and_one_per_region(session):
    p = RegionPanel(session)
    assert len(p.rows) == 3
    assert [r.select_button.description for r in p.rows] == ["base", "region 1", "region 2"]
    assert [r.select_button.style.button_color for r in p.rows] == [region_hex(j) for j in range(3)]
    assert [r.fields["positive"].widget.value for r in p.rows] == ["sky", "grass", "brick"]
    assert "variation_seed" in p.rows[1].fields and "variation_seed" not in p.rows[0].fields
    row = p.rows[1]
    assert list(row.fields["positive"].widget.options) == list(MODEL.vocabulary)
    assert tuple(row.fields["sampler"].widget.options) == tuple(SAMPLER_NAMES)
    assert tuple(row.fields["scheduler"].widget.options) == tuple(SCHEDULER_NAMES)
    assert p.rows[1].up_button.disabled and p.rows[2].down_button.disabled


def test_edits_assign_new_configs(session):
    p = RegionPanel(session)
    base, r1 = p.rows[0].fields, p.rows[1].fields
    base["positive"].widget.value = "night"
    assert session.base.positive == "night"
    r1["sampler"].widget.value = "dpmpp_2m"
    r1["scheduler"].widget.value = "karras"
    r1["cfg"].widget.value = 5.5
    r1["sigma_factor"].widget.value = 0.9
    r1["negative"].widget.value = "brick"
    assert session.regions[0].config == rw.SamplerConfig(sampler="dpmpp_2m", scheduler="karras", cfg=5.5,
                                                         positive="grass", negative="brick", sigma_factor=0.9)
    r1["variation_seed"].widget.value = 5
    r1["variation_strength"].widget.value = 0.25
    r1["variation_method"].widget.value = "slerp"
    region = session.regions[0]
    assert (region.variation_seed, region.variation_strength, region.variation_method) == (5, 0.25, "slerp")
    assert all(row.error.message == "" for row in p.rows)


def test_an_unknown_prompt_word_shows_the_session_message_inline(session):
    p = RegionPanel(session)
    with pytest.raises(ParameterError) as expected:
        make_session().base = rw.SamplerConfig(positive="dragon")
    p.rows[0].fields["positive"].widget.value = "dragon"
    assert p.rows[0].error.message == str(expected.value)
    assert "unknown word(s) 'dragon'" in p.rows[0].error.message and "Traceback" not in p.rows[0].error.value
    assert session.base == rw.SamplerConfig(positive="sky")
    assert p.rows[0].fields["positive"].widget.value == "sky"


def test_an_unknown_prompt_in_a_region_leaves_its_config_unchanged(session):
    p = RegionPanel(session)
    session.step()
    config = session.regions[1].config
    p.rows[2].fields["positive"].widget.value = "brick dragon"
    assert "unknown word(s) 'dragon'" in p.rows[2].error.message
    assert session.regions[1].config is config
    assert p.rows[2].fields["positive"].widget.value == "brick"
    assert session.step_index == 1
    session.step()  # the session still runs with the kept config
    assert session.step_index == 2


def test_out_of_range_values_show_inline(session):
    p = RegionPanel(session)
    row = p.rows[1]
    row.fields["cfg"].widget.value = 500.0
    assert row.error.message.startswith("cfg: expected a number in [0, 100]")
    assert session.regions[0].config.cfg == 8.0 and row.fields["cfg"].widget.value == 8.0
    row.fields["variation_strength"].widget.value = 1.5
    assert row.error.message.startswith("variation_strength:")
    assert session.regions[0].variation_strength == 0.0
    row.fields["cfg"].widget.value = 7.0
    assert row.error.message == "" and session.regions[0].config.cfg == 7.0


def test_rows_follow_changes_made_elsewhere(session):
    p = RegionPanel(session)
    session.regions[0].config = rw.SamplerConfig(positive="water", sampler="heun")
    session.base = rw.SamplerConfig(positive="sun")
    assert p.rows[1].fields["positive"].widget.value == "water"
    assert p.rows[1].fields["sampler"].widget.value == "heun"
    assert p.rows[0].fields["positive"].widget.value == "sun"


def test_add_remove_and_reorder_regions(session):
    p = RegionPanel(session)
    first, second = session.regions
    p.add_button.click()
    assert len(session.regions) == 3 and len(p.rows) == 4
    new = session.regions[2]
    assert new.mask.shape == (64, 64) and not new.mask.any() and new.config.positive == ""
    assert p.selected == 3
    p.rows[3].up_button.click()  # region 3 -> 2: now drawn under the old region 2
    assert session.regions == [first, new, second] and p.selected == 2
    p.rows[1].down_button.click()
    assert session.regions == [new, first, second]
    assert [r.fields["positive"].widget.value for r in p.rows[1:]] == ["", "grass", "brick"]
    p.rows[1].remove_button.click()
    assert session.regions == [first, second] and len(p.rows) == 3
    assert p.selected == 2 or p.selected == 1


def test_reorder_changes_the_result():
    """Later regions win where grown masks overlap: swapping two regions changes the composite."""
    a, b = make_session(), make_session()
    RegionPanel(b).rows[1].down_button.click()
    assert not torch.equal(a.run(), b.run())


def test_add_without_regions_sizes_the_mask_from_the_latent():
    s = rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, 64, 64), base=rw.SamplerConfig(positive="sky"),
                                  steps=3)
    p = RegionPanel(s)
    assert len(p.rows) == 1
    p.add()
    assert s.regions[0].mask.shape == (64, 64) and len(p.rows) == 2
    s.regions[0].mask = np.ones((64, 64), np.float32)
    s.run()
    assert s.done


def test_rebuilding_rows_drops_the_old_observers(session):
    p = RegionPanel(session)
    old_row = p.rows[1]
    p.add()
    session.regions[0].config = rw.SamplerConfig(positive="water")
    assert old_row.fields["positive"].widget.value == "grass"  # closed rows no longer follow
    assert p.rows[1].fields["positive"].widget.value == "water"
