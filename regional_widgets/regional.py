"""Deprecated alias of 0.1.0's `regional_widgets.regional`: its names now live in the engines' modules.

`node_params` (SamplerConfig, Quirks, the frozen parameters), `program` (the nodes' sub-steps),
`run_context` (what a run derives once) and `faithful` (the reference's engine).
``from regional_widgets.regional import Quirks`` still works, with a `DeprecationWarning` naming the
new home; the alias will be removed in 0.3.
"""
from __future__ import annotations

import importlib
import warnings

_HOMES = {
    "node_params": ("SamplerConfig", "Quirks", "FAITHFUL", "ADVANCED", "RegionParams", "NodeParams",
                    "schedule_steps"),
    "program": ("Op", "OpKind", "plan_advanced", "plan_regional", "second_seed", "group_starts"),
    "run_context": ("Part", "RunContext"),
    "faithful": ("RunState", "make_noise", "build_context", "initial_state", "execute",
                 "FaithfulEngine", "FAITHFUL_ENGINE"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME_OF)


def __getattr__(name):
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"regional_widgets.regional.{name} moved to regional_widgets.{module}.{name}; the "
                  "regional_widgets.regional alias will be removed in 0.3", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(f"regional_widgets.{module}"), name)
