"""Mask operations (sampling/masks.py): half-pixel bilinear resize, the reference's overlap grow, union, composite, latent masks."""
import numpy as np
import pytest
import torch

from regional_widgets.sampling import masks


def numpy_bilinear(a: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize (align_corners=False), written independently."""
    in_h, in_w = a.shape

    def coords(n_out, n_in):
        c = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
        c = np.clip(c, 0, None)
        lo = np.minimum(np.floor(c).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, c - lo

    ylo, yhi, wy = coords(out_h, in_h)
    xlo, xhi, wx = coords(out_w, in_w)
    top = a[ylo][:, xlo] * (1 - wx) + a[ylo][:, xhi] * wx
    bottom = a[yhi][:, xlo] * (1 - wx) + a[yhi][:, xhi] * wx
    return top * (1 - wy[:, None]) + bottom * wy[:, None]


def test_resize_is_half_pixel_bilinear():
    rng = np.random.default_rng(0)
    a = rng.random((24, 40)).astype(np.float32)
    for h, w in [(3, 5), (12, 7), (48, 80)]:
        assert np.allclose(masks.resize(torch.from_numpy(a), h, w).numpy(), numpy_bilinear(a, h, w), atol=1e-6)


def test_grow_by_even_kernel_is_4_up_left_5_down_right():
    m = torch.zeros(32, 32)
    m[10:20, 10:20] = 1
    grown = masks.grow(m, 10)
    rows, cols = np.nonzero(grown.numpy())
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (6, 24, 6, 24)


def test_grow_by_odd_kernel_is_symmetric():
    m = torch.zeros(16, 16)
    m[8, 8] = 1
    rows, cols = np.nonzero(masks.grow(m, 5).numpy())
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (6, 10, 6, 10)


def test_grow_zero_only_binarises():
    m = torch.tensor([[0.2, 0.6], [1.0, 0.0]])
    assert torch.equal(masks.grow(m, 0), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


def test_grow_swaps_width_and_height_for_non_square_masks():
    m = torch.zeros(20, 40)
    m[:, :20] = 1  # left half
    grown = masks.grow(m, 4)
    assert tuple(grown.shape) == (40, 20)
    fixed = masks.grow(m, 4, swap_quirk=False)
    assert tuple(fixed.shape) == (20, 40)
    # resized back to the latent's shape the geometry survives: left half (plus the growth)
    back = masks.resize(grown, 20, 40)
    assert back[:, :20].min() == 1 and back[:, 26:].max() == 0


def test_bad_overlap_factor():
    with pytest.raises(ValueError, match="overlap_factor"):
        masks.grow(torch.zeros(4, 4), -1)


def test_union_uses_ceil_and_inverse_is_not_dilated():
    a = torch.tensor([[0.0, 0.1], [0.0, 0.0]])
    b = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    assert torch.equal(masks.union([a, b]), torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    assert torch.equal(masks.inverse_union([a, b]), torch.tensor([[1.0, 0.0], [1.0, 0.0]]))


def test_composite_blends_with_the_mask_resized_to_the_source():
    dst, src = torch.zeros(1, 4, 2, 2), torch.ones(1, 4, 2, 2)
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0]] * 4)  # 4x4 -> 2x2: left column 1, right 0
    out = masks.composite(dst, src, mask)
    assert torch.equal(out[0, :, :, 0], torch.ones(4, 2)) and torch.equal(out[0, :, :, 1], torch.zeros(4, 2))
    soft = masks.composite(dst, 3 * src, torch.full((2, 2), 0.25))
    assert torch.allclose(soft, torch.full_like(dst, 0.75))


def test_to_latent_repeats_over_channels_and_batch():
    m = masks.to_latent(torch.ones(16, 16), (2, 4, 2, 2))
    assert tuple(m.shape) == (2, 4, 2, 2) and torch.equal(m, torch.ones(2, 4, 2, 2))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 3, 3)), "2-D"), (np.full((3, 3), 1.5), r"\[0, 1\]"), (np.full((3, 3), np.nan), r"\[0, 1\]"),
    ("mask.png", "2-D array"),
])
def test_as_mask_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        masks.as_mask(bad, "mask")


def test_as_mask_strips_singletons_and_accepts_bool():
    assert tuple(masks.as_mask(np.ones((1, 1, 3, 5), dtype=bool)).shape) == (3, 5)


def test_blend_is_the_expression_bit_for_bit_for_any_shapes_and_dtypes():
    gen = torch.Generator().manual_seed(3)
    m = torch.rand(8, 8, generator=gen)
    cases = [(torch.randn(1, 3, 8, 8, generator=gen), torch.randn(1, 3, 8, 8, generator=gen), m),  # latents
             (torch.randn(8, 8, generator=gen), torch.randn(8, 8, generator=gen), m),  # sigma maps
             (torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 4, 8, 8, generator=gen), m.reshape(1, 1, 8, 8)),
             (torch.randn(8, 8, generator=gen), torch.randn(2, 1, 8, 8, generator=gen), m),  # the sum is larger
             (torch.randn(8, 8, generator=gen), torch.randn(8, 8, dtype=torch.float64, generator=gen), m)]  # promoted
    for inside, outside, mask in cases:
        keep = 1 - mask
        got, expected = masks.blend(inside, outside, mask, keep), mask * inside + keep * outside
        assert got.dtype == expected.dtype and got.shape == expected.shape and torch.equal(got, expected)
        assert got.data_ptr() not in (inside.data_ptr(), outside.data_ptr(), mask.data_ptr(), keep.data_ptr())
