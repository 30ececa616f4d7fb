"""Every sampler on a flow (CONST) model against the reference's own outputs (models.md, "Flow sampler
fixtures"; spec regional_sampler.md §3.6).

SD3's model sampling (discrete flow, shift 3, CONST) and the closed-form flow mixture denoiser
through the project's CFG. The start is the model sampling's ``noise_scaling`` of cos(0.7 idx) on a
zero latent; the sampler learns the model is CONST from the model sampling given to it. Each of the
300 cases: the raw output bit-identical to the exact file, within 1e-5 of the 7-decimal file, the
end-of-call rescale (``inverse_noise_scaling`` at `final_sigma`) bit-identical to ``ksampler_output``,
model calls, their sigmas and injected-noise draws as the info file lists. Seeded cases use seed 0.
"""
import warnings

import pytest
import torch

from regional_widgets.models.base import cfg_denoiser
from regional_widgets.sampling import samplers
from regional_widgets.sampling.model_sampling import ModelSamplingDiscreteFlow, sd3_model_sampling
from regional_widgets.sampling.samplers.core import final_sigma
from tests.oracles import FixtureNoise
from tests.oracles_flow import (FLOW_SEED, flow_exact, flow_fixture_model, flow_fixtures, flow_fixtures_info,
                                flow_sigmas, flow_start_noise)

SD3 = sd3_model_sampling()
CASES = sorted(flow_fixtures())
NAMES = sorted({key.split("/")[0] for key in CASES})


def run_case(key):
    """Run one case as the reference was driven: (raw output, end sigma, model, noise sampler)."""
    name, case, part = key.split("/")
    sigmas = flow_sigmas(case, part)
    model, cfg = flow_fixture_model(case)
    denoise = cfg_denoiser(model, model.encode("positive"), model.encode("negative"), cfg)
    injected = flow_fixtures_info()["samplers"][name]["noise_sampler_injected"] and case != "simple10_seeded"
    noise = FixtureNoise() if injected else None
    x = SD3.noise_scaling(sigmas[0], flow_start_noise(), torch.zeros(1, 2, 4, 4), SD3.is_max_denoise(sigmas[0]))
    out = samplers.sample(denoise, x, sigmas, name, seed=FLOW_SEED, noise_sampler=noise, model_sampling=SD3)
    return out, final_sigma(name, sigmas), model, noise


def test_the_flow_fixtures_cover_all_42_names_and_300_cases():
    assert len(NAMES) == 42 and len(CASES) == 300
    assert set(NAMES) == set(flow_fixtures_info()["samplers"]) == set(samplers.SAMPLER_NAMES)


@pytest.mark.parametrize("key", CASES)
def test_sampler_on_const_is_bit_identical_to_the_reference(key):
    name, case, part = key.split("/")
    out, end_sigma, model, noise = run_case(key)
    portable = torch.tensor(flow_fixtures()[key]).view_as(out)
    assert (out - portable).abs().max().item() <= 1e-5, f"{key}: off the 7-decimal fixture"
    expected = flow_exact(key)
    assert torch.equal(out, expected), f"{key}: not bit-identical, max |diff| {(out - expected).abs().max().item():.3g}"
    ksampler = SD3.inverse_noise_scaling(end_sigma, out)
    assert torch.equal(ksampler, flow_exact(key, "ksampler_output")), f"{key}: ksampler_output"
    run = flow_fixtures_info()["samplers"][name]["runs"][f"{case}/{part}"]
    assert float(end_sigma) == run["sigma_seen_by_inverse_noise_scaling"]
    assert model.evaluations == run["model_calls"], f"{key}: model calls"
    assert model.sigmas == pytest.approx(run["model_call_sigmas"], rel=1e-7, abs=5e-9), f"{key}: call sigmas"  # 8 decimals
    assert (None if noise is None else noise.k) == run["fixture_noise_draws"], f"{key}: fixture noise draws"


def test_the_first_sigma_offset_is_the_flow_percent_to_sigma():
    info = flow_fixtures_info()
    assert SD3.percent_to_sigma(1e-4) == info["percent_to_sigma_sd3_shift3"]["0.0001"]
    offset = samplers.start("dpmpp_2m_sde", torch.zeros(1, 2, 4, 4), flow_sigmas("simple10", "full"),
                            model_sampling=SD3).sigmas
    assert offset[0].item() == info["percent_to_sigma_1e-4_as_float32"]
    assert torch.equal(offset[1:], flow_sigmas("simple10", "full")[1:])
    # an EPS model sampling leaves the list alone; so does a CONST one for the RF samplers
    assert samplers.start("dpmpp_2m_sde", torch.zeros(1, 2, 4, 4), flow_sigmas("simple10", "full")).sigmas[0] == 1
    assert samplers.start("euler_ancestral", torch.zeros(1, 2, 4, 4), flow_sigmas("simple10", "full"),
                          model_sampling=SD3).sigmas[0] == 1


@pytest.mark.parametrize("name", NAMES)
def test_exactly_the_19_const_samplers_differ_from_their_eps_forms_as_measured(name):
    """The reference's check (info ``const_vs_eps``): the same flow table with an EPS parametrisation,
    the same start and denoiser; the raw outputs differ by what the reference measured."""
    eps_flow = ModelSamplingDiscreteFlow(3.0, 1000, parametrisation="eps")
    measured = flow_fixtures_info()["const_vs_eps"][name]["per_case"]
    for case_part, expected in measured.items():
        case, part = case_part.split("/")
        sigmas = flow_sigmas(case, part)
        x = SD3.noise_scaling(sigmas[0], flow_start_noise(), torch.zeros(1, 2, 4, 4))
        outs = []
        for sampling in (SD3, eps_flow):
            model, cfg = flow_fixture_model(case)
            denoise = cfg_denoiser(model, model.encode("positive"), model.encode("negative"), cfg)
            injected = flow_fixtures_info()["samplers"][name]["noise_sampler_injected"]
            outs.append(samplers.sample(denoise, x, sigmas, name, seed=FLOW_SEED, model_sampling=sampling,
                                        noise_sampler=FixtureNoise() if injected else None))
        diff = (outs[0] - outs[1]).abs().max().item()
        assert diff == pytest.approx(expected, rel=1e-6, abs=0), f"{name}/{case_part}"
    assert any(v > 0 for v in measured.values()) == samplers.get_sampler(name).model_sampling


ABOVE_1 = flow_fixtures_info()["sigmas_above_1"]


@pytest.mark.parametrize("label", sorted(ABOVE_1))
def test_sigma_lists_above_1_give_the_reference_nans(label):
    """§3.6.6: reproducing the reference means producing its NaNs (`flow_checks` refuses such lists
    upstream); the (O) samplers replace only entry 0, the RF and flow-lambda branches go NaN above 1."""
    sigmas = torch.tensor(ABOVE_1[label]["sigmas"], dtype=torch.float32)
    x = SD3.noise_scaling(sigmas[0], flow_start_noise(), torch.zeros(1, 2, 4, 4))
    for name, expected in ABOVE_1[label]["result"].items():
        model, cfg = flow_fixture_model("simple10")
        denoise = cfg_denoiser(model, model.encode("positive"), model.encode("negative"), cfg)
        injected = flow_fixtures_info()["samplers"][name]["noise_sampler_injected"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            out = samplers.sample(denoise, x, sigmas, name, seed=FLOW_SEED, model_sampling=SD3,
                                  noise_sampler=FixtureNoise() if injected else None)
        got = "finite" if torch.isfinite(out).all() else (
            f"non-finite ({int(out.isnan().sum())} NaN, {int(out.isinf().sum())} inf of {out.numel()})")
        assert got == expected, f"{label}: {name}"
