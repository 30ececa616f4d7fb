"""Hostile input against the session: each is refused with a message that names the parameter, the
value and what is accepted, and leaves every trait, the program and the history as they were."""
import dataclasses

import numpy as np
import pytest
import torch

import regional_widgets as rw
from regional_widgets import params
from regional_widgets.session import ParameterError, Region

from .snapshots import changed, snapshot, snapshot_region

MODEL = rw.models.ToyWorld(n_exemplars=60, image_size=16)
N = 16


def masks():
    bottom, corner = np.zeros((N, N), np.float32), np.zeros((N, N), np.float32)
    bottom[8:], corner[:6, :6] = 1, 1
    return bottom, corner


def make(node="RegionalSamplerAdvanced", steps=4, **params_):
    bottom, corner = masks()
    regions = [Region(bottom, rw.SamplerConfig(sampler="dpmpp_2m", positive="grass")),
               Region(corner, rw.SamplerConfig(sampler="euler_ancestral", positive="brick"))]
    return rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, N, N), base=rw.SamplerConfig(positive="sky"),
                                     regions=regions, node=node, steps=steps, **params_)


def stepped(**kw):
    s = make(**kw)
    s.step()
    s.step()
    return s


def refused(session, assign, match):
    """``assign()`` raises ParameterError matching ``match`` and nothing observable changes."""
    before = snapshot(session)
    with pytest.raises(ParameterError, match=match):
        assign()
    assert changed(before, snapshot(session)) == []


SESSION_PARAMS = sorted(params.parameter_traits(rw.RegionalSamplerSession))
REGION_PARAMS = sorted(params.parameter_traits(Region))


def test_parameter_error_is_importable_from_everywhere():
    assert rw.ParameterError is ParameterError is params.ParameterError
    assert issubclass(ParameterError, ValueError)


@pytest.mark.parametrize("name", SESSION_PARAMS)
def test_none_is_refused_for_every_session_parameter(name):
    s = stepped()
    refused(s, lambda: setattr(s, name, None), f"^{name}: (expected .*got None|unknown value None; accepted: )")


@pytest.mark.parametrize("name", REGION_PARAMS)
def test_none_is_refused_for_every_region_parameter(name):
    s = stepped()
    region = s.regions[0]
    before = snapshot_region(region)
    refused(s, lambda: setattr(region, name, None), f"^{name}: (expected .*got None|unknown value None; accepted: )")
    assert changed(before, snapshot_region(region)) == []


@pytest.mark.parametrize("name, value, match", [
    ("steps", True, r"steps: expected an integer in 1\.\.10000, got True"),
    ("steps", 4.0, r"steps: expected an integer in 1\.\.10000, got 4\.0"),
    ("noise_seed", "3", "noise_seed: expected an integer"),
    ("overlap_factor", np.float32(3), "overlap_factor: expected an integer"),
    ("denoise", "0.5", r"denoise: expected a number in \(0, 1\]"),
    ("additional_sigma_ratio", float("nan"), r"additional_sigma_ratio: expected a number in \[0, 1\], got nan"),
    ("add_noise", 1, "add_noise: expected True or False, got 1"),
    ("mode", ["faithful"], r"mode: unknown value \['faithful'\]; accepted: faithful, coherent"),
    ("additional_sampler", np.array(["AUTO"]), "additional_sampler: unknown value"),
    ("quirks", {"mask_wh_swap": True}, "quirks: expected a regional_widgets.node_params.Quirks, got dict"),
    ("base", "sky", "base: expected a regional_widgets.node_params.SamplerConfig, got str"),
    ("regions", "abc", "regions: expected a list of Region, got 'abc'"),
    ("regions", [np.zeros((N, N))], "regions: item 1 must be a Region, got ndarray"),
])
def test_wrong_types_are_refused(name, value, match):
    s = stepped()
    refused(s, lambda: setattr(s, name, value), match)


def test_the_controls_build_their_inputs_from_the_traits():
    traits = params.parameter_traits(rw.RegionalSamplerSession)
    assert traits["steps"].kind == "int" and (traits["steps"].lo, traits["steps"].hi) == (1, params.MAX_STEPS)
    assert traits["denoise"].kind == "float" and traits["add_noise"].kind == "bool"
    assert traits["additional_sampler"].kind == "choice" and "AUTO" in traits["additional_sampler"].options
    assert traits["additional_mode"].label == "recovery"


# ---- masks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(10, 10), (16, 8), (160, 160)])
def test_a_mask_of_another_size_than_the_image_is_refused(shape):
    s = stepped()
    size = f"16x16 \\(height x width\\), got {shape[0]}x{shape[1]}"
    refused(s, lambda: setattr(s.regions[1], "mask", np.zeros(shape, np.float32)), f"region 2: mask: .*{size}")
    refused(s, lambda: setattr(s, "regions", [Region(np.zeros(shape, np.float32))]), f"region 1: mask: .*{size}")
    refused(s, lambda: setattr(s, "regions", list(s.regions) + [Region(np.zeros(shape, np.float32))]),
            rf"regions: every mask must have one shape; region 1 is \(16, 16\), region 3 is \({shape[0]}, {shape[1]}\)")
    with pytest.raises(ParameterError, match=f"region 1: mask: expected the image size the latent implies, {size}"):
        rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, N, N), regions=[Region(np.zeros(shape))])


def test_the_image_size_follows_the_models_downscale_and_a_resize_is_on_request():
    sd = rw.models.ToyWorld(latent="sd", n_exemplars=20, image_size=64)
    latent = rw.empty_latent(sd, 64, 64)  # 8 x 8 latent pixels: a 64 x 64 picture
    with pytest.raises(ParameterError, match="mask: .*64x64 .*got 8x8"):
        rw.RegionalSamplerSession(sd, latent, regions=[Region(np.ones((8, 8)))])
    region = Region(np.ones((8, 8), np.float32), rw.SamplerConfig(positive="grass"), variation_seed=3)
    s = rw.RegionalSamplerSession(sd, latent, regions=[region.resized(64, 64)])
    assert s.image_size == (64, 64) and s.regions[0].mask.shape == (64, 64) and s.regions[0].variation_seed == 3


def test_a_new_latent_of_another_size_is_refused_while_the_masks_have_the_old_one():
    s = stepped()
    refused(s, lambda: setattr(s, "latent_image", rw.empty_latent(MODEL, 32, 32)),
            r"region 1: mask: .*32x32 \(height x width\), got 16x16")
    with s.hold_trait_notifications():  # both at once is a valid change
        s.latent_image = rw.empty_latent(MODEL, 8, 8)
        s.regions = [r.resized(8, 8) for r in s.regions]
    assert s.image_size == (8, 8) and s.step_index == 0 and s.latent.shape == (1, 3, 8, 8)


def test_stored_masks_are_read_only_copies():
    source = masks()[0]
    region = Region(source)
    source[:] = 0  # the caller's array is not the stored one
    assert region.mask.sum() == N * N / 2
    with pytest.raises(ValueError, match="read-only"):
        region.mask[0, 0] = 1
    assert region.mask[0, 0] == 0
    s = make()
    again = Region(s.regions[0].mask)  # a read-only array is a fine input
    assert np.array_equal(again.mask, s.regions[0].mask) and again.mask is not s.regions[0].mask
    tensor = s.regions[0].mask_tensor
    tensor += 1  # a copy too
    assert s.regions[0].mask.max() == 1


@pytest.mark.parametrize("mask, match", [
    (np.zeros((N, N), complex), "mask: expected real numbers .*complex128"),
    (torch.zeros(N, N, dtype=torch.complex64), "mask: expected real numbers .*complex64"),
    (np.full((N, N), None, object), "mask: expected real numbers .*object"),
    (np.full((N, N), "1"), "mask: expected real numbers .*<U1"),
    (np.zeros((0, N), np.float32), r"mask: expected a non-empty mask, got shape \(0, 16\)"),
    (np.zeros((N, N, 2), np.float32), "mask: expected a 2-D mask"),
    ("mask.png", "mask: expected a 2-D array or tensor, got str"),
])
def test_masks_that_are_not_real_2d_arrays_are_refused(mask, match):
    with pytest.raises(ParameterError, match=match):
        Region(mask)
    s = stepped()
    refused(s, lambda: setattr(s.regions[0], "mask", mask), match)


def test_regions_none_and_empty_latents_are_refused():
    latent = rw.empty_latent(MODEL, N, N)
    with pytest.raises(ParameterError, match="regions: expected a list of Region, got None"):
        rw.RegionalSamplerSession(MODEL, latent, regions=None)
    for bad in (torch.zeros(1, 0, N, N), torch.zeros(0, 3, N, N), torch.zeros(1, 3, 0, N)):
        with pytest.raises(ParameterError, match=rf"latent: expected a non-empty tensor .*{tuple(bad.shape)}"):
            rw.RegionalSamplerSession(MODEL, bad)
        s = stepped()
        refused(s, lambda: setattr(s, "latent_image", bad), "latent: expected a non-empty tensor")


# ---- bounded resources ----------------------------------------------------------------------------------


def test_the_overlap_factor_is_bounded_and_the_largest_is_fast():
    s = stepped()
    refused(s, lambda: setattr(s, "overlap_factor", 10001),
            r"overlap_factor: expected an integer in 0\.\.10000, got 10001")
    s.overlap_factor = 10000  # the reference's largest: instant, everything is grown to the whole picture
    s.step()
    assert all(bool(m.all()) for m in s.context.region_masks[1:])


def test_batch_index_is_bounded_by_the_batch_and_a_documented_maximum():
    latent = rw.empty_latent(MODEL, N, N, 2)
    for batch_index, match in [([10**7, 0], r"batch_index\[0\]: expected an integer in 0\.\.4095, got 10000000"),
                               ([0], r"batch_index: expected a list of 2 integers in 0\.\.4095 \(one per batch item\)"),
                               ([0, -1], r"batch_index\[1\]: expected an integer in 0\.\.4095, got -1"),
                               ("01", "batch_index: expected a list of 2 integers")]:
        with pytest.raises(ParameterError, match=match):
            rw.RegionalSamplerSession(MODEL, {"samples": latent, "batch_index": batch_index})
    s = rw.RegionalSamplerSession(MODEL, {"samples": latent, "batch_index": [4095, 3]}, steps=2)
    refused(s, lambda: setattr(s, "latent_image", rw.empty_latent(MODEL, N, N, 3)),
            "latent: expected 2 batch items \\(one per batch_index\\), got 3")


def test_denoise_cannot_ask_for_more_schedule_steps_than_the_maximum():
    s = stepped(node="RegionalSampler")
    refused(s, lambda: setattr(s, "denoise", 1e-9),
            r"denoise: steps / denoise = 4 / 1e-09 = \d+ schedule steps, over the maximum 10000; "
            r"expected denoise >= 0\.0004")
    s.denoise = 0.0004  # exactly the bound: 10000 schedule steps, 4 of them run
    refused(s, lambda: setattr(s, "steps", 5), "denoise: steps / denoise = 5 / 0.0004")
    refused(s, lambda: setattr(s, "steps", 10001), r"steps: expected an integer in 1\.\.10000, got 10001")


def test_history_limit_and_sigma_factor():
    s = stepped()
    refused(s, lambda: setattr(s, "history_limit", -1), r"history_limit: expected an integer in 0\.\.\d+, got -1")
    with pytest.raises(ValueError, match=r"sigma_factor: expected a number in \(0, 10\], got 0"):
        rw.SamplerConfig(sigma_factor=0)
    with pytest.raises(ValueError, match=r"sigma_factor: expected a number in \(0, 10\], got nan"):
        rw.SamplerConfig(sigma_factor=float("nan"))
    before = snapshot(s)
    with pytest.raises(ValueError, match=r"sigma_factor: expected a number in \(0, 10\], got 0"):
        s.regions[0].config = dataclasses.replace(s.regions[0].config, sigma_factor=0)
    assert changed(before, snapshot(s)) == []
    s.history_limit = 0  # keeps only what it must: the start, the seal and the last state
    s.run()
    assert torch.equal(s.result, make().run())


# ---- atomicity ------------------------------------------------------------------------------------------


class Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_an_interrupted_rebuild_leaves_the_session_as_it_was(exc, monkeypatch):
    s = stepped()
    before = snapshot(s)
    real_plan = rw.faithful.plan_advanced

    def interrupted(**kw):
        raise exc("interrupted while planning")

    monkeypatch.setattr(rw.faithful, "plan_advanced", interrupted)
    with pytest.raises(exc):
        s.steps = 8
    assert changed(before, snapshot(s)) == []  # steps is 4 again and step_index still 2
    monkeypatch.setattr(rw.faithful, "plan_advanced", real_plan)
    s.run()
    assert torch.equal(s.result, make().run())  # the next step did not jump


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_an_observer_that_fails_undoes_the_parameter_change(exc):
    s = stepped()
    before = snapshot(s)
    seen = []

    def observer(change):
        seen.append(change["new"])
        if change["new"] == 7:
            raise exc("observer failed")

    s.observe(observer, names=["noise_seed", "additional_mode"])
    with pytest.raises(exc):
        s.noise_seed = 7
    assert changed(before, snapshot(s)) == [] and seen == [7, 0]  # observers saw the old value come back
    s.additional_mode = "DISABLE"  # a forking parameter still works
    assert s.step_index == 2


def test_a_region_change_whose_fork_fails_is_undone(monkeypatch):
    s = stepped()
    before = snapshot(s)
    monkeypatch.setattr(s, "_publish", lambda state: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        s.regions[0].variation_strength = 0.5
    monkeypatch.undo()
    assert s.regions[0].variation_strength == 0.0 and changed(before, snapshot(s)) == []


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_substep_is_atomic_against_observers(exc):
    s = stepped()
    fresh = stepped()
    before = snapshot(s)
    fail = {"on": True}

    def observer(change):
        if fail["on"]:
            raise exc("observer failed")

    s.observe(observer, names=["latent"])
    with pytest.raises(exc):
        s.substep()
    assert changed(before, snapshot(s)) == []  # not advanced
    fail["on"] = False
    s.substep()
    fresh.substep()
    assert s.phase == fresh.phase and torch.equal(s.latent, fresh.latent)


def test_an_interrupted_reset_leaves_the_session_as_it_was(monkeypatch):
    s = stepped()
    before = snapshot(s)
    real = s._publish
    calls = []

    def interrupted(state):
        calls.append(state)
        if len(calls) == 1:
            raise KeyboardInterrupt()  # after the new plan and history are in place
        real(state)

    monkeypatch.setattr(s, "_publish", interrupted)
    with pytest.raises(KeyboardInterrupt):
        s.reset()
    assert changed(before, snapshot(s)) == [] and s.cursor == before["_cursor"] > 0
