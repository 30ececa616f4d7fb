"""SD3/SD3.5 in the diffusers backend, conditioned as the reference (spec model_families.md §5), on a
tiny random-weight folder: parity with StableDiffusion3Pipeline where the conventions agree, the
documented differences (T5 padded to 77, CLIP-L pooled unprojected), the flow model sampling and
latent format against the reference's numbers, a regional session end to end with its export."""
from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import diffusers  # noqa: E402,F401  the diffusers extra, installed by make test: never skipped
import transformers  # noqa: E402,F401

from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline  # noqa: E402

import regional_widgets as rw  # noqa: E402
from regional_widgets.models import cfg_denoiser  # noqa: E402
from regional_widgets.models.diffusers import (FAMILY_COMPONENTS, SD3_T5_MIN_TOKENS, DiffusersModel,  # noqa: E402
                                               sd3_context, sd3_pooled)
from regional_widgets.sampling.latent_formats import LATENT_FORMATS  # noqa: E402
from regional_widgets.sampling.model_sampling import ModelSamplingDiscreteFlow  # noqa: E402
from regional_widgets.sampling.samplers import sample  # noqa: E402
from regional_widgets.sampling.schedules import calculate_sigmas  # noqa: E402

from .tiny_families import TransformerCalls, first_call_session, relative_error  # noqa: E402

FIXTURES = json.loads((Path(__file__).parents[1] / "data" / "family_fixtures.json").read_text())


@pytest.fixture(scope="module")
def pipe(sd3_folder):
    return sd3_folder[0]


@pytest.fixture(scope="module")
def model(sd3_folder):
    return DiffusersModel.from_pretrained(sd3_folder[1])


def test_folder_is_recognised_with_flow_sampling_and_latent_format(model):
    assert model.family == "sd3" and isinstance(model, rw.models.Model)
    assert (model.latent_channels, model.downscale) == (16, 8)
    assert (model.latent_scale_factor, model.latent_shift_factor) == (1.5305, 0.0609)
    ms = model.model_sampling
    assert isinstance(ms, ModelSamplingDiscreteFlow) and (ms.shift, ms.multiplier) == (3.0, 1000.0)
    assert ms.parametrisation == "const" and torch.equal(model.sigmas, ms.sigmas)
    cond = model.encode("a sky cat")
    assert cond.context.shape == (1, 77 + SD3_T5_MIN_TOKENS, 48) and cond.pooled.shape == (1, 32)


def test_parity_with_the_sd3_pipeline(pipe, model):
    """negative_prompt="", max_sequence_length=77, CLIP-L projection = identity, our simple sigmas."""
    sigmas = calculate_sigmas(model.model_sampling, "simple", 4)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0)  # takes our (already shifted) sigmas as they are
    theirs_pipe = StableDiffusion3Pipeline(**{**pipe.components, "scheduler": scheduler})
    theirs_pipe.set_progress_bar_config(disable=True)
    noise = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    out = theirs_pipe("a sky cat", negative_prompt="", height=64, width=64, sigmas=sigmas[:-1].tolist(),
                      guidance_scale=5.0, latents=noise, max_sequence_length=77, output_type="latent").images
    torch.testing.assert_close(theirs_pipe.scheduler.sigmas, sigmas, atol=1e-6, rtol=0)
    denoise = cfg_denoiser(model, model.encode("a sky cat"), model.encode(""), 5.0)
    ours = sample(denoise, noise, sigmas, "euler")
    error = relative_error(ours, out)
    print(f"\nSD3 parity (Euler, 4 steps, cfg 5): max rel. error {error:.2e}")
    assert error <= 1e-4


def test_the_transformer_sees_x_and_sigma_times_1000_and_predicts_velocity(model):
    x = torch.randn(2, 16, 8, 8, generator=torch.Generator().manual_seed(2))
    sigma = torch.tensor([0.9, 0.3])
    cond = model.encode("sky")
    with TransformerCalls(model.transformer) as calls:
        denoised = model(x, sigma, cond)
    call = calls.calls[0]
    assert torch.equal(call["hidden_states"], x)
    torch.testing.assert_close(call["timestep"], sigma * 1000)
    with torch.no_grad():
        velocity = model.transformer(hidden_states=x, timestep=sigma * 1000,
                                     encoder_hidden_states=cond.context.expand(2, -1, -1),
                                     pooled_projections=cond.pooled.expand(2, -1)).sample
    torch.testing.assert_close(denoised, x - sigma.view(-1, 1, 1, 1) * velocity, atol=1e-6, rtol=0)


def test_difference_t5_is_padded_to_77_not_256(pipe, model):
    """§5: the reference pads T5 to at least 77 tokens; diffusers pads to max_sequence_length (256)."""
    ours = model.encode("a sky cat").context
    t5_77 = pipe.encode_prompt("a sky cat", None, None, device="cpu", do_classifier_free_guidance=False,
                               max_sequence_length=77)[0]
    t5_256 = pipe.encode_prompt("a sky cat", None, None, device="cpu", do_classifier_free_guidance=False)[0]
    torch.testing.assert_close(ours, t5_77, atol=1e-5, rtol=0)
    assert t5_256.shape == (1, 77 + 256, 48) and ours.shape == (1, 77 + 77, 48)
    # no attention mask: the pad length changes the embeddings of the prompt's own tokens
    assert not torch.allclose(ours[:, 77:80], t5_256[:, 77:80], atol=1e-4)
    # a long T5 prompt is never cut: 100 words -> 101 tokens with the end token
    long = model.encode(" ".join(["a"] * 100)).context
    assert long.shape == (1, 154 + 101, 48)


def test_difference_clip_l_pooled_is_unprojected(pipe):
    """§5: pooled = [CLIP-L pooled *unprojected* | CLIP-G projected]; diffusers projects CLIP-L too."""
    components = {k: v for k, v in pipe.components.items() if k in FAMILY_COMPONENTS["sd3"]}
    components["text_encoder"] = copy.deepcopy(pipe.text_encoder)
    with torch.no_grad():
        components["text_encoder"].text_projection.weight.normal_()
    model = DiffusersModel(**components, scheduler_config=pipe.scheduler.config)
    other = StableDiffusion3Pipeline(**{**pipe.components, **components})
    pooled = model.encode("sky").pooled
    theirs = other.encode_prompt("sky", None, None, device="cpu", do_classifier_free_guidance=False,
                                 max_sequence_length=77)[2]
    ids = other.tokenizer("sky", padding="max_length", max_length=77, return_tensors="pt").input_ids
    out = components["text_encoder"](ids)
    unprojected = components["text_encoder"].text_model(ids).pooler_output
    torch.testing.assert_close(pooled[:, :16], unprojected, atol=1e-6, rtol=0)
    torch.testing.assert_close(theirs[:, :16], out.text_embeds, atol=1e-6, rtol=0)
    torch.testing.assert_close(pooled[:, 16:], theirs[:, 16:], atol=1e-6, rtol=0)  # CLIP-G: both projected
    assert not torch.allclose(pooled[:, :16], theirs[:, :16], atol=1e-3)


def test_context_and_pooled_rules():
    l, g, t5 = torch.ones(1, 77, 768), torch.full((1, 77, 1280), 2.0), torch.full((1, 80, 4096), 3.0)
    ctx = sd3_context(l, g, t5, 4096)
    assert ctx.shape == (1, 157, 4096)
    assert (ctx[0, :77, :768] == 1).all() and (ctx[0, :77, 768:2048] == 2).all() and (ctx[0, :77, 2048:] == 0).all()
    assert (ctx[0, 77:] == 3).all()
    assert sd3_context(l, g, None, 4096).shape == (1, 77, 4096)  # no T5 loaded: the CLIP part only
    pooled = sd3_pooled(torch.ones(1, 768), torch.full((1, 1280), 2.0))
    assert pooled.shape == (1, 2048) and (pooled[:, :768] == 1).all() and (pooled[:, 768:] == 2).all()


def test_without_t5_the_context_is_the_clip_part(pipe, model):
    components = {k: v for k, v in pipe.components.items()
                  if k in FAMILY_COMPONENTS["sd3"] and k not in ("text_encoder_3", "tokenizer_3")}
    no_t5 = DiffusersModel(**components, scheduler_config=pipe.scheduler.config)
    cond = no_t5.encode("a sky cat")
    assert cond.context.shape == (1, 77, 48)
    torch.testing.assert_close(cond.context, model.encode("a sky cat").context[:, :77])
    assert torch.isfinite(no_t5(torch.zeros(1, 16, 8, 8), torch.tensor([0.5]), cond)).all()


def test_prompt_weights_apply_to_every_encoder(model):
    plain, weighted, empty = model.encode("a sky"), model.encode("a (sky:1.3)"), model.encode("")
    # CLIP part: position 2 ([start, a, sky]); T5 part: position 77 + 1 ([a, sky, end])
    for k in (2, 78):
        expected = empty.context[:, k] + 1.3 * (plain.context[:, k] - empty.context[:, k])
        torch.testing.assert_close(weighted.context[:, k], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(weighted.pooled, plain.pooled)


def test_sampling_and_latent_format_match_the_reference_numbers():
    fx = FIXTURES["sigma_tables"]["sd3_discreteflow_shift3"]
    ms = ModelSamplingDiscreteFlow(3.0, 1000)
    assert len(ms.sigmas) == fx["len"]
    for i, v in fx["table_at"].items():
        assert float(ms.sigmas[int(i)]) == pytest.approx(v, rel=1e-6)
    for p, v in fx["percent_to_sigma"].items():
        assert ms.percent_to_sigma(float(p)) == pytest.approx(v, rel=1e-6)
    assert float(ms.timestep(torch.tensor(0.5))) == fx["timestep_of_sigma_0.5"]
    assert float(ms.sigma(ms.timestep(torch.tensor(0.5)))) == pytest.approx(fx["sigma_of_timestep(timestep(0.5))"])
    ns = FIXTURES["noise_scaling"]
    n = torch.tensor(ns["inputs"]["n_values"]).view(1, 2, 2, 2)
    l = torch.tensor(ns["inputs"]["l_values"]).view(1, 2, 2, 2)
    out = torch.tensor(ns["inputs"]["model_output_values"]).view(1, 2, 2, 2)
    const = ns["CONST(sd3_discreteflow_shift3)"]
    for max_denoise in (False, True):  # ignored by CONST
        np.testing.assert_allclose(ms.noise_scaling(0.7, n, l, max_denoise).flatten(),
                                   const[f"noise_scaling_max_denoise_{max_denoise}"], atol=1e-6)
    np.testing.assert_allclose(ms.inverse_noise_scaling(0.7, l).flatten(), const["inverse_noise_scaling(0.7, l)"],
                               atol=1e-6)
    np.testing.assert_allclose(ms.calculate_input(0.7, l).flatten(), const["calculate_input(0.7, l)"], atol=1e-7)
    np.testing.assert_allclose(ms.calculate_denoised(torch.tensor(0.7), out, l).flatten(),
                               const["calculate_denoised(0.7, model_output, l)"], atol=1e-6)
    fmt, lf = LATENT_FORMATS["SD3"], FIXTURES["latent_formats"]["SD3"]
    z = 0.5 * torch.cos(torch.arange(8.0))
    assert (fmt.scale_factor, fmt.shift_factor, fmt.channels) == (lf["scale_factor"], lf["shift_factor"],
                                                                   lf["latent_channels"])
    np.testing.assert_allclose(fmt.process_in(z), lf["process_in(l)"], atol=1e-6)
    np.testing.assert_allclose(fmt.process_out(z), lf["process_out(l)"], atol=1e-6)


def test_regional_session_runs_in_the_app_and_exports_a_workflow(model, tmp_path):
    app = rw.RegionalSamplerApp.from_model(model, size=64, regions=2, steps=3, cfg=4.0, scheduler="simple")
    session = app.session
    session.regions[0].mask = np.pad(np.ones((32, 64), np.float32), ((0, 32), (0, 0)))
    session.regions[1].mask = np.pad(np.ones((32, 32), np.float32), ((32, 0), (0, 32)))
    assert session.latent.shape == (1, 16, 8, 8)
    while not session.done:
        session.step()
    assert torch.isfinite(session.latent).all()
    assert model.decode_preview(session.latent).shape == (1, 64, 64, 3)
    paths = session.to_comfy(tmp_path / "workflow.json", checkpoint="sd3.5_medium.safetensors")
    graph = json.loads(Path(paths[0]).read_text())
    kinds = {node["class_type"] for node in graph.values()}
    # an all-in-one SD3 checkpoint loads with CheckpointLoaderSimple; CLIPTextEncode drives CLIP-L/G + T5;
    # a 16-channel empty latent; no ModelSamplingSD3 node: shift 3 is the checkpoint's own
    assert {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptySD3LatentImage"} <= kinds
    assert not kinds & {"EmptyLatentImage", "ModelSamplingSD3", "ModelSamplingFlux"}
    back = rw.RegionalSamplerSession.from_comfy(paths[0], model)
    assert back.latent_image.shape == (1, 16, 8, 8) and back.model.model_sampling is model.model_sampling
    assert replace(model.encode(""), guidance=None).guidance is None


@pytest.mark.parametrize("start_at_step, with_region", [(0, False), (2, True)])
def test_the_session_adds_flow_noise_in_the_sd3_latent_space(pipe, start_at_step, with_region):
    """Model space = (VAE space - 0.0609) * 1.5305; a call starts at sigma*n + (1 - sigma)*L (pure noise
    from sigma 1, never the EPS sqrt(1 + sigma^2)), and hands over x / (1 - sigma) in VAE space."""
    from regional_widgets.sampling.noise import prepare_noise
    from regional_widgets.sampling.schedules import sampler_sigmas

    seen = []

    class Spy(DiffusersModel):
        def __call__(self, x, sigma, cond):
            seen.append((x.clone(), sigma.clone()))
            return super().__call__(x, sigma, cond)

    spy = Spy(**{k: v for k, v in pipe.components.items() if k in FAMILY_COMPONENTS["sd3"]},
              scheduler_config=pipe.scheduler.config)
    latent = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3))
    session = first_call_session(spy, latent, with_region, start_at_step)
    session.substep()
    sigma0 = sampler_sigmas(spy, "euler", "normal", 5)[start_at_step]
    model_space = (latent - 0.0609) * 1.5305
    expected = sigma0 * prepare_noise(latent, 7) + (1 - sigma0) * model_space
    torch.testing.assert_close(seen[0][0], expected, atol=1e-5, rtol=0)
    assert float(seen[0][1]) == pytest.approx(float(sigma0))
    if start_at_step == 0:
        torch.testing.assert_close(seen[0][0], prepare_noise(latent, 7), atol=1e-6, rtol=0)
    # the leftover latent comes back in VAE space as x / (1 - sigma); the next call (zero noise) starts
    # from (1 - sigma) times it in model space: the flow state again
    after, count = session.latent.clone(), len(seen)
    session.substep()
    x_next, sigma_next = seen[count]
    torch.testing.assert_close(x_next, (1 - sigma_next) * (after - 0.0609) * 1.5305, atol=1e-4, rtol=1e-5)
