"""The O(H W) overlap grow gives the very bits of the reference's k x k box convolution."""
import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from regional_widgets.sampling import masks as mask_ops


def grow_by_convolution(mask, overlap_factor, *, swap_quirk=True):
    """The previous implementation (the reference's conv2d with a box of ones), kept as the oracle."""
    h, w = mask.shape
    out_h, out_w = (w, h) if swap_quirk else (h, w)
    m = mask_ops.resize(mask, out_h, out_w)
    if overlap_factor > 0:
        k = int(overlap_factor)
        kernel = torch.ones(1, 1, k, k)
        pad = math.ceil((k - 1) / 2)
        m = F.conv2d(m.round()[None, None], kernel, padding=pad).clamp(0, 1)[0, 0, :out_h, :out_w]
    return m.round()


def bits(t):
    return t.contiguous().view(torch.int32)


def random_mask(rng, h, w):
    kind = rng.integers(4)
    if kind == 0:
        return torch.from_numpy((rng.random((h, w)) > rng.random()).astype(np.float32))
    if kind == 1:  # soft values, including exactly 0.5 (rounds to 0)
        return torch.from_numpy(rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], (h, w)).astype(np.float32))
    if kind == 2:  # a rectangle or nothing
        m = np.zeros((h, w), np.float32)
        y, x = rng.integers(h), rng.integers(w)
        m[y:y + rng.integers(0, h + 1), x:x + rng.integers(0, w + 1)] = 1
        return torch.from_numpy(m)
    return torch.from_numpy(rng.random((h, w)).astype(np.float32))


def test_bit_identical_to_the_convolution_over_many_masks_and_factors():
    rng = np.random.default_rng(2024)
    cases = 0
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 24, 2))
        mask = random_mask(rng, h, w)
        factors = {0, 1, 2, 3, int(rng.integers(0, 2 * max(h, w) + 4)), 2 * max(h, w) + 5}
        for k in factors:
            for swap in (True, False):
                new = mask_ops.grow(mask, k, swap_quirk=swap)
                old = grow_by_convolution(mask, k, swap_quirk=swap)
                assert new.dtype == old.dtype and new.shape == old.shape, (h, w, k, swap)
                assert torch.equal(bits(new), bits(old)), (h, w, k, swap)
                cases += 1
    assert cases > 2000


@pytest.mark.parametrize("k", [9, 10, 64])
def test_bit_identical_on_a_picture_sized_mask(k):
    m = torch.zeros(96, 64)
    m[20:50, 10:30] = 1
    m[70, 60] = 1
    assert torch.equal(bits(mask_ops.grow(m, k)), bits(grow_by_convolution(m, k)))


def test_the_largest_factor_is_fast_and_larger_ones_are_refused():
    m = torch.zeros(256, 256)
    m[100:120, 30:40] = 1
    t0 = time.perf_counter()
    out = mask_ops.grow(m, mask_ops.MAX_OVERLAP)
    assert time.perf_counter() - t0 < 1.0  # the convolution took minutes
    assert torch.equal(out, torch.ones(256, 256))
    expected = rf"overlap_factor: expected an integer in 0\.\.{mask_ops.MAX_OVERLAP}, got 10001"
    with pytest.raises(ValueError, match=expected):
        mask_ops.grow(m, mask_ops.MAX_OVERLAP + 1)
