"""The reference's model sampling: a *parametrisation* times a *schedule* (spec model_families.md §1).

The parametrisation says how the sampler's state x, the noise level sigma and the network output
relate; every noise operation of a sampler call goes through it:

==============  ======================  ==========================  ==============================  =====================
parametrisation calculate_input(s, x)   calculate_denoised(s, o, x) noise_scaling(s, n, L, max)     inverse_noise_scaling
==============  ======================  ==========================  ==============================  =====================
``"eps"``       x / sqrt(s^2 + 1)       x - s*o                     n*s + L  (max: n*sqrt(1+s^2)+L) x
``"v"``         x / sqrt(s^2 + 1)       x/(s^2+1) - o*s/sqrt(s^2+1) as eps                          x
``"const"``     x                       x - s*o                     s*n + (1 - s)*L (max ignored)   x / (1 - s)
==============  ======================  ==========================  ==============================  =====================

(``"const"`` is flow matching: SD3, Flux. ``max_denoise`` = the call starts at the table's top,
`ModelSampling.is_max_denoise`.) The schedule is the sigma table and its sigma <-> timestep maps:

- `ModelSamplingDiscrete` (SD1.x/SD2.x/SDXL): any ascending table, e.g. from betas
  (`discrete_table`); ``timestep`` = nearest entry in log sigma, ``sigma`` = log-linear.
- `ModelSamplingDiscreteFlow` (SD3/SD3.5, Flux-schnell, AuraFlow): ``shift`` alpha,
  ``multiplier`` m; table ``time_snr_shift(alpha, i/1000)``, ``timestep(s) = s*m`` (the shift is
  *not* undone), ``sigma(t) = time_snr_shift(alpha, t/m)``.
- `ModelSamplingFlux` (Flux-dev/Fill): ``shift`` mu; 10 000 entries
  ``flux_time_shift(mu, i/10000)``, ``timestep(s) = s``; `flux_shift` is the ModelSamplingFlux
  node's resolution rule for mu.

Every class has ``parametrisation``, ``is_const``, ``sigmas`` (float32, ascending), ``sigma_min``,
``sigma_max``, ``timestep``, ``sigma``, ``percent_to_sigma`` and the four parametrisation methods.
Ready-made: `sd15_model_sampling`, `sd3_model_sampling`, `flux_model_sampling`,
`flux_schnell_model_sampling`; `as_model_sampling` accepts a model sampling, a model or a bare table.

Bit-exactness (spec regional_sampler.md §3.5.4 a): the reference builds the discrete table in
float64 and keeps ``sigmas = table.float()`` and ``log_sigmas = log(table).float()``, the log taken in
float64 *before* the cast. So give the table in float64 (`sd15_model_sampling`) to get the
reference's schedules bit for bit; a bare float32 table still works and is then within a few ulps.
Flow tables are computed in float32 in the reference's order; ``percent_to_sigma`` of the flow
schedules is a Python float (float64), as the reference's.
"""
from __future__ import annotations

import math

import torch

PARAMETRISATIONS = ("eps", "v", "const")
SD3_SHIFT = 3.0  # SD3/SD3.5's discrete-flow shift (ModelSamplingSD3's default)
FLUX_SHIFT = 1.15  # Flux-dev's mu without the ModelSamplingFlux node


def time_snr_shift(alpha: float, t):
    """``alpha t / (1 + (alpha - 1) t)``; exactly ``t`` when alpha == 1 (tensor or Python float)."""
    if alpha == 1.0:
        return t
    return alpha * t / (1 + (alpha - 1) * t)


def flux_time_shift(mu: float, t):
    """Flux's shift ``e^mu / (e^mu + (1/t - 1))`` (tensor or Python float); = time_snr_shift(e^mu, t)."""
    return math.exp(mu) / (math.exp(mu) + (1 / t - 1) ** 1.0)


def flux_shift(width: int, height: int, max_shift: float = 1.15, base_shift: float = 0.5) -> float:
    """The ModelSamplingFlux node's mu for an image size: a line through (256 tokens, base_shift) and
    (4096 tokens, max_shift) in the token count ``width*height/256``; not clamped.

    512x512 -> 0.63, 1024x1024 -> 1.15, 2048x2048 -> 3.23. Without the node Flux-dev uses 1.15.
    """
    tokens = (width * height) / (16 * 16)
    return base_shift + (max_shift - base_shift) * (tokens - 256) / (4096 - 256)


def _per_item(sigma, like: torch.Tensor) -> torch.Tensor:
    """A scalar sigma as a 0-d tensor, a per-item one as ``[B, 1, ..., 1]`` (broadcast over ``like``)."""
    sigma = torch.as_tensor(sigma, device=like.device)
    if sigma.numel() == 1:
        return sigma.reshape(())
    return sigma.reshape(sigma.shape[:1] + (1,) * (like.ndim - 1))


def noise_scaling(parametrisation: str, sigma, noise: torch.Tensor, latent: torch.Tensor,
                  max_denoise: bool = False) -> torch.Tensor:
    """`ModelSampling.noise_scaling` of a parametrisation (``"eps"``, ``"v"``, ``"const"``), for code
    that holds only the parametrisation's name (a sampler's plain-data state)."""
    sigma = _per_item(sigma, noise)
    if parametrisation == "const":
        return sigma * noise + (1.0 - sigma) * latent
    scale = torch.sqrt(1.0 + sigma ** 2.0) if max_denoise else sigma
    return noise * scale + latent


class ModelSampling:
    """A parametrisation (``"eps"``, ``"v"``, ``"const"``) with a schedule (the subclasses).

    Subclasses set ``sigmas`` (float32, ascending) and implement ``timestep``, ``sigma`` and
    ``percent_to_sigma``. ``sigma`` arguments of the parametrisation methods are a number, a 0-d
    tensor or one value per batch item.
    """

    sigma_data = 1.0
    sigmas: torch.Tensor

    def __init__(self, parametrisation: str = "eps"):
        if parametrisation not in PARAMETRISATIONS:
            raise ValueError(f"parametrisation: expected one of {', '.join(PARAMETRISATIONS)}, "
                             f"got {parametrisation!r}")
        self.parametrisation = parametrisation

    # ---- the parametrisation ---------------------------------------------------------------

    @property
    def is_const(self) -> bool:
        """Flow matching (CONST): what the samplers of spec regional_sampler.md §3.6 branch on."""
        return self.parametrisation == "const"

    def calculate_input(self, sigma, x: torch.Tensor) -> torch.Tensor:
        """The network's input for state ``x`` at ``sigma``."""
        if self.is_const:
            return x
        sigma = _per_item(sigma, x)
        return x / (sigma ** 2 + self.sigma_data ** 2) ** 0.5

    def calculate_denoised(self, sigma, model_output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The x0 prediction from the network output (eps, v or flow velocity) at state ``x``."""
        sigma = _per_item(sigma, x)
        if self.parametrisation == "v":
            sd = self.sigma_data
            return (x * sd ** 2 / (sigma ** 2 + sd ** 2)
                    - model_output * sigma * sd / (sigma ** 2 + sd ** 2) ** 0.5)
        return x - model_output * sigma

    def noise_scaling(self, sigma, noise: torch.Tensor, latent: torch.Tensor,
                      max_denoise: bool = False) -> torch.Tensor:
        """The state at ``sigma`` from a clean ``latent`` and unit ``noise``: a call's start and the
        masked re-noise. EPS/V: ``n*sigma + L`` (``n*sqrt(1 + sigma^2) + L`` with ``max_denoise``);
        CONST: ``sigma*n + (1 - sigma)*L`` whatever ``max_denoise``."""
        return noise_scaling(self.parametrisation, sigma, noise, latent, max_denoise)

    def inverse_noise_scaling(self, sigma, latent: torch.Tensor) -> torch.Tensor:
        """What a sampler call returns for its final state at ``sigma``: EPS/V the state itself,
        CONST ``x / (1 - sigma)`` (the leftover-noise latent; the identity at sigma 0)."""
        if not self.is_const:
            return latent
        return latent / (1.0 - _per_item(sigma, latent))

    def is_max_denoise(self, sigma0) -> bool:
        """Whether a call starting at ``sigma0`` starts from pure noise (at the table's top, rel. 1e-5)."""
        top, sigma0 = float(self.sigma_max), float(sigma0)
        return math.isclose(sigma0, top, rel_tol=1e-5) or sigma0 > top

    # ---- the schedule ------------------------------------------------------------------------

    @property
    def sigma_min(self) -> torch.Tensor:
        return self.sigmas[0]

    @property
    def sigma_max(self) -> torch.Tensor:
        return self.sigmas[-1]

    def timestep(self, sigma) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sigma(self, t) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def percent_to_sigma(self, percent: float) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def _describe(self) -> str:
        return (f"{self.parametrisation}, {len(self.sigmas)} sigmas, "
                f"{float(self.sigma_min):.7g}..{float(self.sigma_max):.7g}")


def discrete_table(betas) -> torch.Tensor:
    """The discrete sigma table of a beta schedule: ``sqrt((1 - acp)/acp)`` with ``acp = cumprod(1 - betas)``,
    in the dtype of ``betas`` (give float64 for the reference's log-sigmas)."""
    betas = torch.as_tensor(betas)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5


def sd15_table() -> torch.Tensor:
    """SD1.5's training sigmas in float64: scaled-linear betas 0.00085..0.012 over 1000 steps."""
    return discrete_table(torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2)


class ModelSamplingDiscrete(ModelSampling):
    """A discrete, ascending sigma table with the reference's sigma <-> timestep maps.

    ``sigmas`` (float32) and ``log_sigmas`` (float32, from the logs of the table in the dtype it
    was given) are the table; ``parametrisation`` is ``"eps"`` (SD1.x, SDXL), ``"v"`` (SD2.x 768)
    or ``"const"``. `from_betas` builds one from a beta schedule.
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
        super().__init__(parametrisation)
        self.sigmas = table.float()
        self.log_sigmas = table.log().float()

    @classmethod
    def from_betas(cls, betas, parametrisation: str = "eps") -> "ModelSamplingDiscrete":
        return cls(discrete_table(betas), parametrisation)

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
        return f"ModelSamplingDiscrete({self._describe()})"


class ModelSamplingDiscreteFlow(ModelSampling):
    """Discrete flow (SD3: shift 3, multiplier 1000; Flux-schnell: shift 1, multiplier 1): 1000 entries
    ``time_snr_shift(shift, i/1000)``, i = 1..1000 (float32). ``timestep(s) = s*multiplier`` does
    not undo the shift: ``sigma(timestep(0.5)) = 0.75`` for shift 3."""

    def __init__(self, shift: float = 1.0, multiplier: float = 1000, parametrisation: str = "const",
                 timesteps: int = 1000):
        super().__init__(parametrisation)
        shift, multiplier = float(shift), float(multiplier)
        if not (math.isfinite(shift) and shift > 0 and math.isfinite(multiplier) and multiplier > 0):
            raise ValueError(f"discrete flow: expected a positive shift and multiplier, got {shift!r}, {multiplier!r}")
        self.shift, self.multiplier = shift, multiplier
        self.sigmas = self.sigma((torch.arange(1, timesteps + 1, 1) / timesteps) * multiplier)

    def timestep(self, sigma) -> torch.Tensor:
        return torch.as_tensor(sigma) * self.multiplier

    def sigma(self, t) -> torch.Tensor:
        return time_snr_shift(self.shift, torch.as_tensor(t) / self.multiplier)

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return time_snr_shift(self.shift, 1.0 - percent)

    def __repr__(self) -> str:
        return f"ModelSamplingDiscreteFlow(shift={self.shift:g}, multiplier={self.multiplier:g}, {self._describe()})"


class ModelSamplingFlux(ModelSampling):
    """Flux (shift = mu, default 1.15; `flux_shift` for the ModelSamplingFlux node's value): 10 000
    entries ``flux_time_shift(mu, i/10000)``, i = 1..10000 (float32); ``timestep(s) = s`` (the
    network scales it itself), ``sigma(t) = flux_time_shift(mu, t)``."""

    def __init__(self, shift: float = FLUX_SHIFT, parametrisation: str = "const", timesteps: int = 10000):
        super().__init__(parametrisation)
        shift = float(shift)
        if not math.isfinite(shift):
            raise ValueError(f"flux: expected a finite shift (mu), got {shift!r}")
        self.shift = shift
        self.sigmas = self.sigma(torch.arange(1, timesteps + 1, 1) / timesteps)

    def timestep(self, sigma) -> torch.Tensor:
        return torch.as_tensor(sigma)

    def sigma(self, t) -> torch.Tensor:
        return flux_time_shift(self.shift, torch.as_tensor(t))

    def percent_to_sigma(self, percent: float) -> float:
        if percent <= 0.0:
            return 1.0
        if percent >= 1.0:
            return 0.0
        return flux_time_shift(self.shift, 1.0 - percent)

    def __repr__(self) -> str:
        return f"ModelSamplingFlux(mu={self.shift:g}, {self._describe()})"


def sd15_model_sampling() -> ModelSamplingDiscrete:
    """SD1.5's discrete EPS model sampling, float64 table kept: the reference's schedules bit for bit."""
    return ModelSamplingDiscrete(sd15_table(), "eps")


def sd3_model_sampling(shift: float = SD3_SHIFT) -> ModelSamplingDiscreteFlow:
    """SD3/SD3.5's flow sampling (the ModelSamplingSD3 node with ``shift``): DiscreteFlow x CONST."""
    return ModelSamplingDiscreteFlow(shift, 1000)


def flux_model_sampling(shift: float = FLUX_SHIFT) -> ModelSamplingFlux:
    """Flux-dev's flow sampling: Flux(mu) x CONST (mu 1.15, or `flux_shift` of the image size)."""
    return ModelSamplingFlux(shift)


def flux_schnell_model_sampling() -> ModelSamplingDiscreteFlow:
    """Flux-schnell's: DiscreteFlow(shift 1, multiplier 1) x CONST, sigma_i = i/1000, timestep = sigma."""
    return ModelSamplingDiscreteFlow(1.0, 1.0)


def as_model_sampling(source) -> ModelSampling:
    """A model sampling from a model sampling, a model (its ``model_sampling``, else its ``sigmas``:
    an EPS discrete table) or a bare ascending table."""
    if isinstance(source, ModelSampling):
        return source
    sampling = getattr(source, "model_sampling", None)
    if sampling is not None:
        return as_model_sampling(sampling)
    if hasattr(source, "sigmas") and not isinstance(source, torch.Tensor):
        return ModelSamplingDiscrete(source.sigmas)
    return ModelSamplingDiscrete(source)


def is_const(source) -> bool:
    """Whether a model sampling (or a model that has one) is flow matching (CONST); a bare table: no."""
    if source is None:
        return False
    return as_model_sampling(source).is_const
