"""The recovery pass decides by the exception's type, never by its text."""
import pytest
import torch

from regional_widgets.sampling.call import CallResult
from regional_widgets.sampling.recovery import sample_with_recovery
from regional_widgets.sampling.samplers.dpm_solver import ZeroSigmaError, time_span


def test_time_span_raises_zero_sigma_error_a_value_error():
    with pytest.raises(ZeroSigmaError, match="sigma_min and sigma_max must not be 0"):
        time_span(torch.tensor([0.0, 0.0]))
    assert issubclass(ZeroSigmaError, ValueError)


def run_raising(error):
    def run(sampler, latent, ratio, noise):
        if sampler == "dpm_fast":
            raise error
        return CallResult(latent + 1, latent + 1, torch.tensor([1.0, 0.0]))
    return run


def test_a_zero_sigma_recovery_pass_is_a_no_op():
    latent = torch.zeros(1, 4, 2, 2)
    passes = sample_with_recovery(run_raising(ZeroSigmaError("no span")), latent, sampler="uni_pc", sigma_factor=1.0,
                                  mode="ratio between", additional_sampler="AUTO", ratio=0.5, noise_mask=None)
    assert [name for name, _ in passes] == ["uni_pc", "dpm_fast"]
    assert passes[-1][1].sigmas is None and torch.equal(passes[-1][1].output, latent + 1)


def test_another_value_error_with_the_same_words_is_raised():
    error = ValueError("sigmas: sigma_min and sigma_max must not be 0 (but not from DPM-Solver)")
    with pytest.raises(ValueError, match="not from DPM-Solver"):
        sample_with_recovery(run_raising(error), torch.zeros(1, 4, 2, 2), sampler="uni_pc", sigma_factor=1.0,
                             mode="ratio between", additional_sampler="AUTO", ratio=0.5, noise_mask=None)
