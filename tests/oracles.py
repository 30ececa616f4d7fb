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
def sigma_fixtures_exact() -> dict:
    """Steps 1..50 of every scheduler as exact float32 values (``None`` = the reference's NaN)."""
    return json.loads((DATA / "sigma_fixtures_exact.json").read_text())["schedules"]


@lru_cache(None)
def sampler_fixtures() -> dict:
    """``sampler/case/part`` -> the reference's output at 7 decimals (the portable target, 1e-5)."""
    return json.loads((DATA / "sampler_fixtures.json").read_text())["cases"]


@lru_cache(None)
def sampler_fixtures_exact() -> dict:
    """The same keys with exact float32 values (Python floats that round-trip): bit-identity."""
    return json.loads((DATA / "sampler_fixtures_exact.json").read_text())["cases"]


@lru_cache(None)
def sampler_fixtures_info() -> dict:
    """Per sampler: ``noise_sampler_injected``, ``model_calls`` and ``fixture_noise_draws`` per case."""
    return json.loads((DATA / "sampler_fixtures_info.json").read_text())["samplers"]


def fixture_exact(key: str) -> torch.Tensor:
    return torch.tensor(sampler_fixtures_exact()[key], dtype=torch.float32).view(1, 2, 4, 4)


FIXTURE_SIGMAS = {"karras10": ("karras", "10"), "normal7": ("normal", "7"),
                  "karras10_cfg": ("karras", "10"), "karras10_seeded": ("karras", "10")}
FIXTURE_CFG = {"karras10_cfg": 1.5}  # every other case runs at cfg 1 with uncond = cond
FIXTURE_SEED = 42


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


FIXTURE_MU_U = 0.7 * FIXTURE_MU + 0.1  # float32: multiply, then add (models.md, second edition)


def fixture_uncond_denoiser():
    """The second edition's unconditional branch: the same mixture around +-MU_U."""
    return mixture_denoiser([FIXTURE_MU_U, -FIXTURE_MU_U], 0.1)


class FixtureModel:
    """The second edition's two-branch model behind the project's model protocol.

    ``encode("positive")`` is the conditional branch C; any other prompt is the unconditional
    branch, which is C itself unless ``uncond_differs`` (the ``karras10_cfg`` cases use the MU_U
    mixture). ``evaluations`` counts the conditional branch's calls: every denoiser evaluation
    makes exactly one, however CFG batches or skips the unconditional one, so it equals the
    reference's model-call count (cond and uncond batched count as one there).
    """

    def __init__(self, uncond_differs: bool = False):
        self.cond = fixture_denoiser()
        self.uncond = fixture_uncond_denoiser() if uncond_differs else self.cond
        self.evaluations = 0

    def encode(self, prompt):
        return "positive" if prompt == "positive" else "negative"

    def __call__(self, x, sigma, cond):
        if cond == "positive":
            self.evaluations += 1
            return self.cond(x, sigma)
        return self.uncond(x, sigma)


def fixture_model(case: str) -> tuple:
    """``(model, cfg)`` for a second-edition case: cfg 1.5 with the MU_U branch, else cfg 1."""
    cfg = FIXTURE_CFG.get(case, 1.0)
    return FixtureModel(uncond_differs=case in FIXTURE_CFG), cfg


def fixture_start(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cos(0.7 * FIXTURE_IDX) * sigmas[0]


class FixtureNoise:
    """The fixtures' noise sampler: its k-th call (k = 1, 2, ...) gives 1.2 sin(0.61 idx + 1.7 k).

    ``k`` is the number of draws so far (the info file's ``fixture_noise_draws``). It has no
    ``clone``, so the step-wise driver shares this one object across the steps of a run.
    """

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
