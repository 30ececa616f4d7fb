"""The regional sampler on a flow (CONST) model: one real masked flow call against the reference's
numbers, the session against the straight-line loop, the leftover-noise hand-over, persistence and
the EPS-only options."""
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import regional_widgets as rw
from regional_widgets.sampling import call as call_module
from regional_widgets.sampling.call import FlowModelWarning, sampler_call
from regional_widgets.sampling.model_sampling import sd3_model_sampling
from regional_widgets.sampling.schedules import sampler_sigmas
from tests.session import reference_loop

FLOW = rw.models.ToyWorld(n_exemplars=120, image_size=32, prediction="flow")
FLOW_SD3 = rw.models.ToyWorld("sd3", n_exemplars=120, image_size=32, prediction="flow")
FIXTURES = json.loads((Path(__file__).parents[1] / "data" / "family_fixtures.json").read_text())


# ---- one real masked flow call (spec model_families.md §2.2, family_fixtures.json) -------------

@pytest.mark.parametrize("sampler", ["euler", "euler_ancestral"])
@pytest.mark.parametrize("add_noise", [False, True])
def test_a_masked_flow_call_returns_the_reference_numbers(monkeypatch, sampler, add_noise):
    chunk = FIXTURES["flow_inpaint_one_step_chunk"]
    case = chunk[f"{sampler}_addnoise{add_noise}_sigmas[3:5]"]
    n = torch.sin(torch.arange(8, dtype=torch.float32)).reshape(1, 2, 2, 2)
    latent = (0.5 * torch.cos(torch.arange(8, dtype=torch.float32))).reshape(1, 2, 2, 2)
    mask = torch.tensor(chunk["setup"]["mask"]).reshape(1, 2, 2, 2)
    monkeypatch.setattr(call_module.mask_ops, "to_latent", lambda m, shape: m)  # the fixture's per-element mask

    def denoise(x, s):
        s = s.double().reshape(-1, 1, 1, 1)
        return ((1 - s) * 0.25 / ((1 - s) ** 2 * 0.25 + s ** 2) * x.double()).float()

    ms = sd3_model_sampling()
    total = torch.tensor(chunk["setup"]["sigmas_total(simple,10)"])
    assert torch.equal(total, sampler_sigmas(ms, sampler, "simple", 10))
    res = sampler_call(denoise, latent, sampler=sampler, total_sigmas=total, start=3, end=4, leftover=True,
                       add_noise=add_noise, seed=123, sigma_max=ms.sigma_max, noise=n if add_noise else None,
                       noise_mask=mask, model_sampling=ms)
    assert torch.equal(res.sigmas, torch.tensor(case["sigmas"]))
    torch.testing.assert_close(res.samples.flatten(), torch.tensor(case["output(after inverse_noise_scaling)"]),
                               atol=2e-6, rtol=1e-6)
    if sampler == "euler" and not add_noise:  # the exact keep, in the rescaled representation
        kept = mask.flatten() == 0
        assert (res.samples.flatten()[kept] - latent.flatten()[kept]).abs().max() <= 6e-8


# ---- the session against the straight-line loop -----------------------------------------------

def _mask(rows, cols):
    m = np.zeros((32, 32), np.float32)
    m[rows, cols] = 1.0
    return m


MASKS = [_mask(slice(18, 32), slice(0, 32)), _mask(slice(0, 14), slice(0, 14)), _mask(slice(4, 24), slice(12, 32))]
WORDS = ["grass", "brick", "water"]
BASE = rw.SamplerConfig(sampler="euler", scheduler="simple", cfg=3.0, positive="sky")


def regions(samplers, schedulers=("simple", "normal", "beta"), variation=0.0):
    return [rw.Region(m, rw.SamplerConfig(sampler=s, scheduler=sch, cfg=2.5, positive=w), variation_seed=7 + j,
                      variation_strength=variation)
            for j, (m, s, sch, w) in enumerate(zip(MASKS, samplers, schedulers, WORDS))]


FLOW_CASES = {
    "deterministic": dict(node="advanced", samplers=["euler", "dpmpp_2m"], params=dict()),
    "ancestral_rf": dict(node="advanced", samplers=["euler_ancestral", "dpm_2_ancestral", "dpmpp_2s_ancestral"],
                         params=dict(restore_latent=False), variation=0.3),
    "sde_lambda": dict(node="advanced", samplers=["dpmpp_2m_sde", "er_sde", "seeds_2"],
                       params=dict(additional_mode="DISABLE")),
    "recovery": dict(node="advanced", samplers=["dpmpp_sde", "uni_pc"],
                     params=dict(additional_mode="ratio between", additional_sampler="heun",
                                 additional_sigma_ratio=0.4)),
    "leftover_noise": dict(node="advanced", samplers=["dpmpp_3m_sde", "lcm"],
                           params=dict(return_with_leftover_noise=True, restore_latent=False, end_at_step=5)),
    "denoise_below_1": dict(node="regional", samplers=["euler", "dpmpp_2m_sde"],
                            params=dict(denoise=0.5, base_only_steps=1)),
}


def _run_case(model, case):
    regs = regions(case["samplers"], variation=case.get("variation", 0.0))
    if case["node"] == "advanced":
        latent = rw.empty_latent(model, 32, 32)
        params = dict(steps=6, noise_seed=4, **case["params"])
        got = rw.RegionalSamplerSession(model, latent, base=BASE, regions=regs, **params).run()
        want = reference_loop.advanced(model, latent, base=BASE, regions=regs, **params)
    else:  # img2img: a picture of the model's own, half denoised
        latent = model.encode_image(model.decode(rw.empty_latent(model, 32, 32) + 0.3))
        params = dict(steps=5, seed=2, **case["params"])
        got = rw.RegionalSamplerSession.regional_sampler(model, latent, base=BASE, regions=regs, **params).run()
        want = reference_loop.regional(model, latent, base=BASE, regions=regs, **params)
    return got, want


@pytest.mark.parametrize("name", list(FLOW_CASES))
def test_flow_session_matches_the_straight_line_loop(name):
    got, want = _run_case(FLOW, FLOW_CASES[name])
    assert torch.isfinite(got).all()
    assert (got - want).abs().max().item() <= 1e-6


@pytest.mark.parametrize("name", ["deterministic", "denoise_below_1"])
def test_flow_session_matches_the_loop_in_the_sd3_latent_space(name):
    got, want = _run_case(FLOW_SD3, FLOW_CASES[name])
    assert torch.isfinite(got).all() and got.shape == (1, 16, 4, 4)
    assert (got - want).abs().max().item() <= 1e-6


def test_flow_differs_from_eps_and_each_sampler_family_ran():
    eps = rw.models.ToyWorld(n_exemplars=120, image_size=32)
    flow_out, _ = _run_case(FLOW, FLOW_CASES["ancestral_rf"])
    eps_out, _ = _run_case(eps, FLOW_CASES["ancestral_rf"])
    assert (flow_out - eps_out).abs().max() > 1e-2


# ---- the leftover-noise hand-over (spec model_families.md §2.1) --------------------------------

def test_leftover_latents_are_x_over_one_minus_sigma_and_the_round_trip_is_exact():
    regs = regions(["euler"])
    s = rw.RegionalSamplerSession(FLOW, rw.empty_latent(FLOW, 32, 32), base=BASE, regions=regs, steps=8)
    s.substep()  # the first base call: from pure noise at sigma 1 to sigma_1
    sigma_1 = s.sigma_next
    noise = torch.randn(s.latent.shape, generator=torch.Generator().manual_seed(0))
    assert s.sigma == 1.0 and 0.95 < sigma_1 < 1.0
    # the base area after one Euler step from pure noise: x = (s1/s0) n + (1 - s1/s0) D, returned / (1 - s1)
    big = s.latent.abs().mean() / noise.abs().mean()
    assert big > 10  # ~ sigma_1 / (1 - sigma_1): the latent handed over is much larger than the noise
    # a zero-noise call at sigma_1 gives back the flow state (1 - s1) * latent: the kept area of the region
    # call (outside its mask) comes back exactly (Euler: d = 0 there)
    s.substep()
    out = s.latent
    keep = torch.from_numpy(MASKS[0]) == 0
    grown = rw.sampling.masks.grow(torch.from_numpy(MASKS[0]), s.overlap_factor)
    outside = (grown == 0) & keep
    base_latent = s.history[1].latent
    assert ((out - base_latent)[..., outside]).abs().max() <= 1e-6 * base_latent.abs().max()


# ---- persistence and scrubbing ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["faithful", "coherent"])
def test_save_load_and_goto_on_a_flow_session(tmp_path, mode):
    make = lambda: rw.RegionalSamplerSession(FLOW_SD3, rw.empty_latent(FLOW_SD3, 32, 32), base=BASE,  # noqa: E731
                                             regions=regions(["dpmpp_2m_sde", "euler_ancestral"]), steps=6, mode=mode)
    full = make().run().clone()
    s = make()
    s.step()
    s.step()
    s.save(tmp_path / "flow")
    loaded = rw.RegionalSamplerSession.load(tmp_path / "flow", FLOW_SD3)
    assert loaded.step_index == 2 and torch.equal(loaded.latent, s.latent)
    assert torch.equal(loaded.run(), full)
    loaded.goto(1)
    kept = loaded.latent.clone()
    assert torch.equal(loaded.run(), full)
    loaded.goto(1)
    assert torch.equal(loaded.latent, kept) and 0.0 <= float(loaded.sigma_map.max()) <= 1.0


# ---- the options the reference leaves EPS-only ---------------------------------------------------

@pytest.mark.parametrize("mode", ["faithful", "coherent"])
def test_sigma_factor_above_one_is_refused_on_flow_with_the_reason(mode):
    base = rw.SamplerConfig(sampler="euler", scheduler="simple", cfg=3.0, positive="sky", sigma_factor=1.5)
    with pytest.raises(ValueError, match=r"sigma_factor.*EPS-only"):  # refused when built, or at the first call
        rw.RegionalSamplerSession(FLOW, rw.empty_latent(FLOW, 32, 32), base=base, regions=regions(["euler"]),
                                  steps=4, mode=mode).run()
    s = rw.RegionalSamplerSession(FLOW, rw.empty_latent(FLOW, 32, 32), base=BASE, regions=regions(["euler"]),
                                  steps=4, mode=mode)
    with pytest.raises(ValueError, match=r"sigma_factor.*EPS-only"):
        s.base = base
        s.run()
    assert s.step_index == 0  # nothing half-done
    ok = rw.SamplerConfig(sampler="euler", scheduler="simple", cfg=3.0, positive="sky", sigma_factor=0.9)
    out = rw.RegionalSamplerSession(FLOW, rw.empty_latent(FLOW, 32, 32), base=ok, regions=regions(["euler"]),
                                    steps=4, mode=mode).run()
    assert torch.isfinite(out).all()


def test_ddpm_as_recovery_sampler_on_flow_warns_with_the_reason():
    s = rw.RegionalSamplerSession(FLOW, rw.empty_latent(FLOW, 32, 32), base=BASE, regions=regions(["dpmpp_sde"]),
                                  steps=4, additional_mode="ratio between", additional_sampler="ddpm")
    with pytest.warns(FlowModelWarning, match="ddpm on a flow .*no CONST branch"):
        out = s.run()
    assert torch.isfinite(out).all()
    eps = rw.models.ToyWorld(n_exemplars=120, image_size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FlowModelWarning)  # EPS: no warning
        rw.RegionalSamplerSession(eps, rw.empty_latent(eps, 32, 32), base=BASE, regions=regions(["dpmpp_sde"]),
                                  steps=4, additional_mode="ratio between", additional_sampler="ddpm").run()


def test_a_flow_session_loads_only_onto_its_model_family(tmp_path):
    from regional_widgets.io.session_files import SessionFileError

    s = rw.RegionalSamplerSession(FLOW, rw.empty_latent(FLOW, 32, 32), base=BASE, regions=regions(["euler"]), steps=4)
    s.step()
    s.save(tmp_path / "flow")
    doc = json.loads((tmp_path / "flow" / "session.json").read_text())
    assert doc["model_sampling"]["parametrisation"] == "const"
    eps = rw.models.ToyWorld(n_exemplars=120, image_size=32)
    with pytest.raises(SessionFileError, match=r"saved with a flow \(CONST\) model, this one is EPS"):
        rw.RegionalSamplerSession.load(tmp_path / "flow", eps)
    shifted = rw.models.ToyWorld(n_exemplars=120, image_size=32, prediction="flow", shift=2.0)
    with pytest.raises(SessionFileError, match="saved with the model sampling ModelSamplingDiscreteFlow\\(shift=3"):
        rw.RegionalSamplerSession.load(tmp_path / "flow", shifted)
    del doc["model_sampling"]  # a file written before the key: still read
    (tmp_path / "flow" / "session.json").write_text(json.dumps(doc))
    assert rw.RegionalSamplerSession.load(tmp_path / "flow", FLOW).step_index == 1


def test_the_picture_of_a_flow_session_is_the_flow_state_at_each_pixels_sigma():
    """`session.picture` (what plot, the canvas, save_png and sweep thumbnails show): on a flow model a
    held latent x / (1 - sigma) is shown as (1 - sigma) * x in model space, pixel by pixel."""
    from regional_widgets.models.base import latent_format, process_in, process_out

    mask = np.zeros((32, 32), np.float32)
    mask[:16] = 1
    session = rw.RegionalSamplerSession(FLOW_SD3, rw.empty_latent(FLOW_SD3, 32, 32), regions=[
        rw.Region(mask, rw.SamplerConfig(positive="brick"))], base=rw.SamplerConfig(positive="sky"), steps=6)
    with pytest.raises(ValueError, match="which: expected 'latent' or 'result', got 'x0'"):
        session.picture("x0")
    session.step()
    session.step()
    assert session.picture("result") is None and float(session.sigma_map.max()) > 0.3
    fmt = latent_format(FLOW_SD3)
    expected = process_out((1 - session.sigma_map) * process_in(session.latent, fmt), fmt)
    assert torch.allclose(session.picture(), expected, atol=1e-6)
    assert not torch.allclose(session.picture(), session.latent, atol=1e-2)
    eps = rw.models.ToyWorld(n_exemplars=120, image_size=32)
    plain = rw.RegionalSamplerSession(eps, rw.empty_latent(eps, 32, 32), steps=4)
    plain.run()
    assert plain.picture() is plain.latent and plain.picture("result") is plain.result
