"""Closed-form denoisers and reference data shared by the tests (independent of the package)."""
from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import torch

DATA = Path(__file__).parent / "data"


@lru_cache(None)
def sigma_fixtures() -> dict:
    return json.loads((DATA / "sigma_fixtures.json").read_text())["schedules"]


@lru_cache(None)
def sampler_fixtures() -> dict:
    return json.loads((DATA / "sampler_fixtures.json").read_text())["cases"]


FIXTURE_SIGMAS = {"karras10": ("karras", "10"), "normal7": ("normal", "7")}


def fixture_sigmas(case: str, part: str) -> torch.Tensor:
    """The sigma slice of a sampler-fixture case (``full`` or ``slice_3_4``)."""
    scheduler, steps = FIXTURE_SIGMAS[case]
    sigmas = torch.tensor(sigma_fixtures()[scheduler][steps], dtype=torch.float32)
    return sigmas if part == "full" else sigmas[3:5]


FIXTURE_IDX = torch.arange(32, dtype=torch.float32).view(1, 2, 4, 4)
FIXTURE_MU = 0.5 * torch.sin(1 + 0.9 * FIXTURE_IDX)


def mixture_denoiser(means, variance: float):
    """Exact posterior mean for an equal-weight isotropic Gaussian mixture, in float64."""
    means = [m.double() for m in means]

    def denoise(x, sigma):
        x64 = x.double()
        s2 = sigma.double().view(-1, *([1] * (x.ndim - 1))) ** 2
        logits = torch.stack([-((x64 - m) ** 2).flatten(1).sum(1) / (2 * (variance + s2.flatten()))
                              for m in means])
        w = torch.softmax(logits, dim=0)
        out = sum(w[k].view_as(s2) * (m + variance / (variance + s2) * (x64 - m))
                  for k, m in enumerate(means))
        return out.to(x.dtype)

    return denoise


def fixture_denoiser():
    """The denoiser the reference's sampler fixtures were made with (models.md)."""
    return mixture_denoiser([FIXTURE_MU, -FIXTURE_MU], 0.1)


def fixture_start(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cos(0.7 * FIXTURE_IDX) * sigmas[0]


class FixtureNoise:
    """The fixtures' noise sampler: its k-th call (k = 1, 2, ...) gives 1.2 sin(0.61 idx + 1.7 k)."""

    def __init__(self):
        self.k = 0

    def __call__(self, sigma=None, sigma_next=None):
        self.k += 1
        return 1.2 * torch.sin(0.61 * FIXTURE_IDX + 1.7 * self.k)


def gaussian_denoiser(s: float):
    """Data ~ N(0, s^2): the exact denoiser ``D = s^2 / (s^2 + sigma^2) x``."""
    def denoise(x, sigma):
        s2 = sigma.view(-1, *([1] * (x.ndim - 1))).double() ** 2
        return (s * s / (s * s + s2) * x.double()).to(x.dtype)
    return denoise


def gaussian_flow_solution(x, sigma_from: float, sigma_to: float, s: float):
    """Exact probability-flow ODE solution for N(0, s^2) data: x scales with sqrt(s^2 + sigma^2)."""
    return x * math.sqrt(s * s + sigma_to**2) / math.sqrt(s * s + sigma_from**2)


def load_k_diffusion_sampling():
    """k-diffusion's ``sampling.py`` loaded on its own (the package import needs heavy extras)."""
    import importlib.util
    import sys
    import types

    spec = importlib.util.find_spec("k_diffusion")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("k-diffusion is not installed (make test-env installs it with --no-deps)")
    root = Path(list(spec.submodule_search_locations)[0])
    name = "_kdiff_sampling"
    if name in sys.modules:
        return sys.modules[name]
    pkg = types.ModuleType("_kdiff")
    pkg.__path__ = [str(root)]
    utils = types.ModuleType("_kdiff.utils")

    def append_dims(x, target_dims):
        return x[(...,) + (None,) * (target_dims - x.ndim)]

    utils.append_dims = append_dims
    sys.modules["_kdiff"], sys.modules["_kdiff.utils"] = pkg, utils
    pkg.utils = utils
    source = (root / "sampling.py").read_text().replace("from . import utils", "from _kdiff import utils")
    module = types.ModuleType(name)
    module.__file__ = str(root / "sampling.py")
    exec(compile(source, str(root / "sampling.py"), "exec"), module.__dict__)
    sys.modules[name] = module
    return module
