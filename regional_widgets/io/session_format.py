"""Session files' format: the names, keys, dtypes and shapes a session folder holds, and the checks
of ``session.json`` and of the latents file's header against them (`check_doc`, `check_header`).

A session folder (`session_files` reads and writes it) holds ``session.json`` (the index:
parameters, state scalars, and the names of its data files), the masks (``masks*.npz``, float32)
and the latents (``latents*.safetensors``: the input latent and the state at the saved sub-step).
What a sampler config and the quirks may hold is the session layer's to say: it hands it in as
`DocFields`, so io never imports the engines. Every refusal is a `SessionFileError` naming the
file and the field.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Callable

import torch

from ..sampling.checks import is_int
from ..sampling.samplers import SAMPLER_NAMES
from .comfy_nodes import SAMPLER_NODES, SCHEMAS, Literal

FORMAT = "regional_widgets.session"
VERSION = 2  # 2: session.json names its data files; 1 (fixed names) is still read
INDEX = "session.json"
MODES = ("faithful", "coherent")
MAX_JSON_BYTES = 8 * 2**20
MAX_HEADER_BYTES = 2**20  # a safetensors header (JSON): ours are a few kB
MAX_LATENT_ELEMENTS = 2**28  # 1 GiB of float32: B x C x h x w of the largest latent loaded
MAX_BATCH_INDEX = 4096  # EmptyLatentImage's largest batch
DATA_FILES = {"masks": r"masks(\.[0-9]{1,6})?\.npz", "latents": r"latents(\.[0-9]{1,6})?\.safetensors"}
V1_FILES = {"masks": "masks.npz", "latents": "latents.safetensors"}
LATENT_LIKE = ("latent", "base_latent", "denoised", "result")
STATE_MAPS = ("sigma_map", "base_sigma_map", "times_map")
_ST_DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64}
_LATENT_DTYPES = ("F32", "F64")
_REGION_KEYS = ("config", "variation_seed", "variation_strength", "variation_method")
_STATE_KEYS = ("sigma", "sigma_next", "model_calls", "passes")
_DOC_KEYS = ("format", "version", "files", "node", "parameters", "base", "regions", "batch_index", "latent_channels",
             "quirks", "cursor", "state", "mode", "extra", "model_sampling", "model")
# the model's family and schedule, and the model's spec (`models.spec`): files written before them lack
# them, and a model that cannot be described as data records no spec
_OPTIONAL_DOC_KEYS = ("model_sampling", "model")
MAX_SPEC_BYTES = 64 * 2**10  # a model spec: a few constructor arguments or a folder path
MAX_SPEC_DEPTH = 8  # nesting inside the spec (a factory's kwargs may hold lists and objects)
MAX_SPEC_TEXT = 4096  # one string or key of a spec (a path)
PARAMETRISATION_NAMES = {"eps": "EPS", "v": "V-prediction", "const": "flow (CONST)"}


class SessionFileError(ValueError):
    """A session file that is missing, damaged, tampered with or does not fit the model."""


@dataclass(frozen=True)
class DocFields:
    """What a sampler config and the quirks hold, from the session layer (`persistence` makes it).

    ``config_keys``: a config's keys in order; ``check_config(config)``: raises TypeError or
    ValueError (``"name: why"``) for a config dict the session would refuse; ``quirk_names``: the
    quirks' names.
    """

    config_keys: tuple
    check_config: Callable[[dict], object]
    quirk_names: tuple


def files_of(doc) -> dict:
    """The data file names an index lists (version 1: the fixed names); a foreign or damaged index raises."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") not in (1, VERSION):
        raise SessionFileError(f"{INDEX}: not a {FORMAT} file of version 1 or {VERSION}")
    if doc["version"] == 1:
        return dict(V1_FILES)
    files = doc.get("files")
    if not isinstance(files, dict) or set(files) != set(DATA_FILES):
        raise SessionFileError(f"{INDEX}: files: expected {{'masks': ..., 'latents': ...}}, got {str(files)[:80]}")
    for key, pattern in DATA_FILES.items():
        if not isinstance(files[key], str) or not re.fullmatch(pattern, files[key]):
            raise SessionFileError(f"{INDEX}: files.{key}: expected a name like {V1_FILES[key]!r}, "
                                   f"got {str(files[key])[:80]!r}")
    return files



# ---- session.json -------------------------------------------------------------------------------

def refuse(field, expected, value):
    raise SessionFileError(f"{INDEX}: {field}: expected {expected}, got {str(value)[:80]!r}")


def _is_number(value, lo=-math.inf, hi=math.inf) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and lo <= value <= hi


def _check_keys(field, value, keys, optional=()):
    if not isinstance(value, dict):
        refuse(field, "an object", value)
    missing = [k for k in keys if k not in value and k not in optional]
    unknown = sorted(set(value) - set(keys))
    if missing or unknown:
        raise SessionFileError(f"{INDEX}: {field}: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(unknown)}"] if unknown
                                                                     else [])))


def _check_config(field, value, fields: DocFields):
    _check_keys(field, value, fields.config_keys)
    try:
        fields.check_config(value)
    except (TypeError, ValueError) as err:
        raise SessionFileError(f"{INDEX}: {field}.{err}") from None


def describe_model_sampling(model_sampling) -> dict:
    """A model sampling as session.json keeps it: ``{"parametrisation", "schedule"}`` (its repr)."""
    return {"parametrisation": model_sampling.parametrisation, "schedule": repr(model_sampling)}


def _check_model_sampling(saved, current) -> None:
    _check_keys("model_sampling", saved, ("parametrisation", "schedule"))
    if saved["parametrisation"] not in PARAMETRISATION_NAMES or not isinstance(saved["schedule"], str):
        refuse("model_sampling", "a parametrisation (eps, v, const) and a schedule text", saved)
    if current is None:
        return
    if saved["parametrisation"] != current["parametrisation"]:
        raise SessionFileError(f"model: the session was saved with a {PARAMETRISATION_NAMES[saved['parametrisation']]} "
                               f"model, this one is {PARAMETRISATION_NAMES.get(current['parametrisation'], '?')}")
    if saved["schedule"] != current["schedule"]:
        raise SessionFileError(f"model: the session was saved with the model sampling {saved['schedule']}, this "
                               f"model has {current['schedule']}")


def check_model_spec(spec, field="model") -> None:
    """A model spec as session.json may hold it: a JSON object of at most `MAX_SPEC_BYTES` (as compact
    JSON), nested at most `MAX_SPEC_DEPTH` levels, whose leaves are strings (at most `MAX_SPEC_TEXT`
    characters), finite numbers, booleans or null. Raises `SessionFileError` naming the field."""
    if not isinstance(spec, dict) or not spec:
        refuse(field, "a model spec (a non-empty object)", spec)
    try:
        size = len(json.dumps(spec, separators=(",", ":"), allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        size = None  # refused below with the field that holds the value
    if size is not None and size > MAX_SPEC_BYTES:
        raise SessionFileError(f"{INDEX}: {field}: {size} bytes of JSON, over the limit of {MAX_SPEC_BYTES}")
    _check_spec_value(field, spec, 0)


def _check_spec_value(field, value, depth) -> None:
    if isinstance(value, (dict, list)):
        if depth >= MAX_SPEC_DEPTH:
            raise SessionFileError(f"{INDEX}: {field}: nested over {MAX_SPEC_DEPTH} levels")
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            if isinstance(value, dict) and (not isinstance(key, str) or len(key) > MAX_SPEC_TEXT):
                refuse(f"{field} (a key)", f"a string of at most {MAX_SPEC_TEXT} characters", key)
            _check_spec_value(f"{field}.{key}" if isinstance(value, dict) else f"{field}[{key}]", item, depth + 1)
    elif isinstance(value, str):
        if len(value) > MAX_SPEC_TEXT:
            refuse(field, f"a string of at most {MAX_SPEC_TEXT} characters", value)
    elif not (value is None or isinstance(value, bool) or is_int(value, -2**63, 2**63)
              or isinstance(value, float) and math.isfinite(value)):
        refuse(field, "a string, a finite number, true, false or null", value)


def check_doc(doc: dict, channels: int, model_sampling=None, *, fields: DocFields, check_model=None) -> None:
    """Every key and type of ``session.json`` (values the session validates again when it is built).
    ``model_sampling``: the loading model's (`describe_model_sampling`), to compare with the saved one;
    ``fields``: what a config and the quirks hold (the session layer's `DocFields`); ``check_model``:
    called with the saved model spec where the file has one, after every other check (the session
    layer compares it with the loading model's: a ValueError is the refusal, its text after ``model: ``)."""
    v1 = doc.get("version") == 1
    _check_keys("(top level)", doc, _DOC_KEYS,
                optional=("files", "mode", "extra", "quirks") + _OPTIONAL_DOC_KEYS if v1 else _OPTIONAL_DOC_KEYS)
    if "model" in doc:
        check_model_spec(doc["model"])
    if "model_sampling" in doc:
        _check_model_sampling(doc["model_sampling"], model_sampling)
    if doc["node"] not in SAMPLER_NODES:
        refuse("node", " or ".join(SAMPLER_NODES), doc["node"])
    names = [n for n, spec in SCHEMAS[doc["node"]].required.items() if isinstance(spec, Literal)]
    _check_keys("parameters", doc["parameters"], names)
    for name, value in doc["parameters"].items():
        if not isinstance(value, (bool, int, float, str)) or (isinstance(value, float) and not math.isfinite(value)):
            refuse(f"parameters.{name}", "a plain value", value)
    _check_config("base", doc["base"], fields)
    if not isinstance(doc["regions"], list):
        refuse("regions", "a list", doc["regions"])
    for j, region in enumerate(doc["regions"], 1):
        _check_keys(f"regions[{j}]", region, _REGION_KEYS)
        _check_config(f"regions[{j}].config", region["config"], fields)
    batch_index = doc["batch_index"]
    if batch_index is not None and (not isinstance(batch_index, list)
                                    or not all(is_int(b, 0, MAX_BATCH_INDEX - 1) for b in batch_index)):
        refuse("batch_index", f"null or a list of integers in 0..{MAX_BATCH_INDEX - 1}", batch_index)
    if not is_int(doc["latent_channels"], 1, 4096):
        refuse("latent_channels", "a positive integer", doc["latent_channels"])
    if doc["latent_channels"] != channels:
        raise SessionFileError(f"model: the session was saved with a {doc['latent_channels']}-channel model, "
                               f"this one has {channels}")
    quirks = doc.get("quirks", {})
    _check_keys("quirks", quirks, fields.quirk_names, optional=fields.quirk_names if v1 else ())
    for name, value in quirks.items():
        if not isinstance(value, bool):
            refuse(f"quirks.{name}", "true or false", value)
    if not is_int(doc["cursor"], 0, 10**9):
        refuse("cursor", "a non-negative integer", doc["cursor"])
    state = doc["state"]
    _check_keys("state", state, _STATE_KEYS)
    for name in ("sigma", "sigma_next"):
        if state[name] is not None and not _is_number(state[name], 0.0):
            refuse(f"state.{name}", "null or a finite number >= 0", state[name])
    if not is_int(state["model_calls"], 0, 2**53):
        refuse("state.model_calls", "a non-negative integer", state["model_calls"])
    passes = state["passes"]
    if not isinstance(passes, list) or len(passes) > 3 or not all(p in SAMPLER_NAMES for p in passes):
        refuse("state.passes", "a list of at most 3 sampler names", passes)
    if doc.get("mode", "faithful") not in MODES:
        refuse("mode", " or ".join(MODES), doc.get("mode"))
    if "model" in doc and check_model is not None:
        try:
            check_model(doc["model"])
        except ValueError as err:
            raise SessionFileError(f"model: {err}") from None



# ---- the latents file's header -------------------------------------------------------------------

def check_header(where, header, channels) -> int:
    """Names, dtypes and shapes a session writes; returns the data length the header implies."""
    if not isinstance(header, dict):
        raise SessionFileError(f"{where}: cannot be read (the header is not an object)")
    header = {k: v for k, v in header.items() if k != "__metadata__"}
    entries = {}
    for key, info in header.items():
        if isinstance(info, dict) and info.get("dtype") not in _ST_DTYPES:
            raise SessionFileError(f"{where}: {key}: dtype {str(info.get('dtype'))[:20]} is not one a session stores "
                                   f"({', '.join(_ST_DTYPES)})")
        ok = isinstance(info, dict) and set(info) == {"dtype", "shape", "data_offsets"} \
            and isinstance(info["shape"], list) \
            and all(is_int(n, 0, 2**40) for n in info["shape"]) and isinstance(info["data_offsets"], list) \
            and len(info["data_offsets"]) == 2 and all(is_int(n, 0, 2**50) for n in info["data_offsets"])
        if not ok:
            raise SessionFileError(f"{where}: {key}: a malformed header entry {str(info)[:80]}")
        entries[key] = (info["dtype"], tuple(info["shape"]), tuple(info["data_offsets"]))
    if "latent_image" not in entries:
        raise SessionFileError(f"{where}: latent_image: missing")
    dtype, shape, _ = entries["latent_image"]
    if len(shape) != 4 or shape[1] != channels or 0 in shape or math.prod(shape) > MAX_LATENT_ELEMENTS:
        raise SessionFileError(f"{where}: latent_image: expected a [B, {channels}, h, w] latent of at most "
                               f"{MAX_LATENT_ELEMENTS} values, got shape {list(shape)}")
    if dtype not in _LATENT_DTYPES:
        raise SessionFileError(f"{where}: latent_image: expected float32 or float64, got {dtype}")
    if "state.latent" not in entries:
        raise SessionFileError(f"{where}: state.latent: missing")
    end = 0
    for key, (kind, dims, (begin, stop)) in entries.items():
        expected = _expected(key, shape, dtype)
        if expected is None:
            raise SessionFileError(f"{where}: {key}: not a tensor a session stores")
        if not expected(kind, dims):
            raise SessionFileError(f"{where}: {key}: expected {_describe(key, shape, dtype)}, got {kind} "
                                   f"{list(dims)}")
        if stop - begin != math.prod(dims) * torch.tensor([], dtype=_ST_DTYPES[kind]).element_size():
            raise SessionFileError(f"{where}: {key}: data offsets do not match its shape")
        end = max(end, stop)
    return end


def _expected(key, shape, dtype):
    if key == "latent_image":
        return lambda kind, dims: True
    if key.startswith("state."):
        name = key[6:]
        if name in LATENT_LIKE:
            return lambda kind, dims: kind == dtype and dims == shape
        if name in STATE_MAPS:
            return lambda kind, dims: kind == "F32" and dims == shape[-2:]
        return None
    if key == "extra" or key.startswith("extra."):  # coherent mode: sampler states
        return lambda kind, dims: (kind == dtype and dims == shape) or (
            len(dims) <= 1 and math.prod(dims) <= 100_000 and kind in _ST_DTYPES)
    return None


def _describe(key, shape, dtype) -> str:
    if key[6:] in STATE_MAPS:
        return f"F32 {list(shape[-2:])} (the latent's h x w)"
    if key.startswith("extra"):
        return f"{dtype} {list(shape)} or a small 1-D tensor"
    return f"{dtype} {list(shape)} (the latent's dtype and shape)"


