"""The reference's model sampling (spec model_families.md §1-§3) against its own numbers
(``family_fixtures.json``, printed with 8 significant digits): the parametrisations' noise
operations, the discrete, discrete-flow and Flux schedules, the ModelSamplingFlux node's shift, the
nine schedulers on flow tables, KSampler's denoise slices, latent formats, and the Gaussian toy."""
import json
import math
from pathlib import Path

import pytest
import torch

from regional_widgets.sampling import samplers
from regional_widgets.sampling.latent_formats import LATENT_FORMATS
from regional_widgets.sampling.model_sampling import (ModelSamplingDiscrete, ModelSamplingDiscreteFlow,
                                                      ModelSamplingFlux, as_model_sampling, flux_model_sampling,
                                                      flux_schnell_model_sampling, flux_shift, is_const,
                                                      sd15_model_sampling, sd15_table, sd3_model_sampling)
from regional_widgets.sampling.schedules import SCHEDULER_NAMES, calculate_sigmas, ksampler_sigmas

FIXTURES = json.loads((Path(__file__).parents[1] / "data" / "family_fixtures.json").read_text())
TABLES = {k: v for k, v in FIXTURES["sigma_tables"].items() if not k.startswith("_")}


def build(name):
    entry = TABLES[name]
    if name == "sd15_eps":
        return sd15_model_sampling()
    if entry["classes"][0] == "ModelSamplingFlux":
        return ModelSamplingFlux(entry["shift"])
    return ModelSamplingDiscreteFlow(entry["shift"], entry["multiplier"])


def close8(got, expected):
    """Equal to a value printed with 8 significant digits (float32 rounding included)."""
    return math.isclose(float(got), expected, rel_tol=1e-7, abs_tol=1e-12)


@pytest.mark.parametrize("name", sorted(TABLES))
def test_sigma_tables_and_maps(name):
    entry, ms = TABLES[name], build(name)
    assert type(ms).__name__ == entry["classes"][0] and ms.parametrisation == entry["classes"][1].lower()
    assert len(ms.sigmas) == entry["len"] and ms.sigmas.dtype == torch.float32
    assert close8(ms.sigma_min, entry["sigma_min"]) and close8(ms.sigma_max, entry["sigma_max"])
    assert all(close8(ms.sigmas[int(i)], v) for i, v in entry["table_at"].items())
    t = ms.timestep(torch.tensor(0.5))
    assert close8(t, entry["timestep_of_sigma_0.5"])
    assert close8(ms.sigma(t), entry["sigma_of_timestep(timestep(0.5))"])  # flow: the shift is not undone
    for p, v in entry["percent_to_sigma"].items():
        assert close8(ms.percent_to_sigma(float(p)), v), p


def test_percent_to_sigma_is_the_python_float_of_the_reference():
    info = json.loads((Path(__file__).parents[1] / "data" / "sampler_fixtures_flow_info.json").read_text())
    assert {p: sd3_model_sampling().percent_to_sigma(float(p)) for p in ("0.0001", "0.2", "0.8")} == \
        info["percent_to_sigma_sd3_shift3"]
    others = info["percent_to_sigma_other_const_models"]
    assert {p: flux_model_sampling().percent_to_sigma(float(p)) for p in ("0.0001", "0.2", "0.8")} == \
        others["flux_dev_default(mu=1.15)"]
    assert {p: flux_schnell_model_sampling().percent_to_sigma(float(p)) for p in ("0.0001", "0.2", "0.8")} == \
        others["flux_schnell(shift=1,multiplier=1)"]


def test_flux_node_shift_and_the_flux_sd3_shift_identity():
    for size, mu in FIXTURES["flux_node_shift"].items():
        width, height = map(int, size.split("x"))
        assert close8(flux_shift(width, height), mu), size
    for name, bound in FIXTURES["flux_shift_identity_max_abs_diff"].items():
        flux = build(name)
        as_sd3 = ModelSamplingDiscreteFlow(math.exp(flux.shift), 10000, timesteps=10000)
        assert (flux.sigmas - as_sd3.sigmas).abs().max().item() <= 2 * bound


SCHEDULE_CASES = [(m, s) for m in FIXTURES["schedules"] for s in SCHEDULER_NAMES]


@pytest.mark.parametrize("sampling, scheduler", SCHEDULE_CASES)
def test_the_nine_schedulers_on_every_table(sampling, scheduler):
    expected = torch.tensor(FIXTURES["schedules"][sampling][scheduler], dtype=torch.float64)
    got = calculate_sigmas(build(sampling), scheduler, 10)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    # flow tables: <= 1e-6 absolute (measured 5e-9, the 8-digit print); SD1.5 relative
    tolerance = 1e-6 if sampling != "sd15_eps" else 1e-7 * expected.abs()
    assert ((got.double() - expected).abs() <= tolerance).all(), (got - expected).abs().max()


@pytest.mark.parametrize("sampling", sorted(FIXTURES["ksampler_denoise_slices"]))
def test_ksampler_denoise_slices_on_flow_tables(sampling):
    ms = build(sampling)
    for key, expected in FIXTURES["ksampler_denoise_slices"][sampling].items():
        scheduler, steps, denoise = key.split("_")
        got = ksampler_sigmas(ms, "euler", scheduler, int(steps[5:]), float(denoise[7:]))
        assert torch.allclose(got, torch.tensor(expected), rtol=1e-7, atol=1e-9), key


def _tiny(values):
    return torch.tensor(values, dtype=torch.float32).view(1, 2, 2, 2)


@pytest.mark.parametrize("label, ms", [
    ("CONST(sd3_discreteflow_shift3)", sd3_model_sampling()), ("CONST(flux_default)", flux_model_sampling()),
    ("EPS(sd15)", sd15_model_sampling()), ("V_PREDICTION(sd2)", ModelSamplingDiscrete(sd15_table(), "v")),
])
def test_parametrisations_noise_operations(label, ms):
    n = torch.sin(torch.arange(8.0)).view(1, 2, 2, 2)
    latent = (0.5 * torch.cos(torch.arange(8.0))).view(1, 2, 2, 2)
    out = torch.sin(0.3 * torch.arange(8.0) + 1).view(1, 2, 2, 2)
    s = torch.tensor(0.7)
    ops = {
        "noise_scaling_max_denoise_False": lambda: ms.noise_scaling(s, n, latent, False),
        "noise_scaling_max_denoise_True": lambda: ms.noise_scaling(s, n, latent, True),
        "inverse_noise_scaling(0.7, l)": lambda: ms.inverse_noise_scaling(s, latent),
        "inverse_noise_scaling(0.0, l)": lambda: ms.inverse_noise_scaling(torch.tensor(0.0), latent),
        "calculate_input(0.7, l)": lambda: ms.calculate_input(s, latent),
        "calculate_denoised(0.7, model_output, l)": lambda: ms.calculate_denoised(s, out, latent),
    }
    for key, expected in FIXTURES["noise_scaling"][label].items():
        assert torch.allclose(ops[key](), _tiny(expected), rtol=1e-7, atol=1e-8), key
    assert ms.is_const == label.startswith("CONST")


def test_per_item_sigmas_broadcast_and_match_the_scalar_form():
    ms = sd3_model_sampling()
    noise, latent = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2)
    sigmas = torch.tensor([0.2, 0.5, 0.9])
    batched = ms.noise_scaling(sigmas, noise, latent)
    for k in range(3):
        assert torch.equal(batched[k:k + 1], ms.noise_scaling(sigmas[k], noise[k:k + 1], latent[k:k + 1]))
    assert torch.equal(ms.inverse_noise_scaling(sigmas, batched)[1], batched[1] / (1.0 - sigmas[1]))
    # CONST: the leftover-noise round trip x -> x / (1 - s) -> (1 - s) * that, to rounding
    x = ms.noise_scaling(0.75, noise, latent)
    back = ms.noise_scaling(0.75, torch.zeros_like(noise), ms.inverse_noise_scaling(0.75, x))
    assert torch.allclose(back, x, atol=1e-6)


def test_max_denoise_is_ignored_by_const_and_decided_at_the_top_of_the_table():
    sd3, sd15 = sd3_model_sampling(), sd15_model_sampling()
    assert sd3.is_max_denoise(1.0) and not sd3.is_max_denoise(0.99)
    assert sd15.is_max_denoise(14.6146) and not sd15.is_max_denoise(14.0)
    n, latent = torch.ones(1, 1, 1, 1), torch.full((1, 1, 1, 1), 5.0)
    assert torch.equal(sd3.noise_scaling(1.0, n, latent, True), n)  # at sigma 1 the latent drops out


def test_as_model_sampling_and_is_const():
    sd3 = sd3_model_sampling()

    class Model:
        model_sampling = sd3

    class TableOnly:
        sigmas = sd15_table().float()

    assert as_model_sampling(Model()) is sd3 and is_const(Model()) and not is_const(None)
    eps = as_model_sampling(TableOnly())
    assert isinstance(eps, ModelSamplingDiscrete) and eps.parametrisation == "eps" and not is_const(TableOnly())
    assert ModelSamplingDiscrete.from_betas(torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000,
                                                           dtype=torch.float64) ** 2).log_sigmas.equal(
        sd15_model_sampling().log_sigmas)
    with pytest.raises(ValueError, match="parametrisation"):
        ModelSamplingDiscreteFlow(3.0, 1000, parametrisation="x0")
    with pytest.raises(ValueError, match="shift"):
        ModelSamplingDiscreteFlow(-1.0)


@pytest.mark.parametrize("name", sorted(FIXTURES["latent_formats"]))
def test_latent_formats(name):
    fmt, expected = LATENT_FORMATS[name], FIXTURES["latent_formats"][name]
    assert (fmt.scale_factor, fmt.shift_factor or None, fmt.channels) == (
        expected["scale_factor"], expected["shift_factor"], expected["latent_channels"])
    latent = (0.5 * torch.cos(torch.arange(8.0))).view(1, 2, 2, 2)
    assert torch.allclose(fmt.process_in(latent), _tiny(expected["process_in(l)"]), rtol=1e-7, atol=1e-8)
    assert torch.allclose(fmt.process_out(latent), _tiny(expected["process_out(l)"]), rtol=1e-7, atol=1e-8)
    assert torch.allclose(fmt.process_out(fmt.process_in(latent)), latent, atol=1e-6)
    empty = torch.zeros(1, fmt.channels, 2, 2)
    assert torch.equal(fmt.to_model_space(empty), empty)  # an empty latent stays 0, not -shift * scale
    assert torch.equal(fmt.to_model_space(latent), fmt.process_in(latent))


@pytest.mark.parametrize("family, name", [(f, n) for f in ("flow_sd3", "eps_sd15")
                                          for n in ("euler", "heun", "dpmpp_2m", "ddpm")])
def test_gaussian_toy_final_std(family, name):
    """N(0, 0.5^2) data, exact denoiser, simple 200 steps: ddpm (EPS/VP-only) spreads wrongly on flow."""
    ms = sd3_model_sampling() if family == "flow_sd3" else sd15_model_sampling()

    def denoise(x, sigma):
        s = sigma.double().view(-1, 1, 1, 1)
        a = 1 - s if ms.is_const else 1
        return (a * 0.25 / (a * a * 0.25 + s * s) * x.double()).float()

    noise = torch.randn([1, 16, 32, 32], generator=torch.Generator().manual_seed(0))
    sigmas = calculate_sigmas(ms, "simple", 200)
    x = ms.noise_scaling(sigmas[0], noise, torch.zeros_like(noise), ms.is_max_denoise(sigmas[0]))
    out = ms.inverse_noise_scaling(sigmas[-1], samplers.sample(denoise, x, sigmas, name, seed=1, model_sampling=ms))
    assert close8(out.std(), FIXTURES["gaussian_toy_final_std"][f"{family}/{name}"])


def test_sd3_schedules_are_the_reference_float32_lists_bit_for_bit():
    """The exact float32 lists of the flow sampler fixtures (info ``sigmas``) from our SD3 table."""
    info = json.loads((Path(__file__).parents[1] / "data" / "sampler_fixtures_flow_info.json").read_text())
    sd3 = sd3_model_sampling()
    assert torch.equal(calculate_sigmas(sd3, "simple", 10), torch.tensor(info["sigmas"]["simple10"]))
    assert torch.equal(calculate_sigmas(sd3, "normal", 7), torch.tensor(info["sigmas"]["normal7"]))
