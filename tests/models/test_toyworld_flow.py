"""ToyWorld's families: the flow (CONST) and v models, and the 16-channel "sd3" latent.

The flow denoiser is checked against an independent computation: for x = (1 - s) x0 + s n,
x / (1 - s) = x0 + n s / (1 - s), so the flow posterior mean at (x, s) is the EPS posterior mean at
(x / (1 - s), s / (1 - s)) (exact algebra; here in float64)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import regional_widgets as rw
from regional_widgets.models import ToyWorld, cfg_denoiser, empty_latent, from_spec
from regional_widgets.sampling.latent_formats import LATENT_FORMATS
from regional_widgets.sampling.model_sampling import ModelSamplingDiscreteFlow, is_const
from regional_widgets.sampling.samplers import sample
from regional_widgets.sampling.schedules import sampler_sigmas

LATENTS = ("pixels", "sd", "sd3")


@pytest.fixture(scope="module", params=LATENTS)
def pair(request):
    kw = dict(n_exemplars=100, image_size=32)
    return ToyWorld(request.param, **kw), ToyWorld(request.param, prediction="flow", **kw)


@pytest.mark.parametrize("variance", [0.0, 0.05])
def test_flow_denoiser_is_the_eps_posterior_at_the_equivalent_level(variance):
    kw = dict(n_exemplars=60, image_size=16, mixture_variance=variance)
    eps, flow = ToyWorld(**kw), ToyWorld(prediction="flow", **kw)
    gen = torch.Generator().manual_seed(3)
    x0 = flow.exemplars[:4]
    n = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    for s in (0.9993, 0.9, 0.5, 0.1, 0.003):
        x = (1 - s) * x0 + s * n
        for prompt in ("", "grass", "red"):
            got = flow(x, s, flow.encode(prompt))
            want = eps(x / (1 - s), s / (1 - s), eps.encode(prompt))
            torch.testing.assert_close(got, want, atol=1e-9, rtol=0)


def test_flow_at_sigma_one_is_the_prompts_mean_and_at_zero_is_x():
    flow = ToyWorld(prediction="flow", n_exemplars=60, image_size=16)
    cond = flow.encode("grass")
    x = torch.randn(2, *flow.latent_shape, dtype=torch.float64)
    mean = cond.exemplars.mean(0).view(flow.latent_shape)
    got = flow(x, torch.tensor([1.0, 0.0]), cond)
    torch.testing.assert_close(got[0], mean, atol=1e-12, rtol=0)
    assert torch.equal(got[1], x[1])
    with pytest.raises(ValueError, match=r"flow model's noise levels lie in \[0, 1\].*sigma_factor > 1"):
        flow(x, 1.1, cond)


def test_call_batch_equals_one_call_per_item_on_flow():
    flow = ToyWorld(prediction="flow", n_exemplars=60, image_size=16, mixture_variance=0.02)
    x = torch.randn(1, *flow.latent_shape).repeat(3, 1, 1, 1)
    conds = [flow.encode(p) for p in ("sky", "", "blue")]
    sigma = torch.tensor([0.7, 0.7, 0.7])
    batched = flow.call_batch(x, sigma, conds)
    for k, c in enumerate(conds):
        torch.testing.assert_close(batched[k:k + 1], flow(x[k:k + 1], sigma[k:k + 1], c), atol=1e-6, rtol=0)


def test_model_sampling_per_prediction():
    eps, v = ToyWorld(n_exemplars=40, image_size=16), ToyWorld(prediction="v", n_exemplars=40, image_size=16)
    flow = ToyWorld(prediction="flow", shift=2.0, n_exemplars=40, image_size=16)
    assert eps.model_sampling.parametrisation == "eps" and v.model_sampling.parametrisation == "v"
    assert isinstance(flow.model_sampling, ModelSamplingDiscreteFlow) and is_const(flow) and not is_const(eps)
    assert flow.model_sampling.shift == 2.0 and flow.model_sampling.multiplier == 1000
    assert torch.equal(flow.sigmas, flow.model_sampling.sigmas) and float(flow.sigmas[-1]) == 1.0
    assert torch.equal(v.sigmas, eps.sigmas)
    x = torch.randn(2, *eps.latent_shape)
    assert torch.equal(v(x, 3.0, v.encode("sky")), eps(x, 3.0, eps.encode("sky")))  # same posterior, no network
    assert ToyWorld(prediction="v", shift=9.0, n_exemplars=40, image_size=16).shift == 9.0  # ignored, kept


def test_spec_round_trips_and_eps_specs_are_unchanged():
    eps = ToyWorld(n_exemplars=40, image_size=16)
    assert "prediction" not in eps.spec and "shift" not in eps.spec
    flow = ToyWorld("sd3", prediction="flow", shift=2.5, n_exemplars=40, image_size=16)
    twin = from_spec(flow.spec)
    assert twin.spec == flow.spec and twin.shift == 2.5 and twin.is_flow and twin.latent == "sd3"
    assert from_spec(ToyWorld(prediction="v", n_exemplars=40, image_size=16).spec).prediction == "v"
    assert "prediction='flow', shift=2.5" in repr(flow)


@pytest.mark.parametrize("kwargs, match", [(dict(prediction="x0"), "prediction"), (dict(shift=0), "shift"),
                                           (dict(shift=float("nan")), "shift"), (dict(shift=True), "shift")])
def test_bad_family_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ToyWorld(n_exemplars=20, image_size=16, **kwargs)


def test_sd3_latent_is_vae_space_with_the_sd3_format():
    model = ToyWorld("sd3", n_exemplars=60, image_size=32)
    fmt = LATENT_FORMATS["SD3"]
    assert model.latent_channels == 16 and model.downscale == 8 and model.latent_shape == (16, 4, 4)
    assert (model.latent_scale_factor, model.latent_shift_factor) == (1.5305, 0.0609) and model.latent_format is fmt
    assert empty_latent(model, 32, 32).shape == (1, 16, 4, 4)
    rgb = torch.rand(1, 32, 32, 3)
    vae = model.encode_image(rgb)
    # the denoiser's exemplars are model space: process_in of the VAE-space encoding
    pictures = model.decode(fmt.process_out(model.exemplars[:2]).float())
    torch.testing.assert_close(model.encode_image(pictures), fmt.process_out(model.exemplars[:2]).float(),
                               atol=1e-5, rtol=0)
    blocks = torch.nn.functional.avg_pool2d(rgb.permute(0, 3, 1, 2), 8).repeat_interleave(8, 2).repeat_interleave(8, 3)
    torch.testing.assert_close(model.decode(vae), blocks.permute(0, 2, 3, 1), atol=1e-5, rtol=0)
    # model space spreads a pixel's RGB (in [-1, 1]) over 16 channels at about the picture's own spread
    ratio = float(fmt.process_in(vae).std()) / float((blocks * 2 - 1).std())
    assert 0.5 < ratio < 2.0


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpmpp_2m"])
def test_flow_sampling_ends_on_an_exemplar_of_the_prompt(pair, sampler):
    _, flow = pair
    sigmas = sampler_sigmas(flow, sampler, "simple", 30)
    denoise = cfg_denoiser(flow, flow.encode("brick"))
    x = torch.randn(1, *flow.latent_shape, generator=torch.Generator().manual_seed(1))
    out = sample(denoise, flow.model_sampling.noise_scaling(sigmas[0], x, torch.zeros_like(x)), sigmas, sampler,
                 model_sampling=flow).double()
    members = [i for i, labels in enumerate(flow.labels) if "brick" in labels]
    dist = (out.flatten(1) - flow.exemplars[members].flatten(1)).abs().amax(1).min()
    assert dist < 1e-3


def test_eps_default_is_unchanged_bitwise(pair):
    eps, _ = pair
    if eps.latent == "sd3":
        return
    twin = ToyWorld(eps.latent, n_exemplars=100, image_size=32, prediction="eps", shift=7.0)
    x = torch.randn(2, *eps.latent_shape)
    for sigma in (14.6, 1.0, 0.03):
        assert torch.equal(twin(x, sigma, twin.encode("sky")), eps(x, sigma, eps.encode("sky")))


def test_a_flow_session_runs_on_every_latent(pair):
    _, flow = pair
    mask = np.zeros((32, 32), np.float32)
    mask[16:] = 1
    regions = [rw.Region(mask, rw.SamplerConfig(sampler="euler_ancestral", scheduler="simple", cfg=2.0,
                                                positive="grass"))]
    base = rw.SamplerConfig(sampler="euler", scheduler="simple", cfg=2.0, positive="sky")
    for mode in ("faithful", "coherent"):
        session = rw.RegionalSamplerSession(flow, empty_latent(flow, 32, 32), base=base, regions=regions, steps=6,
                                            mode=mode)
        out = session.run()
        assert torch.isfinite(out).all() and out.shape == (1, *flow.latent_shape)
        assert 0 <= float(session.sigma_map.min()) and float(session.sigma_map.max()) <= 1.0
