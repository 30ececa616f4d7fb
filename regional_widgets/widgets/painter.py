"""The mask painter: tools and undo over float32 masks, in image coordinates, numpy only.

The painter owns one float32 array per region (values in [0, 1], image resolution) and knows
nothing of canvases or sessions: `MaskCanvas` feeds it pointer events and draws what it changed.
Which pixels each tool sets is `pixels` (the rules the tests check exactly).

An edit is recorded as a `Diff`: the bounding box of the changed pixels with their values
before and after, so undo and redo restore arrays exactly and cost what the edit touched.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .pixels import (bounding_box, brush_radius, connected_component, ellipse_pixels, pixel_box,
                     polygon_pixels, segment_box, segment_disc)

TOOLS = ("brush", "eraser", "rectangle", "ellipse", "polygon", "fill")


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
        box = bounding_box(changed)
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
        cy0, cy1, cx0, cx1 = bounding_box(changed)
        diff = Diff(region, y0 + cy0, x0 + cx0, before[cy0:cy1, cx0:cx1].copy(), after[cy0:cy1, cx0:cx1].copy())
        self._push(diff)
        return diff


def _dedupe(points):
    out = [points[0]]
    for p in points[1:]:
        if p != out[-1]:
            out.append(p)
    return out
