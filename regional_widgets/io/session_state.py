"""The run state in a session file: the state fields present or absent as the saved sub-step implies
(`check_state`), coherent mode's sampler states (`check_extra`), and nested state as JSON + tensors
(`pack_tree`, `unpack_tree`). `persistence` calls these once it knows the run's plan.
"""
from __future__ import annotations

import torch

from ..sampling.checks import is_int
from ..sampling.samplers import SAMPLER_NAMES
from .session_format import INDEX, LATENT_LIKE, STATE_MAPS, V1_FILES, SessionFileError, refuse

# ---- the state the saved sub-step implies ------------------------------------------------------

def check_state(doc: dict, tensors: dict, *, mode: str, kinds: list, done: bool, restore_latent: bool) -> None:
    """The state fields present or absent as a session at this sub-step has them.

    ``kinds``: the kinds of the sub-steps made so far (``ops[:cursor]``), ``done``: the run's end.
    """
    where = doc["files"]["latents"] if "files" in doc else V1_FILES["latents"]
    state = doc["state"]
    cursor = len(kinds)
    have = {name: f"state.{name}" in tensors for name in LATENT_LIKE}
    if mode == "faithful":
        need_base = restore_latent and "base" in kinds
        if doc.get("extra") is not None:
            raise SessionFileError(f"{INDEX}: extra: a faithful session stores no sampler states (mode switched?)")
        if state["passes"] and (cursor == 0 or kinds[-1] == "composite"):
            refuse("state.passes", "[] after a composite or at the start", state["passes"])
    else:
        need_base = "blend" in kinds
        if cursor and doc.get("extra") is None:
            raise SessionFileError(f"{INDEX}: extra: missing; a coherent session at sub-step {cursor} needs its "
                                   "sampler states (was it saved in faithful mode?)")
        if state["passes"]:
            refuse("state.passes", "[] in coherent mode", state["passes"])
    if have["base_latent"] != need_base:
        raise SessionFileError(f"{where}: state.base_latent: {'missing' if need_base else 'unexpected'} at "
                               f"sub-step {cursor} of a {mode} run")
    if have["result"] != done:
        raise SessionFileError(f"{where}: state.result: {'missing at the end' if done else 'unexpected before the end'}"
                               " of the run")
    for name in STATE_MAPS:
        if f"state.{name}" not in tensors:
            raise SessionFileError(f"{where}: state.{name}: missing")
    if cursor == 0:
        for name in ("denoised", "sigma", "sigma_next"):
            present = have["denoised"] if name == "denoised" else state[name] is not None
            if present:
                raise SessionFileError(f"{INDEX}: state.{name}: unexpected at the start of the run")
        if state["model_calls"]:
            refuse("state.model_calls", "0 at the start of the run", state["model_calls"])
        if doc.get("extra") is not None:
            raise SessionFileError(f"{INDEX}: extra: unexpected at the start of the run")
    elif mode == "coherent" and not have["denoised"]:
        raise SessionFileError(f"{where}: state.denoised: missing after a coherent sub-step")


def check_extra(plain, latent_shape, parts: int, kinds: list) -> None:
    """Coherent mode's stored sampler states: the keys, counts and shapes the sub-step implies."""
    field = f"{INDEX}: extra"
    if not isinstance(plain, dict) or not {"x", "parts", "outputs"} <= set(plain) \
            or set(plain) - {"x", "parts", "outputs", "denoised", "first", "first_uncond"}:
        raise SessionFileError(f"{field}: expected x, parts, outputs (and first), got "
                               f"{sorted(plain) if isinstance(plain, dict) else type(plain).__name__}")
    since_blend = len(kinds) - (max(k for k, kind in enumerate(kinds) if kind == "blend") + 1 if "blend" in kinds
                                else 0)

    def tensor(name, value):
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(latent_shape):
            raise SessionFileError(f"{field}.{name}: expected a tensor of the latent's shape {list(latent_shape)}")

    tensor("x", plain["x"])
    if not isinstance(plain["parts"], (list, tuple)) or len(plain["parts"]) != parts:
        raise SessionFileError(f"{field}.parts: expected {parts} entries (the base and each region)")
    for k, part in enumerate(plain["parts"]):
        if part is None:
            continue
        if not isinstance(part, dict) or not isinstance(part.get("sampler"), str) \
                or part["sampler"] not in SAMPLER_NAMES or not is_int(part.get("i"), 0, 10**5) \
                or not isinstance(part.get("memory"), dict):
            raise SessionFileError(f"{field}.parts[{k}]: expected a sampler state (sampler, x, sigmas, i, memory, ...)")
        tensor(f"parts[{k}].x", part.get("x"))
    outputs = plain["outputs"]
    if not isinstance(outputs, (list, tuple)) or len(outputs) != since_blend:
        raise SessionFileError(f"{field}.outputs: expected {since_blend} outputs (part steps since the last blend)")
    for k, out in enumerate(outputs):
        tensor(f"outputs[{k}]", out)
    x0s = plain.get("denoised", ())  # the parts' x0 predictions since the blend (absent in older files)
    if not isinstance(x0s, (list, tuple)) or len(x0s) not in (0, since_blend):
        raise SessionFileError(f"{field}.denoised: expected {since_blend} predictions "
                               "(part steps since the last blend)")
    for k, value in enumerate(x0s):
        tensor(f"denoised[{k}]", value)
    first = plain.get("first")
    if since_blend == 0 and first is not None:
        raise SessionFileError(f"{field}.first: unexpected after a blend")
    if since_blend:
        if not isinstance(first, (list, tuple)) or len(first) != parts:
            raise SessionFileError(f"{field}.first: expected {parts} first evaluations in the middle of a step")
        for k, value in enumerate(first):  # the denoised prediction, or (denoised, uncond) for CFG++ samplers
            if isinstance(value, (list, tuple)) and len(value) == 2:
                tensor(f"first[{k}][0]", value[0])
                if value[1] is not None:
                    tensor(f"first[{k}][1]", value[1])
            else:
                tensor(f"first[{k}]", value)


# ---- coherent mode's nested state as JSON + tensors --------------------------------------------

def pack_tree(value, prefix: str, tensors: dict):
    """A JSON-able skeleton of nested dicts/lists/tuples/scalars; tensors go to ``tensors``."""
    if isinstance(value, torch.Tensor):
        tensors[prefix] = value
        return {"tensor": prefix}
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError(f"{prefix}: only string keys can be stored")
        return {"dict": {k: pack_tree(v, f"{prefix}.{k}", tensors) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        kind = "tuple" if isinstance(value, tuple) else "list"
        return {kind: [pack_tree(v, f"{prefix}.{n}", tensors) for n, v in enumerate(value)]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"value": value}
    raise TypeError(f"{prefix}: cannot store a {type(value).__name__}")


def unpack_tree(doc, tensors: dict):
    """The inverse of `pack_tree`; a missing tensor or an unknown node raises SessionFileError."""
    if not isinstance(doc, dict) or len(doc) != 1:
        raise SessionFileError(f"{INDEX}: extra: malformed stored value {str(doc)[:80]}")
    (kind, body), = doc.items()
    if kind == "tensor":
        if not isinstance(body, str) or body not in tensors:
            raise SessionFileError(f"latents: missing tensor {str(body)[:80]!r}")
        return tensors[body]
    if kind == "dict" and isinstance(body, dict):
        return {k: unpack_tree(v, tensors) for k, v in body.items()}
    if kind in ("list", "tuple") and isinstance(body, list):
        items = [unpack_tree(v, tensors) for v in body]
        return tuple(items) if kind == "tuple" else items
    if kind == "value" and (body is None or isinstance(body, (bool, int, float, str))):
        return body
    raise SessionFileError(f"{INDEX}: extra: unknown stored kind {kind!r}")
