"""ComfyUI's PNGs: the workflow text chunks (``prompt``: the API graph, ``workflow``: the editor graph).

Read: PNG only (Pillow with ``formats=["PNG"]``), the bytes bounded by the caller (`paths`), the
image size checked from the header before anything is decoded, each chunk at most
`MAX_CHUNK_CHARS` characters and parsed with the JSON depth bound of `paths.parse_json`. The text
chunks are read from before the pixel data (where ComfyUI writes them); pixels are never decoded.
Pillow's own text bounds stay on: a compressed (zTXt/iTXt) chunk inflating past
``PngImagePlugin.MAX_TEXT_CHUNK`` (1 MiB) or text over ``MAX_TEXT_MEMORY`` (64 MiB) in all is refused.

Write: the image (8-bit RGB) with ``prompt`` and ``workflow`` as ``tEXt`` chunks before the pixels,
plus our ``Software`` signature (`masks.SIGNATURE`), so an existing file can be told ours.
"""
from __future__ import annotations

import io
import json
import struct
import warnings
import zlib

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from .masks import MAX_PIXELS, SIGNATURE
from .paths import parse_json

CHUNKS = ("prompt", "workflow")  # read in this order: the API graph first
MAX_CHUNK_CHARS = 32 * 2**20  # as io.comfy.MAX_WORKFLOW_BYTES
MAX_PNG_BYTES = 128 * 2**20
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class ComfyPngError(ValueError):
    """A PNG whose workflow cannot be read: says which chunk and why."""


def is_png(data: bytes) -> bool:
    return data[:8] == PNG_MAGIC


def read_chunks(data: bytes, what: str = "PNG") -> dict:
    """``{"prompt": graph or None, "workflow": graph or None}`` from PNG bytes (JSON parsed, bounded)."""
    if len(data) > MAX_PNG_BYTES:
        raise ComfyPngError(f"{what}: {len(data)} bytes, over the limit of {MAX_PNG_BYTES} bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own bound is lower
            image = Image.open(io.BytesIO(data), formats=["PNG"])
            width, height = image.size
            if width * height > MAX_PIXELS * 16:
                raise ComfyPngError(f"{what}: the image is {width}x{height}, too large to be a workflow image")
            info = dict(image.info)  # text chunks before the pixel data; pixels not decoded
    except ComfyPngError:
        raise
    except Image.UnidentifiedImageError:
        if is_png(data):  # the signature is there: a chunk Pillow refuses (a bad CRC, a broken header)
            raise ComfyPngError(f"{what}: a damaged PNG (Pillow cannot read its chunks)") from None
        raise ComfyPngError(f"{what}: not a PNG image") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error) as err:
        # a broken chunk, a bad CRC, a zTXt/iTXt that inflates past Pillow's text limit
        raise ComfyPngError(f"{what}: a damaged PNG ({type(err).__name__}: {err})") from None
    out = {}
    for name in CHUNKS:
        text = info.get(name)
        if text is None:
            out[name] = None
            continue
        if not isinstance(text, str):
            raise ComfyPngError(f"{what}: text chunk {name!r} is not text")
        if len(text) > MAX_CHUNK_CHARS:
            raise ComfyPngError(f"{what}: text chunk {name!r} holds {len(text)} characters, over the limit of "
                                f"{MAX_CHUNK_CHARS}")
        try:
            out[name] = parse_json(text.encode("utf-8", "surrogatepass"))
        except (ValueError, RecursionError, UnicodeError) as err:
            raise ComfyPngError(f"{what}: text chunk {name!r} cannot be read as JSON ({err})") from None
    return out


def png_bytes(image, chunks: dict) -> bytes:
    """PNG bytes of ``image`` (``H x W x 3`` floats in [0, 1] or uint8) with ``chunks`` as JSON tEXt chunks."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array.astype(np.float64), 0, 1) * 255).round().astype(np.uint8)
    info = PngInfo()
    info.add_text(*SIGNATURE)
    for name, graph in chunks.items():
        info.add_text(name, json.dumps(graph))
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()

