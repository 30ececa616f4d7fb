"""Tiny random-weight SDXL, SD3 and Flux folders built from configs, tokenizers included (nothing is
downloaded: spec testing.md, "Real-model components without downloads"), and the helpers the family
tests share. Shapes follow the real models where a rule depends on them (ADM embeddings 256 wide,
16-channel latents, 2x2 patches); widths are tiny."""
from __future__ import annotations

import json

import torch

from diffusers import (AutoencoderKL, EulerDiscreteScheduler, FlowMatchEulerDiscreteScheduler, FluxPipeline,
                       FluxTransformer2DModel, SD3Transformer2DModel, StableDiffusion3Pipeline,
                       StableDiffusionXLPipeline, UNet2DConditionModel)
from transformers import (CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer, T5Config,
                          T5EncoderModel, T5Tokenizer)

SDXL_SCHEDULER = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "prediction_type": "epsilon", "steps_offset": 1,
                  "timestep_spacing": "leading"}
START, END = "<|startoftext|>", "<|endoftext|>"
MERGES = [("s", "k"), ("sk", "y</w>"), ("c", "a"), ("ca", "t</w>")]


def clip_tokenizer_files(folder):
    """A CLIP BPE vocabulary over single letters with a few merges ("sky", "cat"); "!" is id 0 as in
    the real vocabulary (CLIP-G pads with it)."""
    vocab = {"!": 0, "!</w>": 1, START: 2, END: 3}
    for c in "abcdefghijklmnopqrstuvwxyz()":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    for a, b in MERGES:
        vocab[a + b] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in MERGES))
    return vocab


def clip_tokenizer(folder, pad: str) -> CLIPTokenizer:
    vocab = clip_tokenizer_files(folder)
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77,
                        bos_token=START, eos_token=END, pad_token=pad, unk_token=END)
    assert tok.bos_token_id == vocab[START] and tok.eos_token_id == vocab[END]
    return tok


def t5_tokenizer() -> T5Tokenizer:
    """A tiny Unigram T5 tokenizer: pad 0, eos 1, letters and a few whole words."""
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    for c in "abcdefghijklmnopqrstuvwxyz()":
        vocab += [(c, -5.0), ("\u2581" + c, -4.0)]
    vocab += [("\u2581sky", -1.0), ("\u2581cat", -1.0)]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def clip_encoder(hidden: int, projection: bool, pad_id: int, proj_dim=None, vocab_size=80):
    config = CLIPTextConfig(hidden_size=hidden, intermediate_size=37, num_attention_heads=2, num_hidden_layers=3,
                            vocab_size=vocab_size, max_position_embeddings=77, bos_token_id=2, eos_token_id=3,
                            pad_token_id=pad_id, projection_dim=proj_dim or hidden)
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def t5_encoder(d_model: int, vocab_size: int = 80) -> T5EncoderModel:
    config = T5Config(vocab_size=vocab_size, d_model=d_model, d_ff=37, d_kv=8, num_layers=2, num_heads=2,
                      relative_attention_num_buckets=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    return T5EncoderModel(config).eval()


def vae(channels: int, **kwargs) -> AutoencoderKL:
    return AutoencoderKL(latent_channels=channels, block_out_channels=(32, 32, 32, 32), layers_per_block=1,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                         norm_num_groups=32, **kwargs).eval()


def sdxl_pipeline(tmp, pooled_dim: int = 32) -> StableDiffusionXLPipeline:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=256, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=pooled_dim + 6 * 256, cross_attention_dim=64, norm_num_groups=32).eval()
    tok_l = clip_tokenizer(tmp / "tok_l", pad=END)
    tok_g = clip_tokenizer(tmp / "tok_g", pad="!")
    return StableDiffusionXLPipeline(
        vae=vae(4, scaling_factor=0.13025), text_encoder=clip_encoder(32, False, 3),
        text_encoder_2=clip_encoder(32, True, 0, pooled_dim), tokenizer=tok_l, tokenizer_2=tok_g, unet=unet,
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER))


def sd3_pipeline(tmp, identity_l_projection: bool = True, with_t5: bool = True) -> StableDiffusion3Pipeline:
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=16, out_channels=16, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=48,
                                        caption_projection_dim=16, pooled_projection_dim=32,
                                        pos_embed_max_size=16).eval()
    clip_l = clip_encoder(16, True, 3)
    if identity_l_projection:  # where diffusers' projected CLIP-L pooled equals the reference's unprojected one
        with torch.no_grad():
            clip_l.text_projection.weight.copy_(torch.eye(16))
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae(16, scaling_factor=1.5305, shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=clip_l, tokenizer=clip_tokenizer(tmp / "tok_l", pad=END),
        text_encoder_2=clip_encoder(16, True, 0), tokenizer_2=clip_tokenizer(tmp / "tok_g", pad="!"),
        text_encoder_3=t5_encoder(48) if with_t5 else None, tokenizer_3=t5_tokenizer() if with_t5 else None)


def flux_pipeline(tmp, guidance_embeds: bool = True) -> FluxPipeline:
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, guidance_embeds=guidance_embeds,
                                         axes_dims_rope=(4, 4, 8)).eval()
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)
    return FluxPipeline(
        transformer=transformer, scheduler=scheduler,
        vae=vae(16, scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=clip_encoder(32, False, 3), tokenizer=clip_tokenizer(tmp / "tok_l", pad=END),
        text_encoder_2=t5_encoder(32), tokenizer_2=t5_tokenizer())


def saved(pipe, folder):
    pipe.set_progress_bar_config(disable=True)
    pipe.save_pretrained(folder)
    return folder


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max()).item()


class TransformerCalls:
    """Records the tensor keyword arguments of every forward call of a transformer, while in a with-block."""

    def __init__(self, transformer):
        self.calls = []
        self.handle = transformer.register_forward_pre_hook(
            lambda m, args, kwargs: self.calls.append({k: v for k, v in kwargs.items() if torch.is_tensor(v)}),
            with_kwargs=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def first_call_session(model, latent, with_region: bool, start_at_step: int):
    """The first-call scene the families' noise-scaling tests share: base "sky" at cfg 1 and, with
    ``with_region``, one region on the left half of a 64x64 image; 5 steps, noise seed 7."""
    import numpy as np

    import regional_widgets as rw

    mask = np.zeros((64, 64), np.float32)
    mask[:, :32] = 1
    regions = [rw.Region(mask, rw.SamplerConfig(cfg=1.0))] if with_region else []
    return rw.RegionalSamplerSession(model, latent, base=rw.SamplerConfig(cfg=1.0, positive="sky"),
                                     regions=regions, steps=5, noise_seed=7, start_at_step=start_at_step)
