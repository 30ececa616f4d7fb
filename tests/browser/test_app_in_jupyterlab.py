"""End to end in a real browser: JupyterLab + Chromium drive ``RegionalSamplerApp`` like a user.

Paint a stroke on the mask canvas with the mouse, press "Step", then check *in the kernel* that
region 1's mask gained exactly the pixels under the stroke and that the session made one step.
Set ``RW_WRITE_SCREENSHOT=1`` to refresh ``docs/app_screenshot.png`` (the README's picture); a
copy always lands in ``out/browser/``.
"""

from __future__ import annotations

import io
import os
import re

import numpy as np
from PIL import Image

from .conftest import ARTIFACTS, REPO

NOTEBOOK_CELLS = [
    "import regional_widgets as rw\n"
    "app = rw.RegionalSamplerApp.from_model(rw.models.ToyWorld())\n"
    "app",
]
CANVAS = "canvas.rw-mask-canvas, .rw-mask-canvas canvas"  # ipycanvas 0.14 draws a MultiCanvas on one <canvas>
# The stroke, in image pixels (continuous coordinates, pixel (i, j) covers [j, j+1) x [i, i+1)):
# one straight diagonal, so that whatever pointer moves the browser coalesces, every segment the
# kernel receives lies on it (a corner could be cut). It crosses both axes, catching a swapped or
# offset mapping.
STROKE = ((14.5, 18.5), (49.5, 43.5))
STROKE_MOVES = 24
TOLERANCE = 0.3  # image pixels: clientX rounding and sub-pixel layout, ~1/16 px each at x8


def canvas_geometry(page) -> dict:
    """The canvas's client rect and intrinsic size, read afresh (Lab may scroll on focus)."""
    return page.locator(CANVAS).first.evaluate(
        """el => { const r = el.getBoundingClientRect();
                   return {left: r.left, top: r.top, width: r.width, height: r.height, w: el.width, h: el.height}; }"""
    )


def image_to_client(g: dict, scale: float, x: float, y: float) -> tuple[float, float]:
    """Inverse of ipycanvas' ``getCoordinates`` (client -> canvas px) and MaskCanvas' ``/ scale``."""
    return g["left"] + x * scale * g["width"] / g["w"], g["top"] + y * scale * g["height"] / g["h"]


def client_to_image(g: dict, scale: float, cx: float, cy: float) -> tuple[float, float]:
    return (g["w"] * (cx - g["left"]) / g["width"]) / scale, (g["h"] * (cy - g["top"]) / g["height"]) / scale


def distance_to_segment(shape, a, b) -> np.ndarray:
    """Distance of every pixel centre to segment ab (image coordinates)."""
    cy, cx = np.mgrid[0:shape[0], 0:shape[1]] + 0.5
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = b - a
    t = np.clip(((cx - a[0]) * d[0] + (cy - a[1]) * d[1]) / max(d @ d, 1e-12), 0, 1)
    return np.hypot(cx - (a[0] + t * d[0]), cy - (a[1] + t * d[1]))


def drag(page, scale: float, start, end, moves: int) -> tuple[tuple, tuple]:
    """Press at ``start``, move in ``moves`` steps to ``end``, release; positions in image pixels.

    Each position is mapped through the canvas's rect read just before the event. Returns the
    image positions of the press and the release as the kernel computes them from those events.
    """
    mouse = page.mouse
    g = canvas_geometry(page)
    cx, cy = image_to_client(g, scale, *start)
    mouse.move(cx, cy)
    mouse.down()
    pressed = client_to_image(canvas_geometry(page), scale, cx, cy)
    for k in range(1, moves + 1):
        f = k / moves
        x, y = start[0] + f * (end[0] - start[0]), start[1] + f * (end[1] - start[1])
        g = canvas_geometry(page)
        cx, cy = image_to_client(g, scale, x, y)
        mouse.move(cx, cy)
    released = client_to_image(canvas_geometry(page), scale, cx, cy)
    mouse.up()
    return pressed, released


def test_paint_and_step_in_jupyterlab(lab):
    page = lab.page
    name = lab.server.write_notebook("app.ipynb", NOTEBOOK_CELLS)
    lab.open(name)
    lab.js("() => { window.jupyterapp.shell.collapseLeft(); window.jupyterapp.shell.collapseRight(); }")
    lab.run_all()

    # The kernel runs this checkout's package; the app opens on region 1 with the brush, at step 0.
    state = lab.eval(
        "dict(file=rw.__file__, shape=list(app.session.regions[0].mask.shape), scale=app.canvas.scale,"
        " region=app.canvas.active_region, tool=app.canvas.tool, brush=app.canvas.brush_size,"
        " step=app.session.step_index, painted=float(app.session.regions[0].mask.sum()))"
    )
    assert os.path.realpath(state["file"]) == str(REPO / "regional_widgets" / "__init__.py")
    assert (state["region"], state["tool"], state["step"], state["painted"]) == (1, "brush", 0, 0.0), state
    shape, scale = tuple(state["shape"]), state["scale"]

    canvas = page.locator(CANVAS).first
    canvas.wait_for(state="visible")
    canvas.evaluate("el => el.scrollIntoView({block: 'center'})")  # all of it on screen before the press
    g = canvas_geometry(page)
    assert (g["w"], g["h"]) == (round(shape[1] * scale), round(shape[0] * scale)), (g, shape, scale)

    pressed, released = drag(page, scale, *STROKE, moves=STROKE_MOVES)
    # The release writes the mask into the session (the kernel handles the events in order).
    lab.eval_until("float(app.session.regions[0].mask.sum())", lambda v: v > 0)

    # The button whose text is exactly "Step" (its accessible name also holds the icon's glyph).
    step = page.locator(".rw-app button").filter(has_text=re.compile(r"^\s*Step\s*$"))
    assert step.count() == 1
    step.click()
    lab.wait_idle()
    result = lab.eval_until(
        "dict(step=app.session.step_index, error=app.controls.error.message,"
        " mask=app.session.regions[0].mask.tolist(), others=[float(r.mask.sum()) for r in app.session.regions[1:]])",
        lambda v: v["step"] >= 1,
    )
    assert result["error"] == "", result["error"]
    assert result["step"] == 1

    # Exactly the pixels under the stroke: the painter sets the pixels whose centres lie within
    # the brush radius of the pointer's path (a straight segment here), and nothing else.
    mask = np.asarray(result["mask"], np.float32)
    radius = max(state["brush"] / 2, np.sqrt(2) / 2)
    dist = distance_to_segment(shape, pressed, released)
    must, may = dist <= radius - TOLERANCE, dist <= radius + TOLERANCE
    assert must.sum() > 50
    missing, stray = np.argwhere(must & (mask < 1)), np.argwhere(~may & (mask > 0))
    assert not len(missing), f"pixels under the stroke left unpainted (row, col): {missing[:10].tolist()}"
    assert not len(stray), f"pixels painted away from the stroke (row, col): {stray[:10].tolist()}"
    assert result["others"] == [0.0] * len(result["others"]), "only the active region (1) is painted"

    # For the picture: Run to the end (a real click again; the run is an asyncio task that yields
    # between sub-steps, so the kernel stays responsive), then show the app whole.
    run = page.locator(".rw-app button").filter(has_text=re.compile(r"^\s*Run\s*$"))
    run.click()
    done = lab.eval_until("dict(done=app.session.done, step=app.session.step_index, n=app.session.num_steps,"
                          " error=app.controls.error.message)", lambda v: v["done"] or v["error"], timeout=60)
    assert done["done"] and done["step"] == done["n"] and done["error"] == "", done
    lab.wait_idle()
    save_screenshot(lab)


def save_screenshot(lab) -> None:
    """The notebook with the app, 1280x1024, as a small PNG; the README's picture on request."""
    page = lab.page
    page.set_viewport_size({"width": 1280, "height": 1024})
    lab.js("() => window.jupyterapp.commands.execute('docmanager:save')")  # no unsaved-dot on the tab
    page.locator(CANVAS).first.evaluate("el => el.closest('.jp-Cell').scrollIntoView({block: 'start'})")
    page.mouse.move(2, 2)  # no hover state or brush cursor in the picture
    page.wait_for_timeout(300)  # let the last canvas draws land
    png = page.screenshot(type="png")
    if len(png) > 350_000:  # keep the README's picture small: a 256-colour palette is plenty for a UI
        buffer = io.BytesIO()
        Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(buffer, "PNG", optimize=True)
        png = buffer.getvalue()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "app_screenshot.png").write_bytes(png)
    if os.environ.get("RW_WRITE_SCREENSHOT") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        (REPO / "docs" / "app_screenshot.png").write_bytes(png)
