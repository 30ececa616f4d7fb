"""Seeded noise exactly as the reference tool makes it (same seed, same bits).

Three sources, one each:
- `prepare_noise`: the initial latent noise, a CPU stream seeded from the node's seed;
- `DefaultNoiseSampler`: ancestral/ddpm/lcm per-step noise, a generator seeded from the seed
  afresh on every sampler call (so a 1-step call always draws the stream's first sample); its
  `StepNoise` kind is coherent mode's: a CPU stream per (seed, step), shared by every part;
- `BrownianTreeNoiseSampler`: the SDE samplers' Brownian increments over [sigma_min, sigma_max].

Noise samplers follow the k-diffusion convention ``noise_sampler(sigma, sigma_next) -> tensor``
and add ``clone()`` so a stepper can snapshot their state between steps.
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch

from .checks import check_int

SEED_MAX = 2**64 - 1
_SEEDS = f"an integer in 0..2^64-1 (0..{SEED_MAX})"  # what `check_seed` accepts, as its errors say


def check_seed(seed, name: str = "seed") -> int:
    return check_int(seed, name, 0, SEED_MAX, accepted=_SEEDS)


def _generator(seed: int, device="cpu") -> torch.Generator:
    # A private generator seeded like torch.manual_seed(seed): the same bits as the reference's
    # global-generator draws, without disturbing the caller's global RNG.
    return torch.Generator(device=device).manual_seed(seed)


def prepare_noise(latent: torch.Tensor, seed: int, batch_index=None) -> torch.Tensor:
    """The initial noise for ``latent``: one CPU stream, or one draw per batch index.

    Without ``batch_index`` batch item k is the k-th slice of one ``randn`` over the whole shape.
    With it, ``[1, C, h, w]`` draws are made for indices 0..max in order and gathered per item,
    so an item's noise does not depend on the rest of the batch.
    """
    seed = check_seed(seed)
    gen = _generator(seed)
    shape = tuple(latent.shape)
    if batch_index is None:
        return torch.randn(shape, dtype=latent.dtype, generator=gen, device="cpu")
    inds = [int(b) for b in batch_index]
    if len(inds) != shape[0] or min(inds) < 0:
        raise ValueError(f"batch_index: expected {shape[0]} non-negative integers, got {batch_index!r}")
    wanted, draws = set(inds), {}
    for b in range(max(inds) + 1):  # every draw advances the stream; only the wanted ones are kept
        draw = torch.randn((1,) + shape[1:], dtype=latent.dtype, generator=gen, device="cpu")
        if b in wanted:
            draws[b] = draw
    return torch.cat([draws[b] for b in inds], dim=0)


def ddim_inpaint_noise(noise: torch.Tensor, seed: int) -> torch.Tensor:
    """``ddim``'s separate noise for re-noising the kept area: a CPU stream seeded ``seed + 1``."""
    gen = _generator((check_seed(seed) + 1) % 2**64)
    return torch.randn(noise.shape, generator=gen, device="cpu").to(noise.dtype).to(noise.device)


def is_max_denoise(sigma_max, sigma0) -> bool:
    """Whether a call starts from pure noise (sigma0 at or above the model's sigma_max)."""
    sigma_max, sigma0 = float(sigma_max), float(sigma0)
    return abs(sigma_max - sigma0) <= 1e-5 * max(abs(sigma_max), abs(sigma0)) or sigma0 > sigma_max


def noise_scaling(sigma0, noise: torch.Tensor, latent: torch.Tensor, max_denoise: bool) -> torch.Tensor:
    """The sampler's start: the latent plus noise at sigma0 (or at sqrt(1 + sigma0^2) from pure noise)."""
    scale = torch.sqrt(1.0 + torch.as_tensor(sigma0) ** 2.0) if max_denoise else torch.as_tensor(sigma0)
    return noise * scale + latent


class DefaultNoiseSampler:
    """Per-step Gaussian noise from a generator seeded on construction (one draw per call).

    The generator lives on x's device, or with ``cpu=True`` on the CPU (each draw then moved to x's
    device: the same bits on every device).
    """

    def __init__(self, x: torch.Tensor, seed: int, *, cpu: bool = False):
        self.shape, self.dtype, self.device, self.cpu = tuple(x.shape), x.dtype, x.device, cpu
        self.generator = _generator(check_seed(seed), device="cpu" if cpu else x.device)

    def __call__(self, sigma=None, sigma_next=None) -> torch.Tensor:
        if self.cpu:
            return torch.randn(self.shape, generator=self.generator, dtype=self.dtype).to(self.device)
        return torch.randn(self.shape, dtype=self.dtype, device=self.device, generator=self.generator)

    def clone(self) -> "DefaultNoiseSampler":
        twin = object.__new__(type(self))
        twin.shape, twin.dtype, twin.device, twin.cpu = self.shape, self.dtype, self.device, self.cpu
        twin.generator = torch.Generator(device=self.generator.device)
        twin.generator.set_state(self.generator.get_state())
        return twin


STEP_STREAM = 0x9E3779B97F4A7C15  # mixes the step index into the run's seed


class StepNoise(DefaultNoiseSampler):
    """Fresh Gaussian draws for step i of a coherent run; every part at that step gets the same draws."""

    def __init__(self, like: torch.Tensor, seed: int, i: int):
        super().__init__(like, (seed * STEP_STREAM + i + 1) % 2**64, cpu=True)


class BrownianTreeNoiseSampler:
    """Normalised Brownian increments ``(W(s') - W(s)) / sqrt(|s' - s|)`` on a fixed tree.

    The tree spans [sigma_min, sigma_max] and is seeded with ``seed`` (torchsde's BrownianTree,
    w0 = 0). ``cpu=True`` (the plain SDE samplers): the tree lives on the CPU and each query time is
    cast to CPU float32, the answer moved back to x's device and dtype. ``cpu=False`` (the ``_gpu``
    samplers): the tree is built on x's device and queried with the sigmas as they are; on a CPU
    run the two give the same bits, on CUDA torchsde draws from a CUDA generator instead.
    Queries outside the span are answered from the boundary by torchsde, as in the reference
    (see `_quiet_tree`).
    """

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seed: int, cpu: bool = True):
        import torchsde

        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        t0, t1, self.sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        self.cpu, self.device, self.dtype = cpu, x.device, x.dtype
        if cpu:
            t0, t1 = t0.cpu(), t1.cpu()
        w0 = torch.zeros_like(x, device="cpu" if cpu else x.device)
        self.tree = torchsde.BrownianTree(t0, w0, t1, entropy=check_seed(seed))

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        if self.cpu:
            t0, t1 = t0.to("cpu", torch.float32), t1.to("cpu", torch.float32)
        lo, hi, sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        with _quiet_tree():
            w = self.tree(lo, hi)
        w = w * (self.sign * sign)
        return (w / (t1 - t0).abs().sqrt()).to(self.device, self.dtype)

    def clone(self) -> "BrownianTreeNoiseSampler":
        return self  # answers depend only on the query, not on earlier queries


@contextmanager
def _quiet_tree():
    # torchsde rounds the tree's end points to 6 decimals, so a query at the schedule's own
    # sigma_max (14.6146431 > 14.614643) or below its sigma_min, and every query of a recovery
    # pass whose sigmas are scaled while the tree is not, lies outside the tree. torchsde warns
    # ("Should have tb<=t1", "ta>=t0", ...) and clamps: that is exactly the reference's answer,
    # expected on most runs, so the warning would only be noise in a notebook. Other warnings pass.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Should have t[ab](<=t1|>=t0) but got")
        yield


def clone_noise_sampler(noise_sampler):
    """A copy whose future draws equal the original's (callables without ``clone`` are shared)."""
    clone = getattr(noise_sampler, "clone", None)
    return clone() if callable(clone) else noise_sampler


VARIATION_METHODS = ("linear", "slerp")
# RegionalSampler's seed_2nd_mode: how the seed of the steps after the base-only ones is made
SEED_2ND_MODES = ("ignore", "fixed", "seed+seed_2nd", "seed-seed_2nd", "increment", "decrement", "randomize")


def _slerp(strength: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation per batch item, as the reference mixes variation noise.

    Deliberate difference: where the two draws are parallel (the same seed for the noise and the
    variation, so ``sin(omega) == 0``) the reference divides 0 by 0 and returns NaN; here the
    weights take their limit ``(1 - strength, strength)``. A rounded cosine just above 1 is
    clamped for the same reason. Every other case is the reference's arithmetic unchanged.
    """
    flat_a, flat_b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    cos = (flat_a / flat_a.norm(dim=1, keepdim=True) * flat_b / flat_b.norm(dim=1, keepdim=True)).sum(1)
    omega = torch.acos(cos.clamp(-1.0, 1.0))
    so = torch.sin(omega)
    parallel = so == 0
    wa = torch.where(parallel, torch.full_like(so, 1.0 - strength), torch.sin((1.0 - strength) * omega) / so)
    wb = torch.where(parallel, torch.full_like(so, float(strength)), torch.sin(strength * omega) / so)
    shape = (-1, *([1] * (a.ndim - 1)))
    return wa.reshape(shape) * a + wb.reshape(shape) * b


def touch_noise(noise: torch.Tensor, mask: torch.Tensor, seed: int, strength: float, method: str = "linear",
                zero_fractional: bool = True):
    """A region's variation noise mixed into ``noise`` inside its (undilated) mask.

    Faithful quirk (``zero_fractional``): where the mask resized to the noise's size is
    fractional, the result is *zero* noise; switched off, fractional values blend the two.
    """
    from .masks import resize

    if method not in VARIATION_METHODS:
        raise ValueError(f"variation_method: unknown value {method!r}; accepted: {', '.join(VARIATION_METHODS)}")
    if strength <= 0:
        return noise
    regional = prepare_noise(noise, seed).to(noise.device)
    if method == "linear":
        mixed = ((1 - strength) * noise + strength * regional) / ((1 - strength) ** 2 + strength**2) ** 0.5
    else:
        mixed = _slerp(strength, noise, regional)
    m = resize(mask.to(noise.device, torch.float32), *noise.shape[-2:]).expand_as(noise)
    if not zero_fractional:
        return m * mixed + (1 - m) * noise
    zeros = torch.zeros_like(noise)
    return torch.where(m == 1.0, mixed, torch.where(m == 0.0, noise, zeros))
