"""Seeded noise exactly as the reference tool makes it (same seed, same bits).

Three sources, one each:
- `prepare_noise`: the initial latent noise, a CPU stream seeded from the node's seed;
- `DefaultNoiseSampler`: ancestral/ddpm/lcm per-step noise, a generator seeded from the seed
  afresh on every sampler call (so a 1-step call always draws the stream's first sample);
- `BrownianTreeNoiseSampler`: the SDE samplers' Brownian increments over [sigma_min, sigma_max].

Noise samplers follow the k-diffusion convention ``noise_sampler(sigma, sigma_next) -> tensor``
and add ``clone()`` so a stepper can snapshot their state between steps.
"""
from __future__ import annotations

import numpy as np
import torch

SEED_MAX = 2**64 - 1


def check_seed(seed, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= SEED_MAX:
        raise ValueError(f"{name}: expected an integer in 0..2^64-1 (0..{SEED_MAX}), got {seed!r}")
    return int(seed)


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
    draws = [torch.randn((1,) + shape[1:], dtype=latent.dtype, generator=gen, device="cpu")
             for _ in range(max(inds) + 1)]
    return torch.cat([draws[b] for b in inds], dim=0)


def ddim_inpaint_noise(noise: torch.Tensor, seed: int) -> torch.Tensor:
    """``ddim``'s separate noise for re-noising the kept area: a CPU stream seeded ``seed + 1``."""
    gen = _generator((check_seed(seed) + 1) % 2**64)
    return torch.randn(noise.shape, generator=gen, device="cpu").to(noise.dtype).to(noise.device)


class DefaultNoiseSampler:
    """Per-step Gaussian noise from a generator seeded on construction (one draw per call)."""

    def __init__(self, x: torch.Tensor, seed: int):
        self.shape, self.dtype, self.device = tuple(x.shape), x.dtype, x.device
        self.generator = _generator(check_seed(seed), device=x.device)

    def __call__(self, sigma=None, sigma_next=None) -> torch.Tensor:
        return torch.randn(self.shape, dtype=self.dtype, device=self.device, generator=self.generator)

    def clone(self) -> "DefaultNoiseSampler":
        twin = object.__new__(DefaultNoiseSampler)
        twin.shape, twin.dtype, twin.device = self.shape, self.dtype, self.device
        twin.generator = torch.Generator(device=self.device)
        twin.generator.set_state(self.generator.get_state())
        return twin

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)


class BrownianTreeNoiseSampler:
    """Normalised Brownian increments ``(W(s') - W(s)) / sqrt(|s' - s|)`` on a fixed tree.

    The tree spans [sigma_min, sigma_max] and is seeded with ``seed`` (torchsde's BrownianTree,
    w0 = 0, on the CPU). Queries outside the span are answered from the boundary by torchsde, as
    in the reference when a sigma_factor scales the queried sigmas but not the tree.
    """

    def __init__(self, x: torch.Tensor, sigma_min, sigma_max, seed: int, cpu: bool = True):
        import torchsde

        t0, t1 = torch.as_tensor(sigma_min), torch.as_tensor(sigma_max)
        t0, t1, self.sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        self.device = x.device
        w0 = torch.zeros_like(x, device="cpu" if cpu else x.device)
        self.tree = torchsde.BrownianTree(t0, w0, t1, entropy=check_seed(seed))

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        t0, t1 = torch.as_tensor(sigma), torch.as_tensor(sigma_next)
        lo, hi, sign = (t0, t1, 1) if t0 < t1 else (t1, t0, -1)
        w = self.tree(lo, hi) * (self.sign * sign)
        return (w / (t1 - t0).abs().sqrt()).to(self.device)

    def clone(self) -> "BrownianTreeNoiseSampler":
        return self  # answers depend only on the query, not on earlier queries


def clone_noise_sampler(noise_sampler):
    """A copy whose future draws equal the original's (callables without ``clone`` are shared)."""
    clone = getattr(noise_sampler, "clone", None)
    return clone() if callable(clone) else noise_sampler
