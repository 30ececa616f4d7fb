"""A sweep's grid: the session as plain data (what a worker receives), a cell's values put into it,
the checks every grid and cell pass before any work, and the names and fingerprints of cells.

`describe` turns the session into a JSON-able dict plus its arrays (latent, masks); `apply` puts a
cell's values into that dict; `build` makes a fresh session from it. Grid keys are checked by the
session's own parameter checks: each value is tried on a session built from the description, then
every cell is built once (the cross-parameter rules).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from typing import Optional

import numpy as np
import torch

from .node_params import Quirks, SamplerConfig
from .params import ParameterError
from .sampling.checks import is_int
from .session import Region, RegionalSamplerSession

METRICS = ("detail", "sigma_spread", "model_calls", "wall_s", "thumbnail")
CONFIG_KEYS = tuple(f.name for f in dataclasses.fields(SamplerConfig))
REGION_KEYS = CONFIG_KEYS + ("variation_seed", "variation_strength", "variation_method")

# ---- the session as plain data ------------------------------------------------------------------


def describe(session) -> tuple:
    """``(doc, arrays)``: the session's settings as JSON-able data and its latent and masks as arrays."""
    doc = {"node": session.node, "mode": session.mode, "parameters": _plain(session.parameters()),
           "base": session.base.to_dict(), "quirks": session.quirks.to_dict(),
           # a dict latent's batch_index changes the noise, so it travels too
           "batch_index": session.batch_index,
           "regions": [{"config": r.config.to_dict(), "variation_seed": r.variation_seed,
                        "variation_strength": r.variation_strength, "variation_method": r.variation_method}
                       for r in session.regions]}
    arrays = {"latent_image": session.latent_image.detach().cpu().numpy()}
    arrays.update({f"mask_{j}": np.asarray(r.mask) for j, r in enumerate(session.regions, 1)})
    return doc, arrays


def apply(doc: dict, values: dict, regions) -> dict:
    """``doc`` with a cell's values in place: session parameters, ``base.<field>``, or region
    parameters for the 1-based ``regions``."""
    doc = json.loads(json.dumps(doc))
    for key, value in values.items():
        if key == "mode":
            doc["mode"] = value
        elif key.startswith("base."):
            doc["base"][key[5:]] = value
        elif key in REGION_KEYS:
            for j in regions:
                target = doc["regions"][j - 1]
                (target["config"] if key in CONFIG_KEYS else target)[key] = value
        else:
            doc["parameters"][key] = value
    return doc


def build(model, doc: dict, arrays: dict, history_limit: Optional[int] = None) -> RegionalSamplerSession:
    """A fresh session (at its start) from `describe`'s data."""
    regions = [Region(arrays[f"mask_{j}"], SamplerConfig(**r["config"]), r["variation_seed"], r["variation_strength"],
                      r["variation_method"]) for j, r in enumerate(doc["regions"], 1)]
    latent = torch.from_numpy(np.array(arrays["latent_image"]))
    if doc.get("batch_index") is not None:
        latent = {"samples": latent, "batch_index": doc["batch_index"]}
    session = RegionalSamplerSession(model, latent, base=SamplerConfig(**doc["base"]), regions=regions,
                                     node=doc["node"], quirks=Quirks(**doc["quirks"]), mode=doc["mode"],
                                     **doc["parameters"])
    if history_limit is not None:
        session.history_limit = history_limit
    return session


def _plain(value):
    """numpy scalars as Python ones (JSON and fingerprints see one type per value)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value.item() if isinstance(value, np.generic) else value


def fingerprint(*parts) -> str:
    """sha256 of JSON parts and arrays (their dtype, shape and bytes)."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            array = np.ascontiguousarray(part)
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())
        else:
            digest.update(json.dumps(part, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()



# ---- the grid ---------------------------------------------------------------------------------


def check_grid(session, grid, regions, metrics) -> tuple:
    """``(grid, regions, metrics)`` normalised; raises `ParameterError` naming the key and what it accepts."""
    if not isinstance(grid, dict) or not grid:
        raise ParameterError("grid: expected a dict {parameter name: [values]} with at least one key")
    count = len(session.regions)
    if isinstance(regions, str) and regions == "all":
        regions = tuple(range(1, count + 1))
    elif isinstance(regions, (list, tuple)) and all(is_int(j, 1, count) for j in regions) and regions:
        regions = tuple(sorted(set(int(j) for j in regions)))
    else:
        raise ParameterError(f"regions: expected 'all' or a list of region numbers in 1..{count}, got {regions!r}")
    session_keys = tuple(session.parameters()) + ("mode",)
    accepted = session_keys + REGION_KEYS + tuple(f"base.{k}" for k in CONFIG_KEYS)
    out = {}
    for key, values in grid.items():
        if key not in accepted:
            raise ParameterError(f"grid: unknown key {key!r} for a {session.node} session; accepted: "
                                 f"{', '.join(session_keys)} (the session), {', '.join(REGION_KEYS)} "
                                 f"(applied to the chosen regions), base.<{'|'.join(CONFIG_KEYS)}> (the base)")
        if key in REGION_KEYS and not regions:
            raise ParameterError(f"grid: {key!r} is a region parameter but the session has no regions")
        if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, np.ndarray)) or len(values) == 0:
            raise ParameterError(f"grid[{key!r}]: expected a non-empty list of values, got {values!r}")
        values = tuple(_plain(v) for v in values)
        for v in values:
            if not isinstance(v, (str, int, float, bool)):
                raise ParameterError(f"grid[{key!r}]: values must be plain numbers, strings or booleans, got {v!r}")
        if len(set(map(repr, values))) != len(values):
            raise ParameterError(f"grid[{key!r}]: a value is listed twice: {list(values)}")
        out[key] = values
    has_exemplars = hasattr(session.model.encode(""), "exemplars")
    if metrics is None:
        metrics = tuple(m for m in METRICS if m != "detail" or (has_exemplars and session.regions))
    else:
        metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ParameterError(f"metrics: unknown {unknown[0]!r}; accepted: {', '.join(METRICS)}")
        if "detail" in metrics and not (has_exemplars and session.regions):
            raise ParameterError("metrics: 'detail' needs regions and a model that knows its exemplars (ToyWorld)")
    return out, regions, metrics


def check_cells(session, doc, arrays, grid, regions, cells):
    """Every value, then every cell, through the session's own checks (nothing runs: a session
    is built at its start)."""
    model = session.model

    def attempt(values, where):
        try:
            build(model, apply(doc, values, regions), arrays)
        except (ParameterError, ValueError) as err:
            raise ParameterError(f"{where}: {err}") from None

    for key, values in grid.items():
        for v in values:
            attempt({key: v}, f"grid[{key!r}]: value {v!r}")
    if len(grid) > 1:
        for values in cells:
            attempt(values, f"grid cell {values}")


def cell_name(values: dict) -> str:
    """A file name from a cell's values (plus a short hash: two values that read alike stay apart)."""
    def slug(text):
        return re.sub(r"[^A-Za-z0-9._=+-]+", "-", str(text)).strip("-") or "_"

    readable = "__".join(f"{slug(k)}={slug(v)}" for k, v in values.items())[:150]
    return f"{readable}-{fingerprint(values)[:8]}"
