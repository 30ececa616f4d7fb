"""One sampler call: noise_mask mechanics, step-range slicing, noise handling, recovery passes."""
import math

import pytest
import torch

from regional_widgets.sampling.call import plan_call, sampler_call
from regional_widgets.sampling.inpaint import masked_denoiser
from regional_widgets.sampling.noise import prepare_noise
from regional_widgets.sampling.recovery import check_additional, recovery_sampler, sample_with_recovery
from regional_widgets.sampling.schedules import calculate_sigmas, sd15_sigmas
from tests.oracles import gaussian_denoiser

TABLE = sd15_sigmas()
SIGMA_MAX = TABLE[-1]


class Recorder:
    def __init__(self, denoise):
        self.denoise, self.inputs = denoise, []

    def __call__(self, x, sigma):
        self.inputs.append((x.clone(), sigma.clone()))
        return self.denoise(x, sigma)


def test_masked_denoiser_shows_the_renoised_latent_and_replaces_the_prediction():
    latent = torch.full((1, 1, 2, 2), 0.5)
    noise = torch.ones(1, 1, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [0.25, 0.0]]]])
    model = Recorder(lambda x, s: 10 * x)
    x = torch.full((1, 1, 2, 2), 3.0)
    out = masked_denoiser(model, latent, noise, mask)(x, torch.tensor([2.0]))
    seen = model.inputs[0][0]
    assert torch.allclose(seen, x * mask + (latent + 2.0 * noise) * (1 - mask))
    assert torch.allclose(out, 10 * seen * mask + latent * (1 - mask))


def test_euler_keeps_the_outside_exactly_without_noise():
    latent = prepare_noise(torch.zeros(1, 4, 8, 8), 3)
    mask = torch.zeros(64, 64)
    mask[:, :32] = 1
    sigmas = calculate_sigmas(TABLE, "normal", 10)
    out = sampler_call(gaussian_denoiser(0.5), latent, sampler="euler", total_sigmas=sigmas, start=3, end=4,
                       leftover=True, add_noise=False, seed=0, sigma_max=SIGMA_MAX, noise_mask=mask)
    assert torch.equal(out.samples[..., 4:], latent[..., 4:])  # outside: d = 0, x unchanged
    assert not torch.allclose(out.samples[..., :4], latent[..., :4])
    assert out.model_calls == 1


def test_add_noise_scales_by_sigma_or_sqrt_one_plus_sigma_squared():
    latent = torch.zeros(1, 1, 4, 4)
    noise = prepare_noise(latent, 5)
    sigmas = calculate_sigmas(TABLE, "normal", 10)
    seen = []

    def model(x, sigma):
        seen.append(x.clone())
        return torch.zeros_like(x)

    sampler_call(model, latent, sampler="euler", total_sigmas=sigmas, start=0, end=1, leftover=True,
                 add_noise=True, seed=5, sigma_max=SIGMA_MAX)
    assert torch.allclose(seen[0], noise * math.sqrt(1 + float(sigmas[0]) ** 2))
    sampler_call(model, latent, sampler="euler", total_sigmas=sigmas, start=2, end=3, leftover=True,
                 add_noise=True, seed=5, sigma_max=SIGMA_MAX)
    assert torch.allclose(seen[1], noise * sigmas[2])


def test_given_noise_is_used_even_without_add_noise():
    latent, noise = torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)
    sigmas = calculate_sigmas(TABLE, "normal", 4)
    out = sampler_call(lambda x, s: torch.zeros_like(x), latent, sampler="euler", total_sigmas=sigmas, start=1,
                       end=2, leftover=True, add_noise=False, seed=0, sigma_max=SIGMA_MAX, noise=noise)
    assert torch.allclose(out.samples, noise * sigmas[2])  # x = noise*s1 -> euler towards D=0


def test_plan_call_slicing_and_no_ops():
    sigmas = calculate_sigmas(TABLE, "normal", 4)
    assert torch.equal(plan_call(sigmas, 1, 2, True).sigmas, sigmas[1:3])
    forced = plan_call(sigmas, 1, 2, False).sigmas
    assert float(forced[-1]) == 0 and float(forced[0]) == float(sigmas[1])
    assert torch.allclose(plan_call(sigmas, 1, 2, True, 0.7).sigmas, sigmas[1:3] * 0.7)
    assert plan_call(sigmas, 4, 5, False).sigmas is None
    # the reference zeroes the *total* schedule too: the SDE bounds skip the zeroed sigma
    lo, hi = plan_call(sigmas, 0, 3, False).brownian_bounds
    assert float(lo) == float(sigmas[2]) and float(hi) == float(sigmas[0])


def test_no_op_call_makes_no_model_call():
    calls = []
    latent = torch.ones(1, 1, 2, 2)
    out = sampler_call(lambda x, s: calls.append(1), latent, sampler="euler",
                       total_sigmas=calculate_sigmas(TABLE, "normal", 4), start=4, end=5, leftover=False,
                       add_noise=True, seed=0, sigma_max=SIGMA_MAX)
    assert not calls and out.output is latent and out.sigmas is None


def test_leftover_off_returns_the_last_x0_prediction():
    sigmas = calculate_sigmas(TABLE, "normal", 4)
    latent = torch.ones(1, 1, 2, 2)
    out = sampler_call(lambda x, s: 0.5 * x, latent, sampler="euler", total_sigmas=sigmas, start=1, end=2,
                       leftover=False, add_noise=False, seed=0, sigma_max=SIGMA_MAX)
    # the slice is forced to end at 0: euler's x = D there, the x0 prediction is D too
    assert torch.allclose(out.output, 0.5 * latent) and torch.allclose(out.samples, out.output)
    out = sampler_call(lambda x, s: 0.5 * x, latent, sampler="euler", total_sigmas=sigmas, start=1, end=2,
                       leftover=True, add_noise=False, seed=0, sigma_max=SIGMA_MAX)
    assert torch.equal(out.output, out.samples) and not torch.allclose(out.samples, out.denoised)


def test_recovery_passes_and_auto_choice():
    calls = []

    def run(sampler, latent, ratio, noise):
        calls.append((sampler, round(ratio, 6), noise is None))
        from regional_widgets.sampling.call import CallResult
        return CallResult(latent + 1, latent + 1, None)

    latent = torch.zeros(1, 1, 2, 2)
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    passes = sample_with_recovery(run, latent, sampler="uni_pc", sigma_factor=1.0, mode="ratio between",
                                  additional_sampler="AUTO", ratio=0.3, noise_mask=mask, noise=torch.ones(1, 1, 2, 2))
    assert calls == [("uni_pc", 0.7, False), ("dpm_fast", 0.3, True)]
    # pass 2 starts from pass 1 inside the mask and from the pre-call latent outside, then adds 1
    assert torch.equal(passes[-1][1].output, torch.tensor([[[[2.0, 1.0], [2.0, 1.0]]]]))
    calls.clear()
    sample_with_recovery(run, latent, sampler="dpmpp_2m_sde", sigma_factor=2.0, mode="ratio additional",
                         additional_sampler="AUTO", ratio=0.3, noise_mask=None)
    assert calls == [("dpmpp_2m_sde", 2.0, True), ("dpmpp_2m", 0.6, True)]
    calls.clear()
    sample_with_recovery(run, latent, sampler="euler", sigma_factor=1.0, mode="ratio between",
                         additional_sampler="AUTO", ratio=0.3, noise_mask=None)
    assert calls == [("euler", 1.0, True)]
    calls.clear()
    sample_with_recovery(run, latent, sampler="uni_pc", sigma_factor=1.0, mode="ratio between",
                         additional_sampler="heun", ratio=1.0, noise_mask=None)
    assert calls == [("heun", 1.0, True)]  # r = 1: pass 1 is skipped
    assert recovery_sampler("dpmpp_sde", "AUTO") == "dpm_fast" and recovery_sampler("dpmpp_3m_sde", "AUTO") == "dpmpp_2m"


@pytest.mark.parametrize("args, match", [
    (("sometimes", "AUTO", 0.3), "additional_mode.*ratio between"),
    (("DISABLE", "lms", 0.3), "additional_sampler.*dpm_fast"),
    (("DISABLE", "AUTO", 1.5), "additional_sigma_ratio"),
])
def test_bad_recovery_settings(args, match):
    with pytest.raises(ValueError, match=match):
        check_additional(*args)


def test_a_binary_mask_blends_a_finite_latent_with_itself_to_the_same_bits():
    """The identity `masked_denoiser(passthrough=True)` relies on: x * m + x * (1 - m) == x, bit for bit, for a
    0/1 mask and any finite x (signed zeros, subnormals and the largest floats included)."""
    from regional_widgets.sampling.inpaint import latent_mask
    from regional_widgets.sampling.masks import blend
    tiny, big = torch.finfo(torch.float32).tiny, torch.finfo(torch.float32).max
    special = torch.tensor([0.0, -0.0, tiny / 4, -tiny / 4, tiny, big, -big, 1.0, -1.0, 3e-39, -7.5])
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([special, torch.randn(64 * 64 * 3 - len(special), generator=gen)]).reshape(1, 3, 64, 64)
    m = (torch.rand(64, 64, generator=gen) > 0.5).float()
    prepared = latent_mask(m, x)
    assert prepared.binary and prepared.mask.shape == (1, 1, 64, 64)
    blended = blend(x, x, prepared.mask, prepared.keep)
    assert torch.equal(blended.view(torch.int32), x.view(torch.int32))
    soft = latent_mask(m * 0.5 + 0.25, x)  # fractional: the blend is made
    assert not soft.binary and not latent_mask(m, torch.zeros(1, 4, 8, 8)).binary  # resized: bilinear edges


@pytest.mark.parametrize("passthrough", [False, True])
def test_passthrough_hands_the_model_the_bits_the_blend_makes(passthrough):
    latent = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    latent[0, 0, 0, :2] = torch.tensor([-0.0, 0.0])
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1
    x = latent + 0.0  # a held call's start: +0 noise + latent
    recorder = Recorder(gaussian_denoiser(0.8))
    wrapped = masked_denoiser(recorder, latent, torch.zeros_like(latent), mask, keep=1.0 - mask, renoised_latent=x,
                              passthrough=passthrough)
    out = wrapped(x, torch.tensor([2.0]))
    expected = x * mask + x * (1.0 - mask)
    assert torch.equal(recorder.inputs[0][0].view(torch.int32), expected.view(torch.int32))
    assert torch.equal(out, recorder.denoise(expected, torch.tensor([2.0])) * mask + latent * (1.0 - mask))
    wrapped(x + 1.0, torch.tensor([1.0]))  # any other x is blended
    assert torch.equal(recorder.inputs[1][0], (x + 1.0) * mask + x * (1.0 - mask))
