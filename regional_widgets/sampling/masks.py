"""Masks: resizing to latent size, the overlap grow, union, inverse and the soft composite.

All resizes are bilinear with ``align_corners=False`` and no antialiasing, as the reference's.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from .checks import check_int

MAX_OVERLAP = 10000  # the reference's largest overlap_factor


def as_mask(mask, name: str = "mask") -> torch.Tensor:
    """A 2-D float32 tensor with values in [0, 1] (leading singleton dims are stripped)."""
    if isinstance(mask, np.ndarray):
        if mask.dtype.kind not in "biuf":
            raise ValueError(f"{name}: expected real numbers (bool, int or float), got dtype {mask.dtype}")
        mask = torch.from_numpy(np.array(mask, copy=True))  # a copy: the caller's array may be read-only
    elif not isinstance(mask, torch.Tensor):
        raise ValueError(f"{name}: expected a 2-D array or tensor, got {type(mask).__name__}")
    elif mask.is_complex():
        raise ValueError(f"{name}: expected real numbers (bool, int or float), got dtype {mask.dtype}")
    while mask.ndim > 2 and mask.shape[0] == 1:
        mask = mask[0]
    if mask.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D mask (H, W), got shape {tuple(mask.shape)}")
    if mask.dtype == torch.bool:
        mask = mask.float()
    mask = mask.float()
    if mask.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty mask, got shape {tuple(mask.shape)}")
    if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise ValueError(f"{name}: expected values in [0, 1]")
    return mask


def resize(mask: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear resize of a 2-D mask to (height, width)."""
    if tuple(mask.shape[-2:]) == (height, width):
        return mask.clone()
    return F.interpolate(mask.reshape(1, 1, *mask.shape[-2:]), size=(height, width), mode="bilinear")[0, 0]


def to_latent(mask: torch.Tensor, shape) -> torch.Tensor:
    """A mask prepared for a latent of ``shape`` [B, C, h, w]: resized, repeated over C and B."""
    batch, channels, height, width = shape
    m = resize(mask, height, width)
    return m.expand(batch, channels, height, width).contiguous()


def grow(mask: torch.Tensor, overlap_factor: int, *, swap_quirk: bool = True) -> torch.Tensor:
    """The region mask the regional sampler uses: binarised and dilated by a box of ``overlap_factor``.

    Faithful quirk (``swap_quirk``): the reference first resizes an (H, W) mask to size (W, H),
    so for non-square masks the result is (W, H)-shaped and the growth anisotropic; it is
    resized to the latent size later, which restores the geometry. A box of k grows the mask by
    k-1-p pixels up/left and p down/right, p = ceil((k-1)/2).

    The reference convolves with a k x k box of ones, clamps to [0, 1] and rounds: on a binary
    mask that is 1 wherever the box holds a 1. Here the same box test is made with running sums
    along each axis, O(H W) for any k, with the same bits.
    """
    check_int(overlap_factor, "overlap_factor", 0, MAX_OVERLAP)
    h, w = mask.shape
    out_h, out_w = (w, h) if swap_quirk else (h, w)
    m = resize(mask, out_h, out_w)
    if overlap_factor > 0:
        k = int(overlap_factor)
        lead = math.ceil((k - 1) / 2)  # the box at i covers i - lead .. i - lead + k - 1
        hit = m.round() > 0
        hit = _box_any(_box_any(hit, k, lead, 0), k, lead, 1)
        return hit.to(m.dtype)
    return m.round()


def _box_any(hit: torch.Tensor, k: int, lead: int, dim: int) -> torch.Tensor:
    """Along ``dim``: True where any of positions ``i - lead .. i - lead + k - 1`` (clipped) is True."""
    n = hit.shape[dim]
    counts = torch.cumsum(hit.to(torch.int64), dim)
    counts = torch.cat([torch.zeros_like(counts.narrow(dim, 0, 1)), counts], dim)  # counts[i] = sum of [0, i)
    i = torch.arange(n)
    lo = (i - lead).clamp(0, n)
    hi = (i - lead + k).clamp(0, n)
    return (counts.index_select(dim, hi) - counts.index_select(dim, lo)) > 0


def union(masks) -> torch.Tensor:
    """1 where any mask is non-zero (``ceil``), else 0 — at mask resolution."""
    out = torch.zeros_like(masks[0])
    for m in masks:
        out = torch.maximum(out, m.ceil())
    return out


def inverse_union(masks) -> torch.Tensor:
    """The base sampler's area: 1 where no region mask is non-zero. Not dilated."""
    return (union(masks) == 0).float()


def composite(destination: torch.Tensor, source: torch.Tensor, mask: torch.Tensor,
              outside: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``mask * source + (1 - mask) * destination`` with the mask resized to the source (soft).

    A mask already at the source's size is used as it is (only read: no copy). ``outside``: ``1 - mask``
    at the source's size, when the caller has it (the same values: made once for many composites).
    """
    h, w = source.shape[-2:]
    m = mask if tuple(mask.shape[-2:]) == (h, w) else resize(mask, h, w)
    return blend(source, destination, m, 1 - m if outside is None else outside)


def blend(inside: torch.Tensor, outside: torch.Tensor, mask: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``mask * inside + keep * outside`` (``keep``: ``1 - mask``), the sum made in the first product's buffer where
    it has the sum's shape and dtype: the same bits as the expression, one new tensor less."""
    blended, kept = mask * inside, keep * outside
    if blended.shape == kept.shape and blended.dtype == kept.dtype:
        return blended.add_(kept)
    return blended + kept
