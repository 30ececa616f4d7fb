"""SweepBrowser: a sweep's XY grid as clickable cells; a click opens that cell's session in the app.

The grid shows two of the sweep's keys (``x`` across, ``y`` down); every other key is fixed by
its own dropdown. A cell shows its thumbnail and, on its button, the chosen metric. Run computes
the missing cells in a background thread (cells appear as they finish); Stop cancels the pending
ones and keeps what finished.
"""
from __future__ import annotations

import io
import threading

import ipywidgets as widgets
import numpy as np

from .app import RegionalSamplerApp

_NONE = "(none)"


def _png(thumbnail) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(thumbnail, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


class SweepBrowser(widgets.VBox):
    """``.buttons[i]`` is the shown button of cell ``i``; clicking it (or ``open_cell(i)``) puts the cell's
    finished session (`Sweep.open`) in ``.app``. ``.x``, ``.y``, ``.value`` and ``.where`` are the
    dropdowns choosing the axes, the metric on the buttons and the fixed values of the other keys
    (``y=None``: one row)."""

    def __init__(self, sweep, *, x=None, y="auto", value=None, thumb_px: int = 72):
        self.sweep = sweep
        self.thumb_px = thumb_px
        keys = list(sweep.keys)
        x = x or keys[0]
        if y == "auto":  # the next key; None: one row
            y = next((k for k in keys if k != x), None)
        y = _NONE if y is None else y
        metrics = [c for c in sweep.table.columns if c not in keys and c not in ("status", "name")]
        self.x = widgets.Dropdown(options=keys, value=x, description="x", layout={"width": "200px"})
        self.y = widgets.Dropdown(options=[_NONE] + keys, value=y, description="y", layout={"width": "200px"})
        self.value = widgets.Dropdown(options=metrics, value=value or (metrics[0] if metrics else None),
                                      description="label", layout={"width": "200px"})
        self.where = {k: widgets.Dropdown(options=list(sweep.grid[k]), description=k,
                                          style={"description_width": "initial"}, layout={"width": "220px"})
                      for k in keys}
        self.run_button = widgets.Button(description="Run", icon="play", tooltip="compute the missing cells")
        self.stop_button = widgets.Button(description="Stop", icon="stop", tooltip="cancel the pending cells")
        self.run_button.on_click(lambda _: self.run())
        self.stop_button.on_click(lambda _: self.stop())
        self.status = widgets.Label()
        self.cells = widgets.GridBox()
        self.opened = widgets.VBox()
        self.buttons: dict = {}
        self.app = None
        self.opened_index = None
        self.thread = None
        self._lock = threading.Lock()
        for w in [self.x, self.y, self.value, *self.where.values()]:
            w.observe(lambda _: self.render(), names="value")
        self._wheres = widgets.HBox(layout={"flex_flow": "row wrap"})
        super().__init__([widgets.HBox([self.run_button, self.stop_button, self.status]),
                          widgets.HBox([self.x, self.y, self.value], layout={"flex_flow": "row wrap"}),
                          self._wheres, self.cells, self.opened])
        self.add_class("rw-sweep-browser")
        self.render()

    # ---- the grid -------------------------------------------------------------------------------

    def _axes(self):
        x = self.x.value
        y = None if self.y.value == _NONE or self.y.value == x else self.y.value
        return x, y

    def shown(self) -> dict:
        """``{(y value, x value): cell index}`` for the cells the grid shows now."""
        x, y = self._axes()
        fixed = {k: w.value for k, w in self.where.items() if k not in (x, y)}
        out = {}
        for i, values in enumerate(self.sweep.cells):
            if all(values[k] == v for k, v in fixed.items()):
                out[(values[y] if y else None, values[x])] = i
        return out

    def render(self):
        x, y = self._axes()
        self._wheres.children = [w for k, w in self.where.items() if k not in (x, y) and len(self.sweep.grid[k]) > 1]
        xs = self.sweep.grid[x]
        ys = self.sweep.grid[y] if y else (None,)
        shown = self.shown()
        self._table = self.sweep.table
        children = [widgets.Label("")] + [widgets.Label(str(v), layout={"justify_content": "center"}) for v in xs]
        self.buttons = {}
        for yv in ys:
            children.append(widgets.Label("" if yv is None else str(yv)))
            for xv in xs:
                i = shown[(yv, xv)]
                children.append(self._cell(i))
        self.cells.children = children
        self.cells.layout = {"grid_template_columns": f"auto repeat({len(xs)}, {self.thumb_px + 8}px)",
                             "grid_gap": "2px"}
        self._update_status()

    def _cell(self, i):
        image = widgets.Image(format="png", layout={"width": f"{self.thumb_px}px", "height": f"{self.thumb_px}px"})
        button = widgets.Button(layout={"width": f"{self.thumb_px}px"},
                                tooltip=", ".join(f"{k}={v}" for k, v in self.sweep.cells[i].items()))
        button.on_click(lambda _, i=i: self.open_cell(i))
        self.buttons[i] = button
        box = widgets.VBox([image, button])
        box._rw_image = image
        self._fill(i, image, button)
        return box

    def _fill(self, i, image, button):
        out = self.sweep.results[i]
        if out is not None and out.get("thumbnail") is not None:
            image.value = _png(out["thumbnail"])
        status = self.sweep.status[i]
        if status != "done":
            button.description = status
            return
        number = self._table[self.value.value].iloc[i] if self.value.value else None
        button.description = "open" if number is None else f"{float(number):.3g}"

    def refresh_cell(self, i):
        """Show cell ``i``'s new state (called as cells finish)."""
        button = self.buttons.get(i)
        if button is not None:
            self._table = self.sweep.table
            for box in self.cells.children:
                if isinstance(box, widgets.VBox) and box.children[1] is button:
                    self._fill(i, box._rw_image, button)
        self._update_status()

    def _update_status(self):
        done = sum(s == "done" for s in self.sweep.status)
        running = self.thread is not None and self.thread.is_alive()
        self.status.value = f"{done}/{len(self.sweep)} cells done" + (" · running" if running else "")
        self.run_button.disabled = running or done == len(self.sweep)
        self.stop_button.disabled = not running

    # ---- actions --------------------------------------------------------------------------------

    def open_cell(self, i: int):
        """Open cell ``i`` in the app below the grid (its finished session, `Sweep.open`)."""
        session = self.sweep.open(i)
        self.app = RegionalSamplerApp(session)
        self.opened_index = i
        title = ", ".join(f"{k}={v}" for k, v in self.sweep.cells[i].items())
        self.opened.children = [widgets.HTML(f"<b>cell {i}</b>: {title}"), self.app]
        return self.app

    def run(self):
        """Compute the missing cells in a background thread."""
        if self.thread is not None and self.thread.is_alive():
            return
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self._update_status()

    def _run(self):
        try:
            self.sweep.run(progress=False, on_cell=self.refresh_cell)
        except Exception as err:  # noqa: BLE001 - shown, the thread ends
            self.status.value = f"error: {err}"
            return
        self.thread = None
        self.render()

    def stop(self):
        """Cancel the pending cells; the finished ones stay."""
        self.sweep.stop()
