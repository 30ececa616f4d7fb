"""The node's parameters as the engines read them: frozen, validated at construction.

`SamplerConfig` (one sampler: the base's or a region's), `Quirks` (the reference's quirks, each
behind a switch), `RegionParams` and `NodeParams` (everything one run reads), and the one rule
for the length of the schedule a node indexes into (`schedule_steps`). Plain data: no model
calls here; `program.py` plans from it, `faithful.py` and `coherent.py` run it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from .sampling.samplers import SAMPLER_NAMES
from .sampling.schedules import SCHEDULER_NAMES

@dataclass(frozen=True)
class SamplerConfig:
    """One sampler of the node (a ``KSamplerAdvancedProvider``): the base's or a region's."""

    sampler: str = "euler"
    scheduler: str = "normal"
    cfg: float = 8.0
    positive: str = ""
    negative: str = ""
    sigma_factor: float = 1.0

    def __post_init__(self):
        if self.sampler not in SAMPLER_NAMES:
            raise ValueError(f"sampler: unknown name {self.sampler!r}; accepted: {', '.join(SAMPLER_NAMES)}")
        if self.scheduler not in SCHEDULER_NAMES:
            raise ValueError(f"scheduler: unknown name {self.scheduler!r}; accepted: {', '.join(SCHEDULER_NAMES)}")
        # sigma_factor 0 would scale every sigma to 0: refused here, by name, not deep in a sampler
        for name, lo, hi, low in (("cfg", 0.0, 100.0, "["), ("sigma_factor", 0.0, 10.0, "(")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi \
                    or (low == "(" and value <= lo) or value != value:
                raise ValueError(f"{name}: expected a number in {low}{lo:g}, {hi:g}], got {value!r}")
        for name in ("positive", "negative"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name}: expected a prompt string, got {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("sampler", "scheduler", "cfg", "positive", "negative", "sigma_factor")}


@dataclass(frozen=True)
class Quirks:
    """The reference's quirks, each behind one switch. All on (the default) is the faithful mode."""

    mask_wh_swap: bool = True  # the overlap grow resizes an (H, W) mask to (W, H) first
    touch_noise_zero_edges: bool = True  # fractional mask values get zero variation noise
    discard_final_step: bool = True  # Advanced + restore_latent: the final base call's result is dropped
    x0_when_not_leftover: bool = True  # leftover off returns the last x0 prediction, not x
    renoise_every_step: bool = True  # RegionalSampler, leftover-off path: the noise is re-added every step
    reseed_every_call: bool = True  # ancestral noise reseeded per call: every 1-step call draws the same noise

    def to_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


FAITHFUL = Quirks()
ADVANCED = "RegionalSamplerAdvanced"


@dataclass(frozen=True)
class RegionParams:
    """A region as the engines read it: its mask (the session's read-only array) and its settings."""

    mask: Any  # a read-only float32 array at image resolution
    config: SamplerConfig
    variation_seed: int = 0
    variation_strength: float = 0.0
    variation_method: str = "linear"

    @property
    def mask_tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.mask.copy())


@dataclass(frozen=True)
class NodeParams:
    """Everything an engine reads, frozen: the model, the input latent, the node and its parameters
    (the spec's names), the regions. A session makes one per run (`RegionalSamplerSession.node_params`)."""

    model: Any
    latent_image: torch.Tensor
    base: SamplerConfig
    regions: tuple = ()  # RegionParams
    node: str = ADVANCED
    batch_index: Optional[list] = None
    add_noise: bool = True
    noise_seed: int = 0
    steps: int = 20
    start_at_step: int = 0
    end_at_step: int = 10000
    return_with_leftover_noise: bool = False
    seed: int = 0
    seed_2nd: int = 0
    seed_2nd_mode: str = "ignore"
    base_only_steps: int = 2
    denoise: float = 1.0
    overlap_factor: int = 10
    restore_latent: bool = True
    additional_mode: str = "ratio between"
    additional_sampler: str = "AUTO"
    additional_sigma_ratio: float = 0.3
    quirks: Quirks = FAITHFUL

    @property
    def initial_seed(self) -> int:
        """The seed of the run's first noise (``noise_seed`` or, for RegionalSampler, ``seed``)."""
        return self.noise_seed if self.node == ADVANCED else self.seed


def schedule_steps(params) -> int:
    """The length of the schedule the node's calls index into (RegionalSampler stretches it by
    1/denoise). ``params``: a `NodeParams` or anything with ``node``, ``steps`` and ``denoise``."""
    return params.steps if params.node == ADVANCED else stretched_steps(params.steps, params.denoise)


def stretched_steps(steps: int, denoise: float) -> int:
    return int(steps / denoise)  # RegionalSampler: the full schedule whose last `steps` steps run


def same_params(a, b) -> bool:
    """Whether two `NodeParams` describe the same run: plain values (numbers, text, `SamplerConfig`,
    `Quirks`, lists of them) equal, everything else (the model, the latent, the region masks: replaced,
    never changed in place) the very same objects; regions compared field by field."""
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if type(a) in (NodeParams, RegionParams):
        return all(same_params(getattr(a, name), getattr(b, name)) for name in a.__dataclass_fields__)
    if type(a) in (tuple, list):
        return len(a) == len(b) and all(same_params(x, y) for x, y in zip(a, b))
    if type(a) in _PLAIN_VALUES:
        return a == b
    return False


_PLAIN_VALUES = (bool, int, float, str, SamplerConfig, Quirks)
