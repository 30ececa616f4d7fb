"""Per-step time on a GPU: the session on DiffusersModel vs diffusers' own pipeline, per model family.

    python benchmarks/diffusers_gpu.py [--family sd15|sdxl|flux] [--steps 20] [--size 512] [--dtype float16]
    python benchmarks/diffusers_gpu.py --cpu-smoke [--family ...]   # a tiny CPU run that only proves the script works

Random weights built from config at the real shapes (nothing downloaded): SD1.5 (UNet 860M), SDXL
base (UNet 2.6B, CLIP-L + CLIP-G) or Flux-dev (transformer 12B, CLIP-L + T5-XXL; bfloat16 and a
large GPU). Euler; cfg 7.5 for SD1.5/SDXL, Flux-dev at cfg 1 with guidance 3.5 (one call per step).
Rows, medians over the steps of one run (after a warm-up run):
- pipeline: the diffusers pipeline (StableDiffusionPipeline / StableDiffusionXLPipeline / FluxPipeline),
  one step = one network call (CFG batched);
- wrapper:  our Euler sampler on DiffusersModel without the session (the same network calls fused in one
  loop; the CFG pair batched in one call, as the pipeline);
- session:  RegionalSamplerAdvanced with one region; one regional step = the base call and the region's
  call, each with CFG, plus the composite and the history snapshot.
"ms/call" divides by the network calls each step makes. Refuses to run without CUDA unless --cpu-smoke.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SD_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "steps_offset": 1}
CFG = {"sd15": 7.5, "sdxl": 7.5, "flux": 1.0}


def clip_tokenizer(folder: Path, pad: str = "<|endoftext|>"):
    from transformers import CLIPTokenizer

    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77,
                         bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token=pad)


def t5_tokenizer():
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab += [(c, -5.0), ("\u2581" + c, -4.0)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def clip(hidden, layers, projection=False, pad_id=2):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_attention_heads=max(hidden // 64, 2),
                            num_hidden_layers=layers, vocab_size=64, max_position_embeddings=77, bos_token_id=1,
                            eos_token_id=2, pad_token_id=pad_id, projection_dim=hidden)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config)


def vae(channels, full, **kwargs):
    from diffusers import AutoencoderKL

    blocks = (128, 256, 512, 512) if full else (32, 32, 32, 32)
    return AutoencoderKL(latent_channels=channels, block_out_channels=blocks, layers_per_block=2 if full else 1,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         norm_num_groups=32, **kwargs)


def build_pipeline(family: str, full: bool, device, dtype, folder: Path):
    """The family's pipeline at its real shapes (full) or tiny, random weights, built on ``device``."""
    import diffusers
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    with torch.device(device):  # initialise on the GPU: random init of billions of weights is slow on a CPU
        if family == "sd15":
            unet = diffusers.UNet2DConditionModel(
                **(dict(sample_size=64, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
                        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768)
                   if full else dict(sample_size=8, layers_per_block=1, block_out_channels=(32, 64),
                                     down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                     up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)),
                attention_head_dim=8, norm_num_groups=32)
            parts = dict(unet=unet, vae=vae(4, full), text_encoder=clip(768 if full else 32, 12 if full else 2),
                         tokenizer=clip_tokenizer(folder), safety_checker=None, feature_extractor=None,
                         requires_safety_checker=False, scheduler=diffusers.EulerDiscreteScheduler(**SD_SCHEDULER))
            pipe = diffusers.StableDiffusionPipeline(**parts)
        elif family == "sdxl":
            width_l, width_g = (768, 1280) if full else (32, 32)
            unet = diffusers.UNet2DConditionModel(
                **(dict(sample_size=128, layers_per_block=2, block_out_channels=(320, 640, 1280),
                        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20))
                   if full else dict(sample_size=8, layers_per_block=1, block_out_channels=(32, 64),
                                     transformer_layers_per_block=(1, 1), attention_head_dim=(2, 4))),
                down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (2 if full else 1),
                up_block_types=("CrossAttnUpBlock2D",) * (2 if full else 1) + ("UpBlock2D",),
                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                projection_class_embeddings_input_dim=width_g + 6 * 256, cross_attention_dim=width_l + width_g,
                norm_num_groups=32)
            (folder / "g").mkdir()
            parts = dict(unet=unet, vae=vae(4, full, scaling_factor=0.13025),
                         text_encoder=clip(width_l, 12 if full else 2),
                         text_encoder_2=clip(width_g, 32 if full else 2, projection=True, pad_id=0),
                         tokenizer=clip_tokenizer(folder), tokenizer_2=clip_tokenizer(folder / "g", pad="!"),
                         scheduler=diffusers.EulerDiscreteScheduler(**SD_SCHEDULER, timestep_spacing="leading"))
            pipe = diffusers.StableDiffusionXLPipeline(**parts)
        else:
            transformer = diffusers.FluxTransformer2DModel(
                **({} if full else dict(num_layers=1, num_single_layers=1, attention_head_dim=16,
                                        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
                                        axes_dims_rope=(4, 4, 8))), in_channels=64, guidance_embeds=True)
            t5 = T5EncoderModel(T5Config(vocab_size=64, d_model=4096 if full else 32, d_ff=10240 if full else 37,
                                         d_kv=64 if full else 8, num_layers=24 if full else 2,
                                         num_heads=64 if full else 2, feed_forward_proj="gated-gelu",
                                         decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
            parts = dict(transformer=transformer, text_encoder=clip(768 if full else 32, 12 if full else 2),
                         vae=vae(16, full, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False,
                                 use_post_quant_conv=False),
                         text_encoder_2=t5, tokenizer=clip_tokenizer(folder), tokenizer_2=t5_tokenizer(),
                         scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0))
            pipe = diffusers.FluxPipeline(**parts)
    pipe = pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class Clock:
    """Wall-clock marks that wait for the GPU first, and the network calls between the first and last."""

    def __init__(self, device, network):
        self.cuda = torch.device(device).type == "cuda"
        self.marks, self.calls = [], []
        self.network_calls = 0
        self.hook = network.register_forward_pre_hook(self.count)

    def count(self, module, args):
        self.network_calls += 1

    def mark(self):
        if self.cuda:
            torch.cuda.synchronize()
        self.marks.append(time.perf_counter())
        self.calls.append(self.network_calls)

    def result(self, drop_last: bool = False) -> tuple:
        """(median ms per step, median network calls per step); stops counting."""
        self.hook.remove()
        marks, calls = (self.marks[:-1], self.calls[:-1]) if drop_last else (self.marks, self.calls)
        ms = 1e3 * statistics.median(b - a for a, b in zip(marks, marks[1:]))
        return ms, statistics.median(b - a for a, b in zip(calls, calls[1:]))


def time_pipeline(family, pipe, network, size, steps, device):
    kwargs = dict(height=size, width=size, num_inference_steps=steps, output_type="latent",
                  guidance_scale=3.5 if family == "flux" else CFG[family], generator=torch.Generator().manual_seed(0))
    if family == "flux":
        kwargs["max_sequence_length"] = 256  # the reference's T5 length

    def on_step_end(pipeline, i, t, tensors):
        clock.mark()
        return tensors

    pipe("a sky", **kwargs)  # warm-up
    clock = Clock(device, network)
    clock.mark()
    pipe("a sky", callback_on_step_end=on_step_end, **kwargs)
    return clock.result()


def time_wrapper(family, model, size, steps, device):
    import regional_widgets as rw
    from regional_widgets.models import cfg_denoiser
    from regional_widgets.sampling import calculate_sigmas, sample

    sigmas = calculate_sigmas(model.model_sampling, "simple" if model.is_flow else "normal", steps)
    denoise = cfg_denoiser(model, model.encode("a sky"), model.encode(""), CFG[family])
    noise = torch.randn(rw.empty_latent(model, size, size).shape, generator=torch.Generator().manual_seed(0))
    x = noise if model.is_flow else noise * (1 + sigmas[0] ** 2) ** 0.5
    sample(denoise, x, sigmas, "euler")  # warm-up
    clock = Clock(device, model.network)
    clock.mark()
    sample(denoise, x, sigmas, "euler", callback=lambda info: clock.mark())
    return clock.result()


def time_session(family, model, size, steps, device):
    import regional_widgets as rw

    mask = np.zeros((size, size), np.float32)
    mask[size // 2:] = 1
    scheduler = "simple" if model.is_flow else "normal"
    base = rw.SamplerConfig(sampler="euler", scheduler=scheduler, cfg=CFG[family], positive="a sky")
    region = rw.Region(mask, rw.SamplerConfig(sampler="euler", scheduler=scheduler, cfg=CFG[family], positive="a b"))
    session = rw.RegionalSamplerSession(model, rw.empty_latent(model, size, size), base=base, regions=[region],
                                        steps=steps)
    session.run()  # warm-up
    session.reset()
    clock = Clock(device, model.network)
    clock.mark()
    while not session.done:
        session.step()
        clock.mark()
    return clock.result(drop_last=True)  # the last step is the node's base-only finalize call


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="sd15", choices=("sd15", "sdxl", "flux"))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=None, help="image size (default 512 SD1.5, 1024 SDXL/Flux)")
    parser.add_argument("--dtype", default=None, choices=("float16", "bfloat16", "float32"),
                        help="default float16 (bfloat16 for Flux)")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny stack, 64x64, 3 steps, float32 on the CPU: checks the script, measures nothing")
    args = parser.parse_args(argv)
    family = args.family
    if args.cpu_smoke:
        device, dtype, size, steps, full = "cpu", torch.float32, 64, 3, False
    else:
        if not torch.cuda.is_available():
            sys.exit("diffusers_gpu.py: CUDA is not available. This benchmark measures GPU step times; run it on a "
                     "CUDA machine, or pass --cpu-smoke for a tiny CPU run that only checks the script.")
        dtype = getattr(torch, args.dtype or ("bfloat16" if family == "flux" else "float16"))
        size = args.size or (512 if family == "sd15" else 1024)
        device, steps, full = "cuda", args.steps, True

    from regional_widgets.models import DiffusersModel

    with tempfile.TemporaryDirectory() as tmp:
        pipe = build_pipeline(family, full, device, dtype, Path(tmp))
    model = DiffusersModel.from_pipeline(pipe)
    network = model.network
    rows = {"pipeline": time_pipeline(family, pipe, network, size, steps, device),
            "wrapper": time_wrapper(family, model, size, steps, device),
            "session": time_session(family, model, size, steps, device)}
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke run: not a measurement)"
    print(f"{name}, {family} ({'real shapes, random weights' if full else 'tiny stack'}), {size}x{size}, "
          f"{steps} steps, {dtype}, euler, cfg {CFG[family]}" + (", guidance 3.5" if family == "flux" else ""))
    print(f"{'':10} {'ms/step':>9} {'calls/step':>11} {'ms/call':>9}")
    for label, (ms, calls) in rows.items():
        print(f"{label:10} {ms:9.2f} {calls:11g} {ms / calls:9.2f}")
    pipeline_ms = rows["pipeline"][0]
    per_call = {label: ms / calls for label, (ms, calls) in rows.items()}
    print(f"session regional step / pipeline step: {rows['session'][0] / pipeline_ms:.2f}x; "
          f"wrapper step / pipeline step: {rows['wrapper'][0] / pipeline_ms:.2f}x; "
          f"per call: session / pipeline {per_call['session'] / per_call['pipeline']:.2f}x")


if __name__ == "__main__":
    main()
