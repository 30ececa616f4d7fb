"""ComfyUI workflows in API format: a regional-sampling description (plain dicts) to a graph and back.

The description (what `build_workflow` takes and `parse_workflow` returns)::

    {"node": "RegionalSamplerAdvanced" | "RegionalSampler",
     "parameters": {node parameter name: value},
     "base": {"sampler", "scheduler", "cfg", "positive", "negative", "sigma_factor"},
     "regions": [{"config": {same keys as base}, "variation_seed", "variation_strength",
                  "variation_method", "mask": 2-D float array}],
     "latent": {"width", "height", "batch_size"},        # image pixels, as EmptyLatentImage takes them
     "checkpoint": "model.safetensors"}

`build_workflow` also reads the optional keys ``mode``, ``quirks`` and ``latent["empty"]`` /
``latent["batch_index"]`` to refuse what the nodes cannot express (`ComfyWorkflowError`).
Flow models add two optional keys, which `parse_workflow` gives back where the graph has them:
``latent["node"]`` (``"EmptySD3LatentImage"`` for a 16-channel latent; default EmptyLatentImage)
and ``model_sampling`` (the inputs of a ``ModelSamplingSD3`` or ``ModelSamplingFlux`` node between
the checkpoint and every sampler: `model_sampling_patch`, `model_sampling_of_patch`).

Where each part lives: this module writes (`check_expressible`, `build_workflow`,
`write_workflow`) and maps a flow model's sampling to and from its node; `comfy_import` reads
(`parse_workflow`, `read_workflow`, `load_masks`: re-exported here); `comfy_nodes` holds the node
schemas and the graph checks both sides use (`SCHEMAS`, `ComfyWorkflowError`: re-exported here).

Masks travel as PNGs beside the JSON, written grey in R, G and B (``round(mask * 255)``) and
loaded with ``LoadImageMask`` channel ``"red"``: 8-bit, so soft values come back within 1/510
(k/255 values exactly). Red, not alpha: ``LoadImageMask`` inverts alpha (mask = 1 - A/255), and a
grey PNG reads the same in any viewer and in the mask canvas.

Files: the JSON and its mask PNGs are written atomically into the JSON's folder and never through
a symlink; an existing file is replaced only if this module wrote it (a workflow whose SaveImage
prefix is ``regional_widgets``, a PNG with our ``Software`` text chunk), otherwise the export is
refused before anything is written (`paths.FileSafetyError`). The import reads the JSON (at most
`MAX_WORKFLOW_BYTES`, nested at most `paths.JSON_MAX_DEPTH` levels) and the mask PNGs from inside
the mask folder only (no symlinks, PNG only, exactly the EmptyLatentImage size), and validates the
whole graph (node ids, names, links, cycles) before anything is built.

These modules read and write the API format only; the editor's UI format and ComfyUI's PNGs are
converted to and from it by `comfy_ui`, `comfy_png` and `comfy_files` (docs/comfyui.md).
"""
from __future__ import annotations

import json
from pathlib import Path

from .comfy_import import MAX_IMAGE_NAME, load_masks, parse_workflow, read_file, read_workflow
from .comfy_nodes import (BOOLEAN, LATENT_INPUT, LATENT_NODES, MAX_NODE_ID, MAX_RESOLUTION, MAX_WORKFLOW_BYTES,
                          MODEL_SAMPLING_NODES, SAMPLER_NODES, SAVE_PREFIX, SCHEMAS, STRING, ComfyWorkflowError,
                          Literal, NodeSchema, check_node, upstream_nodes)
from .masks import write_mask_png, written_by_us
from .paths import FileSafetyError, inside, open_read, parse_json, read_bytes, write_atomic

MASK_CHANNEL = "red"
SD3_DEFAULT_SHIFT, FLUX_DEFAULT_MU = 3.0, 1.15  # the checkpoints' own model sampling (model_families.md §1.3)
__all__ = [  # written here, read in comfy_import, the vocabulary in comfy_nodes: one name space for callers
    "check_expressible", "build_workflow", "write_workflow", "write_files", "png_is_ours", "model_sampling_patch",
    "model_sampling_of_patch", "MASK_CHANNEL", "SD3_DEFAULT_SHIFT", "FLUX_DEFAULT_MU",
    "parse_workflow", "read_workflow", "load_masks", "read_file", "MAX_IMAGE_NAME",
    "ComfyWorkflowError", "SCHEMAS", "Literal", "NodeSchema", "BOOLEAN", "STRING", "SAMPLER_NODES", "LATENT_NODES",
    "MODEL_SAMPLING_NODES", "MAX_RESOLUTION", "MAX_WORKFLOW_BYTES", "MAX_NODE_ID", "SAVE_PREFIX"]


# ---- export -------------------------------------------------------------------------------------

def check_expressible(description: dict) -> None:
    """Raise `ComfyWorkflowError` for the settings the nodes cannot express."""
    if description.get("mode", "faithful") != "faithful":
        raise ComfyWorkflowError(f"mode: {description['mode']!r} cannot be expressed by the ComfyUI nodes, "
                                 "which run the faithful algorithm; use mode='faithful' to export")
    off = [name for name, on in description.get("quirks", {}).items() if not on]
    if off:
        raise ComfyWorkflowError(f"quirks: the ComfyUI nodes always have every quirk on; switched off here: "
                                 f"{', '.join(off)}")
    latent = description["latent"]
    if not latent.get("empty", True):
        raise ComfyWorkflowError("latent_image: the workflow starts from EmptyLatentImage, but this latent is "
                                 "not all zeros")
    if latent.get("batch_index") is not None:
        raise ComfyWorkflowError("latent_image: a batch_index cannot be expressed by EmptyLatentImage")
    if latent.get("node", "EmptyLatentImage") == "EmptySD3LatentImage":
        for name in ("width", "height"):
            if latent[name] % 16:
                raise ComfyWorkflowError(f"latent_image: EmptySD3LatentImage needs a {name} that is a multiple of "
                                         f"16; this latent is {latent[name]} pixels {name}")
    for name in ("width", "height"):
        value = latent[name]
        if not 16 <= value <= MAX_RESOLUTION or value % 8:
            raise ComfyWorkflowError(f"latent_image: EmptyLatentImage needs a {name} that is a multiple of 8 in "
                                     f"16..{MAX_RESOLUTION}; this latent is {value} pixels {name} "
                                     "(latent size x the model's downscale)")
    if not 1 <= latent["batch_size"] <= 4096:
        raise ComfyWorkflowError(f"latent_image: EmptyLatentImage takes a batch of 1..4096, "
                                 f"got {latent['batch_size']}")
    if not description["regions"]:
        raise ComfyWorkflowError("regions: the regional sampler nodes need at least one region")


def build_workflow(description: dict, mask_prefix: str = "region") -> tuple:
    """``(api_graph, mask_files)``: the API-format graph and ``{file name: PNG bytes}`` for its masks."""
    check_expressible(description)
    graph: dict = {}

    def add(class_type, **inputs):
        node_id = str(len(graph) + 1)
        graph[node_id] = {"class_type": class_type, "inputs": inputs}
        return node_id

    ckpt = add("CheckpointLoaderSimple", ckpt_name=description["checkpoint"])
    model = [ckpt, 0]
    patch = description.get("model_sampling")
    if patch is not None:  # a flow model whose shift is not the checkpoint's default
        model = [add(patch["class_type"], model=model, **{k: v for k, v in patch.items() if k != "class_type"}), 0]

    def provider(config):
        pos = add("CLIPTextEncode", text=config["positive"], clip=[ckpt, 1])
        neg = add("CLIPTextEncode", text=config["negative"], clip=[ckpt, 1])
        pipe = add("ToBasicPipe", model=model, clip=[ckpt, 1], vae=[ckpt, 2], positive=[pos, 0],
                   negative=[neg, 0])
        return add("KSamplerAdvancedProvider", cfg=config["cfg"], sampler_name=config["sampler"],
                   scheduler=config["scheduler"], sigma_factor=config["sigma_factor"], basic_pipe=[pipe, 0])

    base = provider(description["base"])
    mask_files, prompts = {}, {}
    for j, region in enumerate(description["regions"], 1):
        sampler = provider(region["config"])
        name = f"{mask_prefix}{j}.png"
        mask_files[name] = write_mask_png(region["mask"], mode="RGB")
        mask = add("LoadImageMask", image=name, channel=MASK_CHANNEL)
        prompts[f"regional_prompts{j}"] = [add(
            "RegionalPrompt", mask=[mask, 0], advanced_sampler=[sampler, 0],
            variation_seed=region["variation_seed"], variation_strength=region["variation_strength"],
            variation_method=region["variation_method"]), 0]
    combined = add("CombineRegionalPrompts", **prompts)
    size = description["latent"]
    latent = add(size.get("node", "EmptyLatentImage"), width=size["width"], height=size["height"],
                 batch_size=size["batch_size"])
    node = description["node"]
    sampler = add(node, **description["parameters"], **{LATENT_INPUT[node]: [latent, 0]},
                  base_sampler=[base, 0], regional_prompts=[combined, 0])
    for node_id in upstream_nodes(graph, sampler):  # the graph passes the checks an import makes
        check_node(graph, node_id)
    decoded = add("VAEDecode", samples=[sampler, 0], vae=[ckpt, 2])
    add("SaveImage", images=[decoded, 0], filename_prefix=SAVE_PREFIX)
    return graph, mask_files


def write_workflow(path, description: dict) -> list:
    """Write ``path`` (API-format JSON) and the masks beside it as ``<stem>_region<j>.png``; returns the paths.

    Every file is written atomically; an existing file that this module did not write (or a
    symlink) is refused before anything is written (`FileSafetyError`). The JSON is written last.
    """
    path = Path(path)
    graph, mask_files = build_workflow(description, mask_prefix=f"{path.stem}_region")
    files = {**mask_files, path.name: json.dumps(graph, indent=2).encode()}
    return write_files(path.parent, files, {name: (png_is_ours if name in mask_files else _workflow_is_ours)
                                            for name in files})


def write_files(folder, files: dict, ours: dict) -> list:
    """Write ``{name: bytes}`` into ``folder`` atomically, in order; the last one first in the returned list.

    ``ours[name](folder, name)`` says whether an existing file may be replaced; any other existing
    file (or a symlink) is refused before anything is written (`FileSafetyError`).
    """
    for name in files:  # refuse before writing anything
        target = inside(folder, name)
        if target.exists() and not ours[name](folder, name):
            raise FileSafetyError(f"{str(name)!r}: already exists in {str(folder)!r} and was not written by "
                                  "regional_widgets; not overwritten (remove it or choose another name)")
    written = [write_atomic(folder, name, data, replace_ok=lambda _, n=name: ours[n](folder, n))
               for name, data in files.items()]
    return [written[-1]] + written[:-1]


def png_is_ours(folder, name) -> bool:
    try:
        with open_read(folder, name, 2**31) as file:
            return written_by_us(file)
    except (OSError, ValueError):
        return False


def _workflow_is_ours(folder, name) -> bool:
    try:
        graph = parse_json(read_bytes(folder, name, MAX_WORKFLOW_BYTES))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(graph, dict) and any(
        isinstance(n, dict) and n.get("class_type") == "SaveImage" and isinstance(n.get("inputs"), dict)
        and n["inputs"].get("filename_prefix") == SAVE_PREFIX for n in graph.values())


# ---- flow models' model sampling nodes ------------------------------------------------------------

def model_sampling_patch(model_sampling, width: int, height: int):
    """The ModelSamplingSD3 / ModelSamplingFlux inputs that give ``model_sampling`` on a checkpoint of its
    family, or None where the checkpoint's default already does (EPS/V; SD3-style discrete flow with
    shift 3; Flux mu 1.15; Flux-schnell's shift 1 x 1). ``width``/``height``: the image size (Flux's node
    takes one). Raises `ComfyWorkflowError` for a flow sampling no node expresses."""
    from ..sampling.model_sampling import ModelSamplingDiscreteFlow, ModelSamplingFlux, flux_shift

    if not getattr(model_sampling, "is_const", False):
        return None
    if isinstance(model_sampling, ModelSamplingDiscreteFlow) and model_sampling.multiplier == 1000:
        if model_sampling.shift == SD3_DEFAULT_SHIFT:
            return None
        if not 0 <= model_sampling.shift <= 100:
            raise ComfyWorkflowError(f"model: ModelSamplingSD3 takes a shift in [0, 100], got {model_sampling.shift}")
        return {"class_type": "ModelSamplingSD3", "shift": float(model_sampling.shift)}
    if isinstance(model_sampling, ModelSamplingFlux):
        mu = float(model_sampling.shift)
        if mu == FLUX_DEFAULT_MU:
            return None
        if abs(flux_shift(width, height) - mu) <= 1e-9:  # the node's own line at this image size
            return {"class_type": "ModelSamplingFlux", "max_shift": 1.15, "base_shift": 0.5, "width": width,
                    "height": height}
        if not 0 <= mu <= 100:
            raise ComfyWorkflowError(f"model: ModelSamplingFlux takes shifts in [0, 100], got mu = {mu}")
        # max_shift = base_shift = mu: the node's line is flat, mu at any size
        return {"class_type": "ModelSamplingFlux", "max_shift": mu, "base_shift": mu, "width": width, "height": height}
    if isinstance(model_sampling, ModelSamplingDiscreteFlow) and model_sampling.multiplier == 1 \
            and model_sampling.shift == 1.0:
        return None  # Flux-schnell's own
    raise ComfyWorkflowError(f"model: {model_sampling!r} cannot be set by ModelSamplingSD3 or ModelSamplingFlux")


def model_sampling_of_patch(patch: dict):
    """The model sampling a ModelSamplingSD3 / ModelSamplingFlux node's inputs make (its MODEL output's)."""
    from ..sampling.model_sampling import ModelSamplingDiscreteFlow, ModelSamplingFlux, flux_shift

    if patch["class_type"] == "ModelSamplingSD3":
        return ModelSamplingDiscreteFlow(patch["shift"], 1000)
    return ModelSamplingFlux(flux_shift(patch["width"], patch["height"], patch["max_shift"], patch["base_shift"]))

