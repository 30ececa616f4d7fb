"""SDXL in the diffusers backend, conditioned as the reference (spec model_families.md §4), on a tiny
random-weight folder: parity with StableDiffusionXLPipeline where the conventions agree, one test
per documented difference (§4.4), the ADM vector against the reference's numbers, the prompt syntax
table (§4.1), a regional session end to end with its ComfyUI export."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import diffusers  # noqa: E402,F401  the diffusers extra, installed by make test: never skipped
import transformers  # noqa: E402,F401

from diffusers import StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel  # noqa: E402

import regional_widgets as rw  # noqa: E402
from regional_widgets.models import cfg_denoiser  # noqa: E402
from regional_widgets.models.diffusers import Conditioning, DiffusersModel, sdxl_context  # noqa: E402
from regional_widgets.models.families import (SDXLSizes, UnknownModelFolder, detect_family,  # noqa: E402
                                              fourier_embedding, sdxl_adm)
from regional_widgets.models.prompts import (TokenizerSpec, chunk_tokens, parse_weights,  # noqa: E402
                                             tokenize)
from regional_widgets.sampling.samplers import sample  # noqa: E402
from regional_widgets.sampling.schedules import calculate_sigmas  # noqa: E402

from .tiny_families import clip_encoder, clip_tokenizer, relative_error, saved, vae  # noqa: E402

FIXTURES = json.loads((Path(__file__).parents[1] / "data" / "family_fixtures.json").read_text())


@pytest.fixture(scope="module")
def pipe(sdxl_folder):
    return sdxl_folder[0]


@pytest.fixture(scope="module")
def model(sdxl_folder):
    return DiffusersModel.from_pretrained(sdxl_folder[1])


class UNetInputs:
    """Records the keyword inputs of every UNet forward (time_ids, text_embeds, context, t)."""

    def __init__(self, unet):
        self.calls = []
        self.handle = unet.register_forward_pre_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs):
        t = args[1] if len(args) > 1 else kwargs["timestep"]
        self.calls.append({"t": torch.as_tensor(t).clone(), **{k: v.clone() for k, v in
                                                               kwargs["added_cond_kwargs"].items()}})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_folder_is_recognised_with_its_sampling_and_latent_format(model):
    assert model.family == "sdxl" and isinstance(model, rw.models.Model)
    assert (model.latent_channels, model.downscale) == (4, 8)
    assert model.latent_scale_factor == 0.13025 and model.latent_shift_factor == 0.0
    assert model.model_sampling.parametrisation == "eps"
    assert float(model.sigmas[0]) == pytest.approx(0.029167159) and float(model.sigmas[-1]) == pytest.approx(14.614641)
    cond = model.encode("a sky cat")
    assert isinstance(cond, Conditioning) and cond.context.shape == (1, 77, 64) and cond.pooled.shape == (1, 32)
    assert model.encode("a sky cat") is cond  # cached


def test_parity_with_the_sdxl_pipeline(pipe, sdxl_folder):
    """negative_prompt="" (where both encode the empty prompt), Karras sigmas, Euler, cfg 5."""
    model = DiffusersModel.from_pretrained(sdxl_folder[1], timestep_map="log_interp")  # how diffusers places sigmas
    sigmas = calculate_sigmas(model.model_sampling, "karras", 4)
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    out = pipe("a sky cat", negative_prompt="", height=64, width=64, sigmas=sigmas.tolist(), guidance_scale=5.0,
               latents=noise, output_type="latent").images
    denoise = cfg_denoiser(model, model.encode("a sky cat"), model.encode(""), 5.0)
    ours = sample(denoise, noise * pipe.scheduler.init_noise_sigma, pipe.scheduler.sigmas, "euler")
    error = relative_error(ours, out)
    print(f"\nSDXL parity (Euler, 4 steps, cfg 5): max rel. error {error:.2e}")
    assert error <= 1e-4


def test_adm_matches_the_reference_numbers_and_what_the_unet_embeds(model):
    adm = FIXTURES["sdxl_adm"]
    for value in (1024, 768, 0):
        fx, emb = adm[f"fourier_{value}"], fourier_embedding(value)
        assert len(emb) == fx["len"] == 256
        np.testing.assert_allclose(emb[:8], fx["first8"], atol=2e-6)
        np.testing.assert_allclose(emb[128:136], fx["at128_135(first sin)"], atol=2e-6)
        np.testing.assert_allclose(emb[-4:], fx["last4"], atol=2e-6)
    pooled = torch.randn(1, 1280)
    sizes = SDXLSizes().resolve(96, 128)  # a 96 x 128 latent: height 768, width 1024 (plain CLIPTextEncode)
    assert sizes == (768, 1024, 0, 0, 768, 1024)
    y = sdxl_adm(pooled, sizes)
    assert tuple(y.shape) == tuple(adm["encode_adm(width=1024,height=768)"]["shape"]) == (1, 2816)
    assert torch.equal(y[:, :1280], pooled)
    for block, first8 in enumerate(adm["encode_adm(width=1024,height=768)"]["first8_of_each_id_block"]):
        np.testing.assert_allclose(y[0, 1280 + 256 * block:][:8], first8, atol=2e-6)
    # CLIPTextEncodeSDXL's defaults are fixed, whatever the latent
    assert SDXLSizes(1024, 1024, 0, 0, 1024, 1024).resolve(8, 8) == (1024,) * 2 + (0, 0) + (1024,) * 2
    # the UNet embeds our time ids with the same sinusoids: its add_embedding input is our ADM
    seen = []
    handle = model.unet.add_embedding.register_forward_pre_hook(lambda m, args: seen.append(args[0].clone()))
    try:
        cond = model.encode("a sky cat")
        model(torch.zeros(1, 4, 8, 12), torch.tensor([1.0]), cond)
    finally:
        handle.remove()
    torch.testing.assert_close(seen[0], sdxl_adm(cond.pooled, (64, 96, 0, 0, 64, 96)), atol=1e-6, rtol=0)


def test_difference_empty_negative_is_encoded_not_zeros(pipe, model):
    """§4.3/§4.4.1: diffusers with negative_prompt=None (force_zeros_for_empty_prompt) uses zeros."""
    assert pipe.config.force_zeros_for_empty_prompt
    _, neg, _, neg_pooled = pipe.encode_prompt("a sky cat", device="cpu", negative_prompt=None)
    assert not neg.any() and not neg_pooled.any()
    empty = model.encode("")
    assert empty.context.abs().sum() > 0 and empty.pooled.abs().sum() > 0
    _, neg_encoded, _, neg_pooled_encoded = pipe.encode_prompt("a sky cat", device="cpu", negative_prompt="")
    torch.testing.assert_close(empty.context, neg_encoded, atol=1e-6, rtol=0)
    torch.testing.assert_close(empty.pooled, neg_pooled_encoded, atol=1e-6, rtol=0)
    # and cfg_denoiser's default negative is that encoding
    assert cfg_denoiser(model, model.encode("sky"), None, 3.0) is not None and model.encode("") is empty


def test_difference_prompt_weights_interpolate_from_the_empty_encoding(pipe, model):
    """§4.4.2: "(sky:1.5)" weights the tokens of "sky" from z_empty; diffusers reads the characters."""
    plain, weighted, empty = model.encode("a sky"), model.encode("a (sky:1.5)"), model.encode("")
    expected = plain.context.clone()
    expected[:, 2] = empty.context[:, 2] + 1.5 * (plain.context[:, 2] - empty.context[:, 2])  # [start, a, sky, ...]
    torch.testing.assert_close(weighted.context, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(weighted.pooled, plain.pooled)  # the pooled vector is not weighted
    theirs = pipe.encode_prompt("a (sky:1.5)", device="cpu", do_classifier_free_guidance=False)[0]
    assert not torch.allclose(theirs, weighted.context, atol=1e-3)
    # nesting: ((sky)) = 1.21
    nested = model.encode("a ((sky))").context
    torch.testing.assert_close(nested[:, 2], empty.context[:, 2] + 1.21 * (plain.context[:, 2] - empty.context[:, 2]),
                               atol=1e-5, rtol=0)


def test_difference_long_prompts_are_chunked_and_concatenated(pipe, model):
    """§4.4.3: 100 one-token words -> two chunks (154 tokens), pooled from the first; diffusers truncates."""
    prompt = " ".join(["a"] * 100)
    cond = model.encode(prompt)
    assert cond.context.shape == (1, 154, 64)
    first = model.encode(" ".join(["a"] * 75))
    torch.testing.assert_close(cond.context[:, :77], first.context, atol=1e-6, rtol=0)
    torch.testing.assert_close(cond.pooled, first.pooled, atol=1e-6, rtol=0)
    rest = model.encode(" ".join(["a"] * 25))
    torch.testing.assert_close(cond.context[:, 77:], rest.context, atol=1e-6, rtol=0)
    theirs = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)[0]
    assert theirs.shape == (1, 77, 64)
    # a long positive and a short negative still go through one batched call (grouped by length)
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    batched = model.call_batch(x, torch.tensor([2.0, 2.0]), [cond, model.encode("")])
    torch.testing.assert_close(batched[:1], model(x[:1], torch.tensor([2.0]), cond), atol=1e-5, rtol=0)


def test_difference_clip_skip_mapping(pipe, sdxl_folder):
    """§4.4.4: CLIPSetLastLayer(-j) is hidden_states[-j] of both encoders (no final norm); diffusers'
    clip_skip=k is hidden_states[-(k+2)]. The defaults agree (-2); layer -1 has no diffusers twin."""
    default = DiffusersModel.from_pretrained(sdxl_folder[1])
    deeper = DiffusersModel.from_pretrained(sdxl_folder[1], clip_layer=-3)
    last = DiffusersModel.from_pretrained(sdxl_folder[1], clip_layer=-1)
    for ours, skip in ((default, None), (deeper, 1)):
        theirs = pipe.encode_prompt("a sky", device="cpu", do_classifier_free_guidance=False, clip_skip=skip)[0]
        torch.testing.assert_close(ours.encode("a sky").context, theirs, atol=1e-6, rtol=0)
    ids = torch.tensor([[2] + [pipe.tokenizer.convert_tokens_to_ids("a</w>")] + [3] * 75])
    raw_l = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(last.encode("a").context[..., :32], raw_l, atol=1e-6, rtol=0)
    for skip in (None, 0, 1):
        theirs = pipe.encode_prompt("a", device="cpu", do_classifier_free_guidance=False, clip_skip=skip)[0]
        assert not torch.allclose(theirs, last.encode("a").context, atol=1e-4)


def test_difference_each_cond_has_its_own_micro_conditioning(pipe, model):
    """§4.4.5/6: the negative gets its own ADM from its own sizes (CLIPTextEncodeSDXL: 1024 whatever the
    latent); diffusers reuses the positive's add_time_ids unless both negative sizes are given."""
    positive = model.encode("a sky cat")
    negative = model.conditioning("", sizes=SDXLSizes(1024, 1024, 0, 0, 1024, 1024))
    x = torch.zeros(1, 4, 8, 8)
    with UNetInputs(model.unet) as ours:
        cfg_denoiser(model, positive, negative, 5.0)(x, torch.tensor([3.0]))
    time_ids = torch.cat([c["time_ids"] for c in ours.calls])
    assert sorted(time_ids.tolist()) == sorted([[64.0, 64, 0, 0, 64, 64], [1024.0, 1024, 0, 0, 1024, 1024]])
    with UNetInputs(pipe.unet) as theirs:
        pipe("a sky cat", negative_prompt="", height=64, width=64, num_inference_steps=1, guidance_scale=5.0,
             output_type="latent")
    assert theirs.calls[0]["time_ids"].tolist() == [[64.0, 64, 0, 0, 64, 64]] * 2


def test_refiner_folder_uses_clip_g_and_aesthetic_scores(tmp_path):
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=256, projection_class_embeddings_input_dim=32 + 5 * 256, cross_attention_dim=32,
        norm_num_groups=32).eval()
    from diffusers import EulerDiscreteScheduler

    from .tiny_families import SDXL_SCHEDULER
    refiner = StableDiffusionXLImg2ImgPipeline(
        vae=vae(4), text_encoder=None, tokenizer=None, text_encoder_2=clip_encoder(32, True, 0),
        tokenizer_2=clip_tokenizer(tmp_path / "tok", pad="!"), unet=unet,
        scheduler=EulerDiscreteScheduler(**SDXL_SCHEDULER), requires_aesthetics_score=True)
    model = DiffusersModel.from_pretrained(saved(refiner, tmp_path / "refiner"))
    assert model.family == "sdxl_refiner" and model.encode("sky").context.shape == (1, 77, 32)
    with UNetInputs(model.unet) as calls:
        cfg_denoiser(model, model.encode("sky"), model.conditioning("", negative=True), 4.0)(
            torch.zeros(1, 4, 8, 8), torch.tensor([2.0]))
    assert sorted(c[-1] for c in torch.cat([c["time_ids"] for c in calls.calls]).tolist()) == [2.5, 6.0]


# -- the prompt syntax (§4.1), shared by every family --------------------------------------------

PARSE_CASES = [
    ("a cat", [("a cat", 1.0)]),
    ("(a cat)", [("a cat", 1.1)]),
    ("((a))", [("a", 1.21)]),
    ("(((a)))", [("a", 1.331)]),
    ("(a:1.5)", [("a", 1.5)]),
    ("(a:0.25) b", [("a", 0.25), (" b", 1.0)]),
    ("((a):1.5)", [("a", 1.65)]),
    ("(a (b:0.5) c:2)", [("a ", 2.0), ("b", 0.5), (" c", 2.0)]),
    ("(a:b)", [("a:b", 1.1)]),  # not a number: an ordinary 1.1 group
    ("\\(a\\)", [("(a)", 1.0)]),
    ("\\((a)\\)", [("(", 1.0), ("a", 1.1), (")", 1.0)]),
    ("(a \\(b\\):1.2)", [("a (b)", 1.2)]),
    ("x (y", [("x ", 1.0), ("(y", 1.0)]),  # unmatched: literal
    ("a) b", [("a) b", 1.0)]),
    ("(a) (b:0.8)", [("a", 1.1), (" ", 1.0), ("b", 0.8)]),
    ("", []),
]


@pytest.mark.parametrize("text, expected", PARSE_CASES)
def test_prompt_weight_parsing_table(text, expected):
    got = parse_weights(text)
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [w for _, w in got] == pytest.approx([w for _, w in expected])


SPEC = TokenizerSpec(start=100, end=101, pad=102)


def words(*sizes, weight=1.0):
    return [(list(range(1000, 1000 + n)), weight) for n in sizes]


@pytest.mark.parametrize("sizes, chunk_lengths", [
    ((1,) * 75, [75]),  # exactly one chunk
    ((1,) * 76, [75, 1]),  # one more token: a second chunk
    ((1,) * 74 + (3,), [74, 3]),  # a 3-token word does not fit: moved whole
    ((1,) * 68 + (7,), [75]),  # a 7-token word that fits exactly
    ((1,) * 69 + (7,), [69, 7]),  # 7 < 8 tokens: moved whole
    ((1,) * 70 + (10,), [75, 5]),  # 10 >= 8 tokens: split to fill the chunk
    ((1,) * 70 + (8,), [75, 3]),  # 8 tokens is already "long"
    ((200,), [75, 75, 50]),  # one huge word over three chunks
    ((), [0]),  # the empty prompt: [start, end, pad...]
])
def test_chunk_boundaries_and_words_moved_whole(sizes, chunk_lengths):
    chunks = chunk_tokens(words(*sizes), SPEC)
    assert [len(c) for c in chunks] == [77] * len(chunk_lengths)
    for chunk, n in zip(chunks, chunk_lengths):
        ids = [t for t, _ in chunk]
        assert ids[0] == 100 and ids[n + 1] == 101 and ids[n + 2:] == [102] * (75 - n)
        assert 101 not in ids[1:n + 1]


def test_weights_follow_tokens_across_chunks(model):
    chunks = chunk_tokens(words(70) + words(10, weight=1.5), SPEC)
    assert [w for _, w in chunks[0][71:76]] == [1.5] * 5 and chunks[0][76][1] == 1.0
    assert [w for _, w in chunks[1][1:6]] == [1.5] * 5 and chunks[1][6][1] == 1.0
    # the real tiny tokenizer: letters are tokens, "sky"/"cat" are merged words; G pads with "!" (0)
    tok = model.tokenizer_2
    chunks = tokenize(tok, "(sky:1.2) abcdefghij", TokenizerSpec.clip(tok))
    assert [t for t, _ in chunks[0][:13]] == [2, tok.convert_tokens_to_ids("sky</w>")] + \
        tok.convert_tokens_to_ids(list("abcdefghi")) + [tok.convert_tokens_to_ids("j</w>"), 3]
    assert chunks[0][1][1] == pytest.approx(1.2) and chunks[0][13] == (0, 1.0)
    assert TokenizerSpec.clip(model.tokenizer).pad == 3  # CLIP-L pads with its end token


def test_sdxl_context_is_l_then_g_cut_to_the_shorter():
    l, g = torch.ones(1, 154, 768), torch.full((1, 77, 1280), 2.0)
    ctx = sdxl_context(l, g)
    assert ctx.shape == (1, 77, 2048) and (ctx[..., :768] == 1).all() and (ctx[..., 768:] == 2).all()


# -- the app end to end ---------------------------------------------------------------------------

def test_regional_session_runs_in_the_app_and_exports_a_workflow(model, tmp_path):
    app = rw.RegionalSamplerApp.from_model(model, size=64, regions=2, steps=3, cfg=5.0)
    session = app.session
    session.regions[0].mask = np.pad(np.ones((32, 64), np.float32), ((0, 32), (0, 0)))
    session.regions[1].mask = np.pad(np.ones((32, 32), np.float32), ((32, 0), (0, 32)))
    while not session.done:
        session.step()
    assert session.latent.shape == (1, 4, 8, 8) and torch.isfinite(session.latent).all()
    preview = model.decode_preview(session.latent)
    assert preview.shape == (1, 64, 64, 3) and 0 <= preview.min() and preview.max() <= 1
    paths = session.to_comfy(tmp_path / "workflow.json", checkpoint="sdxl_base.safetensors")
    graph = json.loads(Path(paths[0]).read_text())
    kinds = {node["class_type"] for node in graph.values()}
    # plain CLIPTextEncode on SDXL = the size defaults this backend uses (latent x 8, crops 0)
    assert {"CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage"} <= kinds
    assert math.isclose(graph[next(k for k, n in graph.items() if n["class_type"] == "EmptyLatentImage")]
                        ["inputs"]["width"], 64)


# -- memory and speed options -------------------------------------------------------------------

def test_bfloat16_weights_and_encoder_offload(model, sdxl_folder):
    half = DiffusersModel.from_pretrained(sdxl_folder[1], torch_dtype=torch.bfloat16, offload_encoders=True)
    assert half.dtype == torch.bfloat16 and half.text_encoder_2.dtype == torch.bfloat16
    moves = []
    for encoder in (half.text_encoder, half.text_encoder_2):
        original = encoder.to
        encoder.to = lambda *a, _orig=original, **k: moves.append(str(a[0] if a else k)) or _orig(*a, **k)
    cond = half.encode("a sky cat")
    assert moves == ["cpu"] * 4  # each encoder: to the network's device (the CPU here), then back to the CPU
    assert half.text_encoder.device.type == "cpu"
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    out = half(x, torch.tensor([2.0]), cond)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    torch.testing.assert_close(out, model(x, torch.tensor([2.0]), model.encode("a sky cat")), atol=0.15, rtol=0)
    assert half.spec["torch_dtype"] == "bfloat16"


def test_family_detection_from_the_configs_alone(tmp_path):
    """detect_family reads model_index.json and the component configs only (no weights loaded)."""
    def folder(name, index, **configs):
        root = tmp_path / name
        root.mkdir()
        (root / "model_index.json").write_text(json.dumps(index))
        for sub, config in configs.items():
            (root / sub).mkdir()
            (root / sub / "config.json").write_text(json.dumps(config))
        return root

    clip = ["transformers", "CLIPTextModel"]
    assert detect_family(folder("sd15", {"_class_name": "StableDiffusionPipeline", "text_encoder": clip},
                                unet={}, text_encoder={"hidden_size": 768})) == "sd1"
    assert detect_family(folder("sd2", {"_class_name": "StableDiffusionPipeline"}, unet={},
                                text_encoder={"hidden_size": 1024})) == "sd2"
    assert detect_family(folder("xl", {"_class_name": "StableDiffusionXLPipeline", "text_encoder": clip},
                                unet={"addition_embed_type": "text_time"}, text_encoder={})) == "sdxl"
    assert detect_family(folder("refiner", {"_class_name": "StableDiffusionXLImg2ImgPipeline",
                                            "text_encoder": [None, None]},
                                unet={"addition_embed_type": "text_time"})) == "sdxl_refiner"
    assert detect_family(folder("sd35", {"_class_name": "StableDiffusion3Pipeline"},
                                transformer={"_class_name": "SD3Transformer2DModel"})) == "sd3"
    assert detect_family(folder("dev", {"_class_name": "FluxPipeline"},
                                transformer={"_class_name": "FluxTransformer2DModel", "guidance_embeds": True})) \
        == "flux_dev"
    assert detect_family(folder("schnell", {"_class_name": "FluxPipeline"},
                                transformer={"_class_name": "FluxTransformer2DModel", "guidance_embeds": False})) \
        == "flux_schnell"
    pixart = folder("pixart", {"_class_name": "PixArtSigmaPipeline"},
                    transformer={"_class_name": "PixArtTransformer2DModel"})
    with pytest.raises(UnknownModelFolder, match="PixArtSigmaPipeline.*PixArtTransformer2DModel.*supported: "
                                                 "StableDiffusionPipeline.*FluxPipeline"):
        DiffusersModel.from_pretrained(pixart)
    with pytest.raises(UnknownModelFolder, match="addition_embed_type='image'"):
        detect_family(folder("kandinsky", {}, unet={"addition_embed_type": "image"}))


def test_edm_and_inpainting_checkpoints_are_refused(pipe):
    parts = {k: v for k, v in pipe.components.items() if k not in ("scheduler", "image_encoder", "feature_extractor")}
    with pytest.raises(ValueError, match="EDMDPMSolverMultistepScheduler.*Playground"):
        DiffusersModel(**parts, scheduler_config={"_class_name": "EDMDPMSolverMultistepScheduler"})
    inpaint = UNet2DConditionModel.from_config({**pipe.unet.config, "in_channels": 9})
    with pytest.raises(ValueError, match="in_channels=9.*inpainting"):
        DiffusersModel(**{**parts, "unet": inpaint}, scheduler_config=pipe.scheduler.config)


def test_clip_text_encode_sdxl_separate_texts(model):
    """CLIPTextEncodeSDXL: text_g to CLIP-G, text_l to CLIP-L; the shorter token list gets empty chunks."""
    both = model.conditioning("a sky", text_l="a cat")
    g_only, l_only = model.encode("a sky"), model.encode("a cat")
    torch.testing.assert_close(both.context[..., 32:], g_only.context[..., 32:], atol=1e-6, rtol=0)
    torch.testing.assert_close(both.context[..., :32], l_only.context[..., :32], atol=1e-6, rtol=0)
    torch.testing.assert_close(both.pooled, g_only.pooled)  # pooled from CLIP-G
    long = model.conditioning("sky", text_l=" ".join(["a"] * 100))
    assert long.context.shape == (1, 154, 64)  # G padded with an empty chunk to L's two
    torch.testing.assert_close(long.context[:, 77:, 32:], model.encode("").context[..., 32:], atol=1e-6, rtol=0)
    assert model.conditioning("a sky", text_l="a sky") is g_only
    assert model.conditioning("a sky", text_l="a cat") is both  # cached
