"""Live matplotlib views of a session's state, updated in place after every sub-step.

One figure holds every view (one canvas, one draw):

- ``decoded`` / ``denoised``: the working latent and the x0 prediction (``session.denoised``) as the
  model's cheap preview (`models.base.preview_rgb`: linear factors on a diffusers model, no VAE call
  per step); the "decode with VAE" toggle (``decode_with_vae``) switches both to the full ``decode``;
- ``masks``: the base and (grown) region masks at latent resolution, in the regions' colours;
- ``sigma_map`` / ``times_map``: the effective noise level per latent pixel and how many calls
  denoised each pixel in the current regional step;
- ``schedule``: the sigma schedules of the base and the regions, with the span of the last call
  (its first and last sigma) marked;
- ``latent``: the working latent's channels side by side (batch item 0);
- ``difference``: one tile per part (base, region 1, ...): the RMS over channels of what that
  part's sampler call changed in the working latent (latent after the call minus latent before
  it) during the current regional step; a part that has not run yet in this step is zero. Stepping
  sub-step by sub-step shows each region's contribution appear.

With ipympl installed the figure is an ipympl canvas updated with ``set_data`` + ``draw_idle``;
otherwise it is rendered to PNG bytes in an ``ipywidgets.Image``.
"""
from __future__ import annotations

import asyncio
import io
import time
import warnings

import ipywidgets as widgets
import numpy as np
import torch
import traitlets

from .. import plot
from ..models.base import display_latent

IMAGE_VIEWS = ("decoded", "denoised", "masks", "sigma_map", "times_map", "latent", "difference")
_TITLES = {"decoded": "latent (decoded)", "denoised": "x0 prediction (decoded)", "masks": "masks",
           "sigma_map": "effective σ", "times_map": "calls this step", "latent": "latent channels",
           "difference": "|Δ latent| per call this step"}
_CMAPS = {"sigma_map": "viridis", "times_map": "magma", "latent": "RdBu_r", "difference": "inferno"}
_STATE_TRAITS = ["latent", "denoised", "masks", "sigma_map", "times_map", "phase", "sigma", "sigma_next"]
_PLAN_TRAITS = ["base", "regions", "steps", "denoise"]


def default_backend() -> str:
    try:
        import ipympl.backend_nbagg  # noqa: F401
    except ImportError:
        return "image"
    return "ipympl"


def _same(a, b) -> bool:
    """Source keys match: tensors and lists by identity (the session replaces, never mutates), else ==."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, (torch.Tensor, list)) or isinstance(y, (torch.Tensor, list)):
            if x is not y:
                return False
        elif x != y:
            return False
    return True


class _FigureWidget:
    """A matplotlib figure as a widget: an ipympl canvas, or PNG bytes in an Image widget."""

    def __init__(self, fig, backend: str):
        self.figure, self.backend = fig, backend
        if backend == "ipympl":
            from ipympl.backend_nbagg import Canvas, FigureManager

            canvas = Canvas(fig)
            with warnings.catch_warnings():  # ipympl's Toolbar passes arguments traitlets deprecates
                warnings.simplefilter("ignore", DeprecationWarning)
                FigureManager(canvas, 0)  # the canvas's manager answers the front end's draw requests
            canvas.header_visible = canvas.footer_visible = canvas.resizable = False
            canvas.toolbar_visible = False
            self.widget = canvas
        elif backend == "image":
            from matplotlib.backends.backend_agg import FigureCanvasAgg

            FigureCanvasAgg(fig)
            self.widget = widgets.Image(format="png")
        else:
            raise ValueError(f"backend: expected 'ipympl' or 'image', got {backend!r}")
        self.redraw()

    def redraw(self):
        if self.backend == "ipympl":
            self.widget.draw_idle()
        else:
            buf = io.BytesIO()
            self.figure.savefig(buf, format="png", dpi=self.figure.dpi)
            self.widget.value = buf.getvalue()


class Inspector(widgets.VBox):
    """Views of ``session`` that follow it (see the module docstring for what each view shows).

    ``images[name]`` holds the array each image view shows now (``IMAGE_VIEWS``), ``schedules`` the
    plotted sigma schedules and ``marker`` the last call's ``(start, end, sigma, sigma_next)``.
    ``refresh()`` recomputes the views whose inputs changed and redraws once. It runs on every state
    change: at once without a running event loop, at most once per ``min_interval`` seconds with
    one (a pending refresh then catches up), and not at all while ``follow`` is False.
    ``decode_with_vae`` (the "decode with VAE" toggle, off by default) shows the pictures through the
    model's full ``decode`` instead of its cheap preview.
    """

    decode_with_vae = traitlets.Bool(False)

    def __init__(self, session, *, backend: str | None = None, width: int = 470, dpi: int = 72,
                 min_interval: float = 0.1):
        self.session = session
        self.min_interval = min_interval
        self.follow = True  # False: state changes wait for an explicit refresh() (e.g. while hidden)
        self.images: dict[str, np.ndarray] = {}
        self.schedules: dict[str, np.ndarray] = {}
        self.marker = None
        self.refreshes = 0  # refreshes that redrew something
        self._seen: dict[str, tuple] = {}
        self._last = 0.0
        self._pending = None
        self._build_figure(width, dpi)
        self._figure = _FigureWidget(self.figure, backend or default_backend())
        self.backend = self._figure.backend
        super().__init__()
        self.vae_toggle = widgets.Checkbox(value=False, description="decode with VAE", indent=False,
                                           tooltip="show the pictures through the model's full decode "
                                                   "(the VAE: slow on real models) instead of its cheap preview")
        widgets.link((self.vae_toggle, "value"), (self, "decode_with_vae"))
        self.refresh()
        session.observe(self._on_change, names=_STATE_TRAITS + _PLAN_TRAITS)
        self.observe(self._on_change, names="decode_with_vae")
        self.children = [self._figure.widget, self.vae_toggle]
        self.add_class("rw-inspector")

    def _build_figure(self, width, dpi):
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        w = width / dpi
        self.figure = Figure(figsize=(w, w * 1.12), dpi=dpi)
        grid = self.figure.add_gridspec(4, 3, height_ratios=[1, 1, 0.62, 0.62], left=0.03, right=0.97,
                                        top=0.96, bottom=0.01, hspace=0.22, wspace=0.1)
        slots = {"decoded": grid[0, 0], "denoised": grid[0, 1], "masks": grid[0, 2], "sigma_map": grid[1, 0],
                 "times_map": grid[1, 1], "latent": grid[2, :], "difference": grid[3, :]}
        self.axes = {name: self.figure.add_subplot(slot) for name, slot in slots.items()}
        self._ims = {}
        for name, ax in self.axes.items():
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(_TITLES[name], fontsize=7)
            self._ims[name] = ax.imshow(np.zeros((2, 2)), cmap=_CMAPS.get(name), interpolation="nearest")
        self.axes["schedule"] = ax = self.figure.add_subplot(grid[1, 2])
        ax.tick_params(labelsize=5, length=2, pad=1)
        ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))  # fewer labels: text is most of a redraw
        ax.set_title("σ schedules", fontsize=7)
        self._marker, = ax.plot([], [], "k.-", lw=1.5, zorder=5)
        self._lines = []

    # ---- scheduling ------------------------------------------------------------------------------

    def _on_change(self, change=None):
        if not self.follow:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        wait = self.min_interval - (time.perf_counter() - self._last)
        if loop is None or wait <= 0:
            self.refresh()
        elif self._pending is None:
            self._pending = loop.call_later(wait, self.refresh)

    def refresh(self) -> bool:
        """Recompute the views whose inputs changed and redraw once; returns whether anything changed."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None
        self._last = time.perf_counter()
        s = self.session
        cursor = self._cursor()
        vae = self.decode_with_vae
        sources = {"decoded": (s.latent, vae), "denoised": (s.denoised, vae), "masks": (s.masks,),
                   "sigma_map": (s.sigma_map,), "times_map": (s.times_map,), "latent": (s.latent,),
                   "difference": (s.latent, cursor, len(s.regions)),
                   "schedule": (plot.schedule_steps(s), s.base) + tuple(r.config for r in s.regions),
                   "marker": (s.phase, s.sigma, s.sigma_next)}
        changed = [name for name, key in sources.items()
                   if name not in self._seen or not _same(self._seen[name], key)]
        for name in changed:
            getattr(self, f"_update_{name}")(cursor)
            self._seen[name] = sources[name]
        if changed:
            self.refreshes += 1
            self._figure.redraw()
        return bool(changed)

    def _cursor(self) -> int:
        """Sub-steps done: the session publishes the phase of the last one, unique within its plan."""
        if self.session.phase is None:
            return 0
        return next(k for k, op in enumerate(self.session.ops, 1) if op.phase == self.session.phase)

    # ---- views -------------------------------------------------------------------------------------

    def _show(self, name, array, clim=None, title=None):
        im, ax = self._ims[name], self.axes[name]
        if im.get_array().shape[:2] != array.shape[:2]:
            h, w = array.shape[:2]
            im.set_extent((-0.5, w - 0.5, h - 0.5, -0.5))
            ax.set_xlim(-0.5, w - 0.5)
            ax.set_ylim(h - 0.5, -0.5)
        im.set_data(array)
        if clim is not None:
            im.set_clim(*clim)
        if title is not None:
            ax.set_title(title, fontsize=7)
        self.images[name] = array

    def _rgb(self, latent):
        if latent is None:
            h, w = self.session.latent.shape[-2:]
            down = getattr(self.session.model, "downscale", 1)
            return np.zeros((h * down, w * down, 3))
        return plot.rgb(self.session.model, latent, full=self.decode_with_vae)

    def _update_decoded(self, cursor):
        self._show("decoded", self._rgb(plot.picture(self.session)))  # flow: (1 - sigma) * latent

    def _update_denoised(self, cursor):
        d = self.session.denoised
        self._show("denoised", self._rgb(d), title=_TITLES["denoised"] + ("" if d is not None else ": none yet"))

    def _update_masks(self, cursor):
        self._show("masks", plot.mask_overlay([m.numpy() for m in self.session.masks]))

    def _update_sigma_map(self, cursor):
        data = self.session.sigma_map.numpy()
        top = float(data.max())
        flow = ", flow 0..1" if plot._is_flow(self.session) else ""
        self._show("sigma_map", data, plot.sigma_range(self.session, data), f"effective σ (max {top:.3g}{flow})")

    def _update_times_map(self, cursor):
        data = self.session.times_map.numpy()
        top = float(data.max())
        self._show("times_map", data, (0.0, max(top, 1.0)), f"calls this step (max {top:g})")

    def _update_latent(self, cursor):
        latent = self.session.latent[0].double().numpy()
        data = plot.tile(list(latent))
        top = float(np.nanmax(np.abs(data)))
        self._show("latent", data, (-max(top, 1e-6), max(top, 1e-6)),
                   f"latent channels 0..{len(latent) - 1} (±{top:.3g})")

    def _update_difference(self, cursor):
        data = plot.tile(self.call_changes(cursor))
        top = float(np.nanmax(data))
        names = " | ".join(["base"] + [f"r{j}" for j in range(1, len(self.session.regions) + 1)])
        self._show("difference", data, (0.0, max(top, 1e-6)), f"{_TITLES['difference']}: {names} (max {top:.3g})")

    def call_changes(self, cursor=None) -> list:
        """Per part (base, region 1, ...): RMS over channels of latent after minus before its call this step
        (flow models: of the pictures, `plot.picture`)."""
        s = self.session
        cursor = self._cursor() if cursor is None else cursor
        h, w = s.latent.shape[-2:]
        out = [np.zeros((h, w)) for _ in range(len(s.regions) + 1)]
        ops = s.ops
        if cursor == 0:
            return out
        first = cursor - 1
        while first > 0 and ops[first - 1].group == ops[cursor - 1].group:
            first -= 1
        # on a flow model the pictures (1 - sigma) * latent, not the x / (1 - sigma) hand-over latents
        history, after = s.history, plot.picture(s)
        for k in range(cursor - 1, first - 1, -1):  # backwards: each state is the next one's "after"
            before = display_latent(s.model, history[k].latent, history[k].sigma_map)
            op = ops[k]
            if op.kind in ("base", "region", "finalize"):  # sampler calls; composites and blends are not
                d = (after[0] - before[0]).double()
                out[op.region if op.kind == "region" else 0] = d.pow(2).mean(0).sqrt().numpy()
            after = before
        return out

    def _update_schedule(self, cursor):
        ax = self.axes["schedule"]
        for line in self._lines:
            line.remove()
        self._lines, self.schedules = [], {}
        from .palette import region_hex

        for j, (label, config, sig) in enumerate(plot.schedules(self.session)):
            line, = ax.plot(np.arange(len(sig)), sig, lw=1, color=region_hex(j) if j else "0.45",
                            label=f"{label}: {config.scheduler}/{config.sampler}")
            self._lines.append(line)
            self.schedules[label] = sig
        plot.sigma_axis(ax, self.session, None)
        ax.relim()
        ax.autoscale_view()
        if plot._is_flow(self.session):
            ax.set_ylim(-0.02, 1.02)
        ax.set_title("σ schedules" + (" (flow, 0..1)" if plot._is_flow(self.session) else ""), fontsize=7)

    def _update_marker(self, cursor):
        s = self.session
        self.marker = None
        if cursor and s.sigma is not None:
            op = s.ops[cursor - 1]
            self.marker = (op.start, op.end, s.sigma, s.sigma_next)
        self._marker.set_data(*(([], []) if self.marker is None else (self.marker[:2], self.marker[2:])))
