"""ComfyUI workflows: export -> import round trips, the exported graph against the node schemas,
a hand-written workflow, and the errors.

The schemas below are written from the node tables (comfy_workflow_nodes.md), independently of
`regional_widgets.io.comfy`; sampler and scheduler names come from `regional_widgets.sampling`.
"""
import json

import numpy as np
import pytest
from PIL import Image

import regional_widgets as rw
from regional_widgets.io import comfy
from regional_widgets.io.comfy import ComfyWorkflowError, build_workflow, parse_workflow
from regional_widgets.sampling import SAMPLER_NAMES, SCHEDULER_NAMES

MODEL = rw.models.ToyWorld(n_exemplars=60, image_size=64)
SD_MODEL = rw.models.ToyWorld("sd", n_exemplars=60, image_size=64)  # downscale 8

# ---- the node schemas (name: spec); a spec is a link type or a literal --------------------------
SEED = ("INT", 0, 2**64 - 1)
RECOVERY = {"additional_mode": ("COMBO", ["DISABLE", "ratio additional", "ratio between"]),
            "additional_sampler": ("COMBO", ["AUTO", "euler", "heun", "heunpp2", "dpm_2", "dpm_fast", "dpmpp_2m",
                                             "ddpm"]),
            "additional_sigma_ratio": ("FLOAT", 0, 1)}
SCHEMAS = {
    "CheckpointLoaderSimple": ({"ckpt_name": ("STRING",)}, {}, ["MODEL", "CLIP", "VAE"]),
    "CLIPTextEncode": ({"text": ("STRING",), "clip": "CLIP"}, {}, ["CONDITIONING"]),
    "ToBasicPipe": ({"model": "MODEL", "clip": "CLIP", "vae": "VAE", "positive": "CONDITIONING",
                     "negative": "CONDITIONING"}, {}, ["BASIC_PIPE"]),
    "KSamplerAdvancedProvider": (
        {"cfg": ("FLOAT", 0, 100), "sampler_name": ("COMBO", list(SAMPLER_NAMES)),
         "scheduler": ("COMBO", list(SCHEDULER_NAMES) + ["AYS SDXL", "AYS SD1", "AYS SVD", "GITS[coeff=1.2]"]),
         "sigma_factor": ("FLOAT", 0, 10), "basic_pipe": "BASIC_PIPE"},
        {"sampler_opt": "SAMPLER", "scheduler_func_opt": "SCHEDULER_FUNC"}, ["KSAMPLER_ADVANCED"]),
    "LoadImageMask": ({"image": ("STRING",), "channel": ("COMBO", ["alpha", "red", "green", "blue"])}, {},
                      ["MASK"]),
    "RegionalPrompt": ({"mask": "MASK", "advanced_sampler": "KSAMPLER_ADVANCED"},
                       {"variation_seed": SEED, "variation_strength": ("FLOAT", 0, 1),
                        "variation_method": ("COMBO", ["linear", "slerp"])}, ["REGIONAL_PROMPTS"]),
    "CombineRegionalPrompts": (None, {}, ["REGIONAL_PROMPTS"]),  # regional_prompts1..N
    "EmptyLatentImage": ({"width": ("INT", 16, 16384), "height": ("INT", 16, 16384),
                          "batch_size": ("INT", 1, 4096)}, {}, ["LATENT"]),
    "RegionalSamplerAdvanced": (
        {"add_noise": ("BOOLEAN",), "noise_seed": SEED, "steps": ("INT", 1, 10000),
         "start_at_step": ("INT", 0, 10000), "end_at_step": ("INT", 0, 10000), "overlap_factor": ("INT", 0, 10000),
         "restore_latent": ("BOOLEAN",), "return_with_leftover_noise": ("BOOLEAN",), "latent_image": "LATENT",
         "base_sampler": "KSAMPLER_ADVANCED", "regional_prompts": "REGIONAL_PROMPTS", **RECOVERY}, {}, ["LATENT"]),
    "RegionalSampler": (
        {"seed": SEED, "seed_2nd": SEED, "seed_2nd_mode": ("COMBO", ["ignore", "fixed", "seed+seed_2nd",
                                                                     "seed-seed_2nd", "increment", "decrement",
                                                                     "randomize"]),
         "steps": ("INT", 1, 10000), "base_only_steps": ("INT", 0, 10000), "denoise": ("FLOAT", 0, 1),
         "samples": "LATENT", "base_sampler": "KSAMPLER_ADVANCED", "regional_prompts": "REGIONAL_PROMPTS",
         "overlap_factor": ("INT", 0, 10000), "restore_latent": ("BOOLEAN",), **RECOVERY}, {}, ["LATENT"]),
    # flow models (the other families' table; model_families.md §1.2-1.3)
    "EmptySD3LatentImage": ({"width": ("INT", 16, 16384), "height": ("INT", 16, 16384),
                             "batch_size": ("INT", 1, 4096)}, {}, ["LATENT"]),
    "ModelSamplingSD3": ({"model": "MODEL", "shift": ("FLOAT", 0, 100)}, {}, ["MODEL"]),
    "ModelSamplingFlux": ({"model": "MODEL", "max_shift": ("FLOAT", 0, 100), "base_shift": ("FLOAT", 0, 100),
                           "width": ("INT", 16, 16384), "height": ("INT", 16, 16384)}, {}, ["MODEL"]),
    "VAEDecode": ({"samples": "LATENT", "vae": "VAE"}, {}, ["IMAGE"]),
    "SaveImage": ({"images": "IMAGE", "filename_prefix": ("STRING",)}, {}, []),
}


def check_literal(where, value, spec):
    kind = spec[0]
    if kind == "BOOLEAN":
        assert isinstance(value, bool), where
    elif kind == "STRING":
        assert isinstance(value, str), where
    elif kind == "COMBO":
        assert value in spec[1], where
    else:
        types = (int,) if kind == "INT" else (int, float)
        assert isinstance(value, types) and not isinstance(value, bool), where
        assert spec[1] <= value <= spec[2], where


def validate_graph(graph):
    """Every node against its schema; every link to an existing output of the right type."""
    for node_id, node in graph.items():
        assert isinstance(node_id, str) and set(node) == {"class_type", "inputs"}
        required, optional, _ = SCHEMAS[node["class_type"]]
        inputs = node["inputs"]
        if required is None:  # CombineRegionalPrompts: contiguous slots from 1
            n = len(inputs)
            assert n >= 1 and set(inputs) == {f"regional_prompts{k}" for k in range(1, n + 1)}
            required = {name: "REGIONAL_PROMPTS" for name in inputs}
        assert set(required) <= set(inputs), (node_id, set(required) - set(inputs))
        assert set(inputs) <= set(required) | set(optional), (node_id, set(inputs) - set(required) - set(optional))
        for name, value in inputs.items():
            spec = required.get(name, optional.get(name))
            where = f"node {node_id} input {name}"
            if isinstance(spec, str):
                assert isinstance(value, list) and len(value) == 2, where
                source, index = value
                assert isinstance(source, str) and source in graph, where
                assert isinstance(index, int) and SCHEMAS[graph[source]["class_type"]][2][index] == spec, where
            else:
                check_literal(where, value, spec)


# ---- sessions with non-default values for every parameter ----------------------------------------
H, W = 40, 56  # a non-square image; masks are at the image size the latent implies
RNG = np.random.default_rng(11)
MASKS = [
    (RNG.integers(0, 256, (H, W)) / 255).astype(np.float32),  # 8-bit values: exact
    RNG.random((H, W)).astype(np.float32),  # soft: within 1/510
    (RNG.random((H, W)) > 0.6).astype(np.float32),  # binary: exact
]
EIGHT_BIT = (True, False, True)
REGION_CONFIGS = [
    dict(config=rw.SamplerConfig("heun", "karras", 4.5, "grass", "sand", 0.9), variation_seed=2**64 - 1,
         variation_strength=0.35, variation_method="slerp"),
    dict(config=rw.SamplerConfig("dpmpp_2m_sde", "exponential", 11.25, "red circle", "", 1.5), variation_seed=5,
         variation_strength=1.0, variation_method="linear"),
    dict(config=rw.SamplerConfig("ddim", "beta", 0.0, "brick", "water", 10.0), variation_seed=0,
         variation_strength=0.01, variation_method="slerp"),
]
BASE = rw.SamplerConfig("dpmpp_2m", "sgm_uniform", 6.5, "sky", "brick", 0.95)
PARAMS = {
    "RegionalSamplerAdvanced": dict(add_noise=False, noise_seed=2**64 - 1, steps=7, start_at_step=1, end_at_step=6,
                                    overlap_factor=3, restore_latent=False, return_with_leftover_noise=True,
                                    additional_mode="ratio additional", additional_sampler="heun",
                                    additional_sigma_ratio=0.45),
    "RegionalSampler": dict(seed=123456789012, seed_2nd=77, seed_2nd_mode="increment", steps=9, base_only_steps=3,
                            denoise=0.65, overlap_factor=0, restore_latent=False, additional_mode="DISABLE",
                            additional_sampler="dpmpp_2m", additional_sigma_ratio=0.2),
}


def make_session(node, n_regions, model=MODEL, batch=2, **changes):
    regions = [rw.Region(MASKS[j], **REGION_CONFIGS[j]) for j in range(n_regions)]
    params = dict(PARAMS[node], **changes)
    return rw.RegionalSamplerSession(model, rw.empty_latent(model, H, W, batch), base=BASE, regions=regions,
                                     node=node, **params)


def test_defaults_differ_from_the_test_values():
    default = rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, 64, 64))
    for node, params in PARAMS.items():
        for name, value in params.items():
            assert getattr(default, name) != value, name
    for name, value in BASE.to_dict().items():
        assert getattr(rw.SamplerConfig(), name) != value, name
    for name in ("variation_seed", "variation_strength", "variation_method"):
        assert getattr(rw.Region(MASKS[0]), name) != REGION_CONFIGS[0][name], name


@pytest.mark.parametrize("node", list(PARAMS))
@pytest.mark.parametrize("n_regions", [1, 2, 3])
def test_export_import_round_trip(tmp_path, node, n_regions):
    session = make_session(node, n_regions)
    written = session.to_comfy(tmp_path / "flow.json", checkpoint="sd15.safetensors")
    assert [p.name for p in written] == ["flow.json"] + [f"flow_region{j}.png" for j in range(1, n_regions + 1)]
    graph = json.loads((tmp_path / "flow.json").read_text())
    validate_graph(graph)

    back = rw.RegionalSamplerSession.from_comfy(tmp_path / "flow.json", MODEL)
    assert back.node == node and back.mode == "faithful" and back.quirks == rw.Quirks()
    for name, value in session.parameters().items():
        assert getattr(back, name) == value and type(getattr(back, name)) is type(value), name
    assert back.parameters() == session.parameters()
    assert back.base == BASE
    assert back.latent_image.shape == session.latent_image.shape and not back.latent_image.any()
    assert len(back.regions) == n_regions
    for j, (a, b) in enumerate(zip(session.regions, back.regions)):
        assert b.config == a.config
        assert (b.variation_seed, b.variation_strength, b.variation_method) == \
            (a.variation_seed, a.variation_strength, a.variation_method)
        assert b.mask.shape == (H, W) and b.mask.dtype == np.float32
        if EIGHT_BIT[j]:
            np.testing.assert_array_equal(b.mask, a.mask)
        else:
            assert np.abs(b.mask - a.mask).max() <= 1 / 510 + 1e-7  # 8-bit quantisation
            np.testing.assert_array_equal(b.mask, np.round(a.mask * 255) / 255)


def load_image_mask(path, channel):
    """LoadImageMask as the node table states it: that channel / 255, alpha inverted."""
    image = Image.open(path).convert("RGBA")
    value = np.asarray(image.getchannel({"red": "R", "green": "G", "blue": "B", "alpha": "A"}[channel])) / 255
    return 1 - value if channel == "alpha" else value


def nodes_of(graph, class_type):
    return [i for i, n in graph.items() if n["class_type"] == class_type]


def test_exported_wiring(tmp_path):
    session = make_session("RegionalSamplerAdvanced", 3, model=SD_MODEL, batch=3)
    session.to_comfy(tmp_path / "w.json")
    graph = json.loads((tmp_path / "w.json").read_text())
    validate_graph(graph)
    counts = {kind: len(nodes_of(graph, kind)) for kind in SCHEMAS}
    assert counts == {"CheckpointLoaderSimple": 1, "CLIPTextEncode": 8, "ToBasicPipe": 4,
                      "KSamplerAdvancedProvider": 4, "LoadImageMask": 3, "RegionalPrompt": 3,
                      "CombineRegionalPrompts": 1, "EmptyLatentImage": 1, "RegionalSamplerAdvanced": 1,
                      "RegionalSampler": 0, "VAEDecode": 1, "SaveImage": 1, "EmptySD3LatentImage": 0,
                      "ModelSamplingSD3": 0, "ModelSamplingFlux": 0}  # an EPS model: no flow nodes
    assert graph[nodes_of(graph, "CheckpointLoaderSimple")[0]]["inputs"]["ckpt_name"] == "model.safetensors"
    # the latent in image pixels: latent 7x5 x downscale 8
    assert graph[nodes_of(graph, "EmptyLatentImage")[0]]["inputs"] == {"width": W, "height": H, "batch_size": 3}
    (top,) = nodes_of(graph, "RegionalSamplerAdvanced")
    inputs = graph[top]["inputs"]
    assert {k: v for k, v in inputs.items() if not isinstance(v, list)} == PARAMS["RegionalSamplerAdvanced"]
    base = graph[inputs["base_sampler"][0]]["inputs"]
    assert (base["sampler_name"], base["scheduler"], base["cfg"], base["sigma_factor"]) == \
        ("dpmpp_2m", "sgm_uniform", 6.5, 0.95)
    pipe = graph[base["basic_pipe"][0]]["inputs"]
    assert graph[pipe["positive"][0]]["inputs"]["text"] == "sky"
    assert graph[pipe["negative"][0]]["inputs"]["text"] == "brick"
    combine = graph[inputs["regional_prompts"][0]]["inputs"]
    for j in range(1, 4):  # slot order = region order; masks as LoadImageMask reads them
        prompt = graph[combine[f"regional_prompts{j}"][0]]["inputs"]
        loader = graph[prompt["mask"][0]]["inputs"]
        assert loader["image"] == f"w_region{j}.png"
        read = load_image_mask(tmp_path / loader["image"], loader["channel"])
        assert np.abs(read - session.regions[j - 1].mask).max() <= 1 / 510 + 1e-7
        assert prompt["variation_seed"] == session.regions[j - 1].variation_seed
    (decode,) = nodes_of(graph, "VAEDecode")
    assert graph[decode]["inputs"]["samples"] == [top, 0]
    assert graph[nodes_of(graph, "SaveImage")[0]]["inputs"]["images"] == [decode, 0]
    back = rw.RegionalSamplerSession.from_comfy(tmp_path / "w.json", SD_MODEL)
    assert back.latent_image.shape == (3, 4, H // 8, W // 8)


def test_regional_sampler_node_and_description_round_trip():
    session = make_session("RegionalSampler", 2)
    description = {"node": "RegionalSampler", "parameters": session.parameters(), "base": BASE.to_dict(),
                   "regions": [{"config": r.config.to_dict(), "mask": r.mask, "variation_seed": r.variation_seed,
                                "variation_strength": r.variation_strength, "variation_method": r.variation_method}
                               for r in session.regions],
                   "latent": {"width": 64, "height": 48, "batch_size": 1}, "checkpoint": "x.ckpt"}
    graph, files = build_workflow(description, mask_prefix="m")
    validate_graph(graph)
    assert sorted(files) == ["m1.png", "m2.png"]
    (top,) = nodes_of(graph, "RegionalSampler")
    assert graph[graph[top]["inputs"]["samples"][0]]["class_type"] == "EmptyLatentImage"
    parsed = parse_workflow(graph)
    assert parsed["node"] == "RegionalSampler" and parsed["parameters"] == session.parameters()
    assert parsed["base"] == BASE.to_dict() and parsed["checkpoint"] == "x.ckpt"
    assert parsed["latent"] == description["latent"]
    for got, want in zip(parsed["regions"], description["regions"]):
        assert {k: got[k] for k in want if k != "mask"} == {k: v for k, v in want.items() if k != "mask"}
        assert got["mask_channel"] == "red"
    assert [r["mask_file"] for r in parsed["regions"]] == ["m1.png", "m2.png"]


# ---- a workflow as a ComfyUI user saves it -------------------------------------------------------
HAND_WRITTEN = """{
  "12": {"inputs": {"filename_prefix": "regional", "images": ["11", 0]}, "class_type": "SaveImage",
         "_meta": {"title": "Save Image"}},
  "3": {"inputs": {"add_noise": true, "noise_seed": 42, "steps": 12, "start_at_step": 0, "end_at_step": 10000,
                   "overlap_factor": 10, "restore_latent": true, "return_with_leftover_noise": false,
                   "latent_image": ["5", 0], "base_sampler": ["7", 0], "regional_prompts": ["20", 0],
                   "additional_mode": "ratio between", "additional_sampler": "AUTO", "additional_sigma_ratio": 0.3},
        "class_type": "RegionalSamplerAdvanced", "_meta": {"title": "RegionalSamplerAdvanced"}},
  "14": {"inputs": {"images": ["11", 0]}, "class_type": "PreviewImage"},
  "20": {"inputs": {"regional_prompts2": ["22", 0], "regional_prompts1": ["21", 0]},
         "class_type": "CombineRegionalPrompts"},
  "4": {"inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}, "class_type": "CheckpointLoaderSimple"},
  "22": {"inputs": {"mask": ["24", 0], "advanced_sampler": ["26", 0], "variation_seed": 9,
                    "variation_strength": 0.25, "variation_method": "slerp"}, "class_type": "RegionalPrompt"},
  "6": {"inputs": {"text": "sky", "clip": ["4", 1]}, "class_type": "CLIPTextEncode"},
  "7": {"inputs": {"cfg": 7, "sampler_name": "euler_ancestral", "scheduler": "karras", "sigma_factor": 1,
                   "basic_pipe": ["8", 0]}, "class_type": "KSamplerAdvancedProvider"},
  "8": {"inputs": {"model": ["4", 0], "clip": ["4", 1], "vae": ["4", 2], "positive": ["6", 0],
                   "negative": ["9", 0]}, "class_type": "ToBasicPipe"},
  "9": {"inputs": {"text": "", "clip": ["4", 1]}, "class_type": "CLIPTextEncode"},
  "5": {"inputs": {"width": 64, "height": 64, "batch_size": 1}, "class_type": "EmptyLatentImage"},
  "11": {"inputs": {"samples": ["3", 0], "vae": ["4", 2]}, "class_type": "VAEDecode"},
  "21": {"inputs": {"mask": ["23", 0], "advanced_sampler": ["25", 0]}, "class_type": "RegionalPrompt"},
  "23": {"inputs": {"image": "grass.png", "channel": "alpha", "upload": "image"}, "class_type": "LoadImageMask"},
  "24": {"inputs": {"image": "sub/sun.png", "channel": "green"}, "class_type": "LoadImageMask"},
  "25": {"inputs": {"cfg": 5.5, "sampler_name": "dpmpp_2m", "scheduler": "normal", "sigma_factor": 1.0,
                    "basic_pipe": ["27", 0]}, "class_type": "KSamplerAdvancedProvider"},
  "26": {"inputs": {"cfg": 9.0, "sampler_name": "heun", "scheduler": "simple", "sigma_factor": 0.98,
                    "basic_pipe": ["28", 0]}, "class_type": "KSamplerAdvancedProvider"},
  "27": {"inputs": {"model": ["4", 0], "clip": ["4", 1], "vae": ["4", 2], "positive": ["29", 0],
                    "negative": ["9", 0]}, "class_type": "ToBasicPipe"},
  "28": {"inputs": {"model": ["4", 0], "clip": ["4", 1], "vae": ["4", 2], "positive": ["30", 0],
                    "negative": ["9", 0]}, "class_type": "ToBasicPipe"},
  "29": {"inputs": {"text": "grass", "clip": ["4", 1]}, "class_type": "CLIPTextEncode"},
  "30": {"inputs": {"text": "yellow circle", "clip": ["4", 1]}, "class_type": "CLIPTextEncode"}
}"""


@pytest.fixture
def hand_written(tmp_path):
    """The workflow plus its masks: an RGBA PNG read by (inverted) alpha, an RGB PNG read by green."""
    grass = np.zeros((64, 64), np.uint8)
    grass[40:] = 255
    grass[36:40] = 128
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 3] = 255 - grass  # the mask editor's convention: painted = transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "grass.png")
    sun = np.zeros((64, 64, 3), np.uint8)
    sun[4:20, 40:56, 1] = 255
    sun[..., 0] = 77  # other channels are ignored
    (tmp_path / "sub").mkdir()
    Image.fromarray(sun, "RGB").save(tmp_path / "sub" / "sun.png")
    (tmp_path / "flow.json").write_text(HAND_WRITTEN)
    return tmp_path, grass / 255, sun[..., 1] / 255


def test_hand_written_workflow_imports(hand_written):
    folder, grass, sun = hand_written
    session = rw.RegionalSamplerSession.from_comfy(folder / "flow.json", MODEL)
    assert session.node == "RegionalSamplerAdvanced"
    assert session.parameters() == dict(add_noise=True, noise_seed=42, steps=12, start_at_step=0, end_at_step=10000,
                                        overlap_factor=10, restore_latent=True, return_with_leftover_noise=False,
                                        additional_mode="ratio between", additional_sampler="AUTO",
                                        additional_sigma_ratio=0.3)
    assert session.base == rw.SamplerConfig("euler_ancestral", "karras", 7.0, "sky", "", 1.0)
    assert [r.config for r in session.regions] == [rw.SamplerConfig("dpmpp_2m", "normal", 5.5, "grass", "", 1.0),
                                                   rw.SamplerConfig("heun", "simple", 9.0, "yellow circle", "", 0.98)]
    first, second = session.regions
    assert (first.variation_seed, first.variation_strength, first.variation_method) == (0, 0.0, "linear")
    assert (second.variation_seed, second.variation_strength, second.variation_method) == (9, 0.25, "slerp")
    np.testing.assert_allclose(first.mask, grass, atol=1e-6)
    np.testing.assert_allclose(second.mask, sun, atol=1e-6)
    assert session.latent_image.shape == (1, 3, 64, 64)


def test_masks_from_another_folder(hand_written, tmp_path_factory):
    folder, grass, _ = hand_written
    elsewhere = tmp_path_factory.mktemp("workflows")
    (elsewhere / "flow.json").write_text(HAND_WRITTEN)
    with pytest.raises(ComfyWorkflowError, match="grass.png"):
        rw.RegionalSamplerSession.from_comfy(elsewhere / "flow.json", MODEL)
    session = rw.RegionalSamplerSession.from_comfy(elsewhere / "flow.json", MODEL, mask_folder=folder)
    np.testing.assert_allclose(session.regions[0].mask, grass, atol=1e-6)


def edited(change):
    graph = json.loads(HAND_WRITTEN)
    change(graph)
    return graph


def write(folder, graph):
    (folder / "flow.json").write_text(json.dumps(graph))
    return folder / "flow.json"


def test_unknown_upstream_nodes_are_listed(hand_written):
    folder, *_ = hand_written

    def lora_and_combine(graph):
        graph["40"] = {"class_type": "LoraLoader", "inputs": {"model": ["4", 0], "clip": ["4", 1],
                                                              "lora_name": "x.safetensors"}}
        graph["8"]["inputs"]["model"] = ["40", 0]
        graph["41"] = {"class_type": "ConditioningCombine",
                       "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["9", 0]}}
        graph["27"]["inputs"]["positive"] = ["41", 0]
        graph["50"] = {"class_type": "SomethingDownstream", "inputs": {"images": ["11", 0]}}

    with pytest.raises(ComfyWorkflowError) as err:
        rw.RegionalSamplerSession.from_comfy(write(folder, edited(lora_and_combine)), MODEL)
    message = str(err.value)
    assert "40 (LoraLoader)" in message and "41 (ConditioningCombine)" in message
    assert "SomethingDownstream" not in message and "node 3" in message


def test_a_widget_linked_to_a_primitive_is_not_understood(hand_written):
    folder, *_ = hand_written

    def seed_node(graph):
        graph["60"] = {"class_type": "Seed (rgthree)", "inputs": {"seed": 5}}
        graph["3"]["inputs"]["noise_seed"] = ["60", 0]

    with pytest.raises(ComfyWorkflowError, match=r"60 \(Seed \(rgthree\)\)"):
        rw.RegionalSamplerSession.from_comfy(write(folder, edited(seed_node)), MODEL)


def test_a_missing_mask_png_is_named(hand_written):
    folder, *_ = hand_written
    (folder / "sub" / "sun.png").unlink()
    with pytest.raises(ComfyWorkflowError, match=r"node 24 \(LoadImageMask\) input image: mask file .*sun.png"):
        rw.RegionalSamplerSession.from_comfy(folder / "flow.json", MODEL)


@pytest.mark.parametrize("change, match", [
    (lambda g: g["7"]["inputs"].update(scheduler="AYS SDXL"), r"node 7 \(KSamplerAdvancedProvider\) input scheduler"),
    (lambda g: g["7"]["inputs"].update(sampler_name="euler_magic"), r"node 7 .* input sampler_name"),
    (lambda g: g["3"]["inputs"].update(steps=0), r"node 3 \(RegionalSamplerAdvanced\) input steps"),
    (lambda g: g["3"]["inputs"].update(add_noise=1), r"node 3 .* input add_noise: expected a BOOLEAN"),
    (lambda g: g["3"]["inputs"].update(start_at_step=12), r"node 3 .* input start_at_step"),
    (lambda g: g["3"]["inputs"].pop("overlap_factor"), r"node 3 .* input overlap_factor: missing"),
    (lambda g: g["3"]["inputs"].update(hook_opt=["4", 0]), r"node 3 .* not understand: hook_opt"),
    (lambda g: g["7"]["inputs"].update(sampler_opt=["4", 0]), r"node 7 .* not understand: sampler_opt"),
    (lambda g: g["22"]["inputs"].update(variation_strength=1.5), r"node 22 .* input variation_strength"),
    (lambda g: g["5"]["inputs"].update(width=8), r"node 5 \(EmptyLatentImage\) input width"),
    (lambda g: g["6"]["inputs"].update(clip=["4", 0]), r"node 6 .* input clip: expected a CLIP output.*MODEL"),
    (lambda g: g["6"]["inputs"].update(clip=["99", 1]), r"node 6 .* input clip: links to node 99"),
    (lambda g: g["6"]["inputs"].update(text=5), r"node 6 .* input text: expected a STRING"),
    (lambda g: g["23"]["inputs"].update(image="../secret.png"), r"node 23 .* input image: expected a file name"),
    (lambda g: g["23"]["inputs"].update(channel="luma"), r"node 23 .* input channel"),
    (lambda g: g["20"]["inputs"].update(extra=1), r"node 20 .* not understand: extra"),
    (lambda g: g.update({"33": dict(g["3"])}), r"exactly one .* found 3 \(RegionalSamplerAdvanced: 'RegionalSamplerAdvanced'\), 33 .*node_id="),
    (lambda g: g.pop("3"), r"exactly one .* found none"),
    (lambda g: g["4"]["inputs"].update(ckpt_name=5), r"node 4 .* input ckpt_name"),
])
def test_invalid_workflows_name_the_node_and_input(hand_written, change, match):
    folder, *_ = hand_written
    with pytest.raises(ComfyWorkflowError, match=match):
        rw.RegionalSamplerSession.from_comfy(write(folder, edited(change)), MODEL)


def test_two_checkpoints_mismatched_masks_and_unknown_words(hand_written):
    folder, *_ = hand_written

    def second_checkpoint(graph):
        graph["45"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "other.safetensors"}}
        graph["27"]["inputs"]["model"] = ["45", 0]

    with pytest.raises(ComfyWorkflowError, match="other.safetensors"):
        rw.RegionalSamplerSession.from_comfy(write(folder, edited(second_checkpoint)), MODEL)
    Image.fromarray(np.zeros((32, 64, 3), np.uint8)).save(folder / "sub" / "sun.png")
    with pytest.raises(ComfyWorkflowError, match=r"node 24 .*sun.png: mask: the image is 64x32 but the latent implies 64x64"):
        rw.RegionalSamplerSession.from_comfy(write(folder, json.loads(HAND_WRITTEN)), MODEL)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "sub" / "sun.png")
    with pytest.raises(ComfyWorkflowError, match="does not fit this model.*unicorn"):
        rw.RegionalSamplerSession.from_comfy(write(folder, edited(lambda g: g["30"]["inputs"].update(
            text="unicorn"))), MODEL)
    assert issubclass(ComfyWorkflowError, ValueError)


def test_files_that_are_not_api_workflows(tmp_path):
    (tmp_path / "ui.json").write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    with pytest.raises(ComfyWorkflowError, match="exactly one .* found none"):  # the editor's format, empty
        rw.RegionalSamplerSession.from_comfy(tmp_path / "ui.json", MODEL)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ComfyWorkflowError, match="JSON"):
        rw.RegionalSamplerSession.from_comfy(tmp_path / "bad.json", MODEL)
    with pytest.raises(ComfyWorkflowError, match="node 1"):
        parse_workflow({"1": {"inputs": {}}})
    with pytest.raises(ComfyWorkflowError, match="UI format"):  # the API importer alone refuses the editor's
        parse_workflow({"nodes": [], "links": []})


# ---- what the nodes cannot express ----------------------------------------------------------------

def test_coherent_mode_is_refused_and_writes_nothing(tmp_path):
    session = make_session("RegionalSamplerAdvanced", 2, mode="coherent")
    with pytest.raises(ComfyWorkflowError, match="mode: 'coherent'"):
        session.to_comfy(tmp_path / "c.json")
    assert not list(tmp_path.iterdir())


def test_quirks_latents_and_regions_the_nodes_cannot_express(tmp_path):
    session = make_session("RegionalSampler", 1, quirks=rw.Quirks(mask_wh_swap=False, discard_final_step=False))
    with pytest.raises(ComfyWorkflowError, match="quirks: .*mask_wh_swap, discard_final_step"):
        session.to_comfy(tmp_path / "q.json")
    latent = rw.empty_latent(MODEL, H, W) + 0.5
    session = rw.RegionalSamplerSession(MODEL, latent, regions=[rw.Region(MASKS[0])])
    with pytest.raises(ComfyWorkflowError, match="latent_image: .*EmptyLatentImage.*not all zeros"):
        session.to_comfy(tmp_path / "l.json")
    session = rw.RegionalSamplerSession(MODEL, {"samples": rw.empty_latent(MODEL, H, W), "batch_index": [3]},
                                        regions=[rw.Region(MASKS[0])])
    with pytest.raises(ComfyWorkflowError, match="batch_index"):
        session.to_comfy(tmp_path / "b.json")
    with pytest.raises(ComfyWorkflowError, match="at least one region"):
        rw.RegionalSamplerSession(MODEL, rw.empty_latent(MODEL, 64, 64)).to_comfy(tmp_path / "r.json")
    small = rw.models.ToyWorld(n_exemplars=20, image_size=8)
    session = rw.RegionalSamplerSession(small, rw.empty_latent(small, 8, 8), regions=[rw.Region(np.ones((8, 8)))])
    with pytest.raises(ComfyWorkflowError, match="width that is a multiple of 8 in 16..16384"):
        session.to_comfy(tmp_path / "s.json")
    assert not list(tmp_path.iterdir())


def test_schemas_in_the_module_agree_with_the_node_tables():
    for kind, schema in comfy.SCHEMAS.items():
        required, optional, outputs = SCHEMAS[kind]
        assert list(schema.outputs) == outputs, kind
        if required is not None:
            assert set(schema.required) == set(required), kind
            assert set(schema.optional) - {"upload"} <= set(optional), kind  # upload: the editor's button
