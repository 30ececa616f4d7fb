"""MaskCanvas's input: mouse and keyboard events from the front end (and `gesture`, the same from
Python) turned into `Painter` strokes, with the changed box drawn at once.

A mixin of `MaskCanvas`: it uses the canvas's ``painter``, ``scale``, ``multicanvas``, ``toolbar``
and its drawing (``_held``, ``_draw_overlay``, ``_draw_cursor``, ``_render``) and ends an edit
with ``_finish`` (publish to the session, re-render).
"""
from __future__ import annotations

_TOOL_KEYS = {"b": "brush", "e": "eraser", "r": "rectangle", "o": "ellipse", "p": "polygon", "f": "fill"}


class MaskInput:
    """Pointer and key handlers of `MaskCanvas` (see there for the keys)."""

    def _hook_events(self):
        mc = self.multicanvas
        mc.on_mouse_down(self._on_down)
        mc.on_mouse_move(self._on_move)
        mc.on_mouse_up(self._on_up)
        mc.on_mouse_out(self._on_out)
        mc.on_key_down(self._on_key)
        mc.on_client_ready(self.redraw)

    def _on_down(self, x, y):
        self._stroke(self.painter.on_down, x, y)

    def _on_move(self, x, y):
        self._stroke(self.painter.on_move, x, y)

    def _stroke(self, handler, x, y):
        """A press or a move: the painter's handler at image coordinates, the overlay it changed, the cursor."""
        self._cursor = (x / self.scale, y / self.scale)
        with self._held():
            box = handler(*self._cursor)
            if box is not None:
                self._draw_overlay(box)
            self._draw_cursor()

    def _on_up(self, x, y):
        self._cursor = (x / self.scale, y / self.scale)
        pressed = self.painter.pressed
        with self._held():
            diff = self.painter.on_up(*self._cursor)
            self._finish(diff, redraw=pressed)

    def _on_out(self, x, y):
        """Leaving the canvas ends a drag there (the release would not reach us)."""
        if self.painter.pressed and self.painter.tool != "polygon":
            self._on_up(x, y)
        self._cursor = None
        self._render(cursor=True)

    def _on_key(self, key, shift, ctrl, meta):
        command = ctrl or meta
        lower = key.lower()
        if command and lower == "z":
            self.redo() if shift else self.undo()
        elif command and lower == "y":
            self.redo()
        elif command:
            return
        elif len(key) == 1 and key in "123456789" and int(key) <= len(self.session.regions):
            self.active_region = int(key)
        elif lower in _TOOL_KEYS:
            self.tool = _TOOL_KEYS[lower]
        elif key == "[":
            self.brush_size = max(1, min(self.brush_size - 1, int(self.brush_size / 1.25)))
        elif key == "]":
            self.brush_size = min(self.toolbar.size_slider.max,
                                  max(self.brush_size + 1, int(round(self.brush_size * 1.25))))
        elif key == "Enter":
            self._finish(self.painter.finish_polygon())
        elif key == "Escape":
            self._cancel_stroke()
            self._render(cursor=True)

    def _cancel_stroke(self):
        if self.painter.drawing:
            box = self.painter.cancel()
            if box is not None and self._ready:
                self._render(overlay=True)

    def gesture(self, points, *, tool=None, region=None):
        """Paint as the mouse would, from Python: press at the first point (image pixels), move
        through the rest, release at the last. For notebooks that must run without a mouse."""
        if tool is not None:
            self.tool = tool
        if region is not None:
            self.active_region = int(region)
        points = [(float(x) * self.scale, float(y) * self.scale) for x, y in points]
        if not points:
            raise ValueError("points: expected at least one (x, y) point")
        self._on_down(*points[0])
        for point in points[1:]:
            self._on_move(*point)
        self._on_up(*points[-1])
