"""Masks as images: the one reader and the one writer of every mask PNG the package handles.

Masks are stored as 8-bit values: `write_mask_png` writes ``round(mask * 255)``, so a soft mask
comes back from `read_mask_png` as k/255, within 1/510 of the original; 0 and 1 are exact, and a
mask that already holds k/255 values round-trips exactly.

Two ways to read an image, chosen by ``channel``:
- ``channel=None`` (the mask canvas): the alpha channel if the image has one that is not fully
  opaque (transparent = 0), else the greyscale (luma) values;
- ``channel="red" | "green" | "blue" | "alpha"``: ComfyUI's ``LoadImageMask``: that channel / 255,
  except alpha, which it inverts (mask = 1 - A/255).

Masks open as PNG only (``formats=["PNG"]``: a file of another format named ``.png`` is refused,
never handed to another decoder such as Ghostscript). The size is checked from the header before
any pixel is decoded: against ``size`` (the image size the latent implies) when the caller knows
it, else against `MAX_PIXELS`. Pillow's own decompression-bomb guard stays on as well.
"""
from __future__ import annotations

import io
import os
import warnings

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

CHANNELS = ("alpha", "red", "green", "blue")
_BANDS = {"alpha": "A", "red": "R", "green": "G", "blue": "B"}
MASK_FORMATS = ("PNG",)
# what `open_image` decodes for display (backgrounds): raster formats Pillow decodes itself
DISPLAY_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
SIGNATURE = ("Software", "regional_widgets")  # a tEXt chunk in every PNG written here
MAX_PIXELS = 4096 * 4096  # an image with no expected size may have at most this many pixels


def open_image(source, formats=DISPLAY_FORMATS, max_pixels=MAX_PIXELS, size=None, what="image"):
    """A PIL image (header read, pixels not yet decoded) from a path, image bytes, a binary file
    object or a PIL image; ``None`` for anything else (an array).

    Only ``formats`` are tried. ``size`` (``(width, height)``): the image must have exactly this
    size; otherwise at most ``max_pixels`` pixels. Both are checked before decoding (ValueError
    starting with ``what``).
    """
    if isinstance(source, Image.Image):
        image = source
    elif isinstance(source, (bytes, bytearray, memoryview, str, os.PathLike)) or hasattr(source, "read"):
        if isinstance(source, (bytes, bytearray, memoryview)):
            source = io.BytesIO(bytes(source))
        try:
            with warnings.catch_warnings():
                if (max_pixels if size is None else size[0] * size[1]) <= (Image.MAX_IMAGE_PIXELS or 0):
                    # our own, lower bound refuses it below: Pillow's warning would only be noise
                    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(source, formats=list(formats))
        except Image.DecompressionBombError as err:
            raise ValueError(f"{what}: refused by Pillow's decompression-bomb guard ({err})") from None
        except Image.UnidentifiedImageError:
            raise ValueError(f"{what}: not a {' or '.join(formats)} image") from None
    else:
        return None
    width, height = image.size
    if size is not None and (width, height) != tuple(size):
        raise ValueError(f"{what}: the image is {width}x{height} but the latent implies {size[0]}x{size[1]} "
                         "(width x height); masks are not resized on import")
    if size is None and width * height > max_pixels:
        raise ValueError(f"{what}: the image is {width}x{height} = {width * height} pixels, over the limit of "
                         f"{max_pixels} pixels (regional_widgets.io.masks.MAX_PIXELS)")
    return image


def read_mask_png(source, channel=None, *, size=None, max_pixels=MAX_PIXELS) -> np.ndarray:
    """A float32 mask in [0, 1] from a PNG (path, bytes, binary file or PIL image) or a 2-D array/tensor.

    ``channel=None``: alpha if present and not fully opaque, else greyscale, divided by the
    format's maximum (255, or 65535 for 16-bit). Arrays: bool, integer (uint8 / 255, uint16 /
    65535) or float in [0, 1]. ``channel`` in `CHANNELS`: ``LoadImageMask``'s reading of an 8-bit
    image; an image without that channel raises (ComfyUI would give an empty 64x64 mask).
    ``size``/``max_pixels``: see `open_image` (checked before decoding).
    """
    image = open_image(source, MASK_FORMATS, max_pixels, size, "mask")
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


def written_by_us(file) -> bool:
    """Whether a PNG (binary file object) carries the text chunk `write_mask_png` writes."""
    try:
        image = Image.open(file, formats=list(MASK_FORMATS))
    except (OSError, ValueError):
        return False
    return image.info.get(SIGNATURE[0]) == SIGNATURE[1]


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
    info = PngInfo()
    info.add_text(*SIGNATURE)  # before the pixels: `written_by_us` reads it without decoding
    (grey if mode == "L" else grey.convert("RGB")).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()
