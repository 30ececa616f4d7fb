"""ComfyUI API-format import: a graph (or a JSON file and its mask PNGs) to the regional-sampling
description `comfy` documents, everything validated (`comfy_nodes`) before anything is built.

`parse_workflow` gives each region ``mask_file``, ``mask_channel`` and ``mask_node`` (the
LoadImageMask's id) instead of ``mask``; `read_workflow` and `load_masks` load the PNGs from
inside the mask folder only (no symlinks, PNG only, exactly the EmptyLatentImage size). The JSON
is read up to `MAX_WORKFLOW_BYTES`, nested at most `paths.JSON_MAX_DEPTH` levels.
"""
from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path, PurePosixPath

from .comfy_nodes import (COMBINE_SLOT, LATENT_INPUT, LATENT_NODES, MAX_WORKFLOW_BYTES, MODEL_SAMPLING_NODES,
                          SAMPLER_NODES, ComfyWorkflowError, check_graph, check_node, id_order, literal_values,
                          upstream_nodes)
from .masks import MAX_PIXELS, read_mask_png
from .paths import NAME_MAX, FileSafetyError, FileTooLargeError, open_read, parse_json, read_bytes

MAX_IMAGE_NAME = 1024  # characters in a LoadImageMask image name (each folder/file name: NAME_MAX bytes)


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
    graph = check_graph(graph)
    candidates = sorted((i for i, n in graph.items() if n["class_type"] in SAMPLER_NODES), key=id_order)
    if len(candidates) != 1:
        found = ", ".join(f"{i} ({graph[i]['class_type']})" for i in candidates) or "none"
        raise ComfyWorkflowError(f"workflow: expected exactly one {' or '.join(SAMPLER_NODES)} node, found {found}")
    top = candidates[0]
    upstream = upstream_nodes(graph, top)
    for node_id in upstream:
        check_node(graph, node_id)
    node = graph[top]
    params = literal_values(graph, top)
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
    latent = _source(graph, top, LATENT_INPUT[node["class_type"]], LATENT_NODES)
    regions = [_region(graph, i) for i in _regional_prompts(graph, top, "regional_prompts")]
    description = {"node": node["class_type"], "parameters": params,
                   "base": _config(graph, _source(graph, top, "base_sampler", "KSamplerAdvancedProvider")),
                   "regions": regions, "latent": literal_values(graph, latent), "checkpoint": checkpoints[0]}
    if graph[latent]["class_type"] != "EmptyLatentImage":
        description["latent"]["node"] = graph[latent]["class_type"]
    patches = sorted((i for i in upstream if graph[i]["class_type"] in MODEL_SAMPLING_NODES), key=id_order)
    if patches:
        found = {json.dumps({"class_type": graph[i]["class_type"], **literal_values(graph, i)}, sort_keys=True)
                 for i in patches}
        if len(found) > 1:
            listed = ", ".join(f"{i} ({graph[i]['class_type']})" for i in patches)
            raise ComfyWorkflowError(f"workflow: one model stands in for the checkpoint, but its sampling is set "
                                     f"differently by {listed}")
        description["model_sampling"] = json.loads(found.pop())
    return description



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
        slots = sorted(graph[source]["inputs"], key=lambda s: int(COMBINE_SLOT.match(s).group(1)))
        stack.extend((str(graph[source]["inputs"][slot][0]), path + (source,)) for slot in reversed(slots))
    return found


def _config(graph, provider) -> dict:
    values = literal_values(graph, provider)
    pipe = _source(graph, provider, "basic_pipe", "ToBasicPipe")
    texts = {part: graph[_source(graph, pipe, part, "CLIPTextEncode")]["inputs"]["text"]
             for part in ("positive", "negative")}
    return {"sampler": values["sampler_name"], "scheduler": values["scheduler"], "cfg": values["cfg"],
            "positive": texts["positive"], "negative": texts["negative"], "sigma_factor": values["sigma_factor"]}


def _region(graph, prompt) -> dict:
    values = literal_values(graph, prompt)
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
