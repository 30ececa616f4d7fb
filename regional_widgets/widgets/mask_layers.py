"""What MaskCanvas draws on its layers, as functions: the mask overlay, grown outlines, the cursor,
image patches scaled to the display, and background pictures read and fitted to the image size."""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from ..colors import region_color, region_hex
from ..io.masks import open_image
from ..sampling import masks as mask_ops
from .pixels import brush_radius

DASH = [6, 4]


def put_rgba(layer, rgba, scale, x0=0, y0=0, clear=False):
    """Draw an RGBA image-resolution patch scaled to the display, pixels kept square."""
    layer.save()
    layer.image_smoothing_enabled = False
    layer.scale(scale)
    if clear:
        layer.clear_rect(x0, y0, rgba.shape[1], rgba.shape[0])
    layer.put_image_data(rgba, x0, y0)  # RGBA is sent as PNG (RGB would go as lossy JPEG)
    layer.restore()


def overlay_rgba(masks, active, opacity, box) -> np.ndarray:
    """The masks' ``box`` in their colours, composited in region order with ``active`` on top."""
    y0, y1, x0, x1 = box
    premultiplied = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
    alpha = np.zeros((y1 - y0, x1 - x0), np.float32)
    order = [j for j in range(1, len(masks) + 1) if j != active] + [active]
    for j in order:
        a = masks[j - 1][y0:y1, x0:x1] * np.float32(opacity)
        premultiplied *= (1 - a)[..., None]
        premultiplied += a[..., None] * (np.asarray(region_color(j), np.float32) / 255)
        alpha = a + alpha * (1 - a)
    rgb = premultiplied / np.maximum(alpha, 1e-6)[..., None]
    return (np.dstack([rgb, alpha]) * 255).round().astype(np.uint8)


def stroke_outlines(layer, outlines, scale):
    """Dashed outlines, one ``(N, 2, 2)`` segment array per region (1-based order), in its colour."""
    layer.save()
    layer.set_line_dash(DASH)
    layer.line_width = 2
    for j, segments in enumerate(outlines, 1):
        if len(segments):
            layer.stroke_style = region_hex(j)
            layer.stroke_line_segments(segments * scale)
    layer.restore()


def grown_mask(mask, overlap_factor, swap_quirk) -> np.ndarray:
    """A mask as the sampler grows it (`masks.grow`), at the mask's size, boolean."""
    mask = torch.from_numpy(mask)
    grown = mask_ops.grow(mask, overlap_factor, swap_quirk=swap_quirk)
    if grown.shape != mask.shape:  # the faithful W/H swap: back to image size
        grown = mask_ops.resize(grown, *mask.shape).round()
    return grown.numpy() > 0.5


def stroke_cursor(layer, scale, cursor, preview, tool, brush_size, colour):
    """The brush circle or crosshair at ``cursor``, or the outline of the shape being drawn."""
    s = scale
    layer.line_width = 1.5
    layer.stroke_style = colour
    if preview is None and tool in ("brush", "eraser"):
        x, y = cursor
        layer.stroke_circle(x * s, y * s, brush_radius(brush_size) * s)
    elif preview is None:
        x, y = cursor
        layer.stroke_line(x * s - 6, y * s, x * s + 6, y * s)
        layer.stroke_line(x * s, y * s - 6, x * s, y * s + 6)
    elif preview["kind"] == "rectangle":
        layer.stroke_rect(*(v * s for v in preview["box"]))
    elif preview["kind"] == "ellipse":
        x, y, w, h = (v * s for v in preview["box"])
        layer.begin_path()
        layer.ellipse(x + w / 2, y + h / 2, w / 2, h / 2, 0, 0, 2 * math.pi)
        layer.stroke()
    else:
        points = np.asarray(preview["points"] + [cursor or preview["last"]], np.float64) * s
        if len(points) >= 2:
            layer.stroke_lines(points)


def read_rgb(source) -> np.ndarray:
    """A background picture as uint8 ``(H, W, 3)``: a path, bytes, PIL image or array (see load_background)."""
    image = open_image(source)
    if image is not None:
        return np.asarray(image.convert("RGB"))
    array = source.detach().cpu().numpy() if isinstance(source, torch.Tensor) else np.asarray(source)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"background: expected HxW, HxWx3 or HxWx4, got shape {array.shape}")
    array = array[..., :3]
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(array)


def fit_rgb(rgb, shape) -> np.ndarray:
    """``rgb`` resized (bilinear) to ``shape`` (H, W) unless it has that size already."""
    if rgb.shape[:2] == tuple(shape):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((shape[1], shape[0]), Image.BILINEAR))
