"""A call given a checked plan (its sampler's per-step scalars made once) gives the very bits of a plain call."""
import pytest
import torch

from regional_widgets.sampling.call import checked_plan, plan_call, sampler_call
from regional_widgets.sampling.samplers import get_sampler, sample
from regional_widgets.sampling.samplers.core import begin, step


def toy_denoise(x, sigma):
    return x * (1.0 / (1.0 + sigma.reshape(-1, 1, 1, 1) ** 2)) + 0.1


SIGMAS = torch.tensor([14.6, 7.1, 3.2, 1.4, 0.5, 0.0])


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m"])
def test_prepared_steps_are_bitwise_the_plain_steps(name):
    spec = get_sampler(name)
    assert spec.prepare is not None
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * SIGMAS[0]
    state = begin(spec, x, SIGMAS, prepared=spec.prepare(SIGMAS))
    while not state.done:
        state = step(toy_denoise, state)
    assert torch.equal(state.x, sample(toy_denoise, x, SIGMAS, name))


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m"])
@pytest.mark.parametrize("start,end", [(0, 1), (2, 3), (0, 5), (4, 5)])
def test_call_with_a_checked_plan_is_bitwise_a_plain_call(name, start, end):
    latent = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(8, 8)
    mask[:4] = 1
    kw = dict(sampler=name, total_sigmas=SIGMAS, start=start, end=end, leftover=True, add_noise=False, seed=3,
              sigma_max=14.6, noise_mask=mask)
    plain = sampler_call(toy_denoise, latent, **kw)
    plan = checked_plan(SIGMAS, start, end, True, sampler=name, const=False)
    assert plan.prepared is not None and plan.first_value == float(plan_call(SIGMAS, start, end, True).sigmas[0])
    fast = sampler_call(toy_denoise, latent, plan=plan, zeros=torch.zeros_like(latent), **kw)
    assert torch.equal(plain.samples, fast.samples) and torch.equal(plain.denoised, fast.denoised)
    assert plain.model_calls == fast.model_calls


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m", "euler_ancestral"])
@pytest.mark.parametrize("parametrisation", ["eps", "v"])
@pytest.mark.parametrize("sigma_max", [14.6, 20.0])  # from pure noise (its own start scale), and not
def test_a_call_without_noise_is_bitwise_a_plain_call_signed_zeros_included(name, parametrisation, sigma_max):
    from regional_widgets.sampling.model_sampling import ModelSamplingDiscrete, sd15_model_sampling
    sampling = ModelSamplingDiscrete(sd15_model_sampling().sigmas, parametrisation)
    latent = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(6))
    latent[0, 0, :2] = -0.0  # a kept -0 stays -0 only where the re-noise adds +0 last
    mask = torch.zeros(8, 8)
    mask[:, :3] = 1
    for start, end in [(0, 1), (0, 5), (2, 4)]:
        kw = dict(sampler=name, total_sigmas=SIGMAS, start=start, end=end, leftover=True, add_noise=False, seed=3,
                  sigma_max=sigma_max, noise_mask=mask, model_sampling=sampling)
        plain = sampler_call(toy_denoise, latent, **kw)
        plan = checked_plan(SIGMAS, start, end, True, sampler=name, const=False)
        fast = sampler_call(toy_denoise, latent, plan=plan, zeros=torch.zeros_like(latent), **kw)
        for a, b in [(plain.samples, fast.samples), (plain.denoised, fast.denoised)]:
            assert torch.equal(a.view(torch.int32), b.view(torch.int32))
