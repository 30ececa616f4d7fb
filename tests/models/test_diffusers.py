"""DiffusersModel on a tiny random SD-shaped stack built from config (no download): the session end to
end, parity with diffusers' own schedulers and pipeline, the timestep maps, prompt caching, dtypes,
v-prediction, loading from disk and the offline errors. Random weights: plumbing and numbers, not pictures."""
from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler,  # noqa: E402
                       EulerDiscreteScheduler, HeunDiscreteScheduler, KDPM2DiscreteScheduler,
                       LMSDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel)
from diffusers.schedulers import scheduling_euler_ancestral_discrete  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

import regional_widgets as rw  # noqa: E402
from regional_widgets.models import cfg_denoiser  # noqa: E402
from regional_widgets.models.diffusers import DiffusersModel, discrete_sigmas, sigma_to_timestep  # noqa: E402
from regional_widgets.models.families import UnknownModelFolder  # noqa: E402
from regional_widgets.sampling.noise import prepare_noise  # noqa: E402
from regional_widgets.sampling.samplers import sample  # noqa: E402
from regional_widgets.sampling.schedules import (ModelSampling, calculate_sigmas, sampler_sigmas,  # noqa: E402
                                                 sd15_sigmas)

from .tiny_families import first_call_session  # noqa: E402

SD15_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "steps_offset": 1}
PARITY = {}  # sampler -> (max |ours - diffusers|, max |diffusers|), printed after the module


def write_tokenizer_files(folder):
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    for piece in ("sk", "sky</w>"):
        vocab[piece] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\ns k\nsk y</w>\n")
    return vocab


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The tiny SD-shaped components of spec/models.md (UNet 8x8 latents, VAE downscale 8, CLIP 32-d)."""
    folder = tmp_path_factory.mktemp("tokenizer")
    vocab = write_tokenizer_files(folder)
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)
    torch.manual_seed(0)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=32).eval()
    vae = AutoencoderKL(latent_channels=4, block_out_channels=(32, 32, 64, 64), layers_per_block=1,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        norm_num_groups=32).eval()
    text_encoder = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4,
                                                num_hidden_layers=2, vocab_size=len(vocab), max_position_embeddings=77,
                                                bos_token_id=0, eos_token_id=1, pad_token_id=1)).eval()
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def model(stack):
    return DiffusersModel(**stack, scheduler_config=SD15_SCHEDULER)


@pytest.fixture(scope="module", autouse=True)
def parity_report():
    yield
    if PARITY:
        print("\nmax |ours - diffusers| (max |x|) per sampler: "
              + ", ".join(f"{k} {d:.2e} ({m:.1f})" for k, (d, m) in PARITY.items()))


def make_model(stack, timestep_map="argmin", **config):
    return DiffusersModel(**stack, scheduler_config={**SD15_SCHEDULER, **config}, timestep_map=timestep_map)


class UNetCalls:
    """Records (sample, timestep) of every UNet forward."""

    def __init__(self, unet):
        self.calls = []
        self.handle = unet.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        sample_, t = (list(args) + [kwargs.get("sample"), kwargs.get("timestep")])[:2]
        self.calls.append((sample_.detach().clone(), torch.as_tensor(t).detach().clone()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# -- the session end to end ------------------------------------------------------------------------

@pytest.mark.parametrize("n_regions", [1, 2])
def test_session_runs_end_to_end(model, n_regions):
    masks = [np.zeros((64, 64), np.float32) for _ in range(n_regions)]
    masks[0][32:] = 1
    if n_regions == 2:
        masks[1][:24, :24] = 1
    regions = [rw.Region(m, rw.SamplerConfig(sampler=s, positive=p, cfg=3.0))
               for m, s, p in zip(masks, ("dpmpp_2m", "euler_ancestral"), ("sky", "a b"))]
    base = rw.SamplerConfig(sampler="euler", scheduler="karras", cfg=3.0, positive="sky")
    session = rw.RegionalSamplerSession(model, rw.empty_latent(model, 64, 64), base=base, regions=regions, steps=3)
    result = session.run()
    assert result.shape == (1, 4, 8, 8) and torch.isfinite(result).all()
    picture, preview = model.decode(result), model.decode_preview(result)
    assert picture.shape == preview.shape == (1, 64, 64, 3)
    assert picture.dtype == torch.float32 and 0 <= picture.min() and picture.max() <= 1


@pytest.mark.parametrize("start_at_step, with_region", [(0, False), (2, True)])
def test_first_call_sees_scaled_latent_plus_noise_in_model_space(model, start_at_step, with_region):
    """The session scales the VAE-space latent by 0.18215 per call and adds noise in model space.

    (From sigma_max the noise is scaled by sqrt(1 + sigma^2), where the call denoises: without a
    region the base call covers the whole latent. Below sigma_max the masked-out area, re-noised to
    sigma, sees the same value as the denoised one.)"""
    latent = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    seen = []

    class Spy(DiffusersModel):
        def __call__(self, x, sigma, cond):
            seen.append((x.clone(), sigma.clone()))
            return super().__call__(x, sigma, cond)

    spy = Spy(model.unet, model.vae, model.text_encoder, model.tokenizer, SD15_SCHEDULER)
    session = first_call_session(spy, latent, with_region, start_at_step)
    session.substep()
    sigmas = sampler_sigmas(model.sigmas, "euler", "normal", 5)
    sigma0 = sigmas[start_at_step]
    noise_scale = torch.sqrt(1 + sigma0 ** 2) if start_at_step == 0 else sigma0  # max_denoise at sigma_max
    expected = latent * 0.18215 + prepare_noise(latent, 7) * noise_scale
    assert model.latent_scale_factor == pytest.approx(0.18215)
    torch.testing.assert_close(seen[0][0], expected, atol=1e-5, rtol=0)
    assert float(seen[0][1]) == pytest.approx(float(sigma0))
    # the state the session publishes is back in VAE space: the next call (no noise) sees it x 0.18215
    after = session.latent.clone()
    session.substep()
    torch.testing.assert_close(seen[-1][0], after * 0.18215, atol=1e-5, rtol=1e-6)


# -- parity with diffusers' schedulers -------------------------------------------------------------

def diffusers_loop(unet, scheduler, x, context, stop_before_last=False, generator=None):
    """The pipeline's denoising loop, bare: scale_model_input, UNet, step."""
    timesteps = scheduler.timesteps[:-1] if stop_before_last else scheduler.timesteps
    for t in timesteps:
        eps = unet(scheduler.scale_model_input(x, t), t, encoder_hidden_states=context).sample
        extra = {"generator": generator} if generator is not None else {}
        x = scheduler.step(eps, t, x, **extra).prev_sample
    return x


def run_pair(model, scheduler, sampler, *, vp_start=False, stop_before_last=False, noise_sampler=None,
             generator=None):
    """(ours, diffusers', our UNet calls, diffusers' UNet calls) from the same noise and sigmas."""
    cond = model.encode("sky")
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(11))
    sigmas = scheduler.sigmas.clone()
    if sampler in ("heun", "dpm_2"):  # these schedulers repeat their sigmas; ours walk the plain list
        sigmas = torch.unique_consecutive(sigmas)
    with torch.no_grad(), UNetCalls(model.unet) as theirs:
        x_start = noise * scheduler.init_noise_sigma  # 1 for DPMSolverMultistep: its x is x / sqrt(sigma^2 + 1)
        reference = diffusers_loop(model.unet, scheduler, x_start, cond, stop_before_last, generator)
    x = noise * (sigmas[0] ** 2 + 1) ** 0.5 if vp_start else x_start
    if stop_before_last:
        sigmas = sigmas[:-1]
    with UNetCalls(model.unet) as ours:
        result = sample(cfg_denoiser(model, cond), x, sigmas, sampler, noise_sampler=noise_sampler)
    return result, reference, ours.calls, theirs.calls


def assert_parity(name, result, reference, ours, theirs):
    diff = (result - reference).abs().max().item()
    PARITY[name] = diff, reference.abs().max().item()
    assert len(ours) == len(theirs), f"{name}: {len(ours)} UNet calls vs diffusers' {len(theirs)}"
    for (xa, ta), (xb, tb) in zip(ours, theirs):
        torch.testing.assert_close(xa, xb.expand_as(xa), atol=2e-4, rtol=0)
        assert torch.allclose(ta.double(), tb.double().expand_as(ta), atol=1e-3)
    assert diff <= 1e-4, f"{name}: max |ours - diffusers| = {diff:.2e}"


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_euler_matches_euler_discrete_with_custom_sigmas(stack, prediction_type):
    """Karras sigmas through set_timesteps(sigmas=...): diffusers places them with log_interp."""
    model = make_model(stack, "log_interp", prediction_type=prediction_type)
    scheduler = EulerDiscreteScheduler(**{**SD15_SCHEDULER, "prediction_type": prediction_type})
    scheduler.set_timesteps(sigmas=calculate_sigmas(model.sigmas, "karras", 5).tolist())
    result, reference, ours, theirs = run_pair(model, scheduler, "euler")
    # the UNet input x / sqrt(sigma^2 + 1) is bitwise scale_model_input's; t differs by ~1e-4 because our
    # table is computed in float64, diffusers' in float32 (assert_parity checks every call)
    assert torch.equal(ours[0][0], theirs[0][0]) and abs(float(ours[0][1]) - float(theirs[0][1])) < 1e-3
    assert_parity("euler" if prediction_type == "epsilon" else "euler (v_prediction)", result, reference, ours, theirs)


def test_euler_ancestral_matches_with_the_same_draws(model, monkeypatch):
    draws = []
    original = scheduling_euler_ancestral_discrete.randn_tensor

    def recording(*args, **kwargs):
        draws.append(original(*args, **kwargs))
        return draws[-1]

    monkeypatch.setattr(scheduling_euler_ancestral_discrete, "randn_tensor", recording)
    scheduler = EulerAncestralDiscreteScheduler(**SD15_SCHEDULER)
    scheduler.set_timesteps(4)  # linspace: integer timesteps 999, 666, 333, 0 on table sigmas
    replay = iter(draws)
    result, reference, ours, theirs = run_pair(model, scheduler, "euler_ancestral",
                                               noise_sampler=lambda s, s_next: next(replay),
                                               generator=torch.Generator().manual_seed(5))
    assert len(draws) == 4  # diffusers draws on every step; ours skips the step to sigma 0
    assert_parity("euler_ancestral", result, reference, ours, theirs)


def test_heun_matches_heun_discrete_with_the_table_map(stack):
    """5 linspace steps put t at 249.75 etc.: diffusers interpolates sigma linearly there ("table")."""
    model = make_model(stack, "table")
    scheduler = HeunDiscreteScheduler(**SD15_SCHEDULER)
    scheduler.set_timesteps(5)
    assert scheduler.timesteps[1] % 1 != 0
    assert_parity("heun", *run_pair(model, scheduler, "heun"))


def test_lms_matches_lms_discrete_before_the_last_step(model):
    """The reference's lms sets x = D on the step to 0; diffusers integrates it: compare before it."""
    scheduler = LMSDiscreteScheduler(**SD15_SCHEDULER)
    scheduler.set_timesteps(10)  # integer timesteps, stride 111
    assert_parity("lms", *run_pair(model, scheduler, "lms", stop_before_last=True))


def test_dpm_2_matches_kdpm2_discrete(stack):
    """KDPM2 places its log-midpoints with log_interp (integer main steps are exact in every map)."""
    model = make_model(stack, "log_interp")
    scheduler = KDPM2DiscreteScheduler(**SD15_SCHEDULER)
    scheduler.set_timesteps(4)
    assert_parity("dpm_2", *run_pair(model, scheduler, "dpm_2"))


def test_dpmpp_2m_matches_dpm_solver_multistep(model):
    """Karras sigmas with rounded timesteps = the argmin map; that scheduler's x is VP (noise scaled to 1)."""
    scheduler = DPMSolverMultistepScheduler(**SD15_SCHEDULER, algorithm_type="dpmsolver++", solver_order=2,
                                            use_karras_sigmas=True)
    scheduler.set_timesteps(5)
    assert scheduler.init_noise_sigma == 1.0
    assert_parity("dpmpp_2m", *run_pair(model, scheduler, "dpmpp_2m", vp_start=True))


def test_matches_stable_diffusion_pipeline_with_cfg(model, stack):
    """The whole pipeline (prompt encoding, batched CFG on eps, Euler, VAE decode) vs ours."""
    pipe = StableDiffusionPipeline(**stack, scheduler=EulerDiscreteScheduler(**SD15_SCHEDULER),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    out = pipe("sky", height=64, width=64, num_inference_steps=4, guidance_scale=7.5, latents=noise,
               output_type="latent").images
    sigmas = pipe.scheduler.sigmas
    denoise = cfg_denoiser(model, model.encode("sky"), model.encode(""), 7.5)
    ours = sample(denoise, noise * pipe.scheduler.init_noise_sigma, sigmas, "euler")
    # float32 rounding: CFG on D (ours, the reference's) vs on eps (diffusers), amplified by cfg x sigma;
    # the latents reach |x| ~ 40 here, so compare relative to that
    diff = (ours - out).abs().max().item()
    PARITY["pipeline euler cfg 7.5"] = diff, out.abs().max().item()
    assert diff <= 1e-5 * out.abs().max().item()
    with torch.no_grad():
        picture = (pipe.vae.decode(out / 0.18215).sample / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1)
    torch.testing.assert_close(model.decode(ours / model.latent_scale_factor), picture, atol=1e-4, rtol=0)


# -- the sigma table and the timestep maps ---------------------------------------------------------

def test_sigma_table_from_the_scheduler_config():
    assert torch.equal(discrete_sigmas(SD15_SCHEDULER), sd15_sigmas())
    linear = discrete_sigmas({"beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02,
                              "num_train_timesteps": 10})
    betas = np.linspace(1e-4, 0.02, 10)
    acp = np.cumprod(1 - betas)
    np.testing.assert_allclose(linear.numpy(), np.sqrt((1 - acp) / acp), rtol=1e-6)
    assert linear.dtype == torch.float32 and (linear[1:] > linear[:-1]).all()
    with pytest.raises(ValueError, match="beta_schedule"):
        discrete_sigmas({"beta_schedule": "sigmoid"})
    with pytest.raises(ValueError, match="zero_snr"):
        discrete_sigmas({**SD15_SCHEDULER, "rescale_betas_zero_snr": True})


def test_timestep_maps_against_hand_computations():
    table = sd15_sigmas()
    s = table.double().tolist()
    k = 400
    between_log = math.exp(0.7 * math.log(s[k]) + 0.3 * math.log(s[k + 1]))  # 30% of the way in log sigma
    between_lin = 0.3 * s[k] + 0.7 * s[k + 1]  # 70% of the way in sigma
    sigma = torch.tensor([s[0], s[k], s[999], between_log, between_lin, 0.001, 100.0])
    argmin = sigma_to_timestep(sigma, table, "argmin")
    log_interp = sigma_to_timestep(sigma, table, "log_interp")
    linear = sigma_to_timestep(sigma, table, "table")
    hand_argmin = [min(range(1000), key=lambda t: abs(math.log(v) - math.log(s[t]))) for v in sigma.tolist()]
    assert argmin.tolist() == hand_argmin == [0, k, 999, k, k + 1, 0, 999]
    torch.testing.assert_close(log_interp, torch.tensor([0, k, 999, k + 0.3, log_interp[4].item(), 0, 999],
                                                        dtype=torch.float64), atol=1e-4, rtol=0)
    lin_frac = (math.log(float(sigma[4])) - math.log(s[k])) / (math.log(s[k + 1]) - math.log(s[k]))
    assert log_interp[4].item() == pytest.approx(k + lin_frac, abs=1e-4)
    torch.testing.assert_close(linear[[0, 1, 2, 4, 5, 6]],
                               torch.tensor([0, k, 999, k + 0.7, 0, 999], dtype=torch.float64), atol=1e-4, rtol=0)
    assert np.interp(float(sigma[3]), s, np.arange(1000)) == pytest.approx(linear[3].item(), abs=1e-6)
    # log_interp inverts the log-linear sigma(t) of the schedules
    t = torch.tensor([12.25, 500.5, 987.75])
    torch.testing.assert_close(sigma_to_timestep(ModelSampling(table).sigma(t), table, "log_interp"), t.double(),
                               atol=1e-3, rtol=0)


def test_the_unet_receives_the_mapped_timestep(stack):
    sigma = torch.tensor([3.0])
    for name in ("argmin", "log_interp", "table"):
        model = make_model(stack, name)
        with UNetCalls(model.unet) as calls:
            model(torch.zeros(1, 4, 8, 8), sigma, model.encode(""))
        assert float(calls.calls[0][1]) == pytest.approx(float(sigma_to_timestep(sigma, model.sigmas, name)), abs=1e-4)
    with pytest.raises(ValueError, match="timestep_map"):
        make_model(stack, "nearest")


# -- prompts, prediction types, dtypes ------------------------------------------------------------

def test_text_encoder_runs_once_per_distinct_prompt(stack):
    model = make_model(stack)
    calls = []
    handle = stack["text_encoder"].register_forward_hook(lambda *a: calls.append(1))
    try:
        a, b, empty = model.encode("sky"), model.encode("sky"), model.encode("")
        assert a is b and len(calls) == 2 and a.shape == (1, 77, 32)
        mask = np.zeros((64, 64), np.float32)
        mask[:32] = 1
        session = rw.RegionalSamplerSession(model, rw.empty_latent(model, 64, 64),
                                            base=rw.SamplerConfig(cfg=2.0, positive="sky"),
                                            regions=[rw.Region(mask, rw.SamplerConfig(cfg=2.0, positive="a b"))],
                                            steps=2)
        session.run()
        assert len(calls) == 3  # "sky", "" and "a b", however many steps and calls
    finally:
        handle.remove()


def test_v_prediction_against_a_direct_computation(stack):
    model = make_model(stack, prediction_type="v_prediction")
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    sigma = torch.tensor([2.5, 0.4])
    cond = model.encode("sky")
    with torch.no_grad():
        c_in = (1 / torch.sqrt(sigma ** 2 + 1)).view(-1, 1, 1, 1)
        t = sigma_to_timestep(sigma, model.sigmas, "argmin").float()
        v = stack["unet"](x * c_in, t, encoder_hidden_states=cond.expand(2, -1, -1)).sample
    s = sigma.view(-1, 1, 1, 1)
    expected = x / (s ** 2 + 1) - v * s / torch.sqrt(s ** 2 + 1)
    torch.testing.assert_close(model(x, sigma, cond), expected, atol=1e-5, rtol=1e-5)
    eps_model = make_model(stack)
    assert not torch.allclose(eps_model(x, sigma, cond), expected)
    with pytest.raises(ValueError, match="prediction_type"):
        make_model(stack, prediction_type="sample")


@pytest.mark.parametrize("unet_dtype, atol", [(torch.float64, 1e-5), (torch.bfloat16, 0.1)])
def test_unet_dtype_is_followed_and_outputs_come_back_in_x_dtype(stack, model, unet_dtype, atol):
    other = DiffusersModel(**{**stack, "unet": copy.deepcopy(stack["unet"]).to(unet_dtype)},
                           scheduler_config=SD15_SCHEDULER)
    assert other.dtype == unet_dtype and other.device.type == "cpu"
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(6))
    cond = other.encode("sky")  # float32 text embedding: cast to the UNet's dtype inside
    for x_dtype in (torch.float32, torch.float64):
        out = other(x.to(x_dtype), torch.tensor([1.5], dtype=x_dtype), cond)
        assert out.dtype == x_dtype and out.device == x.device and torch.isfinite(out).all()
        torch.testing.assert_close(out.float(), model(x, torch.tensor([1.5]), cond), atol=atol, rtol=0)


def test_call_batch_is_one_unet_call_equal_to_separate_calls(model):
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(10)).repeat(3, 1, 1, 1)
    sigma = torch.tensor([4.0, 4.0, 1.0])
    conds = [model.encode("sky"), model.encode(""), model.encode("sky")]
    with UNetCalls(model.unet) as calls:
        batched = model.call_batch(x, sigma, conds)
    assert len(calls.calls) == 1
    for k in range(3):
        torch.testing.assert_close(batched[k:k + 1], model(x[k:k + 1], sigma[k:k + 1], conds[k]), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="one cond per batch item"):
        model.call_batch(x, sigma, conds[:2])
    scalar = model(x, torch.tensor(4.0), conds[0])  # one sigma and one cond broadcast to the batch
    torch.testing.assert_close(scalar, batched[:1].expand(3, -1, -1, -1), atol=1e-5, rtol=0)


def test_protocol_sizes_and_input_checks(model):
    assert isinstance(model, rw.models.Model)
    assert (model.latent_channels, model.downscale) == (4, 8)
    assert torch.equal(model.sigmas, sd15_sigmas())
    # the float64 table kept (log-sigmas as the reference's): schedules bit for bit
    from regional_widgets.sampling.model_sampling import sd15_model_sampling
    assert torch.equal(model.model_sampling.log_sigmas, sd15_model_sampling().log_sigmas)
    assert torch.equal(calculate_sigmas(model, "normal", 7), calculate_sigmas(sd15_model_sampling(), "normal", 7))
    assert rw.empty_latent(model, 64, 64).shape == (1, 4, 8, 8)
    x = torch.zeros(1, 4, 8, 8)
    assert torch.equal(model(x, torch.zeros(1), model.encode("")), x)  # D(x, 0) = x
    with pytest.raises(ValueError, match="x: expected"):
        model(torch.zeros(1, 3, 8, 8), torch.ones(1), model.encode(""))
    with pytest.raises(ValueError, match="cond"):
        model(x, torch.ones(1), "sky")
    with pytest.raises(ValueError, match="prompt"):
        model.encode(3)
    with pytest.raises(ValueError, match="latent"):
        model.decode(torch.zeros(1, 3, 8, 8))
    rgb = torch.rand(1, 64, 64, 3)
    latent = model.encode_image(rgb)
    assert latent.shape == (1, 4, 8, 8) and latent.dtype == torch.float32


def test_decode_preview_uses_the_sd15_factors_in_model_space(model):
    latent = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(8))
    preview = model.decode_preview(latent)
    factors = rw.models.latents.SD15_LATENT_RGB_FACTORS
    rgb = torch.einsum("bchw,cr->bhwr", latent.double() * 0.18215, factors)
    expected = ((rgb + 1) / 2).clamp(0, 1).float()
    assert preview.shape == (1, 16, 16, 3)
    torch.testing.assert_close(preview[:, ::8, ::8], expected, atol=1e-6, rtol=0)


# -- loading from disk, offline -------------------------------------------------------------------

def test_from_pretrained_loads_a_saved_pipeline_offline(stack, model, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = StableDiffusionPipeline(**stack, scheduler=EulerDiscreteScheduler(**SD15_SCHEDULER),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(tmp_path / "sd")
    loaded = DiffusersModel.from_pretrained(tmp_path / "sd")
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(loaded(x, torch.tensor([2.0]), loaded.encode("sky")),
                               model(x, torch.tensor([2.0]), model.encode("sky")), atol=1e-6, rtol=0)
    assert torch.equal(loaded.sigmas, model.sigmas) and loaded.latent_scale_factor == model.latent_scale_factor
    wide = DiffusersModel.from_pretrained(str(tmp_path / "sd"), torch_dtype=torch.float64, device="cpu",
                                          timestep_map="table")
    assert wide.dtype == torch.float64 and wide.vae.dtype == torch.float64 and wide.timestep_map == "table"
    assert DiffusersModel.from_pipeline(pipe).latent_channels == 4


def test_clear_errors_when_the_weights_are_not_on_disk(tmp_path):
    with pytest.raises(FileNotFoundError, match="Hugging Face Hub id.*never downloads"):
        DiffusersModel.from_pretrained("runwayml/stable-diffusion-v1-5")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        DiffusersModel.from_pretrained(tmp_path / "missing")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="from_single_file"):
        DiffusersModel.from_pretrained(tmp_path / "model.safetensors")
    with pytest.raises(UnknownModelFolder, match="not a supported diffusers model folder.*supported: Stable"):
        DiffusersModel.from_pretrained(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(FileNotFoundError, match="unet/"):
        DiffusersModel.from_pretrained(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    (tmp_path / "prior").mkdir()
    with pytest.raises(UnknownModelFolder, match="KandinskyPipeline.*prior"):
        DiffusersModel.from_pretrained(tmp_path)


def test_importing_regional_widgets_does_not_import_diffusers():
    code = ("import sys, regional_widgets, regional_widgets.models as m; "
            "assert 'diffusers' not in sys.modules and 'transformers' not in sys.modules; "
            "assert 'DiffusersModel' in dir(m)")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert rw.models.DiffusersModel is DiffusersModel


def test_prompt_syntax_applies_to_sd15_too(model):
    """The reference's weights and chunks for SD1.5 (spec model_families.md §4.1): "(sky:1.5)" is
    interpolated from the empty prompt's encoding; 100 words are two 77-token chunks."""
    plain, weighted, empty = model.encode("a sky"), model.encode("a (sky:1.5)"), model.encode("")
    expected = plain.clone()
    expected[:, 2] = empty[:, 2] + 1.5 * (plain[:, 2] - empty[:, 2])
    torch.testing.assert_close(weighted, expected, atol=1e-5, rtol=0)
    assert not torch.allclose(weighted, plain)
    long = model.encode(" ".join(["a"] * 100))
    assert long.shape == (1, 154, 32)
    torch.testing.assert_close(long[:, :77], model.encode(" ".join(["a"] * 75)), atol=1e-6, rtol=0)
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(12))
    assert torch.isfinite(cfg_denoiser(model, long, empty, 3.0)(x, torch.tensor([2.0]))).all()


def test_prompt_cache_keeps_the_most_recent_prompts():
    from regional_widgets.models.base import PromptCache

    cache, made = PromptCache(maxsize=2), []

    def make(key):
        return lambda: made.append(key) or object()

    a = cache.get("a", make("a"))
    cache.get("b", make("b"))
    assert cache.get("a", make("a")) is a and made == ["a", "b"]  # a hit refreshes "a"
    cache.get("c", make("c"))  # evicts "b", the least recently used
    assert len(cache) == 2 and cache.get("a", make("a")) is a
    cache.get("b", make("b"))
    assert made == ["a", "b", "c", "b"]
    cache.clear()
    assert len(cache) == 0
