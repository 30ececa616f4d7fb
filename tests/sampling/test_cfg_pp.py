"""The CFG++ channel (the unconditional prediction beside the guided one) and the samplers of
issue 12 that use it or share its families: the *_cfg_pp four, res_multistep (4), gradient_estimation (2).

Bitwise agreement with the reference on every fixture case is test_sampler_fixtures.py's job;
here: the model layer's rules (§3.5.1: no cfg-1 skip, ``D = U + (C - U) * cfg``, one model call
per evaluation, batched or not), the masked call (D blended, U not), call counts on the fixture
cases with a batched model, and convergence on the exact Gaussian flow.
"""
import math

import pytest
import torch

from regional_widgets.models.base import batched_cfg, cfg_denoiser
from regional_widgets.sampling import samplers
from regional_widgets.sampling.call import sampler_call
from regional_widgets.sampling.samplers.core import GuidedDenoiser, call_model_uncond, denoise_with_uncond
from tests.oracles import (FIXTURE_IDX, FIXTURE_SEED, FixtureModel, FixtureNoise, fixture_exact, fixture_sigmas,
                           fixture_start, sampler_fixtures_info)
from tests.sampling.test_samplers_extra import STEPS, exponential, flow_errors, karras

CFG_PP = ("euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_2m_cfg_pp",
          "res_multistep_cfg_pp", "res_multistep_ancestral_cfg_pp", "gradient_estimation_cfg_pp")
MINE = CFG_PP + ("res_multistep", "res_multistep_ancestral", "gradient_estimation")
KARRAS10 = fixture_sigmas("karras10", "full")


class OneCond(FixtureModel):
    """The fixtures' two-branch model, counting every call and every unconditional call."""

    def __init__(self, uncond_differs=True):
        super().__init__(uncond_differs)
        self.calls, self.uncond_calls, self.encoded = 0, 0, []

    def encode(self, prompt):
        self.encoded.append(prompt)
        return super().encode(prompt)

    def __call__(self, x, sigma, cond):
        self.calls += 1
        self.uncond_calls += cond != "positive"
        return super().__call__(x, sigma, cond)


class Batched(OneCond):
    """The same model with ``call_batch``: one call for any number of (x, cond) items."""

    def __init__(self, uncond_differs=True):
        super().__init__(uncond_differs)
        self.batches = 0

    def call_batch(self, x, sigma, conds):
        self.batches += 1
        return torch.cat([FixtureModel.__call__(self, x[k:k + 1], sigma[k:k + 1], c) for k, c in enumerate(conds)])


X = fixture_start(KARRAS10) * 0.3
SIGMA = KARRAS10[4:5]


# --- registration ---------------------------------------------------------------------------------

def test_registered_with_their_channel_and_noise_kind():
    for name in MINE:
        spec = samplers.get_sampler(name)
        assert spec.uncond == (name in CFG_PP), name
        draws = name.startswith("res_multistep") or name in ("euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp")
        assert spec.noise == ("default" if draws else None), name
        assert name in samplers.SAMPLER_NAMES
    assert not any(samplers.get_sampler(n).uncond for n in samplers.SAMPLER_NAMES if n not in CFG_PP)


# --- the channel in the model layer ----------------------------------------------------------------

@pytest.mark.parametrize("cfg", [1.0, 1.5, 0.0])
def test_one_cond_model_makes_its_two_calls_and_d_is_u_plus_scaled_difference(cfg):
    model = OneCond()
    denoise = cfg_denoiser(model, model.encode("positive"), model.encode("negative"), cfg)
    d, u = denoise.with_uncond(X, SIGMA)
    assert (model.calls, model.uncond_calls) == (2, 1)  # also at cfg 1: the skip is off for CFG++
    c, u_ref = model.cond(X, SIGMA), model.uncond(X, SIGMA)
    assert torch.equal(u, u_ref)
    assert torch.equal(d, u_ref + (c - u_ref) * cfg)  # float32, in exactly this order
    assert not torch.equal(u, c)


def test_the_plain_call_keeps_the_cfg_1_skip():
    model = OneCond()
    denoise = cfg_denoiser(model, model.encode("positive"), model.encode("negative"), 1.0)
    assert torch.equal(denoise(X, SIGMA), model.cond(X, SIGMA))
    assert (model.calls, model.uncond_calls) == (1, 0)


def test_at_cfg_1_with_identical_branches_d_is_exactly_c():
    model = OneCond(uncond_differs=False)
    d, u = cfg_denoiser(model, model.encode("positive"), model.encode("negative"), 1.0).with_uncond(X, SIGMA)
    assert torch.equal(d, model.cond(X, SIGMA)) and torch.equal(u, d)


def test_cfg_1_encodes_the_empty_negative_only_when_a_cfg_pp_sampler_asks():
    model = OneCond()
    denoise = cfg_denoiser(model, model.encode("positive"), None, 1.0)
    denoise(X, SIGMA)
    assert model.encoded == ["positive"]
    denoise.with_uncond(X, SIGMA)
    denoise.with_uncond(X, SIGMA)
    assert model.encoded == ["positive", ""]


@pytest.mark.parametrize("cfg", [1.0, 2.5])
def test_a_batched_model_gets_one_call_with_both_branches(cfg):
    one, batched = OneCond(), Batched()
    d1, u1 = cfg_denoiser(one, "positive", "negative", cfg).with_uncond(X, SIGMA)
    d2, u2 = cfg_denoiser(batched, "positive", "negative", cfg).with_uncond(X, SIGMA)
    assert batched.batches == 1 and batched.calls == 0
    assert torch.equal(d1, d2) and torch.equal(u1, u2)


def test_batched_cfg_pairs_keep_the_negative_only_for_flagged_parts():
    model = Batched()
    parts = [("positive", "negative", 1.0), ("positive", "negative", 1.0), ("positive", "negative", 3.0)]
    plain = batched_cfg(model, X, SIGMA, parts)
    assert all(isinstance(p, torch.Tensor) for p in plain)
    pairs = batched_cfg(model, X, SIGMA, parts, uncond=[True, False, False])
    c, u = model.cond(X, SIGMA), model.uncond(X, SIGMA)
    assert torch.equal(pairs[0][0], u + (c - u) * 1.0) and torch.equal(pairs[0][1], u)
    assert torch.equal(pairs[1][0], c) and pairs[1][1] is None  # cfg 1, not flagged: skip kept
    assert torch.equal(pairs[2][0], plain[2]) and pairs[2][1] is None
    assert model.batches == 2


def test_a_plain_denoiser_has_no_guidance_so_u_is_d():
    calls = []

    def plain(x, sigma):
        calls.append(1)
        return x * 0.5

    d, u = denoise_with_uncond(plain, X, SIGMA)
    assert d is u and len(calls) == 1
    d, u = call_model_uncond(GuidedDenoiser(plain, lambda x, s: (x, -x)), X, SIGMA[0])
    assert torch.equal(u, -X)


# --- the masked (inpainting) call -------------------------------------------------------------------

def masked_setup():
    latent = 0.4 * torch.sin(1.3 * FIXTURE_IDX)
    noise = torch.cos(0.9 * FIXTURE_IDX + 0.2)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :, :2] = 1.0
    mask[..., 3, 2] = 0.5  # a soft value
    return latent, noise, mask


def hand_step(latent, noise, mask, cfg, s, s_next):
    """One CFG++ Euler step of a masked call, by hand (math form, float64)."""
    model = OneCond()
    m = mask.expand_as(latent)
    x = latent + noise * s  # add_noise with the call's noise, no max-denoise
    x_in = x * m + (latent + noise * s) * (1 - m)
    c, u = model.cond(x_in, s.view(1)), model.uncond(x_in, s.view(1))
    d = (u + (c - u) * cfg) * m + latent * (1 - m)
    blended_u = u * m + latent * (1 - m)
    step = lambda uu: (d.double() + (s_next / s).double() * (x.double() - uu.double())).float()  # noqa: E731
    return d, step(u), step(blended_u)


@pytest.mark.parametrize("cfg", [1.0, 1.5])
def test_masked_call_blends_d_and_passes_u_raw(cfg):
    latent, noise, mask = masked_setup()
    model = OneCond()
    denoise = cfg_denoiser(model, "positive", "negative", cfg)
    out = sampler_call(denoise, latent, sampler="euler_cfg_pp", total_sigmas=KARRAS10, start=3, end=4,
                       leftover=True, add_noise=False, noise=noise, seed=0, sigma_max=KARRAS10[0] * 2,
                       noise_mask=mask)
    d, want, wrong = hand_step(latent, noise, mask, cfg, KARRAS10[3], KARRAS10[4])
    assert out.model_calls == 1 and model.calls == 2  # one evaluation, both branches
    assert torch.equal(out.denoised, d)  # the blended guided prediction, bit for bit
    assert (out.samples - want).abs().max().item() <= 2e-6
    assert (out.samples - wrong).abs().max().item() > 1e-2  # a blended U would be far off


def test_masked_call_to_sigma_0_keeps_the_latent_outside_exactly():
    latent, noise, mask = masked_setup()
    out = sampler_call(cfg_denoiser(OneCond(), "positive", "negative", 1.5), latent, sampler="euler_cfg_pp",
                       total_sigmas=KARRAS10, start=9, end=10, leftover=True, add_noise=False, noise=noise, seed=0,
                       sigma_max=KARRAS10[0] * 2, noise_mask=mask)
    outside = (mask == 0).expand_as(latent)
    assert torch.equal(out.samples[outside], latent[outside])  # x = D, and D outside is the latent


# --- the fixture cases with a batched model: one model call per evaluation ------------------------

@pytest.mark.parametrize("part", ["full", "slice_3_4"])
@pytest.mark.parametrize("case", ["karras10_cfg", "karras10"])
@pytest.mark.parametrize("name", MINE)
def test_batched_model_is_bit_identical_with_one_call_per_evaluation(name, case, part):
    key = f"{name}/{case}/{part}"
    sigmas = fixture_sigmas(case, part)
    cfg = 1.5 if case == "karras10_cfg" else 1.0
    batched, one = Batched(uncond_differs=case == "karras10_cfg"), OneCond(uncond_differs=case == "karras10_cfg")
    info = sampler_fixtures_info()[name]
    outs = []
    for model in (batched, one):
        noise = FixtureNoise() if info["noise_sampler_injected"] else None
        denoise = cfg_denoiser(model, "positive", "negative", cfg)
        outs.append(samplers.sample(denoise, fixture_start(sigmas), sigmas, name, seed=FIXTURE_SEED,
                                    noise_sampler=noise))
    assert torch.equal(outs[0], fixture_exact(key)) and torch.equal(outs[1], fixture_exact(key))
    nfe = info["model_calls"][f"{case}/{part}"]
    both_branches = cfg != 1.0 or name in CFG_PP  # the cfg-1 skip holds for the others only
    assert batched.batches == (nfe if both_branches else 0)
    assert batched.calls == (0 if both_branches else nfe)
    assert (one.calls, one.uncond_calls) == ((2 * nfe, nfe) if both_branches else (nfe, 0))


def test_cfg_pp_at_cfg_1_uses_the_unconditional_branch():
    """cfg 1 with differing branches: D = C, but the direction comes from U (unlike euler)."""
    model = OneCond()
    denoise = cfg_denoiser(model, "positive", "negative", 1.0)
    x = fixture_start(KARRAS10)
    a = samplers.sample(denoise, x, KARRAS10[:6], "euler_cfg_pp")
    b = samplers.sample(denoise, x, KARRAS10[:6], "euler")
    same = cfg_denoiser(OneCond(uncond_differs=False), "positive", "negative", 1.0)
    c = samplers.sample(same, x, KARRAS10[:6], "euler_cfg_pp")
    assert (a - b).abs().max().item() > 1e-2
    assert (c - b).abs().max().item() <= 1e-5  # identical branches: CFG++ Euler is Euler


# --- convergence on the exact Gaussian flow (a plain denoiser: uncond = cond) ----------------------

MIN_ORDER = {
    "euler_cfg_pp": 0.9,                 # 0.99 0.99 / 0.99 0.99 (= Euler when U = D)
    "dpmpp_2m_cfg_pp": 1.75,             # 1.97 1.99 / 1.83 1.93
    "res_multistep": 1.9,                # 2.00 2.01 / 1.96 1.99
    "res_multistep_cfg_pp": 1.9,         # the same
    "gradient_estimation": 0.85,         # 0.89 0.95 / 0.88 0.94: first order, a smaller constant than Euler
    "gradient_estimation_cfg_pp": 0.85,  # the same
}


@pytest.mark.parametrize("schedule", [karras, exponential])
@pytest.mark.parametrize("name", sorted(MIN_ORDER))
def test_converges_to_the_exact_gaussian_flow(name, schedule):
    errors = flow_errors(name, schedule)
    orders = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(b < a for a, b in zip(errors, errors[1:])), errors
    assert min(orders) >= MIN_ORDER[name], orders
    if name.startswith("gradient_estimation"):  # the correction helps at every step count
        assert all(e < 0.99 * eu for e, eu in zip(errors, flow_errors("euler", schedule))), errors


@pytest.mark.parametrize("plain", ["res_multistep", "gradient_estimation", "dpmpp_2m"])
def test_cfg_pp_variant_equals_the_plain_sampler_when_uncond_is_cond(plain):
    """U = D: CFG++ moves reduce to the plain ones (up to float order) at every step count."""
    cfg_pp, ref = flow_errors(plain + "_cfg_pp", karras), flow_errors(plain, karras)
    assert len(cfg_pp) == len(STEPS) and cfg_pp == pytest.approx(ref, rel=1e-6)
