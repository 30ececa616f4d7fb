"""MaskCanvas kernel-side cost per pointer event on a 512x512 display.

    python benchmarks/widgets_canvas.py

Drives the real MultiCanvas with the messages the front end sends, with the canvas manager's
`send` stubbed (the batch is still built and serialised, only the comm write is skipped), and
prints median milliseconds for: a mouse move during a brush drag (stamp + incremental overlay
patch + cursor, one hold_canvas batch), a hover move (cursor only), a mouse-up (session write,
which forks the run, plus the full overlay re-render with grown outlines) and the full overlay
re-render alone. Two scenes: a 64x64 image shown x8 and a 512x512 image shown x1, 3 regions.
A frame at 60 Hz is 16.7 ms.
"""
from __future__ import annotations

import statistics
import time

import numpy as np
from ipycanvas import canvas as ipycanvas_canvas

import regional_widgets as rw
from regional_widgets.widgets import MaskCanvas


def scene(side):
    model = rw.models.ToyWorld(n_exemplars=60, image_size=64)
    masks = [np.zeros((side, side), np.float32) for _ in range(3)]
    masks[1][: side // 2, : side // 2] = 1
    masks[2][side // 3:, side // 2:] = 0.5
    regions = [rw.Region(m, rw.SamplerConfig(positive=p)) for m, p in zip(masks, ("grass", "brick", "sky"))]
    session = rw.RegionalSamplerSession(model, rw.empty_latent(model, 64, 64), base=rw.SamplerConfig(positive="sky"),
                                        regions=regions, steps=4)
    return session, MaskCanvas(session)


def send(canvas, name, x=0.0, y=0.0):
    content = {"event": name, "x": x, "y": y}
    canvas.multicanvas._handle_msg({"content": {"data": {"method": "custom", "content": content}}, "buffers": []})


def timed(fn, repeat):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def measure(side, brush):
    session, canvas = scene(side)
    canvas.brush_size = brush
    rng = np.random.default_rng(0)
    state = {"x": 100.0, "y": 100.0}

    def step():  # a 4-12 display-pixel hop, as a fast drag delivers
        state["x"] = (state["x"] + rng.uniform(4, 12)) % 480 + 16
        state["y"] = (state["y"] + rng.uniform(-6, 6)) % 480 + 16
        send(canvas, "mouse_move", state["x"], state["y"])

    hover = timed(step, 300)
    send(canvas, "mouse_down", state["x"], state["y"])
    drag = timed(step, 300)

    def stroke_and_release():
        send(canvas, "mouse_down", state["x"], state["y"])
        step()
        t0 = time.perf_counter()
        send(canvas, "mouse_up", state["x"], state["y"])
        return time.perf_counter() - t0

    send(canvas, "mouse_up", state["x"], state["y"])
    release = statistics.median(stroke_and_release() for _ in range(20)) * 1e3
    render = timed(lambda: canvas._render(overlay=True), 20)
    return {"drag move": drag, "hover move": hover, "mouse up": release, "overlay render": render}


def main():
    ipycanvas_canvas._CANVAS_MANAGER.send = lambda *args, **kwargs: None
    print(f"{'scene':<22}{'drag move':>11}{'hover move':>12}{'mouse up':>11}{'overlay render':>16}   (median ms)")
    for side, brush in ((64, 4), (512, 32)):
        r = measure(side, brush)
        label = f"{side}x{side} image, x{512 // side}"
        print(f"{label:<22}{r['drag move']:>11.2f}{r['hover move']:>12.2f}{r['mouse up']:>11.2f}"
              f"{r['overlay render']:>16.2f}")


if __name__ == "__main__":
    main()
