"""The mask painter's pixel rules: which pixels each tool sets, as boolean boxes, numpy and scipy.

Coordinates are continuous image coordinates: pixel (row i, column j) covers [j, j+1) x [i, i+1)
and its centre is (j + 0.5, i + 0.5). Pixel rules, which the tests check exactly:

- brush / eraser: a pixel is set (to 1, or 0 for the eraser) when its centre lies within
  ``r = max(brush_size / 2, sqrt(2) / 2)`` of the segment between two consecutive pointer
  positions (ties included). The sqrt(2)/2 floor makes the pixel under the pointer, and every
  pixel a segment crosses, always painted, so a 1-pixel brush leaves no gaps.
- rectangle: the pixels from the one under the press to the one under the release, inclusive.
- ellipse: the ellipse inscribed in that rectangle of pixels (its edges, not its centres);
  a pixel is set when its centre is inside or on it.
- polygon: pixels whose centre is inside the polygon (even-odd rule, a centre exactly on a
  horizontal edge counts with the half-open crossing rule). Drag for a lasso (filled on release),
  or click vertex by vertex and close by clicking near the first vertex or with `finish_polygon`.
- fill: the 4-connected pixels whose value *equals* the clicked pixel's value in the active
  mask become 1 (a bucket fill of the active mask alone; other regions do not bound it).

"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
from scipy import ndimage

_TIE = 1e-9  # distances are compared with this slack so ties do not depend on rounding
_MIN_RADIUS = math.sqrt(2) / 2


def brush_radius(brush_size: float) -> float:
    return max(brush_size / 2.0, _MIN_RADIUS)


def segment_box(shape, a, b, radius) -> Optional[tuple]:
    """Pixel box ``(y0, y1, x0, x1)`` that can hold centres within ``radius`` of segment ab."""
    h, w = shape
    x0 = max(int(math.floor(min(a[0], b[0]) - radius)), 0)
    x1 = min(int(math.ceil(max(a[0], b[0]) + radius)) + 1, w)
    y0 = max(int(math.floor(min(a[1], b[1]) - radius)), 0)
    y1 = min(int(math.ceil(max(a[1], b[1]) + radius)) + 1, h)
    return (y0, y1, x0, x1) if x0 < x1 and y0 < y1 else None


def segment_disc(box, a, b, radius) -> np.ndarray:
    """Boolean ``box``-shaped array: pixel centres within ``radius`` of segment ab."""
    y0, y1, x0, x1 = box
    cx = np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5
    cy = np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5
    ax, ay = float(a[0]), float(a[1])
    dx, dy = float(b[0]) - ax, float(b[1]) - ay
    length2 = dx * dx + dy * dy
    t = 0.0 if length2 == 0 else np.clip(((cx - ax) * dx + (cy - ay) * dy) / length2, 0.0, 1.0)
    ex, ey = cx - ax - t * dx, cy - ay - t * dy
    return ex * ex + ey * ey <= radius * radius + _TIE


def pixel_box(shape, a, b) -> Optional[tuple]:
    """``(y0, y1, x0, x1)`` of the pixels from the one under a to the one under b, clipped."""
    h, w = shape
    j0, j1 = sorted((math.floor(a[0]), math.floor(b[0])))
    i0, i1 = sorted((math.floor(a[1]), math.floor(b[1])))
    box = (max(i0, 0), min(i1 + 1, h), max(j0, 0), min(j1 + 1, w))
    return box if box[0] < box[1] and box[2] < box[3] else None


def ellipse_pixels(shape, a, b) -> tuple:
    """``(box, inside)``: the ellipse inscribed in the unclipped pixel box of a and b."""
    j0, j1 = sorted((math.floor(a[0]), math.floor(b[0])))
    i0, i1 = sorted((math.floor(a[1]), math.floor(b[1])))
    box = pixel_box(shape, a, b)
    if box is None:
        return None, None
    cx, cy = (j0 + j1 + 1) / 2, (i0 + i1 + 1) / 2
    rx, ry = (j1 + 1 - j0) / 2, (i1 + 1 - i0) / 2
    y0, y1, x0, x1 = box
    u = (np.arange(x0, x1, dtype=np.float64)[None, :] + 0.5 - cx) / rx
    v = (np.arange(y0, y1, dtype=np.float64)[:, None] + 0.5 - cy) / ry
    return box, u * u + v * v <= 1 + _TIE


def polygon_pixels(shape, points) -> tuple:
    """``(box, inside)``: pixel centres inside the closed polygon (even-odd rule)."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    h, w = shape
    box = (max(int(math.floor(pts[:, 1].min())), 0), min(int(math.ceil(pts[:, 1].max())) + 1, h),
           max(int(math.floor(pts[:, 0].min())), 0), min(int(math.ceil(pts[:, 0].max())) + 1, w))
    if len(pts) < 3 or box[0] >= box[1] or box[2] >= box[3]:
        return None, None
    y0, y1, x0, x1 = box
    xa, ya = pts[:, 0], pts[:, 1]
    xb, yb = np.roll(xa, -1), np.roll(ya, -1)
    cx = np.arange(x0, x1, dtype=np.float64) + 0.5
    inside = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    for row, yc in enumerate(np.arange(y0, y1, dtype=np.float64) + 0.5):
        crosses = (ya <= yc) != (yb <= yc)  # half-open: a vertex on the row counts once
        if not crosses.any():
            continue
        xs = xa[crosses] + (yc - ya[crosses]) * (xb[crosses] - xa[crosses]) / (yb[crosses] - ya[crosses])
        inside[row] = np.searchsorted(np.sort(xs), cx) % 2 == 1
    return box, inside


def horizontal_runs(candidates):
    """Horizontal runs of True: (rows, starts, ends), sorted by row then start; ends exclusive."""
    h, w = candidates.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = candidates
    d = np.diff(padded, axis=1)
    rows, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)
    return rows, starts, ends


def connected_component(candidates, i, j) -> tuple:
    """``(box, inside)``: the 4-connected True pixels holding (i, j) (``scipy.ndimage.label``)."""
    labels, _ = ndimage.label(candidates)  # the default structure: 4-connected in 2-D
    inside = labels == labels[i, j]
    box = bounding_box(inside)
    return box, inside[box[0]:box[1], box[2]:box[3]]


def bounding_box(changed) -> tuple:
    """``(y0, y1, x0, x1)``: the bounding box of the True pixels (there must be one)."""
    rows = np.flatnonzero(changed.any(axis=1))
    cols = np.flatnonzero(changed.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def outline_segments(inside) -> np.ndarray:
    """Boundary of a boolean mask as ``(N, 2, 2)`` line segments in image coordinates.

    Each segment is a maximal straight run of pixel edges between an inside and an outside pixel
    (the image border counts as outside), so a rectangle gives 4 segments.
    """
    inside = np.asarray(inside, dtype=bool)
    padded = np.pad(inside, 1)
    horizontal = padded[:-1, 1:-1] != padded[1:, 1:-1]  # (H+1, W): edge along y = i
    vertical = padded[1:-1, :-1] != padded[1:-1, 1:]  # (H, W+1): edge along x = j
    rows, starts, ends = horizontal_runs(horizontal)
    h_segs = np.stack([np.stack([starts, rows], 1), np.stack([ends, rows], 1)], 1)
    cols, starts, ends = horizontal_runs(vertical.T)
    v_segs = np.stack([np.stack([cols, starts], 1), np.stack([cols, ends], 1)], 1)
    return np.concatenate([h_segs, v_segs]).astype(np.float64)
