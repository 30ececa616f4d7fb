"""Real-browser fixtures: a JupyterLab server, Debian's Chromium driven by Playwright, a kernel client.

Layer 3 of ``spec/testing.md``. Everything runs on loopback, in temporary folders, with the kernel
being this virtual environment's Python importing ``regional_widgets`` from this checkout.

* ``lab_server`` (session): ``python -m jupyterlab`` in its own process group, a free port, a random
  token, temporary root/workspaces/config/runtime folders and a kernelspec of our own.
* ``lab_browser`` (package): a Chromium found by `chromium_executable` ($RW_CHROMIUM, Playwright's own,
  a system one, else ``python -m playwright install chromium`` unless $RW_NO_BROWSER_INSTALL); no
  browser is a test *failure* that says what was tried and how to install one.
* ``lab_page`` (function): a fresh 1280x900 browser context and page.
* ``Lab`` helpers: open a notebook, run all cells, wait for the kernel, and run code in the
  notebook's own kernel through a second Jupyter client (shell channel only, no DOM scraping).
"""

from __future__ import annotations

import ast
import json
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
KERNEL_NAME = "rw-test-venv"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
]
SERVER_START_TIMEOUT = 90  # s; JupyterLab on 2 busy cores starts in ~5-10 s
DEFAULT_TIMEOUT = 60  # s; per wait in the page and in the kernel


# ---- finding a browser -------------------------------------------------------------------------
# In this order: $RW_CHROMIUM, Playwright's own Chromium, a system Chromium/Chrome on PATH; when none
# is there, `python -m playwright install chromium` (a user's machine with network; no root needed),
# unless $RW_NO_BROWSER_INSTALL is set (CI and these machines: Debian's package, see .ci/run).
SYSTEM_BROWSERS = ("chromium", "chromium-browser", "google-chrome")
INSTALL_TIMEOUT = 600  # s; Playwright's Chromium is ~150 MB
APT_HINT = ("Install Debian's package:  sudo apt-get install -y chromium   (as root: apt-get install -y chromium),\n"
            "or Playwright's browser:  python -m playwright install chromium,\n"
            "or point RW_CHROMIUM at a Chromium binary.")


class BrowserNotFound(RuntimeError):
    pass


def _executable(path) -> bool:
    return bool(path) and os.path.isfile(path) and os.access(path, os.X_OK)


def playwright_chromium_path() -> str | None:
    """Where Playwright keeps (or would keep) its own Chromium, from Playwright itself."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        return pw.chromium.executable_path


def find_chromium(env=None, playwright_path=playwright_chromium_path) -> tuple[str | None, str, list[str]]:
    """``(path, where, tried)``: the first browser in the order above, ``(None, "", tried)`` when none.

    ``playwright_path`` is a callable (Playwright's answer); ``tried`` says why each place was passed over.
    """
    env = os.environ if env is None else env
    tried = []
    explicit = env.get("RW_CHROMIUM")
    if explicit:
        if _executable(explicit):
            return explicit, "RW_CHROMIUM", tried
        # asked for by name: a wrong path is an error, not a reason to pick another browser
        raise BrowserNotFound(f"RW_CHROMIUM={explicit} is not an executable file")
    tried.append("RW_CHROMIUM: not set")
    try:
        own = playwright_path()
    except Exception as err:  # no Playwright driver: say so and go on
        own, why = None, f"cannot ask Playwright ({type(err).__name__}: {err})"
    else:
        why = f"not installed (expected {own})" if own else "no path given"
    if _executable(own):
        return own, "playwright", tried
    tried.append(f"Playwright's Chromium: {why}")
    for name in SYSTEM_BROWSERS:
        path = shutil.which(name, path=env.get("PATH", os.defpath))
        if path:
            return path, f"PATH ({name})", tried
    tried.append(f"system browsers: none of {', '.join(SYSTEM_BROWSERS)} on PATH")
    return None, "", tried


def install_playwright_chromium(timeout: float = INSTALL_TIMEOUT, run=subprocess.run) -> str | None:
    """``python -m playwright install chromium``; None when it worked, else the exact reason it did not."""
    cmd = [sys.executable, "-m", "playwright", "install", "chromium"]
    shown = "python -m playwright install chromium"
    try:
        done = run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return f"`{shown}` did not finish in {timeout:.0f} s"
    except OSError as err:
        return f"`{shown}` could not start: {err}"
    if done.returncode != 0:
        text = re.sub(r"\x1b\[[0-9;]*m", "", (done.stderr or "") + "\n" + (done.stdout or ""))
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("Error")]  # Playwright's own message, not the JS stack
        # the first names the cause (e.g. getaddrinfo ENOTFOUND), the last sums up (Download failure)
        detail = "; ".join(dict.fromkeys(errors[:1] + errors[-1:])) if errors else " | ".join(lines[-3:]) or "no output"
        url = re.search(r"from (https?://\S+)", text)
        if url:
            detail += f" (downloading {url.group(1)})"
        return f"`{shown}` exited with status {done.returncode}: {detail}"
    return None


def chromium_executable(env=None, playwright_path=playwright_chromium_path, install=install_playwright_chromium) -> str:
    """A Chromium for the browser tests, found or installed; fails (does not skip) with the reasons."""
    env = os.environ if env is None else env
    try:
        path, _, tried = find_chromium(env, playwright_path)
    except BrowserNotFound as err:
        pytest.fail(f"No Chromium for the browser tests (tests/browser): {err}.\n{APT_HINT}", pytrace=False)
    if path:
        return path
    if env.get("RW_NO_BROWSER_INSTALL"):
        tried.append("python -m playwright install chromium: not tried (RW_NO_BROWSER_INSTALL is set)")
    else:
        reason = install()
        if reason is None:
            path, _, more = find_chromium(env, playwright_path)
            if path:
                return path
            reason = "it reported success, yet " + next(t for t in more if t.startswith("Playwright"))
        tried.append(f"python -m playwright install chromium: {reason}")
    pytest.fail("No Chromium for the browser tests (tests/browser) was found:\n  - " + "\n  - ".join(tried)
                + "\n" + APT_HINT, pytrace=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PortTaken(RuntimeError):
    pass


class LabServer:
    def __init__(self, base: Path):
        self.base = base
        self.root_dir = base / "root"
        self.workspaces_dir = base / "workspaces"
        self.runtime_dir = base / "runtime"
        self.config_dir = base / "config"
        self.data_dir = base / "data"
        self.log_path = base / "server.log"
        for d in (self.root_dir, self.workspaces_dir, self.runtime_dir, self.config_dir, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.token = secrets.token_hex(24)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    # -- environment -------------------------------------------------------------------------
    def _write_kernelspec(self) -> None:
        spec_dir = self.data_dir / "kernels" / KERNEL_NAME
        spec_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "regional_widgets tests (venv)",
            "language": "python",
            # The kernel imports regional_widgets from this checkout whatever is installed.
            "env": {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))},
            "metadata": {"debugger": False},
        }
        (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))

    def _write_settings(self) -> None:
        """User settings in our own config dir: no news prompt, no update checks, no autosave races."""
        settings = {
            "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
            "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
        }
        for plugin, values in settings.items():
            path = self.config_dir / "lab" / "user-settings" / f"{plugin}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))

    def _env(self) -> dict:
        env = dict(os.environ)
        env.update(
            JUPYTER_CONFIG_DIR=str(self.config_dir),  # no user config, settings or lab workspaces
            JUPYTER_RUNTIME_DIR=str(self.runtime_dir),  # kernel connection files land here
            JUPYTER_PATH=str(self.data_dir),  # our kernelspec first; sys.prefix still serves the extensions
            IPYTHONDIR=str(self.base / "ipython"),  # no user startup files in the kernel
            JUPYTER_PLATFORM_DIRS="0",
            PYDEVD_DISABLE_FILE_VALIDATION="1",
            PYTHONUNBUFFERED="1",
        )
        return env

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self, attempts: int = 3) -> None:
        self._write_kernelspec()
        self._write_settings()
        for attempt in range(attempts):
            try:
                return self._start_once()
            except PortTaken:  # the free port was taken between our probe and the server's bind
                self.port = _free_port()
                self.url = f"http://127.0.0.1:{self.port}"
        raise RuntimeError(f"JupyterLab found no free port in {attempts} attempts:\n{self.log_tail()}")

    def _start_once(self) -> None:
        cmd = [
            sys.executable, "-m", "jupyterlab",
            "--no-browser", "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={self.port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            f"--LabApp.workspaces_dir={self.workspaces_dir}",
            "--LabApp.expose_app_in_browser=True",
            "--LabApp.news_url=None",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--LabApp.extension_manager=readonly",
            f"--MultiKernelManager.default_kernel_name={KERNEL_NAME}",
            "--ServerApp.terminals_enabled=False",
        ]
        self._log = open(self.log_path, "wb")
        # cwd: the temporary root, so nothing in the working directory shadows the package.
        self.proc = subprocess.Popen(
            cmd, cwd=self.root_dir, env=self._env(), stdout=self._log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                log = self.log_tail()
                self.stop()
                if "already in use" in log:
                    raise PortTaken(log)
                raise RuntimeError(f"JupyterLab exited during startup:\n{log}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"JupyterLab did not answer in {SERVER_START_TIMEOUT} s:\n{self.log_tail()}")
            time.sleep(0.25)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:  # the whole group: the server and its kernels
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:  # kernels may outlive a server that exited
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        self.proc = None

    def api(self, method: str, path: str):
        req = urllib.request.Request(f"{self.url}/api/{path}", method=method,
                                     headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def shutdown_sessions(self) -> None:
        """Stop every notebook session and its kernel: each test starts from a server with none."""
        for session in self.api("GET", "sessions"):
            try:
                self.api("DELETE", f"sessions/{session['id']}")
            except urllib.error.HTTPError:
                pass

    def log_tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no server log)"

    # -- notebooks and kernels -------------------------------------------------------------
    def write_notebook(self, name: str, cells: list[str]) -> str:
        nb = {
            "nbformat": 4,
            "nbformat_minor": 5,
            "metadata": {
                "kernelspec": {"name": KERNEL_NAME, "display_name": "regional_widgets tests (venv)", "language": "python"},
                "language_info": {"name": "python"},
            },
            "cells": [
                {"cell_type": "code", "id": f"cell-{i}", "metadata": {}, "execution_count": None,
                 "outputs": [], "source": src}
                for i, src in enumerate(cells)
            ],
        }
        (self.root_dir / name).write_text(json.dumps(nb, indent=1))
        return name

    def kernel_client(self, kernel_id: str):
        """A blocking client on the notebook's own kernel (a second client, like a console)."""
        from jupyter_client import BlockingKernelClient

        cf = self.runtime_dir / f"kernel-{kernel_id}.json"
        deadline = time.monotonic() + 10
        while not cf.exists():
            if time.monotonic() > deadline:
                found = sorted(p.name for p in self.runtime_dir.iterdir())
                raise RuntimeError(f"no connection file {cf.name} in {self.runtime_dir}: {found}")
            time.sleep(0.1)
        kc = BlockingKernelClient(connection_file=str(cf))
        kc.load_connection_file()
        kc.start_channels(iopub=False, stdin=False, hb=False)
        return kc


# Package scope, not session: Playwright's sync API keeps an asyncio loop running while it is
# started, which would break asyncio.run() in every test collected after this folder.
@pytest.fixture(scope="package")
def lab_server():
    base = Path(tempfile.mkdtemp(prefix="rw-lab-"))
    server = LabServer(base)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="package")
def lab_browser():
    executable = chromium_executable()
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
    except Exception:
        pw.stop()
        raise
    try:
        yield browser
    finally:
        browser.close()
        pw.stop()


@pytest.fixture
def lab_page(lab_browser):
    context = lab_browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    context.set_default_timeout(DEFAULT_TIMEOUT * 1000)
    page = context.new_page()
    page.console_errors = []  # type: ignore[attr-defined]
    page.on("pageerror", lambda e: page.console_errors.append(f"pageerror: {e}"))  # type: ignore[attr-defined]
    page.on("console", lambda m: m.type == "error" and page.console_errors.append(f"console: {m.text}"))  # type: ignore[attr-defined]
    try:
        yield page
    finally:
        context.close()


class Lab:
    """Drives one notebook in JupyterLab through ``window.jupyterapp`` (expose_app_in_browser)."""

    def __init__(self, server: LabServer, page):
        self.server = server
        self.page = page
        self._kc = None

    # -- page ---------------------------------------------------------------------------------
    def open(self, name: str) -> None:
        page = self.page
        page.goto(f"{self.server.url}/lab/tree/{name}?reset&token={self.server.token}")
        page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell", timeout=DEFAULT_TIMEOUT * 1000)
        # The notebook is the current widget and its kernel has started and is idle.
        page.wait_for_function(
            """(name) => {
                const w = window.jupyterapp.shell.currentWidget;
                if (!w || !w.context || w.context.path !== name || !w.content) return false;
                const k = w.sessionContext.session && w.sessionContext.session.kernel;
                return w.context.isReady && !!k && k.connectionStatus === 'connected' && k.status === 'idle';
            }""",
            arg=name,
            timeout=DEFAULT_TIMEOUT * 1000,
        )

    def js(self, expr: str, arg=None):
        return self.page.evaluate(expr, arg)

    def kernel_status(self) -> str:
        return self.js("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.status")

    def kernel_id(self) -> str:
        return self.js("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.id")

    def wait_idle(self, timeout: float = DEFAULT_TIMEOUT, settle: float = 0.3) -> None:
        """Wait until the kernel reads idle twice ``settle`` seconds apart (one idle may precede a queued request)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.kernel_status() == "idle":
                time.sleep(settle)
                if self.kernel_status() == "idle":
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"kernel not idle after {timeout} s (status {self.kernel_status()!r})")
            time.sleep(0.1)

    def run_all(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Run every cell and wait until each code cell has an execution count; fail on error outputs."""
        self.js("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        self.page.wait_for_function(
            """() => {
                const nb = window.jupyterapp.shell.currentWidget.content;
                return nb.widgets.every(c => c.model.type !== 'code' || c.model.executionCount !== null);
            }""",
            timeout=timeout * 1000,
        )
        self.wait_idle(timeout)
        errors = self.js(
            """() => {
                const out = [];
                for (const c of window.jupyterapp.shell.currentWidget.content.widgets) {
                    if (c.model.type !== 'code') continue;
                    for (let i = 0; i < c.model.outputs.length; i++) {
                        const o = c.model.outputs.get(i).toJSON();
                        if (o.output_type === 'error') out.push(o.ename + ': ' + o.evalue + '\\n' + (o.traceback || []).join('\\n'));
                    }
                }
                return out;
            }"""
        )
        if errors:
            raise AssertionError("a notebook cell failed:\n" + "\n\n".join(errors))

    # -- kernel ---------------------------------------------------------------------------------
    def kernel(self):
        if self._kc is None:
            self._kc = self.server.kernel_client(self.kernel_id())
        return self._kc

    def eval(self, expr: str, setup: str = "", timeout: float = DEFAULT_TIMEOUT):
        """Evaluate ``expr`` in the notebook's kernel (after running ``setup``); returns ``json.loads`` of
        ``json.dumps(expr)``. Shell channel only: a silent execute_request with a user expression."""
        kc = self.kernel()
        code = "import json as _rw_json\n" + setup
        msg_id = kc.execute(code, silent=True, store_history=False,
                            user_expressions={"r": f"_rw_json.dumps({expr})"})
        deadline = time.monotonic() + timeout
        while True:
            try:
                reply = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the kernel did not answer {expr!r} in {timeout} s") from None
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        content = reply["content"]
        if content["status"] != "ok":
            raise AssertionError(f"kernel code failed: {content.get('ename')}: {content.get('evalue')}\n"
                                 + "\n".join(content.get("traceback", [])))
        r = content["user_expressions"]["r"]
        if r["status"] != "ok":
            raise AssertionError(f"kernel expression {expr!r} failed: {r.get('ename')}: {r.get('evalue')}")
        return json.loads(ast.literal_eval(r["data"]["text/plain"]))

    def eval_until(self, expr: str, predicate, timeout: float = 20, setup: str = ""):
        """Poll ``expr`` in the kernel until ``predicate(value)``; browser messages may still be in flight."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expr, setup=setup)
            if predicate(value) or time.monotonic() > deadline:
                return value
            time.sleep(0.2)

    def close(self) -> None:
        if self._kc is not None:
            self._kc.stop_channels()
            self._kc = None


ARTIFACTS = REPO / "out" / "browser"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rw_report_{report.when}", report)


@pytest.fixture
def lab(request, lab_browser, lab_server, lab_page):  # the browser first: no Chromium, no server started
    lab = Lab(lab_server, lab_page)
    try:
        yield lab
    finally:
        report = getattr(request.node, "rw_report_call", None)
        if report is None or report.failed:  # keep what the browser showed, the page errors and the server log
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            stem = ARTIFACTS / f"failed-{request.node.name}"
            try:
                lab_page.screenshot(path=f"{stem}.png")
            except Exception:
                pass
            Path(f"{stem}.log").write_text(
                "page errors:\n" + "\n".join(lab_page.console_errors)  # type: ignore[attr-defined]
                + "\n\nserver log:\n" + lab_server.log_tail(200)
            )
        lab.close()
        lab_page.context.close()  # the page first, so that it does not restart the kernel
        lab_server.shutdown_sessions()
