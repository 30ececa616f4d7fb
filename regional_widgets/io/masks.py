"""Masks as images: the one reader and the one writer of every mask PNG the package handles.

Masks are stored as 8-bit values: `write_mask_png` writes ``round(mask * 255)``, so a soft mask
comes back from `read_mask_png` as k/255, within 1/510 of the original; 0 and 1 are exact, and a
mask that already holds k/255 values round-trips exactly.

Two ways to read an image, chosen by ``channel``:
- ``channel=None`` (the mask canvas): the alpha channel if the image has one that is not fully
  opaque (transparent = 0), else the greyscale (luma) values;
- ``channel="red" | "green" | "blue" | "alpha"``: ComfyUI's ``LoadImageMask``: that channel / 255,
  except alpha, which it inverts (mask = 1 - A/255).
"""
from __future__ import annotations

import io
import os

import numpy as np
import torch
from PIL import Image

CHANNELS = ("alpha", "red", "green", "blue")
_BANDS = {"alpha": "A", "red": "R", "green": "G", "blue": "B"}


def open_image(source):
    """A PIL image from a path, image bytes or a PIL image; ``None`` for anything else (an array)."""
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return Image.open(io.BytesIO(bytes(source)))
    if isinstance(source, (str, os.PathLike)):
        return Image.open(source)
    return None


def read_mask_png(source, channel=None) -> np.ndarray:
    """A float32 mask in [0, 1] from a PNG (path, bytes or PIL image) or a 2-D array/tensor.

    ``channel=None``: alpha if present and not fully opaque, else greyscale, divided by the
    format's maximum (255, or 65535 for 16-bit). Arrays: bool, integer (uint8 / 255, uint16 /
    65535) or float in [0, 1]. ``channel`` in `CHANNELS`: ``LoadImageMask``'s reading of an 8-bit
    image; an image without that channel raises (ComfyUI would give an empty 64x64 mask).
    """
    image = open_image(source)
    if channel is not None:
        if image is None:
            raise ValueError(f"mask: a channel ({channel!r}) can only be read from an image")
        return _read_channel(image, channel)
    if image is not None:
        if "A" in image.getbands() and image.getchannel("A").getextrema()[0] < 255:
            array = np.asarray(image.getchannel("A"))
        elif image.mode in ("I;16", "I;16B", "I;16L", "I", "F", "1", "L"):
            array = np.asarray(image)
        else:
            array = np.asarray(image.convert("L"))
        if image.mode.startswith("I;16"):
            array = array.astype(np.uint16)
    else:
        array = source.numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
    array = np.squeeze(array)
    if array.ndim != 2:
        raise ValueError(f"mask: expected a 2-D (greyscale) image or array, got shape {array.shape}")
    if array.dtype == bool:
        return array.astype(np.float32)
    if np.issubdtype(array.dtype, np.integer):
        top = 65535 if array.dtype.itemsize >= 2 and array.max() > 255 else 255
        return (array.astype(np.float32) / top).clip(0, 1)
    array = array.astype(np.float32)
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ValueError("mask: expected float values in [0, 1]")
    return array


def _read_channel(image, channel) -> np.ndarray:
    if channel not in CHANNELS:
        raise ValueError(f"channel: unknown value {channel!r}; accepted: {', '.join(CHANNELS)}")
    if image.mode in ("P", "PA"):
        image = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    band = _BANDS[channel]
    if image.mode not in ("RGB", "RGBA", "LA") or band not in image.getbands():
        raise ValueError(f"mask: the {image.mode} image has no 8-bit {channel} channel "
                         "(ComfyUI's LoadImageMask would give an empty 64x64 mask)")
    value = np.asarray(image.getchannel(band)).astype(np.float32) / 255
    return 1 - value if channel == "alpha" else value


def write_mask_png(mask, mode: str = "L") -> bytes:
    """PNG bytes of ``round(mask * 255)``: greyscale (``mode="L"``) or grey in R, G and B
    (``mode="RGB"``, for readers that pick a colour channel, such as ``LoadImageMask``)."""
    array = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    array = np.squeeze(array).astype(np.float32)
    if array.ndim != 2 or not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise ValueError(f"mask: expected a 2-D array with values in [0, 1], got shape {array.shape}")
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode: expected 'L' or 'RGB', got {mode!r}")
    grey = Image.fromarray((array * 255).round().astype(np.uint8))
    buffer = io.BytesIO()
    (grey if mode == "L" else grey.convert("RGB")).save(buffer, "PNG")
    return buffer.getvalue()
