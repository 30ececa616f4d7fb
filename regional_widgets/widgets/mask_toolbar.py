"""MaskToolbar: the mask canvas's tool picker, region buttons, edit buttons and sliders, as traits.

A view with no painting logic: its traits (tool, brush size, opacity, grown outlines, active region,
how many regions, whether undo and redo apply) are what `MaskCanvas` links to its own with
``link`` / ``dlink``; the edit buttons (``clear_button``, ``invert_button``, ``undo_button``,
``redo_button``) are public for the canvas to hook its actions on.
"""
from __future__ import annotations

import ipywidgets as widgets
from traitlets import Bool, Enum, Float, Int, observe

from ..colors import region_hex
from .painter import TOOLS

TOOL_LABELS = [("Brush", "brush", "B"), ("Eraser", "eraser", "E"), ("Rect", "rectangle", "R"),
               ("Ellipse", "ellipse", "O"), ("Polygon", "polygon", "P"), ("Fill", "fill", "F")]


class MaskToolbar(widgets.VBox):
    """Tools on the first row; regions, edit buttons and 'show grown' on the second; sliders last."""

    tool = Enum(TOOLS, "brush", help="the painting tool")
    brush_size = Int(4, help="brush diameter in image pixels")
    max_brush_size = Int(32, help="the size slider's maximum")
    opacity = Float(0.5, help="overlay opacity of the masks")
    show_grown = Bool(True, help="draw the grown masks as dashed outlines")
    active_region = Int(1, help="the region painted, 1-based")
    n_regions = Int(0, help="how many region buttons to show")
    can_undo = Bool(False, help="enables the Undo button")
    can_redo = Bool(False, help="enables the Redo button")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.tool_buttons = widgets.ToggleButtons(
            options=[(label, value) for label, value, _ in TOOL_LABELS],
            tooltips=[f"{label} ({key})" for label, _, key in TOOL_LABELS], style={"button_width": "64px"})
        self.size_slider = widgets.IntSlider(min=1, max=max(self.max_brush_size, 2), description="Size",
                                             layout={"width": "220px"})
        self.opacity_slider = widgets.FloatSlider(min=0.0, max=1.0, step=0.05, description="Opacity",
                                                  layout={"width": "220px"})
        self.grown_box = widgets.Checkbox(description="show grown", indent=False, layout={"width": "110px"})
        widgets.dlink((self, "max_brush_size"), (self.size_slider, "max"), lambda n: max(n, 2))
        for view, name in ((self.tool_buttons, "tool"), (self.size_slider, "brush_size"),
                           (self.opacity_slider, "opacity"), (self.grown_box, "show_grown")):
            widgets.link((self, name), (view, "value"))
        self.clear_button, self.invert_button, self.undo_button, self.redo_button = (
            widgets.Button(description=name, tooltip=tip, layout={"width": "64px"})
            for name, tip in (("Clear", "clear the region"), ("Invert", "invert the region"),
                              ("Undo", "Ctrl-Z"), ("Redo", "Ctrl-Shift-Z / Ctrl-Y")))
        widgets.dlink((self, "can_undo"), (self.undo_button, "disabled"), lambda ok: not ok)
        widgets.dlink((self, "can_redo"), (self.redo_button, "disabled"), lambda ok: not ok)
        self.region_box = widgets.HBox()
        self.region_buttons = []
        self._build_region_buttons()
        self.children = [
            widgets.HBox([self.tool_buttons]),
            widgets.HBox([self.region_box, self.clear_button, self.invert_button, self.undo_button,
                          self.redo_button, self.grown_box]),
            widgets.HBox([self.size_slider, self.opacity_slider]),
        ]

    @observe("n_regions")
    def _build_region_buttons(self, change=None):
        if not hasattr(self, "region_box"):
            return  # a constructor argument: built once the boxes exist
        self.region_buttons = []
        for j in range(1, self.n_regions + 1):
            button = widgets.Button(description=str(j), tooltip=f"region {j} (key {j})" if j <= 9 else f"region {j}",
                                    layout={"width": "36px"})
            button.style.button_color = region_hex(j)
            button.on_click(lambda _, j=j: setattr(self, "active_region", j))
            self.region_buttons.append(button)
        self.region_box.children = self.region_buttons
        self._style_region_buttons()

    @observe("active_region")
    def _style_region_buttons(self, change=None):
        for j, button in enumerate(getattr(self, "region_buttons", ()), 1):
            active = j == self.active_region
            button.layout.border = "3px solid black" if active else "3px solid transparent"
            button.style.font_weight = "bold" if active else "normal"
