"""Inspector: views follow the session in place; only what changed is recomputed."""
import asyncio

import matplotlib
import numpy as np
import pytest
import torch

import regional_widgets as rw
from regional_widgets import plot
from regional_widgets.sampling.schedules import sampler_sigmas
from regional_widgets.widgets import Inspector, StepControls

from .sessions import MODEL, make_session


@pytest.fixture
def session():
    return make_session()


def snapshot(inspector):
    return {name: array.copy() for name, array in inspector.images.items()}


def changed(before, after):
    return {name for name in after if name not in before or before[name].shape != after[name].shape
            or not np.array_equal(before[name], after[name], equal_nan=True)}


def test_a_step_click_changes_the_images(session):
    inspector = Inspector(session, backend="image")
    controls = StepControls(session)
    before = snapshot(inspector)
    assert set(before) == set(rw.widgets.inspector.IMAGE_VIEWS)
    controls.step_button.click()
    assert session.step_index == 1
    after = snapshot(inspector)
    assert {"decoded", "denoised", "latent", "sigma_map", "times_map", "difference"} <= changed(before, after)
    assert np.allclose(after["decoded"], MODEL.decode(session.latent)[0].numpy())
    assert np.allclose(after["denoised"], MODEL.decode(session.denoised)[0].clamp(0, 1).numpy())
    assert np.array_equal(after["sigma_map"], session.sigma_map.numpy())
    assert np.array_equal(after["times_map"], session.times_map.numpy())


def test_every_substep_updates_in_place(session):
    inspector = Inspector(session, backend="image")
    widget = inspector.children[0]
    for op in session.ops:
        before, png = snapshot(inspector), widget.value
        session.substep()
        if op.kind == "composite":  # the call already kept its result inside its mask: same values
            continue
        assert changed(before, snapshot(inspector)) and widget.value != png
    assert inspector.children[0] is widget


def test_refresh_recomputes_only_what_changed(session):
    inspector = Inspector(session, backend="image")
    session.step()
    assert inspector.refresh() is False  # nothing new since the step
    before = snapshot(inspector)
    mask = np.zeros((64, 64), np.float32)
    mask[:8, 40:] = 1
    session.regions[1].mask = mask
    assert changed(before, snapshot(inspector)) == {"masks"}


def test_latent_view_tiles_the_channels(session):
    inspector = Inspector(session, backend="image")
    session.step()
    latent = session.latent[0].double().numpy()
    tiles = inspector.images["latent"]
    assert tiles.shape == (64, 64 * 3 + 2) and np.isnan(tiles[:, 64]).all()
    assert np.allclose(tiles[:, 65:129], latent[1])


def test_masks_view_paints_regions_over_the_base(session):
    inspector = Inspector(session, backend="image")
    masks = [m.numpy() for m in session.masks]
    expected = plot.mask_overlay(masks)
    assert np.allclose(inspector.images["masks"], expected)
    colours = plot.palette(3)
    assert np.allclose(expected[63, 63], colours[1])  # bottom right: region 1 only
    assert np.allclose(expected[0, 0], colours[2])  # top left: region 2
    assert np.allclose(expected[0, 63], colours[0])  # top right: the base


def test_difference_shows_each_call_of_the_current_step(session):
    inspector = Inspector(session, backend="image")
    session.substep()  # the base call
    base, r1, r2 = inspector.call_changes()
    assert base.max() > 0 and r1.max() == 0 and r2.max() == 0
    session.substep()  # region 1
    base2, r1, r2 = inspector.call_changes()
    assert np.array_equal(base, base2) and r1.max() > 0 and r2.max() == 0
    expected = (session.latent[0] - session.history[1].latent[0]).double().pow(2).mean(0).sqrt().numpy()
    assert np.allclose(r1, expected)
    session.substep()  # composite 1 (not a call)
    session.substep()  # region 2
    assert inspector.call_changes()[2].max() > 0
    assert np.allclose(inspector.images["difference"][:, 130:], inspector.call_changes()[2])
    session.substep()
    session.substep()  # the next step's base call: the view starts over
    base3, r1, r2 = inspector.call_changes()
    assert base3.max() > 0 and r1.max() == 0 and r2.max() == 0


def test_schedules_follow_the_configs_and_mark_the_last_call(session):
    inspector = Inspector(session, backend="image")
    assert inspector.marker is None
    session.regions[1].config = rw.SamplerConfig(positive="brick", scheduler="karras")
    expected = sampler_sigmas(MODEL.sigmas, "euler", "karras", 4).numpy()
    assert np.allclose(inspector.schedules["region 2"], expected)
    assert list(inspector.schedules) == ["base", "region 1", "region 2"]
    session.step()
    start, end, sigma, sigma_next = inspector.marker
    assert (start, end) == (0, 1) and sigma == session.sigma and sigma_next == session.sigma_next
    session.regions = session.regions[:1]
    assert list(inspector.schedules) == ["base", "region 1"]
    assert len(inspector.call_changes()) == 2


def test_the_image_backend_sends_png(session):
    inspector = Inspector(session, backend="image")
    assert inspector.backend == "image"
    assert inspector.children[0].value[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_ipympl_backend_updates_with_draw_idle(session, monkeypatch):
    pytest.importorskip("ipympl")
    from ipympl.backend_nbagg import Canvas

    inspector = Inspector(session, backend="ipympl")
    canvas = inspector.children[0]
    assert isinstance(canvas, Canvas) and canvas.figure is inspector.figure
    draws = []
    monkeypatch.setattr(canvas, "draw_idle", lambda: draws.append(1))
    session.step()
    assert draws and len(draws) == inspector.refreshes - 1
    assert inspector.refresh() is False and len(draws) == inspector.refreshes - 1


def test_refreshes_are_throttled_while_an_event_loop_runs(session):
    inspector = Inspector(session, backend="image", min_interval=60.0)

    async def scenario():
        count = inspector.refreshes
        session.substep()  # the last refresh was at construction: this one waits
        assert inspector.refreshes == count and inspector._pending is not None
        assert not np.array_equal(inspector.images["sigma_map"], session.sigma_map.numpy())
        inspector.refresh()  # catching up cancels the pending one
        assert inspector._pending is None
        assert np.array_equal(inspector.images["sigma_map"], session.sigma_map.numpy())

    asyncio.run(scenario())


def test_static_helpers():
    matplotlib.use("Agg")
    s = make_session()
    s.step()
    for fig in (plot.masks(s), plot.sigma_map(s), plot.schedule(s), plot.step_strip(make_session(steps=2))):
        assert fig.axes
        matplotlib.pyplot.close(fig)
    tiles = plot.tile([np.zeros((2, 2)), np.ones((2, 2))], gap=1)
    assert tiles.shape == (2, 5) and np.isnan(tiles[:, 2]).all()
    assert [label for label, _, _ in plot.schedules(s)] == ["base", "region 1", "region 2"]
    assert torch.is_tensor(s.sigma_map)
