"""The mask painter: tools and undo over float32 masks, in image coordinates, numpy only.

The painter owns one float32 array per region (values in [0, 1], image resolution) and knows
nothing of canvases or sessions: `MaskCanvas` feeds it pointer events and draws what it changed.
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

An edit is recorded as a `Diff`: the bounding box of the changed pixels with their values
before and after, so undo and redo restore arrays exactly and cost what the edit touched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

TOOLS = ("brush", "eraser", "rectangle", "ellipse", "polygon", "fill")
_TIE = 1e-9  # distances are compared with this slack so ties do not depend on rounding
_MIN_RADIUS = math.sqrt(2) / 2


@dataclass(frozen=True)
class Diff:
    """One edit of one region: the changed box ``[y0:y0+h, x0:x0+w]`` before and after."""

    region: int  # 1-based
    y0: int
    x0: int
    before: np.ndarray
    after: np.ndarray

    @property
    def box(self) -> tuple:
        """``(y0, y1, x0, x1)``, half-open."""
        h, w = self.before.shape
        return self.y0, self.y0 + h, self.x0, self.x0 + w

    @property
    def nbytes(self) -> int:
        return self.before.nbytes + self.after.nbytes


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


def _runs(candidates):
    """Horizontal runs of True: (rows, starts, ends), sorted by row then start; ends exclusive."""
    h, w = candidates.shape
    padded = np.zeros((h, w + 2), dtype=np.int8)
    padded[:, 1:-1] = candidates
    d = np.diff(padded, axis=1)
    rows, starts = np.nonzero(d == 1)
    _, ends = np.nonzero(d == -1)
    return rows, starts, ends


def connected_component(candidates, i, j) -> tuple:
    """``(box, inside)``: the 4-connected True pixels holding (i, j), found run by run."""
    rows, starts, ends = _runs(candidates)
    first = np.searchsorted(rows, np.arange(candidates.shape[0] + 1))
    lo, hi = first[i], first[i + 1]
    k0 = lo + int(np.searchsorted(starts[lo:hi], j, side="right")) - 1
    seen = np.zeros(len(rows), dtype=bool)
    seen[k0] = True
    stack = [k0]
    while stack:
        k = stack.pop()
        r, s, e = rows[k], starts[k], ends[k]
        for rr in (r - 1, r + 1):
            if not 0 <= rr < candidates.shape[0]:
                continue
            lo, hi = first[rr], first[rr + 1]
            # runs of row rr overlapping [s, e): start < e and end > s
            a = lo + int(np.searchsorted(ends[lo:hi], s, side="right"))
            b = lo + int(np.searchsorted(starts[lo:hi], e, side="left"))
            for kk in range(a, b):
                if not seen[kk]:
                    seen[kk] = True
                    stack.append(kk)
    ks = np.flatnonzero(seen)
    box = (int(rows[ks].min()), int(rows[ks].max()) + 1, int(starts[ks].min()), int(ends[ks].max()))
    inside = np.zeros((box[1] - box[0], box[3] - box[2]), dtype=bool)
    for k in ks:
        inside[rows[k] - box[0], starts[k] - box[2]:ends[k] - box[2]] = True
    return box, inside


def _union(box, other):
    if box is None:
        return other
    if other is None:
        return box
    return min(box[0], other[0]), max(box[1], other[1]), min(box[2], other[2]), max(box[3], other[3])


class Painter:
    """Masks plus tools plus undo. Regions are 1-based; pointer positions are image coordinates.

    ``on_down/on_move/on_up`` return the box ``(y0, y1, x0, x1)`` of pixels changed by that
    event (or None) for incremental drawing; ``on_up`` returns the committed `Diff` (or None)
    and leaves it on the undo stack.
    """

    def __init__(self, masks, *, tool="brush", brush_size=4, active=1, history_bytes=64 * 2**20,
                 close_distance=1.5):
        self.tool = tool
        self.brush_size = brush_size
        self.active = active
        self.history_bytes = history_bytes
        self.close_distance = close_distance  # image pixels: a click this near the first vertex closes
        self.reset(masks)

    # ---- masks -----------------------------------------------------------------------------------

    def reset(self, masks):
        """New masks (all one shape): forgets the history and any stroke in progress."""
        self.masks = [np.array(m, dtype=np.float32, copy=True) for m in masks]
        if len({m.shape for m in self.masks}) > 1:
            raise ValueError(f"masks: expected one shape, got {sorted({m.shape for m in self.masks})}")
        self.versions = [0] * len(self.masks)
        self._undo, self._redo = [], []
        self._stroke = None

    @property
    def shape(self) -> Optional[tuple]:
        return self.masks[0].shape if self.masks else None

    def mask(self, region: int) -> np.ndarray:
        return self.masks[region - 1]

    def set_mask(self, region: int, mask):
        """A change made elsewhere: replace the mask and drop that region's undo and redo entries."""
        mask = np.array(mask, dtype=np.float32, copy=True)
        if mask.shape != self.shape:
            raise ValueError(f"mask: expected shape {self.shape}, got {mask.shape}")
        if self._stroke is not None and self._stroke["region"] == region:
            self._stroke = None  # its snapshot is of the replaced mask
        self.masks[region - 1] = mask
        self.versions[region - 1] += 1
        self._undo = [d for d in self._undo if d.region != region]
        self._redo = [d for d in self._redo if d.region != region]

    # ---- whole-region edits ------------------------------------------------------------------------

    def edit(self, region: int, new) -> Optional[Diff]:
        """Replace a region's mask with ``new`` as one undoable edit (ends any stroke in progress)."""
        self.cancel()
        new = np.asarray(new, dtype=np.float32)
        old = self.masks[region - 1]
        if new.shape != old.shape:
            raise ValueError(f"mask: expected shape {old.shape}, got {new.shape}")
        changed = old != new
        if not changed.any():
            return None
        box = _changed_box(changed)
        y0, y1, x0, x1 = box
        diff = Diff(region, y0, x0, old[y0:y1, x0:x1].copy(), new[y0:y1, x0:x1].copy())
        self._apply(diff, diff.after)
        self._push(diff)
        return diff

    def clear(self, region: int) -> Optional[Diff]:
        return self.edit(region, np.zeros(self.shape, np.float32))

    def invert(self, region: int) -> Optional[Diff]:
        """``1 - mask``: soft values are inverted too."""
        return self.edit(region, 1.0 - self.masks[region - 1])

    # ---- undo ------------------------------------------------------------------------------------

    @property
    def can_undo(self) -> bool:
        return bool(self._undo)

    @property
    def can_redo(self) -> bool:
        return bool(self._redo)

    def undo(self) -> Optional[Diff]:
        if self._stroke is not None:
            self.cancel()
        if not self._undo:
            return None
        diff = self._undo.pop()
        self._apply(diff, diff.before)
        self._redo.append(diff)
        return diff

    def redo(self) -> Optional[Diff]:
        if self._stroke is not None:
            self.cancel()
        if not self._redo:
            return None
        diff = self._redo.pop()
        self._apply(diff, diff.after)
        self._undo.append(diff)
        return diff

    def _apply(self, diff, values):
        y0, y1, x0, x1 = diff.box
        self.masks[diff.region - 1][y0:y1, x0:x1] = values
        self.versions[diff.region - 1] += 1

    def _push(self, diff):
        self._undo.append(diff)
        self._redo.clear()
        total = sum(d.nbytes for d in self._undo)
        while len(self._undo) > 1 and total > self.history_bytes:
            total -= self._undo.pop(0).nbytes

    # ---- pointer events ------------------------------------------------------------------------

    @property
    def drawing(self) -> bool:
        """True between a press and its release (and while a clicked polygon is open)."""
        return self._stroke is not None

    @property
    def pressed(self) -> bool:
        return self._stroke is not None and self._stroke["pressed"]

    def cancel(self):
        """Abandon the stroke in progress, restoring what it painted."""
        stroke, self._stroke = self._stroke, None
        if stroke is not None and stroke["box"] is not None:
            y0, y1, x0, x1 = stroke["box"]
            self.masks[stroke["region"] - 1][y0:y1, x0:x1] = stroke["before"][y0:y1, x0:x1]
            self.versions[stroke["region"] - 1] += 1
            return stroke["box"]
        return None

    def on_down(self, x, y) -> Optional[tuple]:
        if not self.masks or not 1 <= self.active <= len(self.masks):
            return None
        if self.tool not in TOOLS:
            raise ValueError(f"tool: unknown {self.tool!r}; accepted: {', '.join(TOOLS)}")
        p = (float(x), float(y))
        stroke = self._stroke
        if stroke is not None and stroke["tool"] == "polygon" and not stroke["pressed"]:
            stroke.update(pressed=True, down=p, last=p, moved=False)  # the next click of an open polygon
            stroke["points"].append(p)
            return None
        self._stroke = {"tool": self.tool, "region": self.active, "before": self.masks[self.active - 1].copy(),
                        "box": None, "start": p, "last": p, "points": [p], "pressed": True, "down": p,
                        "moved": False}
        if self.tool in ("brush", "eraser"):
            return self._dab(p, p)
        if self.tool == "fill":
            return self._fill(p)
        return None

    def on_move(self, x, y) -> Optional[tuple]:
        stroke = self._stroke
        if stroke is None or not stroke["pressed"]:
            return None
        p = (float(x), float(y))
        a, stroke["last"] = stroke["last"], p
        if stroke["tool"] in ("brush", "eraser"):
            return self._dab(a, p)
        if stroke["tool"] == "polygon" and math.dist(p, stroke["down"]) >= 1.0:
            stroke["moved"] = True
            stroke["points"].append(p)
        return None

    def on_up(self, x, y) -> Optional[Diff]:
        """Release: finishes brush, eraser, shape, fill and lasso strokes (see the module doc)."""
        stroke = self._stroke
        if stroke is None or not stroke["pressed"]:
            return None
        self.on_move(x, y)
        stroke["pressed"] = False
        tool, p = stroke["tool"], stroke["last"]
        if tool in ("rectangle", "ellipse"):
            self._shape(stroke["start"], p)
        elif tool == "polygon":
            points = stroke["points"]
            if not stroke["moved"] and len(points) > 1:
                if len(points) >= 4 and math.dist(p, points[0]) <= self.close_distance:
                    points.pop()  # the closing click is the first vertex again
                    return self.finish_polygon()
                return None  # a vertex added; the polygon stays open
            if not stroke["moved"]:
                return None  # first click of a polygon
            return self.finish_polygon()
        return self._commit()

    def finish_polygon(self) -> Optional[Diff]:
        """Fill the open (clicked or lassoed) polygon and commit it."""
        stroke = self._stroke
        if stroke is None or stroke["tool"] != "polygon":
            return None
        box, inside = polygon_pixels(self.shape, _dedupe(stroke["points"]))
        if box is not None:
            self._set(box, inside, 1.0)
        return self._commit()

    def preview(self) -> Optional[dict]:
        """What the cursor layer should outline for the stroke in progress (image coordinates)."""
        stroke = self._stroke
        if stroke is None:
            return None
        tool = stroke["tool"]
        if tool in ("rectangle", "ellipse"):
            a, b = stroke["start"], stroke["last"]
            j0, j1 = sorted((math.floor(a[0]), math.floor(b[0])))
            i0, i1 = sorted((math.floor(a[1]), math.floor(b[1])))
            return {"kind": tool, "box": (j0, i0, j1 + 1 - j0, i1 + 1 - i0)}  # x, y, width, height
        if tool == "polygon":
            return {"kind": "polygon", "points": list(stroke["points"]), "last": stroke["last"]}
        return None

    # ---- tool bodies -----------------------------------------------------------------------------

    def _value(self, tool):
        return 0.0 if tool == "eraser" else 1.0

    def _set(self, box, where, value):
        y0, y1, x0, x1 = box
        self.masks[self._stroke["region"] - 1][y0:y1, x0:x1][where] = value
        self._stroke["box"] = _union(self._stroke["box"], box)
        self.versions[self._stroke["region"] - 1] += 1
        return box

    def _dab(self, a, b):
        radius = brush_radius(self.brush_size)
        box = segment_box(self.shape, a, b, radius)
        if box is None:
            return None
        return self._set(box, segment_disc(box, a, b, radius), self._value(self._stroke["tool"]))

    def _fill(self, p):
        h, w = self.shape
        i, j = math.floor(p[1]), math.floor(p[0])
        if not (0 <= i < h and 0 <= j < w):
            return None
        mask = self.masks[self._stroke["region"] - 1]
        if mask[i, j] == 1.0:
            return None
        box, inside = connected_component(mask == mask[i, j], i, j)
        return self._set(box, inside, 1.0)

    def _shape(self, a, b):
        if self._stroke["tool"] == "rectangle":
            box = pixel_box(self.shape, a, b)
            inside = None if box is None else np.ones((box[1] - box[0], box[3] - box[2]), bool)
        else:
            box, inside = ellipse_pixels(self.shape, a, b)
        return None if box is None else self._set(box, inside, 1.0)

    def _commit(self) -> Optional[Diff]:
        stroke, self._stroke = self._stroke, None
        if stroke is None or stroke["box"] is None:
            return None
        y0, y1, x0, x1 = stroke["box"]
        region = stroke["region"]
        before, after = stroke["before"][y0:y1, x0:x1], self.masks[region - 1][y0:y1, x0:x1]
        changed = before != after
        if not changed.any():
            return None
        cy0, cy1, cx0, cx1 = _changed_box(changed)
        diff = Diff(region, y0 + cy0, x0 + cx0, before[cy0:cy1, cx0:cx1].copy(), after[cy0:cy1, cx0:cx1].copy())
        self._push(diff)
        return diff


def _changed_box(changed) -> tuple:
    rows = np.flatnonzero(changed.any(axis=1))
    cols = np.flatnonzero(changed.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def _dedupe(points):
    out = [points[0]]
    for p in points[1:]:
        if p != out[-1]:
            out.append(p)
    return out


def outline_segments(inside) -> np.ndarray:
    """Boundary of a boolean mask as ``(N, 2, 2)`` line segments in image coordinates.

    Each segment is a maximal straight run of pixel edges between an inside and an outside pixel
    (the image border counts as outside), so a rectangle gives 4 segments.
    """
    inside = np.asarray(inside, dtype=bool)
    padded = np.pad(inside, 1)
    horizontal = padded[:-1, 1:-1] != padded[1:, 1:-1]  # (H+1, W): edge along y = i
    vertical = padded[1:-1, :-1] != padded[1:-1, 1:]  # (H, W+1): edge along x = j
    rows, starts, ends = _runs(horizontal)
    h_segs = np.stack([np.stack([starts, rows], 1), np.stack([ends, rows], 1)], 1)
    cols, starts, ends = _runs(vertical.T)
    v_segs = np.stack([np.stack([cols, starts], 1), np.stack([cols, ends], 1)], 1)
    return np.concatenate([h_segs, v_segs]).astype(np.float64)
