"""Per-step time on a GPU: the session on DiffusersModel vs diffusers' own StableDiffusionPipeline.

    python benchmarks/diffusers_gpu.py [--steps 20] [--size 512] [--dtype float16]
    python benchmarks/diffusers_gpu.py --cpu-smoke      # a tiny CPU run that only proves the script works

The same random SD1.5-shaped UNet (built from config: no weights, nothing downloaded), VAE and CLIP
text encoder, Euler on the "normal" schedule (= diffusers' linspace spacing), cfg 7.5, one image.
Rows, medians over the steps of one run (after a warm-up run):
- pipeline: StableDiffusionPipeline, one step = one UNet call on a batch of 2 (CFG batched);
- wrapper:  our Euler sampler on DiffusersModel without the session (CFG = two batch-1 calls);
- session:  RegionalSamplerAdvanced with one region; one regional step = the base call and the
  region's call, each with CFG (4 UNet calls), plus the composite and the history snapshot.
"ms/UNet call" divides by the UNet calls each step makes. Refuses to run without CUDA unless --cpu-smoke.
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

SD15_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "steps_offset": 1}


def tiny_tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def build_stack(full: bool, device, dtype, folder: Path) -> dict:
    """SD1.5's shapes (full) or the tests' tiny stack, random weights, built on ``device``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    if full:
        unet_kw = dict(sample_size=64, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
                       down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                       up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=768)
        vae_kw = dict(block_out_channels=(128, 256, 512, 512), layers_per_block=2)
        clip_kw = dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12)
    else:
        unet_kw = dict(sample_size=8, layers_per_block=1, block_out_channels=(32, 64),
                       down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                       up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)
        vae_kw = dict(block_out_channels=(32, 32, 64, 64), layers_per_block=1)
        clip_kw = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)
    tokenizer = tiny_tokenizer(folder)
    with torch.device(device):  # initialise on the GPU: the full UNet's random init is slow on a CPU
        unet = UNet2DConditionModel(in_channels=4, out_channels=4, attention_head_dim=8, norm_num_groups=32, **unet_kw)
        vae = AutoencoderKL(latent_channels=4, down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, **vae_kw)
        text_encoder = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), max_position_embeddings=77,
                                                    bos_token_id=0, eos_token_id=1, pad_token_id=1, **clip_kw))
    modules = {"unet": unet, "vae": vae, "text_encoder": text_encoder}
    if dtype != torch.float32:
        modules = {name: module.to(dtype) for name, module in modules.items()}
    return {name: module.eval() for name, module in modules.items()} | {"tokenizer": tokenizer}


class Clock:
    """Wall-clock marks that wait for the GPU first, and the UNet calls between the first and last."""

    def __init__(self, device, unet):
        self.cuda = torch.device(device).type == "cuda"
        self.marks, self.calls = [], []
        self.unet_calls = 0
        self.hook = unet.register_forward_pre_hook(self.count)

    def count(self, module, args):
        self.unet_calls += 1

    def mark(self):
        if self.cuda:
            torch.cuda.synchronize()
        self.marks.append(time.perf_counter())
        self.calls.append(self.unet_calls)

    def result(self, drop_last: bool = False) -> tuple:
        """(median ms per step, median UNet calls per step); stops counting."""
        self.hook.remove()
        marks, calls = (self.marks[:-1], self.calls[:-1]) if drop_last else (self.marks, self.calls)
        ms = 1e3 * statistics.median(b - a for a, b in zip(marks, marks[1:]))
        return ms, statistics.median(b - a for a, b in zip(calls, calls[1:]))


def time_pipeline(pipe, size, steps, device):

    def on_step_end(pipeline, i, t, kwargs):
        clock.mark()
        return kwargs

    pipe("a sky", height=size, width=size, num_inference_steps=steps, guidance_scale=7.5, output_type="latent",
         generator=torch.Generator().manual_seed(0))  # warm-up
    clock = Clock(device, pipe.unet)
    clock.mark()
    pipe("a sky", height=size, width=size, num_inference_steps=steps, guidance_scale=7.5, output_type="latent",
         generator=torch.Generator().manual_seed(0), callback_on_step_end=on_step_end)
    return clock.result()


def time_wrapper(model, size, steps, device):
    import regional_widgets as rw
    from regional_widgets.models import cfg_denoiser
    from regional_widgets.sampling import calculate_sigmas, sample

    sigmas = calculate_sigmas(model.sigmas, "normal", steps)
    denoise = cfg_denoiser(model, model.encode("a sky"), model.encode(""), 7.5)
    noise = torch.randn(rw.empty_latent(model, size, size).shape, generator=torch.Generator().manual_seed(0))
    x = noise * (1 + sigmas[0] ** 2) ** 0.5
    sample(denoise, x, sigmas, "euler")  # warm-up
    clock = Clock(device, model.unet)
    clock.mark()
    sample(denoise, x, sigmas, "euler", callback=lambda info: clock.mark())
    return clock.result()


def time_session(model, size, steps, device):
    import regional_widgets as rw

    mask = np.zeros((size, size), np.float32)
    mask[size // 2:] = 1
    base = rw.SamplerConfig(sampler="euler", scheduler="normal", cfg=7.5, positive="a sky")
    region = rw.Region(mask, rw.SamplerConfig(sampler="euler", scheduler="normal", cfg=7.5, positive="a b"))
    session = rw.RegionalSamplerSession(model, rw.empty_latent(model, size, size), base=base, regions=[region],
                                        steps=steps)
    session.run()  # warm-up
    session.reset()
    clock = Clock(device, model.unet)
    clock.mark()
    while not session.done:
        session.step()
        clock.mark()
    return clock.result(drop_last=True)  # the last step is the node's base-only finalize call


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="tiny stack, 64x64, 3 steps, float32 on the CPU: checks the script, measures nothing")
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        device, dtype, size, steps, full = "cpu", torch.float32, 64, 3, False
    else:
        if not torch.cuda.is_available():
            sys.exit("diffusers_gpu.py: CUDA is not available. This benchmark measures GPU step times; run it on a "
                     "CUDA machine, or pass --cpu-smoke for a tiny CPU run that only checks the script.")
        device, dtype, size, steps, full = "cuda", getattr(torch, args.dtype), args.size, args.steps, True

    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline
    from regional_widgets.models import DiffusersModel

    with tempfile.TemporaryDirectory() as tmp:
        stack = build_stack(full, device, dtype, Path(tmp))
    pipe = StableDiffusionPipeline(**stack, scheduler=EulerDiscreteScheduler(**SD15_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    model = DiffusersModel.from_pipeline(pipe)
    rows = {"pipeline": time_pipeline(pipe, size, steps, device),
            "wrapper": time_wrapper(model, size, steps, device),
            "session": time_session(model, size, steps, device)}
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (smoke run: not a measurement)"
    print(f"{name}, {size}x{size}, {steps} steps, {dtype}, euler, cfg 7.5, random SD1.5-shaped weights"
          if full else f"{name}, tiny stack, {size}x{size}, {steps} steps")
    print(f"{'':10} {'ms/step':>9} {'UNet calls/step':>16} {'ms/UNet call':>13}")
    for label, (ms, calls) in rows.items():
        print(f"{label:10} {ms:9.2f} {calls:16g} {ms / calls:13.2f}")
    pipeline_ms = rows["pipeline"][0]
    print(f"session regional step / pipeline step: {rows['session'][0] / pipeline_ms:.2f}x; "
          f"wrapper step / pipeline step: {rows['wrapper'][0] / pipeline_ms:.2f}x")


if __name__ == "__main__":
    main()
