"""MaskCanvas: paint the session's region masks on an ipycanvas MultiCanvas.

Three layers: 0 the background (the session's decoded latent, or an image you load), 1 every
region's mask in its colour plus the grown masks as dashed outlines, 2 the brush cursor and shape
previews. The masks live in a `Painter` (numpy); the canvas is a view that is redrawn from them
and never read back. A drag draws only what each move changed; the release writes the active
region's new mask into the session (which forks the run) and re-renders the overlay. The toolbar is
`MaskToolbar`, linked to the canvas's traits; what each layer shows is drawn by `mask_layers`; mouse
and key events become painter strokes in `mask_input`.
"""
from __future__ import annotations

import math
from contextlib import contextmanager

import ipywidgets as widgets
import numpy as np
import torch
from ipycanvas import MultiCanvas, hold_canvas
from traitlets import Bool, Enum, Float, Int, TraitError, observe, validate

from ..io.masks import read_mask_png, write_mask_png
from ..models.base import preview_rgb
from ..sampling import masks as mask_ops
from .mask_input import MaskInput
from .mask_layers import (fit_rgb, grown_mask, overlay_rgba, put_rgba, read_rgb, stroke_cursor,
                          stroke_outlines)
from .mask_toolbar import MaskToolbar
from .painter import TOOLS, Painter
from .pixels import outline_segments
from .palette import region_hex


class MaskCanvas(MaskInput, widgets.VBox):
    """Paint region masks of ``session``; ``scale`` display pixels per image pixel.

    The default scale is the largest integer keeping the longer side within ``max_display``
    (a 64-pixel image shows at x8 = 512), or 1/k for images larger than ``max_display``.
    Keys while the canvas has focus: 1-9 region, B/E/R/O/P/F tool, [ ] brush size,
    Ctrl-Z undo, Ctrl-Shift-Z or Ctrl-Y redo, Enter closes a clicked polygon, Escape cancels it.

    The canvas follows the session by itself (regions, masks, latent, overlap_factor); call
    `redraw()` to repaint every layer. Each finished edit assigns a new array to
    ``session.regions[j - 1].mask``; nothing is written during a drag. Pixel rules: `pixels`.
    """

    active_region = Int(1, help="the region painted, 1-based")
    tool = Enum(TOOLS, "brush", help="the painting tool")
    brush_size = Int(4, help="brush diameter in image pixels")
    opacity = Float(0.5, help="overlay opacity of the masks")
    show_grown = Bool(True, help="draw the grown masks the sampler uses as dashed outlines")
    follow_latent = Bool(True, help="redraw the background from session.latent at every step")
    can_undo = Bool(False, read_only=True, help="whether undo() has an edit to undo")
    can_redo = Bool(False, read_only=True, help="whether redo() has an edit to redo")

    def __init__(self, session, *, scale=None, max_display=512, **kwargs):
        self.session = session
        self._fixed_scale, self._max_display = scale, int(max_display)
        self._holding = self._writing = self._ready = False
        self._background_source = None
        self._outlines = {}  # region -> ((mask version, overlap_factor, wh swap), segments)
        self._cursor = None
        shape = self._session_shape()
        self.painter = Painter([r.mask for r in session.regions], brush_size=max(1, min(shape) // 16))
        self.scale, self._shape = self._scale_for(shape), shape
        self.multicanvas = MultiCanvas(3, width=self._display(shape[1]), height=self._display(shape[0]))
        self.multicanvas.add_class("rw-mask-canvas")
        super().__init__(**kwargs)
        self.brush_size = self.painter.brush_size
        self.toolbar = self._link_toolbar(MaskToolbar(max_brush_size=max(shape) // 2,
                                                      n_regions=len(session.regions)))
        self.children = [self.toolbar, self.multicanvas]
        self._ready = True
        self._hook_events()
        self._watch_regions(session.regions)
        session.observe(self._on_regions, names="regions")
        session.observe(self._on_latent, names="latent")
        session.observe(self._on_grow_params, names=["overlap_factor", "quirks"])
        self.redraw()

    # ---- geometry ----------------------------------------------------------------------------

    @property
    def image_shape(self) -> tuple:
        """(H, W) of the masks (the painting resolution)."""
        return self._session_shape()

    def _session_shape(self):
        if self.session.regions:
            return tuple(self.session.regions[0].mask.shape)
        h, w = self.session.latent_image.shape[-2:]
        d = self.session.model.downscale
        return (h * d, w * d)

    def _scale_for(self, shape):
        if self._fixed_scale is not None:
            return float(self._fixed_scale) if self._fixed_scale != int(self._fixed_scale) else int(self._fixed_scale)
        longest = max(shape)
        return max(self._max_display // longest, 1) if longest <= self._max_display else \
            1 / math.ceil(longest / self._max_display)

    def _display(self, n):
        return int(math.ceil(n * self.scale))

    # ---- toolbar ------------------------------------------------------------------------------

    def _link_toolbar(self, toolbar):
        for name in ("tool", "brush_size", "opacity", "show_grown", "active_region"):
            widgets.link((self, name), (toolbar, name))
        for name in ("can_undo", "can_redo"):
            widgets.dlink((self, name), (toolbar, name))
        for button, action in ((toolbar.clear_button, self.clear_region), (toolbar.invert_button, self.invert_region),
                               (toolbar.undo_button, self.undo), (toolbar.redo_button, self.redo)):
            button.on_click(lambda _, act=action: act())
        return toolbar

    @property
    def region_buttons(self) -> list:
        """The toolbar's region buttons, one per region (1-based order)."""
        return self.toolbar.region_buttons

    def _update_history_buttons(self):
        self.set_trait("can_undo", self.painter.can_undo)
        self.set_trait("can_redo", self.painter.can_redo)

    # ---- traits -------------------------------------------------------------------------------

    @validate("active_region")
    def _valid_region(self, proposal):
        n = max(len(self.session.regions), 1)
        if not 1 <= proposal["value"] <= n:
            raise TraitError(f"active_region: expected 1..{n}, got {proposal['value']}")
        return proposal["value"]

    @validate("brush_size")
    def _valid_size(self, proposal):
        return max(int(proposal["value"]), 1)

    @validate("opacity")
    def _valid_opacity(self, proposal):
        return min(max(float(proposal["value"]), 0.0), 1.0)

    @observe("tool", "active_region")
    def _on_tool_or_region(self, change):
        self._cancel_stroke()
        self.painter.tool, self.painter.active = self.tool, self.active_region
        if change["name"] == "active_region" and self._ready:
            self._render(overlay=True, cursor=True)  # the active region is drawn on top
        elif self._ready:
            self._render(cursor=True)

    @observe("brush_size")
    def _on_size(self, change):
        self.painter.brush_size = change["new"]
        if self._ready:
            self._render(cursor=True)

    @observe("opacity", "show_grown")
    def _on_look(self, change):
        if self._ready:
            self._render(overlay=True)

    # ---- session ------------------------------------------------------------------------------

    def _watch_regions(self, regions, old=()):
        for region in old:
            region.unobserve(self._on_mask, names="mask")
        for region in regions:
            region.observe(self._on_mask, names="mask")

    def _on_regions(self, change):
        self._watch_regions(change["new"], change["old"] or ())
        self._reload()

    def _on_mask(self, change):
        if self._writing:
            return
        region = next(j for j, r in enumerate(self.session.regions, 1) if r is change["owner"])
        if change["new"].shape != self.painter.shape:
            self._reload()
            return
        self.painter.set_mask(region, change["new"])
        self._update_history_buttons()
        self._render(overlay=True)

    def _on_latent(self, change):
        if self._background_source is None and self.follow_latent:
            self._render(background=True)

    @observe("follow_latent")
    def _on_follow(self, change):
        if change["new"] and self._background_source is None and self._ready:
            self._render(background=True)

    def close(self):
        """Stop observing the session, then close the widgets."""
        self._watch_regions((), self.session.regions)
        self.session.unobserve(self._on_regions, names="regions")
        self.session.unobserve(self._on_latent, names="latent")
        self.session.unobserve(self._on_grow_params, names=["overlap_factor", "quirks"])
        self.multicanvas.close()
        super().close()

    def _on_grow_params(self, change):
        if self.show_grown:
            self._render(overlay=True)

    def _reload(self):
        """Regions added, removed or resized elsewhere: start over from the session's masks."""
        shape = self._session_shape()
        self.painter.reset([r.mask for r in self.session.regions])
        self._outlines.clear()
        n = max(len(self.session.regions), 1)
        if self.active_region > n:
            self.active_region = n
        if shape != self._shape:
            self.scale, self._shape = self._scale_for(shape), shape
            self.multicanvas.width, self.multicanvas.height = self._display(shape[1]), self._display(shape[0])
            self.toolbar.max_brush_size = max(shape) // 2
        self.toolbar.n_regions = len(self.session.regions)
        self._update_history_buttons()
        self.redraw()

    def _write(self, region):
        """Publish a region's mask to the session (a new array: the session forks the run)."""
        self._writing = True
        try:
            self.session.regions[region - 1].mask = self.painter.mask(region).copy()
        finally:
            self._writing = False

    # ---- drawing ------------------------------------------------------------------------------

    @contextmanager
    def _held(self):
        """hold_canvas() once per event (a nested hold would flush early); exceptions still flush."""
        if self._holding:
            yield
            return
        self._holding, error = True, None
        with hold_canvas():
            try:
                yield
            except BaseException as err:  # leave hold_canvas normally, then re-raise
                error = err
        self._holding = False
        if error is not None:
            raise error

    def redraw(self):
        """Draw every layer from scratch (what a new view needs; called on client ready)."""
        self._render(background=True, overlay=True, cursor=True)

    def _render(self, background=False, overlay=False, cursor=False):
        with self._held():
            if background:
                self._draw_background()
            if overlay:
                self._draw_overlay()
            if cursor:
                self._draw_cursor()

    def _draw_background(self):
        layer = self.multicanvas[0]
        layer.clear()
        rgb = self.background_rgb()
        put_rgba(layer, np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]), self.scale)

    def background_rgb(self) -> np.ndarray:
        """The background at image size, uint8 (H, W, 3): the session's picture as the model's cheap
        preview (`models.base.preview_rgb`: no VAE call on a diffusers model)."""
        shape = self.image_shape
        if self._background_source is not None:
            return fit_rgb(self._background_source, shape)
        model = self.session.model  # a flow model's leftover-noise latent shown as (1 - sigma) * latent
        image = preview_rgb(model, self.session.picture())[0]
        return fit_rgb((image.numpy() * 255).round().astype(np.uint8), shape)

    def overlay_rgba(self, box=None) -> np.ndarray:
        """The masks in their colours, composited in region order with the active region on top."""
        masks = self.painter.masks
        if not masks:
            return np.zeros((*self.image_shape, 4), np.uint8)
        box = box if box is not None else (0, masks[0].shape[0], 0, masks[0].shape[1])
        return overlay_rgba(masks, self.active_region, self.opacity, box)

    def _draw_overlay(self, box=None):
        layer = self.multicanvas[1]
        if box is not None:
            put_rgba(layer, self.overlay_rgba(box), self.scale, box[2], box[0], clear=True)
            return
        layer.clear()
        if not self.painter.masks:
            return
        put_rgba(layer, self.overlay_rgba(), self.scale)
        if self.show_grown:
            stroke_outlines(layer, [self.grown_outline(j) for j in range(1, len(self.painter.masks) + 1)], self.scale)

    def grown_mask(self, region) -> np.ndarray:
        """The region's mask as the sampler grows it (`masks.grow`), at image size, boolean."""
        return grown_mask(self.painter.mask(region), self.session.overlap_factor, self.session.quirks.mask_wh_swap)

    def grown_outline(self, region) -> np.ndarray:
        """Segments ``(N, 2, 2)`` (image coordinates) of the grown mask's boundary, cached."""
        key = (self.painter.versions[region - 1], self.session.overlap_factor, self.session.quirks.mask_wh_swap)
        cached = self._outlines.get(region)
        if cached is None or cached[0] != key:
            grown = self.grown_mask(region)
            cached = (key, outline_segments(grown) if grown.any() else np.zeros((0, 2, 2)))
            self._outlines[region] = cached
        return cached[1]

    def _draw_cursor(self):
        layer = self.multicanvas[2]
        layer.clear()
        preview = self.painter.preview()
        if self._cursor is not None or preview is not None:
            colour = "white" if self.tool == "eraser" else region_hex(self.active_region)
            stroke_cursor(layer, self.scale, self._cursor, preview, self.tool, self.brush_size, colour)

    # ---- actions ------------------------------------------------------------------------------

    def _finish(self, diff, redraw=True):
        """After an edit: publish it to the session and re-render the overlay."""
        if diff is not None:
            self._write(diff.region)
        self._update_history_buttons()
        if redraw or diff is not None:
            self._render(overlay=True, cursor=True)
        else:
            self._render(cursor=True)

    def _edit(self, region, new_or_diff):
        region = self.active_region if region is None else int(region)
        if not 1 <= region <= len(self.session.regions):
            raise ValueError(f"region: expected 1..{len(self.session.regions)}, got {region}")
        diff = new_or_diff(region)
        self._finish(diff)
        return diff

    def clear_region(self, region=None):
        """Set a region's mask (default: the active one) to 0, as one undoable edit."""
        return self._edit(region, self.painter.clear)

    def invert_region(self, region=None):
        """Replace a region's mask by ``1 - mask``, as one undoable edit."""
        return self._edit(region, self.painter.invert)

    def undo(self):
        """Undo the last edit (of any region) and write the restored mask to the session."""
        diff = self.painter.undo()
        self._finish(diff)
        return diff

    def redo(self):
        diff = self.painter.redo()
        self._finish(diff)
        return diff

    def load_mask(self, region, source):
        """Replace region ``region``'s mask (1-based) with an image or array, as one undoable edit.

        ``source``: a path, PNG (or other image) bytes, a PIL image, or a 2-D array/tensor. Images:
        the alpha channel if the image has one that is not fully opaque, else the greyscale
        (luma) values, divided by the format's maximum (255, or 65535 for 16-bit). Arrays: bool,
        integer (uint8 / 255, uint16 / 65535) or float in [0, 1]. A source of another size is
        resized to the image size with `masks.resize` (bilinear, align_corners=False, no
        antialiasing: the sampler's own mask resize), then clipped to [0, 1].
        """
        mask = read_mask_png(source)
        shape = self.image_shape
        if mask.shape != shape:
            mask = mask_ops.resize(torch.from_numpy(mask), *shape).clamp(0, 1).numpy()
        return self._edit(region, lambda j: self.painter.edit(j, mask))

    def mask_png(self, region) -> bytes:
        """Region ``region``'s mask as an 8-bit greyscale PNG: ``round(mask * 255)``.

        8-bit quantisation: soft values come back from `load_mask` as k/255 (error <= 1/510);
        0 and 1 round-trip exactly.
        """
        return write_mask_png(self.painter.mask(region))

    def load_background(self, source=None):
        """Show an image (path, bytes, PIL image, array HxW / HxWx3 / HxWx4, [0, 1] floats or uint8)
        under the masks, resized (bilinear) to the image size; ``None`` returns to the session's
        decoded latent, which is otherwise redrawn at every step."""
        self._background_source = None if source is None else read_rgb(source)
        self._render(background=True)
