"""The flow (CONST) sampler fixtures' closed-form model and data (models.md, "Flow sampler fixtures").

Independent of the package: the denoiser is written from the fixture description, in float64.
"""
from __future__ import annotations

import json
from functools import lru_cache

import torch

from tests.oracles import DATA, FIXTURE_IDX, FIXTURE_MU, FIXTURE_MU_U

FLOW_SEED = 0  # the flow fixtures' seed (extra_args seed 0)
FLOW_CFG = {"simple10_cfg": 1.5}  # every other case runs at cfg 1 with uncond = cond
FLOW_SIGMA_LISTS = {"simple10": "simple10", "normal7": "normal7", "simple10_cfg": "simple10",
                    "simple10_seeded": "simple10"}


@lru_cache(None)
def _load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def flow_fixtures() -> dict:
    """``sampler/case/part`` -> raw sampler output at 7 decimals (portable target, 1e-5)."""
    return _load("sampler_fixtures_flow.json")["cases"]


def flow_fixtures_exact() -> dict:
    """``{"cases": raw outputs, "ksampler_output": after inverse_noise_scaling}``, exact float32."""
    return _load("sampler_fixtures_flow_exact.json")


def flow_fixtures_info() -> dict:
    return _load("sampler_fixtures_flow_info.json")


def flow_exact(key: str, table: str = "cases") -> torch.Tensor:
    return torch.tensor(flow_fixtures_exact()[table][key], dtype=torch.float32).view(1, 2, 4, 4)


def flow_sigmas(case: str, part: str) -> torch.Tensor:
    sigmas = torch.tensor(flow_fixtures_info()["sigmas"][FLOW_SIGMA_LISTS[case]], dtype=torch.float32)
    return sigmas if part == "full" else sigmas[3:5]


def flow_mixture_denoiser(means, variance: float):
    """E[x0 | x] for x = (1 - s) x0 + s n, x0 an equal-weight mixture of N(m_k, variance I); float64."""
    means = [m.double() for m in means]

    def denoise(x, sigma):
        x64 = x.double()
        s = sigma.double().view(-1, *([1] * (x.ndim - 1)))
        a = 1 - s
        var = a * a * variance + s * s
        logits = torch.stack([-((x64 - a * m) ** 2).flatten(1).sum(1) / (2 * var.flatten()) for m in means])
        w = torch.softmax(logits, dim=0)
        out = sum(w[k].view_as(s) * (m + (a * variance / var) * (x64 - a * m)) for k, m in enumerate(means))
        return out.to(x.dtype)

    return denoise


class FlowFixtureModel:
    """The two-branch flow model behind the project's model protocol (see `oracles.FixtureModel`):
    ``evaluations`` counts conditional-branch calls (= the reference's model calls), ``sigmas`` their sigma."""

    def __init__(self, uncond_differs: bool = False):
        self.cond = flow_mixture_denoiser([FIXTURE_MU, -FIXTURE_MU], 0.1)
        self.uncond = flow_mixture_denoiser([FIXTURE_MU_U, -FIXTURE_MU_U], 0.1) if uncond_differs else self.cond
        self.evaluations, self.sigmas = 0, []

    def encode(self, prompt):
        return "positive" if prompt == "positive" else "negative"

    def __call__(self, x, sigma, cond):
        if cond == "positive":
            self.evaluations += 1
            self.sigmas.append(float(sigma.flatten()[0]))
            return self.cond(x, sigma)
        return self.uncond(x, sigma)


def flow_fixture_model(case: str) -> tuple:
    cfg = FLOW_CFG.get(case, 1.0)
    return FlowFixtureModel(uncond_differs=case in FLOW_CFG), cfg


def flow_start_noise() -> torch.Tensor:
    """The start noise n0 = cos(0.7 idx); the start is the model's noise_scaling of it on latent 0."""
    return torch.cos(0.7 * FIXTURE_IDX)
