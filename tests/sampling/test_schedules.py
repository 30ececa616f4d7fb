"""Schedulers (sampling/schedules.py) against the reference's sigma fixtures, schedule lengths, and KSamplerAdvanced's step slicing."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from regional_widgets.sampling.schedules import (SCHEDULER_NAMES, ModelSampling, calculate_sigmas,
                                                 ksampler_sigmas, sampler_sigmas, sd15_sigmas,
                                                 slice_sigmas)
from regional_widgets.sampling.model_sampling import ModelSamplingDiscrete, sd15_model_sampling, sd15_table
from tests.oracles import sigma_fixtures, sigma_fixtures_exact

TABLE = sd15_sigmas()

# The 20-step lists printed in spec/regional_sampler.md section 2.
SPEC_NORMAL_20 = [14.6146, 10.7468, 8.0815, 6.2049, 4.8557, 3.8654, 3.1238, 2.5572, 2.1157, 1.7648,
                  1.4806, 1.2458, 1.0481, 0.8784, 0.7297, 0.5964, 0.4736, 0.3555, 0.2322, 0.0292, 0]
SPEC_KARRAS_20 = [14.6146, 11.7254, 9.3402, 7.3836, 5.7894, 4.4998, 3.4647, 2.6408, 1.9909, 1.4832,
                  1.0908, 0.7909, 0.5647, 0.3964, 0.2730, 0.1842, 0.1213, 0.0779, 0.0485, 0.0292, 0]


def test_sd15_table_from_betas_in_float64():
    betas = np.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000) ** 2
    acp = np.cumprod(1 - betas)
    expected = np.sqrt((1 - acp) / acp).astype(np.float32)
    assert np.array_equal(TABLE.numpy(), expected)
    assert abs(float(TABLE[0]) - 0.0291672) < 1e-6 and abs(float(TABLE[-1]) - 14.6146) < 1e-4


def test_timestep_and_sigma_maps_invert_on_the_table():
    ms = ModelSampling(TABLE)
    assert torch.equal(ms.timestep(TABLE), torch.arange(1000))
    assert torch.allclose(ms.sigma(torch.arange(1000).float()), TABLE, rtol=1e-6)
    # half way between two entries is the geometric mean (log-linear interpolation)
    assert math.isclose(float(ms.sigma(torch.tensor(10.5))), math.sqrt(float(TABLE[10] * TABLE[11])), rel_tol=1e-5)
    assert math.isclose(float(ms.sigma(torch.tensor(-3.0))), float(TABLE[0]), rel_tol=1e-6)  # clamped


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_scheduler_matches_reference_fixtures(name):
    for steps, expected in sigma_fixtures()[name].items():
        got = calculate_sigmas(TABLE, name, int(steps))
        assert len(got) == len(expected), (name, steps)
        assert (got - torch.tensor(expected)).abs().max().item() <= 1e-5, (name, steps)


def test_spec_20_step_lists():
    assert np.allclose(calculate_sigmas(TABLE, "normal", 20).numpy(), SPEC_NORMAL_20, atol=1e-4)
    assert np.allclose(calculate_sigmas(TABLE, "karras", 20).numpy(), SPEC_KARRAS_20, atol=1e-4)
    assert abs(float(calculate_sigmas(TABLE, "ddim_uniform", 20)[0]) - 11.0283) < 1e-4


def _expected_length(name, steps):
    if name == "ddim_uniform":
        return len(range(1, 1000, max(1000 // steps, 1))) + 1
    if name == "beta":
        ts = np.rint(stats.beta.ppf(1 - np.linspace(0, 1, steps, endpoint=False), 0.6, 0.6) * 999)
        return 1 + 1 + int((np.diff(ts) != 0).sum())
    return steps + 1


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_lengths_for_steps_1_to_50(name):
    for steps in range(1, 51):
        sigmas = calculate_sigmas(TABLE, name, steps)
        assert len(sigmas) == _expected_length(name, steps), (name, steps)
        assert float(sigmas[-1]) == 0.0
        assert (sigmas[1:] <= sigmas[:-1]).all(), (name, steps)


def test_ddim_uniform_count_quirk():
    assert len(calculate_sigmas(TABLE, "ddim_uniform", 30)) == 32  # 31 steps
    assert len(calculate_sigmas(TABLE, "ddim_uniform", 60)) == 64  # 63 steps


def test_kl_optimal_one_step_is_a_single_jump():
    assert calculate_sigmas(TABLE, "kl_optimal", 1).tolist() == [float(TABLE[-1]), 0.0]


@pytest.mark.parametrize("sampler", ["dpm_2", "dpm_2_ancestral", "uni_pc", "uni_pc_bh2"])
def test_discard_penultimate(sampler):
    longer = calculate_sigmas(TABLE, "karras", 21)
    got = sampler_sigmas(TABLE, sampler, "karras", 20)
    assert torch.equal(got, torch.cat([longer[:-2], longer[-1:]]))
    assert torch.equal(sampler_sigmas(TABLE, "euler", "karras", 20), calculate_sigmas(TABLE, "karras", 20))


def test_denoise_takes_the_tail_of_a_longer_schedule():
    assert torch.equal(ksampler_sigmas(TABLE, "euler", "normal", 10, 0.5), calculate_sigmas(TABLE, "normal", 20)[-11:])
    assert torch.equal(ksampler_sigmas(TABLE, "euler", "normal", 10, 0.6), calculate_sigmas(TABLE, "normal", 16)[-11:])
    assert len(ksampler_sigmas(TABLE, "euler", "normal", 10, 0.0)) == 0


def test_slice_with_and_without_full_denoise():
    sigmas = calculate_sigmas(TABLE, "normal", 10)
    assert torch.equal(slice_sigmas(sigmas, 2, 5, False), sigmas[2:6])
    forced = slice_sigmas(sigmas, 2, 5, True)
    assert torch.equal(forced[:-1], sigmas[2:5]) and float(forced[-1]) == 0.0
    assert torch.equal(slice_sigmas(sigmas, 0, 10000, True), sigmas)
    assert slice_sigmas(sigmas, 10, 10000, False) is None
    assert slice_sigmas(sigmas, 5, 5, False) is None


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "20"])
def test_bad_steps(bad):
    with pytest.raises(ValueError, match="steps"):
        calculate_sigmas(TABLE, "normal", bad)


def test_unknown_scheduler_lists_the_names():
    with pytest.raises(ValueError, match="scheduler.*karras"):
        calculate_sigmas(TABLE, "fancy", 10)


@pytest.mark.parametrize("table", [[1.0], [0.0, 1.0], [2.0, 1.0], [1.0, float("nan")]])
def test_bad_model_tables(table):
    with pytest.raises(ValueError, match="model sigmas"):
        calculate_sigmas(torch.tensor(table), "normal", 5)


# --- the model sampling (float64 table kept): the reference's schedules bit for bit ---------------

MS = sd15_model_sampling()


def _exact(name, steps):
    values = sigma_fixtures_exact()[name][str(steps)]
    return torch.tensor([float("nan") if v is None else v for v in values], dtype=torch.float32)


@pytest.mark.parametrize("name", SCHEDULER_NAMES)
def test_schedules_from_the_model_sampling_are_bit_identical_for_1_to_50_steps(name):
    for steps in range(1, 51):
        got = calculate_sigmas(MS, name, steps)
        if name == "kl_optimal" and steps == 1:
            # the documented difference: the reference divides 0 by 0 (NaN), we make one jump
            assert torch.isnan(_exact(name, 1)[0]) and got.tolist() == [float(MS.sigma_max), 0.0]
            continue
        assert torch.equal(got, _exact(name, steps)), (name, steps)


def test_a_bare_float32_table_is_only_close():
    """log(float32 sigmas) is not the reference's float64 log cast down: normal/sgm_uniform move."""
    moved = [steps for steps in range(1, 51)
             if not torch.equal(calculate_sigmas(TABLE, "normal", steps), _exact("normal", steps))]
    assert moved  # e.g. normal 7, entry 5: 0.49355170 vs 0.49355173
    assert not torch.equal(calculate_sigmas(TABLE, "normal", 7), calculate_sigmas(MS, "normal", 7))
    for steps in moved:  # a few ulps: up to 4.6e-7 relative (5.7e-6 at sigma 12.5)
        exact = _exact("normal", steps)
        assert ((calculate_sigmas(TABLE, "normal", steps) - exact).abs() / exact.clamp_min(1e-3)).max() <= 1e-6


def test_model_sampling_tables_and_maps():
    assert torch.equal(MS.sigmas, TABLE) and MS.log_sigmas.dtype == torch.float32
    assert torch.equal(MS.log_sigmas, sd15_table().log().float())
    assert (MS.log_sigmas != TABLE.log()).sum() > 300  # 399 entries differ by an ulp or more
    assert torch.equal(MS.timestep(MS.sigmas), torch.arange(1000))
    assert torch.equal(MS.sigma(torch.arange(1000).float()), MS.sigmas.log().exp()) or \
        torch.allclose(MS.sigma(torch.arange(1000).float()), MS.sigmas, rtol=1e-6)
    # sa_solver's noise interval (spec §3.5.2)
    assert MS.percent_to_sigma(0.2) == 5.092408180236816 and MS.percent_to_sigma(0.8) == 0.5711888670921326
    assert MS.percent_to_sigma(0.0) == 999999999.9 and MS.percent_to_sigma(1.0) == 0.0
    assert MS.parametrisation == "eps"


def test_calculate_sigmas_takes_a_model_sampling_a_model_or_a_table():
    from regional_widgets.models import ToyWorld

    model = ToyWorld(n_exemplars=10, image_size=32)
    assert model.model_sampling is not None
    for name in ("normal", "sgm_uniform", "karras"):
        assert torch.equal(calculate_sigmas(model, name, 13), calculate_sigmas(MS, name, 13))
        assert torch.equal(sampler_sigmas(model, "uni_pc", name, 13), sampler_sigmas(MS, "uni_pc", name, 13))
    assert torch.equal(calculate_sigmas(model, "normal", 20), _exact("normal", 20))
    assert torch.equal(calculate_sigmas(TABLE.tolist(), "karras", 5), calculate_sigmas(MS, "karras", 5))


@pytest.mark.parametrize("bad", [dict(parametrisation="x0"), dict(sigmas=[2.0, 1.0])])
def test_bad_model_sampling(bad):
    args = dict(sigmas=sd15_table(), parametrisation="eps")
    args.update(bad)
    with pytest.raises(ValueError, match="parametrisation|model sigmas"):
        ModelSamplingDiscrete(args["sigmas"], args["parametrisation"])
