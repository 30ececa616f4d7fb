"""ComfyUI workflows: a regional-sampling description (plain dicts) to an API-format graph and back.

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
`parse_workflow` gives each region ``mask_file``, ``mask_channel`` and ``mask_node`` (the
LoadImageMask's id) instead of ``mask``; `read_workflow` loads the PNGs.

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

This module reads and writes the API format only; the editor's UI format and ComfyUI's PNGs are
converted to and from it by `comfy_ui`, `comfy_png` and `comfy_files` (docs/comfyui.md).
"""
from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from ..sampling.checks import is_int
from ..sampling.noise import SEED_2ND_MODES, SEED_MAX, VARIATION_METHODS
from ..sampling.recovery import ADDITIONAL_MODES, ADDITIONAL_SAMPLERS
from ..sampling.samplers import SAMPLER_NAMES
from ..sampling.schedules import SCHEDULER_NAMES
from .masks import CHANNELS, MAX_PIXELS, read_mask_png, write_mask_png, written_by_us
from .paths import NAME_MAX, FileSafetyError, FileTooLargeError, inside, open_read, parse_json, read_bytes, write_atomic

SAMPLER_NODES = ("RegionalSamplerAdvanced", "RegionalSampler")
MAX_RESOLUTION = 16384  # ComfyUI's limit for EmptyLatentImage's width and height
MASK_CHANNEL = "red"
SAVE_PREFIX = "regional_widgets"  # SaveImage's filename_prefix in what we export: marks the JSON as ours
MAX_WORKFLOW_BYTES = 32 * 2**20
MAX_NODE_ID = 64  # characters in a node id (ComfyUI's are short: "12", "5:3")
MAX_IMAGE_NAME = 1024  # characters in a LoadImageMask image name (each folder/file name: NAME_MAX bytes)


class ComfyWorkflowError(ValueError):
    """A workflow that cannot be written or read: names the node id and input where it can."""


# ---- the node schemas this module understands (comfy_workflow_nodes.md) -------------------------

@dataclass(frozen=True)
class Literal:
    """A widget input: ``kind`` INT, FLOAT, BOOLEAN, STRING or COMBO."""

    kind: str
    lo: float = None
    hi: float = None
    options: tuple = ()
    open_low: bool = False  # (lo, hi] instead of [lo, hi]


@dataclass(frozen=True)
class NodeSchema:
    required: dict  # name -> link type (a str) or Literal
    outputs: tuple
    optional: dict = field(default_factory=dict)  # name -> (Literal, default)


def _int(lo, hi):
    return Literal("INT", lo, hi)


def _float(lo, hi, open_low=False):
    return Literal("FLOAT", lo, hi, open_low=open_low)


def _combo(options):
    return Literal("COMBO", options=tuple(options))


BOOLEAN, STRING = Literal("BOOLEAN"), Literal("STRING")
_RECOVERY = {"additional_mode": _combo(ADDITIONAL_MODES), "additional_sampler": _combo(ADDITIONAL_SAMPLERS),
             "additional_sigma_ratio": _float(0, 1)}
SCHEMAS = {
    "CheckpointLoaderSimple": NodeSchema({"ckpt_name": STRING}, ("MODEL", "CLIP", "VAE")),
    "CLIPTextEncode": NodeSchema({"text": STRING, "clip": "CLIP"}, ("CONDITIONING",)),
    "ToBasicPipe": NodeSchema({"model": "MODEL", "clip": "CLIP", "vae": "VAE", "positive": "CONDITIONING",
                               "negative": "CONDITIONING"}, ("BASIC_PIPE",)),
    "KSamplerAdvancedProvider": NodeSchema(
        {"cfg": _float(0, 100), "sampler_name": _combo(SAMPLER_NAMES), "scheduler": _combo(SCHEDULER_NAMES),
         "sigma_factor": _float(0, 10), "basic_pipe": "BASIC_PIPE"}, ("KSAMPLER_ADVANCED",)),
    # "upload" is the editor's upload button, which saved API files may carry: accepted, ignored
    "LoadImageMask": NodeSchema({"image": STRING, "channel": _combo(CHANNELS)}, ("MASK",),
                                {"upload": (STRING, "image")}),
    "RegionalPrompt": NodeSchema(
        {"mask": "MASK", "advanced_sampler": "KSAMPLER_ADVANCED"}, ("REGIONAL_PROMPTS",),
        {"variation_seed": (_int(0, SEED_MAX), 0), "variation_strength": (_float(0, 1), 0.0),
         "variation_method": (_combo(VARIATION_METHODS), "linear")}),
    # CombineRegionalPrompts takes regional_prompts1, regional_prompts2, ...: see _inputs_of
    "CombineRegionalPrompts": NodeSchema({"regional_prompts1": "REGIONAL_PROMPTS"}, ("REGIONAL_PROMPTS",)),
    "EmptyLatentImage": NodeSchema({"width": _int(16, MAX_RESOLUTION), "height": _int(16, MAX_RESOLUTION),
                                    "batch_size": _int(1, 4096)}, ("LATENT",)),
    # flow models (comfy_workflow_nodes.md, other families): a 16-channel empty latent, the model sampling nodes
    "EmptySD3LatentImage": NodeSchema({"width": _int(16, MAX_RESOLUTION), "height": _int(16, MAX_RESOLUTION),
                                       "batch_size": _int(1, 4096)}, ("LATENT",)),
    "ModelSamplingSD3": NodeSchema({"model": "MODEL", "shift": _float(0, 100)}, ("MODEL",)),
    "ModelSamplingFlux": NodeSchema({"model": "MODEL", "max_shift": _float(0, 100), "base_shift": _float(0, 100),
                                     "width": _int(16, MAX_RESOLUTION), "height": _int(16, MAX_RESOLUTION)},
                                    ("MODEL",)),
    "RegionalSamplerAdvanced": NodeSchema(
        {"add_noise": BOOLEAN, "noise_seed": _int(0, SEED_MAX), "steps": _int(1, 10000),
         "start_at_step": _int(0, 10000), "end_at_step": _int(0, 10000), "overlap_factor": _int(0, 10000),
         "restore_latent": BOOLEAN, "return_with_leftover_noise": BOOLEAN, "latent_image": "LATENT",
         "base_sampler": "KSAMPLER_ADVANCED", "regional_prompts": "REGIONAL_PROMPTS", **_RECOVERY}, ("LATENT",)),
    "RegionalSampler": NodeSchema(
        {"seed": _int(0, SEED_MAX), "seed_2nd": _int(0, SEED_MAX), "seed_2nd_mode": _combo(SEED_2ND_MODES),
         "steps": _int(1, 10000), "base_only_steps": _int(0, 10000), "denoise": _float(0, 1, open_low=True),
         "samples": "LATENT", "base_sampler": "KSAMPLER_ADVANCED", "regional_prompts": "REGIONAL_PROMPTS",
         "overlap_factor": _int(0, 10000), "restore_latent": BOOLEAN, **_RECOVERY}, ("LATENT",)),
}
_LATENT_INPUT = {"RegionalSamplerAdvanced": "latent_image", "RegionalSampler": "samples"}
LATENT_NODES = ("EmptyLatentImage", "EmptySD3LatentImage")
MODEL_SAMPLING_NODES = ("ModelSamplingSD3", "ModelSamplingFlux")
SD3_DEFAULT_SHIFT, FLUX_DEFAULT_MU = 3.0, 1.15  # the checkpoints' own model sampling (model_families.md §1.3)
_COMBINE_SLOT = re.compile(r"regional_prompts([1-9][0-9]*)$")


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
    sampler = add(node, **description["parameters"], **{_LATENT_INPUT[node]: [latent, 0]},
                  base_sampler=[base, 0], regional_prompts=[combined, 0])
    for node_id in _upstream(graph, sampler):  # the graph passes the checks an import makes
        _check_node(graph, node_id)
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
    return write_files(path.parent, files, {name: (_png_is_ours if name in mask_files else _workflow_is_ours)
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


def _png_is_ours(folder, name) -> bool:
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


# ---- import -------------------------------------------------------------------------------------

def read_file(path: Path, limit: int) -> bytes:
    """A workflow file's bytes: too large or unreadable, a `ComfyWorkflowError`; an unsafe path, the
    `FileSafetyError` as it is."""
    try:
        return read_bytes(path.parent, path.name, limit)
    except FileTooLargeError as err:
        raise ComfyWorkflowError(f"{path}: {err}") from None
    except OSError as err:
        raise ComfyWorkflowError(f"{path}: cannot be read ({err})") from None


def read_workflow(path, mask_folder=None) -> dict:
    """`parse_workflow` of an API-format JSON file, with each region's ``mask`` loaded from its PNG
    (looked up inside ``mask_folder``, by default the JSON's folder; never through a symlink).

    Each mask must be a PNG of exactly the EmptyLatentImage's width x height (checked before its
    pixels are decoded); nothing is resized.
    """
    path = Path(path)
    raw = read_file(path, MAX_WORKFLOW_BYTES)
    try:
        graph = parse_json(raw)
    except (ValueError, RecursionError) as err:
        raise ComfyWorkflowError(f"{path}: cannot be read as JSON ({err})") from None
    description = parse_workflow(graph)
    return load_masks(description, Path(mask_folder) if mask_folder is not None else path.parent)


def load_masks(description: dict, folder, missing=None) -> dict:
    """Each region's ``mask`` read from its PNG inside ``folder`` (exactly the EmptyLatentImage size).

    ``missing``: None raises for a mask file that is not there; a callable ``missing(region)``
    returns the mask to use instead (a mask that is there but refused always raises).
    """
    folder = Path(folder)
    size = (description["latent"]["width"], description["latent"]["height"])
    for region in description["regions"]:
        where = f"node {region['mask_node']} (LoadImageMask) input image"
        try:
            file = open_read(folder, region["mask_file"], 2**31)
        except FileSafetyError as err:
            raise FileSafetyError(f"{where}: {err}") from None
        except OSError:
            if missing is not None:
                region["mask"] = missing(region)
                continue
            raise ComfyWorkflowError(f"{where}: mask file {str(folder / region['mask_file'])!r} not found (masks "
                                     "are looked up in the workflow's folder, or in mask_folder= such as ComfyUI's "
                                     "input folder)") from None
        with file:
            try:
                mask = read_mask_png(file, region["mask_channel"], size=size, max_pixels=MAX_PIXELS)
            except (OSError, ValueError) as err:
                raise ComfyWorkflowError(f"{where}: {region['mask_file']}: {err}") from None
        region["mask"] = mask
    return description


def parse_workflow(graph) -> dict:
    """The description of the regional sampler in an API-format graph; everything is validated first."""
    graph = _check_graph(graph)
    candidates = sorted((i for i, n in graph.items() if n["class_type"] in SAMPLER_NODES), key=_id_order)
    if len(candidates) != 1:
        found = ", ".join(f"{i} ({graph[i]['class_type']})" for i in candidates) or "none"
        raise ComfyWorkflowError(f"workflow: expected exactly one {' or '.join(SAMPLER_NODES)} node, found {found}")
    top = candidates[0]
    upstream = _upstream(graph, top)
    for node_id in upstream:
        _check_node(graph, node_id)
    node = graph[top]
    params = _literal_values(graph, top)
    if node["class_type"] == "RegionalSamplerAdvanced":
        end = min(params["steps"], params["end_at_step"])
        if params["start_at_step"] >= end:
            raise ComfyWorkflowError(f"node {top} (RegionalSamplerAdvanced) input start_at_step: expected less than "
                                     f"min(steps, end_at_step) = {end}, got {params['start_at_step']}")
    checkpoints = sorted({graph[i]["inputs"]["ckpt_name"] for i in upstream
                          if graph[i]["class_type"] == "CheckpointLoaderSimple"})
    if len(checkpoints) > 1:
        raise ComfyWorkflowError(f"workflow: one model stands in for the checkpoint, but this workflow loads "
                                 f"{len(checkpoints)}: {', '.join(checkpoints)}")
    latent = _source(graph, top, _LATENT_INPUT[node["class_type"]], LATENT_NODES)
    regions = [_region(graph, i) for i in _regional_prompts(graph, top, "regional_prompts")]
    description = {"node": node["class_type"], "parameters": params,
                   "base": _config(graph, _source(graph, top, "base_sampler", "KSamplerAdvancedProvider")),
                   "regions": regions, "latent": _literal_values(graph, latent), "checkpoint": checkpoints[0]}
    if graph[latent]["class_type"] != "EmptyLatentImage":
        description["latent"]["node"] = graph[latent]["class_type"]
    patches = sorted((i for i in upstream if graph[i]["class_type"] in MODEL_SAMPLING_NODES), key=_id_order)
    if patches:
        found = {json.dumps({"class_type": graph[i]["class_type"], **_literal_values(graph, i)}, sort_keys=True)
                 for i in patches}
        if len(found) > 1:
            listed = ", ".join(f"{i} ({graph[i]['class_type']})" for i in patches)
            raise ComfyWorkflowError(f"workflow: one model stands in for the checkpoint, but its sampling is set "
                                     f"differently by {listed}")
        description["model_sampling"] = json.loads(found.pop())
    return description


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


def _id_order(node_id):
    return (0, int(node_id), "") if re.fullmatch(r"[0-9]{1,30}", node_id) else (1, 0, node_id)


def _check_id(node_id) -> str:
    """A node id as text: 1..MAX_NODE_ID printable characters (ComfyUI's are "12" or "5:3")."""
    text = node_id if isinstance(node_id, str) else str(node_id)
    if not (isinstance(node_id, str) or is_int(node_id)) or not 0 < len(text) <= MAX_NODE_ID \
            or not text.isprintable():
        shown = repr(text[:MAX_NODE_ID]) + ("..." if len(text) > MAX_NODE_ID else "")
        raise ComfyWorkflowError(f"workflow: node id {shown}: expected 1..{MAX_NODE_ID} printable characters")
    return text


def _check_graph(graph) -> dict:
    if not isinstance(graph, dict):
        raise ComfyWorkflowError("workflow: expected a JSON object of nodes {id: {class_type, inputs}}")
    if "nodes" in graph and "links" in graph:
        raise ComfyWorkflowError("workflow: this is the editor's UI format; save the workflow in API format "
                                 "(ComfyUI's Save (API Format) or Export (API)) to import it")
    out = {}
    for node_id, node in graph.items():
        node_id = _check_id(node_id)
        if not isinstance(node, dict) or not isinstance(node.get("class_type"), str) \
                or not isinstance(node.get("inputs", {}), dict):
            raise ComfyWorkflowError(f"node {node_id}: expected {{'class_type': str, 'inputs': {{...}}}}")
        if node_id in out:
            raise ComfyWorkflowError(f"node {node_id}: the id appears twice")
        out[node_id] = {"class_type": node["class_type"][:200], "inputs": dict(node.get("inputs", {}))}
    return out


def _is_link(value) -> bool:
    return (isinstance(value, list) and len(value) == 2 and (isinstance(value[0], str) or is_int(value[0]))
            and is_int(value[1]))


def _upstream(graph, top) -> list:
    """Every node the regional sampler depends on; unknown ones raise, listed together."""
    seen, queue, unknown = {top}, [top], []
    while queue:
        node_id = queue.pop()
        for name, value in graph[node_id]["inputs"].items():
            if not _is_link(value):
                continue
            source = str(value[0])
            if source not in graph:
                raise ComfyWorkflowError(f"node {node_id} ({graph[node_id]['class_type']}) input {name}: links to "
                                         f"node {source}, which is not in the workflow")
            if source in seen:
                continue
            seen.add(source)
            if graph[source]["class_type"] in SCHEMAS:
                queue.append(source)
            else:
                unknown.append(source)
    if unknown:
        listed = ", ".join(f"{i} ({graph[i]['class_type']})" for i in sorted(unknown, key=_id_order))
        raise ComfyWorkflowError(f"workflow: nodes upstream of the regional sampler (node {top}) that "
                                 f"regional_widgets does not understand: {listed}")
    return sorted(seen, key=_id_order)


def _inputs_of(node) -> dict:
    schema = SCHEMAS[node["class_type"]]
    if node["class_type"] == "CombineRegionalPrompts":
        return {name: "REGIONAL_PROMPTS" for name in node["inputs"] if _COMBINE_SLOT.match(name)} \
            or dict(schema.required)
    return dict(schema.required)


def _check_node(graph, node_id) -> None:
    """Required inputs present, no unknown input, links of the right type, literals in range."""
    node = graph[node_id]
    kind = node["class_type"]
    schema = SCHEMAS[kind]
    required = _inputs_of(node)
    where = f"node {node_id} ({kind})"
    unknown = sorted(set(node["inputs"]) - set(required) - set(schema.optional))
    if unknown:
        raise ComfyWorkflowError(f"{where}: inputs regional_widgets does not understand: {', '.join(unknown)}")
    missing = [name for name in required if name not in node["inputs"]]
    if missing:
        raise ComfyWorkflowError(f"{where} input {missing[0]}: missing")
    for name, spec in required.items():
        value = node["inputs"][name]
        if isinstance(spec, str):
            _check_link(graph, where, name, value, spec)
        else:
            _check_literal(where, name, value, spec)
    for name, (spec, _) in schema.optional.items():
        if name in node["inputs"]:
            _check_literal(where, name, node["inputs"][name], spec)


def _check_link(graph, where, name, value, link_type) -> None:
    if not _is_link(value):
        raise ComfyWorkflowError(f"{where} input {name}: expected a link to a {link_type} output, got {value!r}")
    source, index = str(value[0]), value[1]
    outputs = SCHEMAS[graph[source]["class_type"]].outputs
    if not 0 <= index < len(outputs) or outputs[index] != link_type:
        got = outputs[index] if 0 <= index < len(outputs) else f"no output {index}"
        raise ComfyWorkflowError(f"{where} input {name}: expected a {link_type} output, but node {source} "
                                 f"({graph[source]['class_type']}) output {index} is {got}")


def _check_literal(where, name, value, spec: Literal) -> None:
    prefix = f"{where} input {name}"
    if _is_link(value):
        raise ComfyWorkflowError(f"{prefix}: a link to node {value[0]}; only a literal value is understood here")
    if spec.kind == "BOOLEAN":
        ok = isinstance(value, bool)
    elif spec.kind == "STRING":
        ok = isinstance(value, str)
    elif spec.kind == "COMBO":
        if value not in spec.options:
            raise ComfyWorkflowError(f"{prefix}: unknown value {value!r}; accepted: {', '.join(spec.options)}")
        return
    else:
        if spec.kind == "INT":
            ok = is_int(value, spec.lo, spec.hi)
        else:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and spec.lo <= value <= spec.hi
        ok = ok and not (spec.open_low and value <= spec.lo)
        if not ok:
            low = "(" if spec.open_low else "["
            raise ComfyWorkflowError(f"{prefix}: expected {'an integer' if spec.kind == 'INT' else 'a number'} in "
                                     f"{low}{spec.lo}, {spec.hi}], got {value!r}")
    if not ok:
        raise ComfyWorkflowError(f"{prefix}: expected a {spec.kind}, got {value!r}")


def _literal_values(graph, node_id) -> dict:
    """The node's widget values (validated already), FLOATs as floats, optional ones defaulted."""
    node = graph[node_id]
    schema = SCHEMAS[node["class_type"]]
    specs = {n: s for n, s in schema.required.items() if isinstance(s, Literal)}
    values = {n: node["inputs"][n] for n in specs}
    values.update({n: node["inputs"].get(n, default) for n, (_, default) in schema.optional.items()})
    specs.update({n: s for n, (s, _) in schema.optional.items()})
    return {n: float(v) if specs[n].kind == "FLOAT" else v for n, v in values.items()}


def _source(graph, node_id, name, expected) -> str:
    """The node linked to input ``name``; ``expected``: its class, or a tuple of accepted classes."""
    source = str(graph[node_id]["inputs"][name][0])
    kind = graph[source]["class_type"]
    accepted = (expected,) if isinstance(expected, str) else tuple(expected)
    if kind not in accepted:
        raise ComfyWorkflowError(f"node {node_id} ({graph[node_id]['class_type']}) input {name}: expected a "
                                 f"{' or '.join(accepted)} node, got node {source} ({kind})")
    return source


def _regional_prompts(graph, node_id, name) -> list:
    """RegionalPrompt node ids in slot order, through (nested) CombineRegionalPrompts; a cycle raises."""
    found = []
    # depth-first, without recursion: (node, the Combine nodes on the way to it)
    stack = [(str(graph[node_id]["inputs"][name][0]), ())]
    while stack:
        source, path = stack.pop()
        if graph[source]["class_type"] == "RegionalPrompt":
            found.append(source)
            continue
        if source in path:
            loop = " -> ".join(path[path.index(source):] + (source,))
            raise ComfyWorkflowError(f"node {source} (CombineRegionalPrompts): its regional_prompts inputs form a "
                                     f"cycle ({loop})")
        slots = sorted(graph[source]["inputs"], key=lambda s: int(_COMBINE_SLOT.match(s).group(1)))
        stack.extend((str(graph[source]["inputs"][slot][0]), path + (source,)) for slot in reversed(slots))
    return found


def _config(graph, provider) -> dict:
    values = _literal_values(graph, provider)
    pipe = _source(graph, provider, "basic_pipe", "ToBasicPipe")
    texts = {part: graph[_source(graph, pipe, part, "CLIPTextEncode")]["inputs"]["text"]
             for part in ("positive", "negative")}
    return {"sampler": values["sampler_name"], "scheduler": values["scheduler"], "cfg": values["cfg"],
            "positive": texts["positive"], "negative": texts["negative"], "sigma_factor": values["sigma_factor"]}


def _region(graph, prompt) -> dict:
    values = _literal_values(graph, prompt)
    mask = _source(graph, prompt, "mask", "LoadImageMask")
    image, channel = graph[mask]["inputs"]["image"], graph[mask]["inputs"]["channel"]
    relative = PurePosixPath(image.replace("\\", "/"))
    where = f"node {mask} (LoadImageMask) input image"
    if not image or relative.is_absolute() or ".." in relative.parts or re.match(r"^[A-Za-z]:", image):
        raise ComfyWorkflowError(f"{where}: expected a file name inside the input folder, got {image[:100]!r}")
    if len(image) > MAX_IMAGE_NAME or any(len(p.encode("utf-8", "surrogatepass")) > NAME_MAX for p in relative.parts):
        raise ComfyWorkflowError(f"{where}: a name of {len(image)} characters; expected at most {MAX_IMAGE_NAME}, "
                                 f"each folder or file name at most {NAME_MAX} bytes")
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in image):
        raise ComfyWorkflowError(f"{where}: control characters in the file name {image[:100]!r}")
    return {"config": _config(graph, _source(graph, prompt, "advanced_sampler", "KSamplerAdvancedProvider")),
            **values, "mask_file": str(relative), "mask_channel": channel, "mask_node": mask}
