"""The reference's model sampling: how a model's noise levels, timesteps and parametrisation relate.

A model sampling object is a *parametrisation* (how x, sigma and the network output relate: EPS, V,
later CONST for flow models) times a *schedule* (the sigma table and its sigma <-> timestep maps;
spec model_families.md §1). This module holds the discrete schedule of SD1.x/SD2.x/SDXL
(`ModelSamplingDiscrete`) with the EPS and V parametrisations named; flow schedules (discrete
flow with shift, Flux) are a later addition beside it, with the same members.

Bit-exactness (spec regional_sampler.md §3.5.4 a): the reference builds its table in float64 and
keeps ``sigmas = table.float()`` and ``log_sigmas = log(table).float()``, the log taken in float64
*before* the cast. 399 of SD1.5's 1000 log-sigmas differ from ``log(sigmas_float32)``, which moves
``normal``/``sgm_uniform`` schedules and ``timestep(sigma)`` by up to 2.9e-6. So give the table in
float64 (`sd15_model_sampling`) to get the reference's schedules bit for bit; a float32 table (a
bare table, as older code passes) still works and is then only within a few ulps.
"""
from __future__ import annotations

import torch

PARAMETRISATIONS = ("eps", "v")


def sd15_table() -> torch.Tensor:
    """SD1.5's training sigmas in float64: scaled-linear betas 0.00085..0.012 over 1000 steps."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


class ModelSamplingDiscrete:
    """A discrete, ascending sigma table with the reference's sigma <-> timestep maps.

    ``sigmas`` (float32) and ``log_sigmas`` (float32, from the logs of the table in the dtype it
    was given) are the table; ``parametrisation`` is ``"eps"`` (SD1.x, SDXL) or ``"v"`` (SD2.x 768).
    """

    def __init__(self, sigmas, parametrisation: str = "eps"):
        table = torch.as_tensor(sigmas)
        if not table.is_floating_point():
            table = table.double()
        table = table.flatten()
        if table.numel() < 2 or not torch.isfinite(table).all() or (table <= 0).any():
            raise ValueError("model sigmas: expected a 1-D table of at least 2 finite positive values")
        if (table[1:] < table[:-1]).any():
            raise ValueError("model sigmas: expected an ascending table")
        if parametrisation not in PARAMETRISATIONS:
            raise ValueError(f"parametrisation: expected one of {', '.join(PARAMETRISATIONS)}, "
                             f"got {parametrisation!r}")
        self.parametrisation = parametrisation
        self.sigmas = table.float()
        self.log_sigmas = table.log().float()

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma) -> torch.Tensor:
        """The table index nearest to ``sigma`` in log space (what a UNet is conditioned on).

        ``log`` of the float32 query, differences in float32, the first minimum.
        """
        sigma = torch.as_tensor(sigma, dtype=torch.float32)
        dists = sigma.log().reshape(1, -1) - self.log_sigmas[:, None]
        return dists.abs().argmin(dim=0).view(sigma.shape)

    def sigma(self, t) -> torch.Tensor:
        """Sigma at a fractional timestep: log-linear between the neighbouring table entries (float32)."""
        t = torch.as_tensor(t, dtype=torch.float32).clamp(0, len(self.sigmas) - 1)
        low, high, w = t.floor().long(), t.ceil().long(), t.frac()
        return ((1 - w) * self.log_sigmas[low] + w * self.log_sigmas[high]).exp()

    def percent_to_sigma(self, percent: float) -> float:
        """The sigma at ``percent`` of the way through sampling (0: start, 1: end), a Python float."""
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return self.sigma(torch.tensor((1.0 - percent) * 999.0)).item()

    def __repr__(self) -> str:
        return (f"ModelSamplingDiscrete({self.parametrisation}, {len(self.sigmas)} sigmas, "
                f"{float(self.sigma_min):.7g}..{float(self.sigma_max):.7g})")


def sd15_model_sampling() -> ModelSamplingDiscrete:
    """SD1.5's discrete EPS model sampling, float64 table kept: the reference's schedules bit for bit."""
    return ModelSamplingDiscrete(sd15_table(), "eps")


def as_model_sampling(source) -> ModelSamplingDiscrete:
    """A model sampling from a model sampling, a model (its ``model_sampling``, else its ``sigmas``)
    or a bare ascending table."""
    if isinstance(source, ModelSamplingDiscrete):
        return source
    sampling = getattr(source, "model_sampling", None)
    if sampling is not None:
        return as_model_sampling(sampling)
    if hasattr(source, "sigmas") and not isinstance(source, torch.Tensor):
        return ModelSamplingDiscrete(source.sigmas)
    return ModelSamplingDiscrete(source)
