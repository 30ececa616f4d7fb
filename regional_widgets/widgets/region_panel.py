"""Per-region sampler settings: one row for the base prompt and one per region, in the session's order."""
from __future__ import annotations

import dataclasses

import ipywidgets as widgets
import numpy as np
from traitlets import Int, observe, validate

from ..params import check_int
from ..node_params import SamplerConfig
from ..sampling import SAMPLER_NAMES, SCHEDULER_NAMES
from ..sampling.noise import VARIATION_METHODS
from ..session import Region
from ._binding import ErrorArea, Field, assign_trait
from .palette import region_hex

_SMALL = {"description_width": "initial"}


class _Row(widgets.VBox):
    """The settings of the base (``j == 0``) or of region ``j``; edits assign new values on the session."""

    def __init__(self, panel, j: int):
        self.panel, self.session, self.j = panel, panel.session, j
        self.error = ErrorArea()
        self.select_button = widgets.Button(description="base" if j == 0 else f"region {j}",
                                            tooltip="paint this region" if j else "the area no region covers",
                                            layout={"width": "88px"})
        self.select_button.style.button_color = region_hex(j)
        self.select_button.style.text_color = "white"
        self.select_button.on_click(lambda _: panel.select(j))
        self.fields = self._config_fields()
        f = {name: field.widget for name, field in self.fields.items()}
        lines = [[self.select_button, f["positive"], f["negative"]],
                 [f["sampler"], f["scheduler"], f["cfg"], f["sigma_factor"]]]
        if j:
            region = self.session.regions[j - 1]
            lines.append(self._region_line(region))
            self._owner, self._names = region, ["config", "variation_seed", "variation_strength", "variation_method"]
        else:
            self._owner, self._names = self.session, ["base"]
        self._owner.observe(self._pull, names=self._names)
        super().__init__([widgets.HBox(line, layout={"flex_flow": "row wrap"}) for line in lines] + [self.error],
                         layout={"border_left": f"4px solid {region_hex(j)}", "padding": "2px 0 4px 6px",
                                 "margin": "0 0 4px 0"})
        self.add_class("rw-region-row")

    def _config_fields(self) -> dict:
        vocabulary = list(getattr(self.session.model, "vocabulary", ()))
        text = dict(options=vocabulary, ensure_option=False, continuous_update=False)
        widths = {"positive": 165, "negative": 150, "sampler": 120, "scheduler": 100, "cfg": 80, "sigma_factor": 80}
        inputs = {
            "positive": widgets.Combobox(placeholder="positive prompt", **text),
            "negative": widgets.Combobox(placeholder="negative prompt", **text),
            "sampler": widgets.Dropdown(options=SAMPLER_NAMES),
            "scheduler": widgets.Dropdown(options=SCHEDULER_NAMES),
            "cfg": widgets.FloatText(description="cfg", style=_SMALL),
            "sigma_factor": widgets.FloatText(description="σ×", step=0.01, style=_SMALL),
        }
        for name, widget in inputs.items():
            widget.layout.width = f"{widths[name]}px"
        return {name: self._config_field(widget, name) for name, widget in inputs.items()}

    def _region_line(self, region) -> list:
        j, panel = self.j, self.panel
        inputs = {"variation_seed": widgets.IntText(description="var. seed", style=_SMALL, layout={"width": "120px"}),
                  "variation_strength": widgets.FloatText(description="strength", step=0.05, style=_SMALL,
                                                          layout={"width": "100px"}),
                  "variation_method": widgets.Dropdown(options=VARIATION_METHODS, layout={"width": "68px"})}
        self.fields.update({name: self._region_field(widget, region, name) for name, widget in inputs.items()})
        self.up_button = self._icon_button("arrow-up", "move up (earlier: drawn under later regions)",
                                           lambda: panel.move(j, -1), disabled=j == 1)
        self.down_button = self._icon_button("arrow-down", "move down (later regions win in overlaps)",
                                             lambda: panel.move(j, +1), disabled=j == len(self.session.regions))
        self.remove_button = self._icon_button("trash", "remove this region", lambda: panel.remove(j))
        return list(inputs.values()) + [self.up_button, self.down_button, self.remove_button]

    @property
    def config(self) -> SamplerConfig:
        return self.session.regions[self.j - 1].config if self.j else self.session.base

    def _config_field(self, widget, key):
        owner, name = (self.session.regions[self.j - 1], "config") if self.j else (self.session, "base")
        set_config = assign_trait(owner, name)
        return Field(widget, lambda: getattr(self.config, key),
                     lambda value: set_config(dataclasses.replace(self.config, **{key: value})), self.error)

    def _region_field(self, widget, region, name):
        return Field(widget, lambda: getattr(region, name), assign_trait(region, name), self.error)

    @staticmethod
    def _icon_button(icon, tooltip, action, disabled=False):
        button = widgets.Button(icon=icon, tooltip=tooltip, disabled=disabled, layout={"width": "34px"})
        button.on_click(lambda _: action())
        return button

    def _pull(self, change=None):
        for field in self.fields.values():
            field.pull()

    def close(self):
        if getattr(self, "_owner", None) is not None:
            self._owner.unobserve(self._pull, names=self._names)
            self._owner = None
        stack = list(self.children)
        while stack:  # the front end forgets the row's widgets too
            widget = stack.pop()
            stack.extend(getattr(widget, "children", ()))
            widget.close()
        super().close()


class RegionPanel(widgets.VBox):
    """The base row, one row per region (later regions win in overlaps) and an "Add region" button.

    ``selected`` is the region chosen for painting (1-based; the app links it to the mask canvas).
    """

    selected = Int(1)

    def __init__(self, session):
        self.session = session
        self.error = ErrorArea()
        self.add_button = widgets.Button(description="Add region", icon="plus")
        self.add_button.on_click(lambda _: self.add())
        self._footer = widgets.HBox([self.add_button, self.error])
        self.rows: list[_Row] = []
        super().__init__()
        self.add_class("rw-region-panel")
        session.observe(self._rebuild, names="regions")
        self._rebuild()

    def _rebuild(self, change=None):
        for row in self.rows:
            row.close()
        self.rows = [_Row(self, j) for j in range(len(self.session.regions) + 1)]
        self.selected = min(max(self.selected, 1), max(len(self.session.regions), 1))
        self._mark_selected()
        self.children = self.rows + [self._footer]

    def _mark_selected(self):
        for row in self.rows[1:]:
            row.select_button.layout.border = "2px solid black" if row.j == self.selected else "2px solid transparent"

    def select(self, j: int) -> None:
        if j >= 1:
            self.selected = j

    @validate("selected")
    def _valid_selected(self, proposal):
        # checked before it is stored: the canvas linked to it accepts the same range, so the two never part
        return check_int(proposal["value"], "selected", 1, max(len(self.session.regions), 1))

    @observe("selected")
    def _on_selected(self, change):
        self._mark_selected()

    # ---- edits of the region list (each replaces session.regions) ---------------------------

    def _set_regions(self, regions) -> bool:
        try:
            self.session.regions = regions
        except (ValueError, RuntimeError) as err:
            self.error.show(err)
            return False
        self.error.clear()
        return True

    def add(self) -> None:
        """Append a region with an empty mask and the base's sampler settings (no prompt yet)."""
        s = self.session
        if s.regions:
            shape = s.regions[0].mask.shape
        else:
            h, w = s.latent_image.shape[-2:]
            down = getattr(s.model, "downscale", 1)
            shape = (h * down, w * down)
        config = SamplerConfig(sampler=s.base.sampler, scheduler=s.base.scheduler, cfg=s.base.cfg)
        if self._set_regions(list(s.regions) + [Region(np.zeros(shape, np.float32), config)]):
            self.selected = len(s.regions)

    def remove(self, j: int) -> None:
        regions = list(self.session.regions)
        del regions[j - 1]
        self._set_regions(regions)

    def move(self, j: int, offset: int) -> None:
        """Move region ``j`` up (-1) or down (+1); later regions are composited over earlier ones."""
        k = j - 1 + offset
        regions = list(self.session.regions)
        if not 0 <= k < len(regions):
            return
        regions[j - 1], regions[k] = regions[k], regions[j - 1]
        if self._set_regions(regions) and self.selected == j:
            self.selected = k + 1
