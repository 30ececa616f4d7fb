"""The composed application: step controls on top, the mask canvas beside the regions and inspector,
the Save menu below.

Sized for a JupyterLab notebook column: the canvas shows at most ``max_display`` pixels a side
(a 64-pixel image at x5 = 320) and the tabs take 500 px.
"""
from __future__ import annotations

import ipywidgets as widgets
import numpy as np
from traitlets import link

from ..models import empty_latent
from ..regional import SamplerConfig
from ..session import Region, RegionalSamplerSession
from .controls import StepControls
from .inspector import Inspector
from .mask_canvas import MaskCanvas
from .region_panel import RegionPanel
from .save_menu import SaveMenu

# Starter prompts: the base first, then one per region (ToyWorld's materials).
STARTER_PROMPTS = ("sky", "grass", "brick", "water", "sand", "gravel", "night", "sun")


def starter_prompts(model, n: int) -> list:
    """``n`` prompts, the starters the model knows first, then the rest of its vocabulary."""
    vocabulary = list(getattr(model, "vocabulary", ()))
    words = [w for w in STARTER_PROMPTS if not vocabulary or w in vocabulary]
    words += [w for w in vocabulary if w not in words]
    return [words[k % len(words)] if words else "" for k in range(n)]


def _wrap_rows(widget):
    """Let every HBox under ``widget`` wrap its items instead of squeezing them (a narrow column)."""
    stack = [widget]
    while stack:
        w = stack.pop()
        if isinstance(w, widgets.HBox):
            w.layout.flex_flow = "row wrap"
        stack.extend(getattr(w, "children", ()))


class RegionalSamplerApp(widgets.VBox):
    """One widget over one session: ``.session``, ``.canvas``, ``.panel``, ``.controls``, ``.inspector``,
    ``.save_menu`` (writes beside the notebook; ``save_folder`` overrides the working directory).

    The canvas's active region and the panel's selected row are linked (region 1 when it opens).
    The inspector shares a tab with the region panel and refreshes only while its tab is shown.
    """

    def __init__(self, session: RegionalSamplerSession, *, max_display: int = 320, inspector_backend=None,
                 save_folder=None):
        self.session = session
        self.controls = StepControls(session)
        self.canvas = MaskCanvas(session, max_display=max_display)
        self.panel = RegionPanel(session)
        self.inspector = Inspector(session, backend=inspector_backend, width=470)
        self.save_menu = SaveMenu(session, folder=save_folder)
        self.canvas.active_region = self.panel.selected = 1
        # the canvas column as wide as the canvas (its toolbar wraps), so both columns fit ~850 px
        self.canvas.layout.width = f"{max(int(self.canvas.multicanvas.width), 320) + 8}px"
        _wrap_rows(self.canvas)
        self._link = link((self.panel, "selected"), (self.canvas, "active_region"))
        self.tabs = widgets.Tab([self.panel, self.inspector], titles=("Regions", "Inspector"),
                                layout={"width": "500px", "min_width": "500px"})
        self.tabs.observe(self._on_tab, names="selected_index")
        self._on_tab()
        # side by side in a usual notebook column (~850 px); the tabs wrap below the canvas when narrower
        body = widgets.HBox([self.canvas, self.tabs], layout={"align_items": "flex-start", "flex_flow": "row wrap"})
        super().__init__([self.controls, body, self.save_menu], layout={"max_width": "1000px"})
        self.add_class("rw-app")

    def _on_tab(self, change=None):
        # the inspector follows the session only while its tab is shown, and catches up when it is
        self.inspector.follow = self.tabs.selected_index == 1
        if self.inspector.follow:
            self.inspector.refresh()

    @classmethod
    def from_model(cls, model, size: int = 64, regions: int = 2, *, steps: int = 20, cfg: float = 2.0,
                   scheduler: str = "karras", **session_params):
        """A ``RegionalSamplerAdvanced`` session over an empty ``size`` x ``size`` latent, with ``regions``
        empty regions (prompts: base "sky", then "grass", "brick", ... as the model knows them).

        ``cfg`` 2 and the karras schedule suit the built-in model; a real checkpoint wants cfg ~7."""
        prompts = starter_prompts(model, regions + 1)
        mask = np.zeros((size, size), np.float32)

        def config(prompt):
            return SamplerConfig(positive=prompt, cfg=cfg, scheduler=scheduler)

        session = RegionalSamplerSession(
            model, empty_latent(model, size, size), base=config(prompts[0]),
            regions=[Region(mask.copy(), config(p)) for p in prompts[1:]], steps=steps, **session_params)
        return cls(session)
