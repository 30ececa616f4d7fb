"""Flux-dev/-schnell in the diffusers backend, conditioned as the reference (spec model_families.md §5),
on a tiny random-weight folder: parity with FluxPipeline where the conventions agree, the default
guidance 3.5 and the cfg-1 shortcut, T5 padded to 256, packing inside the network (masks stay on the
/8 grid), the Flux model sampling and latent format against the reference's numbers, a regional
session end to end with its export."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import diffusers  # noqa: E402,F401  the diffusers extra, installed by make test: never skipped
import transformers  # noqa: E402,F401

from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline  # noqa: E402

import regional_widgets as rw  # noqa: E402
from regional_widgets.models import cfg_denoiser  # noqa: E402
from regional_widgets.models.diffusers import (FAMILY_COMPONENTS, FLUX_DEFAULT_GUIDANCE,  # noqa: E402
                                               FLUX_T5_MIN_TOKENS, DiffusersModel, pack_flux, unpack_flux)
from regional_widgets.sampling.latent_formats import LATENT_FORMATS  # noqa: E402
from regional_widgets.sampling.model_sampling import (ModelSamplingDiscreteFlow, ModelSamplingFlux,  # noqa: E402
                                                      flux_shift)
from regional_widgets.sampling.samplers import sample  # noqa: E402
from regional_widgets.sampling.schedules import calculate_sigmas  # noqa: E402

from .tiny_families import TransformerCalls, flux_pipeline, relative_error, saved  # noqa: E402

FIXTURES = json.loads((Path(__file__).parents[1] / "data" / "family_fixtures.json").read_text())


@pytest.fixture(scope="module")
def pipe(flux_folder):
    return flux_folder[0]


@pytest.fixture(scope="module")
def model(flux_folder):
    return DiffusersModel.from_pretrained(flux_folder[1])


def test_folder_is_recognised_with_flux_sampling_and_latent_format(model):
    assert model.family == "flux_dev" and isinstance(model, rw.models.Model)
    assert (model.latent_channels, model.downscale) == (16, 8)
    assert (model.latent_scale_factor, model.latent_shift_factor) == (0.3611, 0.1159)
    assert isinstance(model.model_sampling, ModelSamplingFlux) and model.model_sampling.shift == 1.15
    assert len(model.sigmas) == 10000
    cond = model.encode("a sky cat")
    assert cond.context.shape == (1, FLUX_T5_MIN_TOKENS, 32) and cond.pooled.shape == (1, 32)
    assert cond.guidance == FLUX_DEFAULT_GUIDANCE == FIXTURES["flux_extra_conds"]["default_guidance"][0]


def test_parity_with_the_flux_pipeline(pipe, model):
    """guidance 3.5, cfg 1 (no negative), max_sequence_length 256, our simple sigmas, Euler."""
    sigmas = calculate_sigmas(model.model_sampling, "simple", 4)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    theirs_pipe = FluxPipeline(**{**pipe.components, "scheduler": scheduler})
    theirs_pipe.set_progress_bar_config(disable=True)
    noise = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(1))
    out = theirs_pipe("a sky cat", height=64, width=64, sigmas=sigmas[:-1].tolist(), guidance_scale=3.5,
                      latents=pack_flux(noise)[0], max_sequence_length=256, output_type="latent").images
    out = FluxPipeline._unpack_latents(out, 64, 64, theirs_pipe.vae_scale_factor)
    torch.testing.assert_close(theirs_pipe.scheduler.sigmas, sigmas, atol=1e-6, rtol=0)
    ours = sample(cfg_denoiser(model, model.encode("a sky cat"), None, 1.0), noise, sigmas, "euler")
    error = relative_error(ours, out)
    print(f"\nFlux parity (Euler, 4 steps, guidance 3.5): max rel. error {error:.2e}")
    assert error <= 1e-4


def test_default_guidance_is_3_5_and_flux_guidance_overrides_it(model):
    x = torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(2))
    cond = model.encode("sky")
    bare = replace(cond, guidance=None)  # a cond without a guidance key: the reference still passes 3.5
    with TransformerCalls(model.transformer) as calls:
        a, b = model(x, torch.tensor([0.6]), cond), model(x, torch.tensor([0.6]), bare)
        c = model(x, torch.tensor([0.6]), model.conditioning("sky", guidance=2.0))
    assert [float(call["guidance"]) for call in calls.calls] == [3.5, 3.5, 2.0]
    assert torch.equal(a, b) and not torch.allclose(a, c)
    torch.testing.assert_close(calls.calls[0]["timestep"], torch.tensor([0.6]))  # sigma itself (x1000 inside)


def test_cfg_1_skips_the_negative_entirely(model):
    calls, encoded = [], []
    handle = model.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    original = model._encode
    model._encode = lambda prompt: encoded.append(prompt) or original(prompt)
    try:
        denoise = cfg_denoiser(model, model.encode("sky"), None, 1.0)
        out = denoise(torch.zeros(1, 16, 8, 8), torch.tensor([1.0]))
        with_negative = cfg_denoiser(model, model.encode("sky"), model.encode("cat"), 1.0)
        assert torch.equal(with_negative(torch.zeros(1, 16, 8, 8), torch.tensor([1.0])), out)  # no effect
    finally:
        handle.remove()
        del model._encode
    assert len(calls) == 2 and "" not in encoded  # one transformer call each, the empty prompt never encoded


def test_difference_t5_is_padded_to_256_not_512(pipe, model):
    """§5: the reference pads T5 to at least 256 tokens; FluxPipeline to max_sequence_length (512)."""
    ours = model.encode("a sky cat")
    theirs_256 = pipe.encode_prompt("a sky cat", None, device="cpu", max_sequence_length=256)
    theirs_512 = pipe.encode_prompt("a sky cat", None, device="cpu")
    torch.testing.assert_close(ours.context, theirs_256[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.pooled, theirs_256[1], atol=1e-6, rtol=0)  # CLIP-L pooled, unprojected
    assert theirs_512[0].shape == (1, 512, 32)
    assert not torch.allclose(ours.context[:, :4], theirs_512[0][:, :4], atol=1e-4)  # no mask: pads matter
    assert model.encode(" ".join(["a"] * 300)).context.shape == (1, 301, 32)  # never cut


def test_packing_is_inside_the_network_on_the_8_grid(pipe, model):
    x = torch.randn(2, 16, 6, 10, generator=torch.Generator().manual_seed(3))
    tokens, ids = pack_flux(x)
    assert torch.equal(tokens, FluxPipeline._pack_latents(x, 2, 16, 6, 10))
    assert torch.equal(ids, FluxPipeline._prepare_latent_image_ids(2, 3, 5, "cpu", torch.float32))
    assert torch.equal(unpack_flux(tokens, 6, 10), x)
    odd = torch.randn(1, 16, 7, 9, generator=torch.Generator().manual_seed(4))
    tokens, ids = pack_flux(odd)
    assert tokens.shape == (1, 4 * 5, 64) and torch.equal(unpack_flux(tokens, 7, 9), odd)
    # circular padding: the extra row is the first row
    assert torch.equal(tokens.reshape(1, 4, 5, 16, 2, 2)[0, 3, :, :, 1, :].permute(1, 0, 2).reshape(16, 10)[:, :9],
                       odd[0, :, 0, :])
    out = model(odd, torch.tensor([0.5]), model.encode("sky"))
    assert out.shape == odd.shape and torch.isfinite(out).all()


def test_schnell_folder_and_flux_sampling_numbers(tmp_path):
    schnell = DiffusersModel.from_pretrained(saved(flux_pipeline(tmp_path / "tok", guidance_embeds=False),
                                                   tmp_path / "schnell"))
    assert schnell.family == "flux_schnell" and schnell.encode("sky").guidance is None
    ms = schnell.model_sampling
    assert isinstance(ms, ModelSamplingDiscreteFlow) and (ms.shift, ms.multiplier) == (1.0, 1.0)
    with TransformerCalls(schnell.transformer) as calls:
        schnell(torch.zeros(1, 16, 8, 8), torch.tensor([0.25]), schnell.encode("sky"))
    assert "guidance" not in calls.calls[0] and float(calls.calls[0]["timestep"]) == 0.25
    tables = FIXTURES["sigma_tables"]
    for name, sampling in (("flux_schnell", ms), ("flux_default", ModelSamplingFlux(1.15)),
                           ("flux_node_512x512", ModelSamplingFlux(flux_shift(512, 512)))):
        fx = tables[name]
        assert len(sampling.sigmas) == fx["len"]
        for i, v in fx["table_at"].items():
            assert float(sampling.sigmas[int(i)]) == pytest.approx(v, rel=1e-6)
        for p, v in fx["percent_to_sigma"].items():
            assert sampling.percent_to_sigma(float(p)) == pytest.approx(v, rel=1e-6)
        assert float(sampling.timestep(torch.tensor(0.5))) == fx["timestep_of_sigma_0.5"]
    for size, mu in FIXTURES["flux_node_shift"].items():
        width, height = map(int, size.split("x"))
        assert flux_shift(width, height) == pytest.approx(mu, rel=1e-6)
    fmt, lf = LATENT_FORMATS["Flux"], FIXTURES["latent_formats"]["Flux"]
    z = 0.5 * torch.cos(torch.arange(8.0))
    np.testing.assert_allclose(fmt.process_in(z), lf["process_in(l)"], atol=1e-6)
    np.testing.assert_allclose(fmt.process_out(z), lf["process_out(l)"], atol=1e-6)


def test_preview_is_linear_and_never_calls_the_vae_decoder(model):
    decoded = []
    handle = model.vae.decoder.register_forward_hook(lambda *a: decoded.append(1))
    try:
        latent = torch.randn(1, 16, 4, 4, generator=torch.Generator().manual_seed(5))
        a, b = model.decode_preview(latent), model.decode_preview(2 * latent)
    finally:
        handle.remove()
    assert decoded == [] and a.shape == (1, 32, 32, 3) and not torch.equal(a, b)
    weights, bias = model._preview_factors
    assert weights.shape == (16, 3) and bias.shape == (3,)
    model.set_preview_factors(torch.zeros(16, 3), torch.zeros(3))
    assert torch.equal(model.decode_preview(latent), torch.full((1, 32, 32, 3), 0.5))
    model._preview_factors = (weights, bias)


def test_regional_session_runs_in_the_app_and_exports_a_workflow(model, tmp_path):
    app = rw.RegionalSamplerApp.from_model(model, size=64, regions=2, steps=3, cfg=1.0, scheduler="simple")
    session = app.session
    session.regions[0].mask = np.pad(np.ones((32, 64), np.float32), ((0, 32), (0, 0)))
    session.regions[1].mask = np.pad(np.ones((24, 24), np.float32), ((40, 0), (0, 40)))  # not on the token grid
    assert session.latent.shape == (1, 16, 8, 8)
    while not session.done:
        session.step()
    assert torch.isfinite(session.latent).all()
    paths = session.to_comfy(tmp_path / "workflow.json", checkpoint="flux1-dev-fp8.safetensors")
    graph = json.loads(Path(paths[0]).read_text())
    kinds = {node["class_type"] for node in graph.values()}
    # the all-in-one Flux checkpoint loads with CheckpointLoaderSimple; with no FluxGuidance node the
    # reference passes guidance 3.5, as this backend does; cfg 1 is exported as is
    assert {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptySD3LatentImage"} <= kinds
    assert not kinds & {"EmptyLatentImage", "ModelSamplingSD3", "ModelSamplingFlux"}  # mu 1.15: the default
    back = rw.RegionalSamplerSession.from_comfy(paths[0], model)
    assert back.latent_image.shape == (1, 16, 8, 8) and back.model.model_sampling is model.model_sampling
    cfgs = [n["inputs"]["cfg"] for n in graph.values() if "cfg" in n["inputs"]]
    assert cfgs and all(c == 1.0 for c in cfgs)


def test_flux_fill_style_inputs_are_refused(pipe):
    from diffusers import FluxTransformer2DModel

    fill = FluxTransformer2DModel(patch_size=1, in_channels=384, out_channels=64, num_layers=1, num_single_layers=1,
                                  attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                  pooled_projection_dim=32, guidance_embeds=True, axes_dims_rope=(4, 4, 8))
    parts = {k: v for k, v in pipe.components.items() if k in FAMILY_COMPONENTS["flux"] and k != "transformer"}
    with pytest.raises(ValueError, match="in_channels=384.*Flux Fill"):
        DiffusersModel(**parts, transformer=fill, scheduler_config=pipe.scheduler.config)
