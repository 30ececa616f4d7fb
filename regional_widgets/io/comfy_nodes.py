"""ComfyUI's node vocabulary and the API-format graph checks: the node schemas this package understands
(comfy_workflow_nodes.md), and the validation of a graph against them (ids, links, types, literals).

`comfy` (export) and `comfy_import` (import) build and read graphs with these; `comfy_ui` extends
the schemas with the editor-only nodes; `comfy_files` passes unknown nodes over with `inputs_of`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..sampling.checks import is_int
from ..sampling.noise import SEED_2ND_MODES, SEED_MAX, VARIATION_METHODS
from ..sampling.recovery import ADDITIONAL_MODES, ADDITIONAL_SAMPLERS
from ..sampling.samplers import SAMPLER_NAMES
from ..sampling.schedules import SCHEDULER_NAMES
from .masks import CHANNELS

SAMPLER_NODES = ("RegionalSamplerAdvanced", "RegionalSampler")
MAX_RESOLUTION = 16384  # ComfyUI's limit for EmptyLatentImage's width and height
SAVE_PREFIX = "regional_widgets"  # SaveImage's filename_prefix in what we export: marks the JSON as ours
MAX_WORKFLOW_BYTES = 32 * 2**20
MAX_NODE_ID = 64  # characters in a node id (ComfyUI's are short: "12", "5:3")


class ComfyWorkflowError(ValueError):
    """A workflow that cannot be written or read: names the node id and input where it can."""


# ---- the node schemas (comfy_workflow_nodes.md) -------------------------------------------------

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
    # CombineRegionalPrompts takes regional_prompts1, regional_prompts2, ...: see inputs_of
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
LATENT_INPUT = {"RegionalSamplerAdvanced": "latent_image", "RegionalSampler": "samples"}
LATENT_NODES = ("EmptyLatentImage", "EmptySD3LatentImage")
MODEL_SAMPLING_NODES = ("ModelSamplingSD3", "ModelSamplingFlux")
COMBINE_SLOT = re.compile(r"regional_prompts([1-9][0-9]*)$")


# ---- graph checks ------------------------------------------------------------------------------

def id_order(node_id):
    return (0, int(node_id), "") if re.fullmatch(r"[0-9]{1,30}", node_id) else (1, 0, node_id)


def _check_id(node_id) -> str:
    """A node id as text: 1..MAX_NODE_ID printable characters (ComfyUI's are "12" or "5:3")."""
    text = node_id if isinstance(node_id, str) else str(node_id)
    if not (isinstance(node_id, str) or is_int(node_id)) or not 0 < len(text) <= MAX_NODE_ID \
            or not text.isprintable():
        shown = repr(text[:MAX_NODE_ID]) + ("..." if len(text) > MAX_NODE_ID else "")
        raise ComfyWorkflowError(f"workflow: node id {shown}: expected 1..{MAX_NODE_ID} printable characters")
    return text


def check_graph(graph) -> dict:
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


def is_link(value) -> bool:
    return (isinstance(value, list) and len(value) == 2 and (isinstance(value[0], str) or is_int(value[0]))
            and is_int(value[1]))


def links_of(graph, node_id):
    """``(input name, link, source node id)`` of each linked input of a node; a link to a node that is
    not in the graph raises, naming the node and the input."""
    node = graph[node_id]
    for name, value in node["inputs"].items():
        if not is_link(value):
            continue
        source = str(value[0])
        if source not in graph:
            raise ComfyWorkflowError(f"node {node_id} ({node['class_type']}) input {name}: links to node "
                                     f"{source}, which is not in the workflow")
        yield name, value, source


def upstream_nodes(graph, top) -> list:
    """Every node the regional sampler depends on; unknown ones raise, listed together."""
    seen, queue, unknown = {top}, [top], []
    while queue:
        node_id = queue.pop()
        for _, _, source in links_of(graph, node_id):
            if source in seen:
                continue
            seen.add(source)
            if graph[source]["class_type"] in SCHEMAS:
                queue.append(source)
            else:
                unknown.append(source)
    if unknown:
        listed = ", ".join(f"{i} ({graph[i]['class_type']})" for i in sorted(unknown, key=id_order))
        raise ComfyWorkflowError(f"workflow: nodes upstream of the regional sampler (node {top}) that "
                                 f"regional_widgets does not understand: {listed}")
    return sorted(seen, key=id_order)


def inputs_of(node) -> dict:
    schema = SCHEMAS[node["class_type"]]
    if node["class_type"] == "CombineRegionalPrompts":
        return {name: "REGIONAL_PROMPTS" for name in node["inputs"] if COMBINE_SLOT.match(name)} \
            or dict(schema.required)
    return dict(schema.required)


def check_node(graph, node_id) -> None:
    """Required inputs present, no unknown input, links of the right type, literals in range."""
    node = graph[node_id]
    kind = node["class_type"]
    schema = SCHEMAS[kind]
    required = inputs_of(node)
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
    if not is_link(value):
        raise ComfyWorkflowError(f"{where} input {name}: expected a link to a {link_type} output, got {value!r}")
    source, index = str(value[0]), value[1]
    outputs = SCHEMAS[graph[source]["class_type"]].outputs
    if not 0 <= index < len(outputs) or outputs[index] != link_type:
        got = outputs[index] if 0 <= index < len(outputs) else f"no output {index}"
        raise ComfyWorkflowError(f"{where} input {name}: expected a {link_type} output, but node {source} "
                                 f"({graph[source]['class_type']}) output {index} is {got}")


def _check_literal(where, name, value, spec: Literal) -> None:
    prefix = f"{where} input {name}"
    if is_link(value):
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


def literal_values(graph, node_id) -> dict:
    """The node's widget values (validated already), FLOATs as floats, optional ones defaulted."""
    node = graph[node_id]
    schema = SCHEMAS[node["class_type"]]
    specs = {n: s for n, s in schema.required.items() if isinstance(s, Literal)}
    values = {n: node["inputs"][n] for n in specs}
    values.update({n: node["inputs"].get(n, default) for n, (_, default) in schema.optional.items()})
    specs.update({n: s for n, (s, _) in schema.optional.items()})
    return {n: float(v) if specs[n].kind == "FLOAT" else v for n, v in values.items()}

