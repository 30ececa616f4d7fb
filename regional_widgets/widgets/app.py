"""The composed application: step controls on top, the mask canvas beside the regions and inspector,
the Open row (upload a ComfyUI image/workflow or a mask PNG) and the Save menu below.

Sized for a JupyterLab notebook column: the canvas shows at most ``max_display`` pixels a side
(a 64-pixel image at x5 = 320) and the tabs take 500 px.
"""
from __future__ import annotations

import ipywidgets as widgets
import numpy as np
from traitlets import link

from ..models import empty_latent
from ..node_params import SamplerConfig
from ..session import Region, RegionalSamplerSession
from .controls import StepControls
from .inspector import Inspector
from .mask_canvas import MaskCanvas
from .open_menu import OpenMenu
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
    ``.open_menu`` (uploads: a ComfyUI image or workflow opens as a new session, `set_session`; a mask
    PNG goes to the selected region) and ``.save_menu`` (writes beside the notebook; ``save_folder``
    overrides the working directory, for both).

    The canvas's active region and the panel's selected row are linked (region 1 when it opens).
    The inspector shares a tab with the region panel and refreshes only while its tab is shown.
    """

    def __init__(self, session: RegionalSamplerSession, *, max_display: int = 320, inspector_backend=None,
                 save_folder=None):
        self._options = dict(max_display=max_display, inspector_backend=inspector_backend, save_folder=save_folder)
        self.open_menu = OpenMenu(self.set_session, self._load_mask, session.model, folder=save_folder)
        super().__init__(layout={"max_width": "1000px"})
        self.add_class("rw-app")
        self.set_session(session)

    def _load_mask(self, data: bytes):
        self.canvas.load_mask(self.canvas.active_region, data)

    def set_session(self, session: RegionalSamplerSession):
        """Show ``session``: every view is built anew over it (the Open row stays)."""
        max_display, inspector_backend = self._options["max_display"], self._options["inspector_backend"]
        save_folder = self._options["save_folder"]
        if getattr(self, "_link", None) is not None:  # the views of the session shown before let go of it
            self._link.unlink()
            self.inspector.follow = False
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
        self.children = [self.controls, body, self.open_menu, self.save_menu]

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
