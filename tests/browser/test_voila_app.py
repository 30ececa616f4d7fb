"""The classroom app: ``notebooks/app.ipynb`` served by Voila, driven in Chromium like a student would.

Voila runs the committed notebook (its kernelspec pointed at this checkout, as in the JupyterLab
test) on loopback with a token; the page shows only the app. A mouse drag paints region 1 and
"Step" advances one regional step: checked in the kernel (a second client on Voila's kernel) and
on the page (the progress line).
"""
from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from .conftest import ARTIFACTS, DEFAULT_TIMEOUT, KERNEL_NAME, REPO, LabServer
from .test_app_in_jupyterlab import CANVAS, STROKE, STROKE_MOVES, canvas_geometry, drag, distance_to_segment

NOTEBOOK = REPO / "notebooks" / "app.ipynb"


class VoilaServer(LabServer):
    """``python -m voila app.ipynb`` in its own process group, on 127.0.0.1, a free port and a token."""

    def _start_once(self) -> None:
        nb = json.loads(NOTEBOOK.read_text())
        nb["metadata"]["kernelspec"] = {"name": KERNEL_NAME, "display_name": "regional_widgets tests (venv)",
                                        "language": "python"}
        (self.root_dir / "app.ipynb").write_text(json.dumps(nb))
        cmd = [sys.executable, "-m", "voila", "app.ipynb", "--no-browser", "--Voila.ip=127.0.0.1",
               f"--port={self.port}", "--Voila.port_retries=0", f"--token={self.token}", "--show_tracebacks=True",
               f"--Voila.connection_dir_root={self.runtime_dir}"]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.root_dir, env=self._env(), stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:  # the port answers once Voila listens (a page request would start a kernel)
            if self.proc.poll() is not None:
                log = self.log_tail()
                self.stop()
                raise RuntimeError(f"Voila exited during startup:\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Voila did not listen in 90 s:\n{self.log_tail()}")
            time.sleep(0.25)

    def page_kernel(self):
        """A client on the page's kernel (Voila keeps its connection files in a folder of the runtime dir)."""
        from jupyter_client import BlockingKernelClient

        deadline = time.monotonic() + 10
        while not (files := sorted(self.runtime_dir.glob("voila_*/kernel-*.json"))):
            assert time.monotonic() < deadline, f"no kernel connection file under {self.runtime_dir}"
            time.sleep(0.1)
        assert len(files) == 1, [f.name for f in files]
        kc = BlockingKernelClient(connection_file=str(files[0]))
        kc.load_connection_file()
        kc.start_channels(iopub=False, stdin=False, hb=False)
        return kc


@pytest.fixture
def voila_server():
    base = Path(tempfile.mkdtemp(prefix="rw-voila-"))
    server = VoilaServer(base)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def kernel_eval(kc, expr: str, timeout: float = DEFAULT_TIMEOUT):
    """``json.loads(json.dumps(expr))`` evaluated in the kernel (a user expression, shell channel only)."""
    import ast
    import queue

    msg_id = kc.execute("import json as _rw_json", silent=True, store_history=False,
                        user_expressions={"r": f"_rw_json.dumps({expr})"})
    deadline = time.monotonic() + timeout
    while True:
        try:
            reply = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"the kernel did not answer {expr!r}") from None
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    r = reply["content"]["user_expressions"]["r"]
    assert r["status"] == "ok", r
    return json.loads(ast.literal_eval(r["data"]["text/plain"]))


def eval_until(kc, expr, predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        value = kernel_eval(kc, expr)
        if predicate(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def test_classroom_app_in_voila_paint_and_step(voila_server, lab_page):
    page = lab_page
    page.goto(f"{voila_server.url}/?token={voila_server.token}")
    canvas = page.locator(CANVAS).first
    canvas.wait_for(state="visible", timeout=120_000)  # Voila executes the notebook, then renders
    assert "RegionalSamplerApp.from_model" not in page.content(), "Voila shows the app, not the code"
    kc = voila_server.page_kernel()
    try:
        state = kernel_eval(kc, "dict(file=rw.__file__, scale=app.canvas.scale, region=app.canvas.active_region,"
                                " brush=app.canvas.brush_size, step=app.session.step_index,"
                                " shape=list(app.session.regions[0].mask.shape),"
                                " painted=float(app.session.regions[0].mask.sum()))")
        assert Path(state["file"]).resolve() == REPO / "regional_widgets" / "__init__.py"
        assert (state["region"], state["step"], state["painted"]) == (1, 0, 0.0), state
        page.get_by_text("0/20 done").first.wait_for(state="visible", timeout=20_000)
        canvas.evaluate("el => el.scrollIntoView({block: 'center'})")
        g = canvas_geometry(page)
        shape, scale = tuple(state["shape"]), state["scale"]
        assert (g["w"], g["h"]) == (round(shape[1] * scale), round(shape[0] * scale)), (g, shape, scale)

        pressed, released = drag(page, scale, *STROKE, moves=STROKE_MOVES)
        eval_until(kc, "float(app.session.regions[0].mask.sum())", lambda v: v > 0)
        step = page.locator(".rw-app button").filter(has_text=re.compile(r"^\s*Step\s*$"))
        assert step.count() == 1
        step.click()
        result = eval_until(kc, "dict(step=app.session.step_index, error=app.controls.error.message,"
                                " progress=app.controls.progress_text.value, mask=app.session.regions[0].mask.tolist())",
                            lambda v: v["step"] >= 1)
    finally:
        kc.stop_channels()
    assert result["step"] == 1 and result["error"] == "", result
    # the painted pixels lie under the stroke (the JupyterLab test checks the exact set)
    mask = np.asarray(result["mask"], np.float32)
    dist = distance_to_segment(shape, pressed, released)
    assert mask.sum() > 50 and (dist[mask > 0] <= max(state["brush"] / 2, np.sqrt(2) / 2) + 0.3).all()
    # and the page says so: the progress line shows the step the kernel made ("0/20 done" before it)
    assert result["progress"].startswith("1/20 done"), result["progress"]
    page.get_by_text("1/20 done").first.wait_for(state="visible", timeout=20_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "voila_app.png"), full_page=True)  # what the class sees
