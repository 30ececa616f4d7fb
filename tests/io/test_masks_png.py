"""Mask PNGs: the 8-bit round trip, the canvas's reading and LoadImageMask's reading of each channel."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from regional_widgets.io.masks import CHANNELS, open_image, read_mask_png, write_mask_png

RNG = np.random.default_rng(3)
EIGHT_BIT = (RNG.integers(0, 256, (24, 40)) / 255).astype(np.float32)  # exactly k/255
SOFT = RNG.random((24, 40)).astype(np.float32)
SOFT[:4], SOFT[4:8] = 0, 1


def _image(png):
    return Image.open(io.BytesIO(png))


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_round_trip_is_exact_for_8_bit_values_and_within_half_a_level_for_soft(mode):
    for channel in (None, "red", "green", "blue") if mode == "RGB" else (None,):
        back = read_mask_png(write_mask_png(EIGHT_BIT, mode), channel)
        assert back.dtype == np.float32 and back.shape == EIGHT_BIT.shape
        np.testing.assert_array_equal(back, EIGHT_BIT)
        soft = read_mask_png(write_mask_png(SOFT, mode), channel)
        np.testing.assert_array_equal(soft, np.round(SOFT * 255).astype(np.float32) / 255)
        assert np.abs(soft - SOFT).max() <= 1 / 510 + 1e-7
        np.testing.assert_array_equal(soft[:8], SOFT[:8])  # 0 and 1 are exact


def test_written_pngs_are_8_bit_grey():
    grey, rgb = _image(write_mask_png(SOFT)), _image(write_mask_png(SOFT, "RGB"))
    assert grey.mode == "L" and rgb.mode == "RGB" and grey.size == rgb.size == (40, 24)
    r, g, b = (np.asarray(rgb.getchannel(c)) for c in "RGB")
    np.testing.assert_array_equal(r, np.asarray(grey))
    np.testing.assert_array_equal(r, g)
    np.testing.assert_array_equal(r, b)
    torch_back = read_mask_png(write_mask_png(torch.from_numpy(EIGHT_BIT)))
    np.testing.assert_array_equal(torch_back, EIGHT_BIT)


def test_load_image_mask_channels_and_inverted_alpha():
    rgba = RNG.integers(0, 256, (16, 20, 4)).astype(np.uint8)
    image = Image.fromarray(rgba, "RGBA")
    for k, channel in enumerate(("red", "green", "blue")):
        np.testing.assert_array_equal(read_mask_png(image, channel), rgba[..., k].astype(np.float32) / 255)
    # LoadImageMask inverts alpha: mask = 1 - A/255
    np.testing.assert_allclose(read_mask_png(image, "alpha"), 1 - rgba[..., 3] / 255, atol=1e-7)
    # the canvas reading takes alpha as coverage (transparent = 0)
    np.testing.assert_array_equal(read_mask_png(image), rgba[..., 3].astype(np.float32) / 255)
    assert set(CHANNELS) == {"alpha", "red", "green", "blue"}


def test_grey_alpha_and_palette_images():
    la = np.stack([np.full((8, 8), 9, np.uint8), np.arange(64, dtype=np.uint8).reshape(8, 8) * 4], -1)
    np.testing.assert_allclose(read_mask_png(Image.fromarray(la, "LA"), "alpha"), 1 - la[..., 1] / 255, atol=1e-7)
    palette = Image.fromarray(EIGHT_BIT_UINT8 := (EIGHT_BIT * 255).round().astype(np.uint8)).convert("P")
    red = read_mask_png(palette, "red")
    np.testing.assert_array_equal(red, np.asarray(palette.convert("RGB"))[..., 0].astype(np.float32) / 255)
    assert red.shape == EIGHT_BIT_UINT8.shape


def test_a_missing_channel_raises():
    rgb = Image.fromarray(np.zeros((8, 8, 3), np.uint8), "RGB")
    with pytest.raises(ValueError, match="no 8-bit alpha channel"):
        read_mask_png(rgb, "alpha")
    grey = Image.fromarray(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="red"):
        read_mask_png(grey, "red")
    with pytest.raises(ValueError, match="channel"):
        read_mask_png(rgb, "luma")
    with pytest.raises(ValueError, match="only be read from an image"):
        read_mask_png(np.zeros((8, 8)), "red")


def test_canvas_reading_of_arrays_and_16_bit_images(tmp_path):
    np.testing.assert_array_equal(read_mask_png(np.eye(3, dtype=bool)), np.eye(3, dtype=np.float32))
    np.testing.assert_array_equal(read_mask_png(np.array([[0, 255], [255, 0]], np.uint8)), [[0, 1], [1, 0]])
    np.testing.assert_array_equal(read_mask_png(np.array([[0, 65535], [0, 0]], np.uint16)), [[0, 1], [0, 0]])
    deep = np.array([[0, 1000, 65535], [7, 300, 0]], np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    np.testing.assert_allclose(read_mask_png(str(path)), deep / 65535, atol=1e-7)
    assert open_image(np.zeros(2)) is None and open_image(path).size == (3, 2)
    with pytest.raises(ValueError, match="2-D"):
        read_mask_png(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        read_mask_png(np.full((2, 2), 1.5))


def test_write_rejects_what_is_not_a_mask():
    for bad in (np.full((4, 4), 1.2), np.full((4, 4), np.nan), np.zeros((2, 4, 4))):
        with pytest.raises(ValueError, match="mask"):
            write_mask_png(bad)
    with pytest.raises(ValueError, match="mode"):
        write_mask_png(SOFT, "RGBA")
