"""The app's Save menu: the session folder, a GIF of the run, a ComfyUI workflow or a ComfyUI image
(a PNG carrying its workflow, as ComfyUI's own images do), beside the notebook.

Files go to ``folder`` (default: the working directory, which is the notebook's folder in Jupyter
and Voila) under a fresh name: an existing file is never overwritten (``run.gif`` exists ->
``run-2.gif``). The label below the menu says where each one went, or why it could not be written.
"""
from __future__ import annotations

import html
import tempfile
from itertools import count
from pathlib import Path

import ipywidgets as widgets


def fresh_path(folder: Path, name: str, taken=None) -> Path:
    """``folder / name``, or ``stem-2.ext``, ``stem-3.ext``, ... : the first for which ``taken(path)`` is false."""
    taken = taken or Path.exists
    first = folder / name
    if not taken(first):
        return first
    suffix = "".join(first.suffixes) if first.suffix else ""
    stem = name[: len(name) - len(suffix)] if suffix else name
    for k in count(2):
        path = folder / f"{stem}-{k}{suffix}"
        if not taken(path):
            return path


def _workflow_taken(path: Path) -> bool:
    """A workflow writes ``stem.json`` and ``stem_region<j>.png`` beside it: none of them may exist."""
    return path.exists() or any(path.parent.glob(f"{path.stem}_region*.png"))


def copy_session(session):
    """An independent copy of ``session`` (through its own save/load), so a replay leaves the app's alone."""
    with tempfile.TemporaryDirectory(prefix="rw-copy-") as tmp:
        session.save(Path(tmp) / "session")
        return type(session).load(Path(tmp) / "session", session.model)


def save_session(session, folder: Path) -> list:
    path = fresh_path(folder, "session")
    session.save(path)
    return [path]


def save_gif(session, folder: Path) -> list:
    from .. import plot

    path = fresh_path(folder, "run.gif")
    anim = plot.animate(copy_session(session))  # replays the run from its start on a copy
    plot.save_animation(anim, path)
    return [path]


def save_workflow(session, folder: Path) -> list:
    path = fresh_path(folder, "workflow.json", taken=_workflow_taken)
    return [Path(p) for p in session.to_comfy(path)]


def save_comfy_png(session, folder: Path) -> list:
    """The image (decoded result, or the current step's latent) with the workflow in it, masks beside it."""
    path = fresh_path(folder, "comfyui.png", taken=_workflow_taken)
    return [Path(p) for p in session.save_png(path)]


# label -> writer(session, folder) -> written paths
KINDS = {
    "Session folder": save_session,
    "GIF of the run": save_gif,
    "ComfyUI workflow (API JSON)": save_workflow,
    "ComfyUI image (PNG with workflow)": save_comfy_png,
}


class SaveMenu(widgets.HBox):
    """A dropdown of what to save, a Save button and a line that says where it went."""

    def __init__(self, session, folder=None):
        self.session = session
        self.folder = folder  # None: the working directory at the time of saving
        self.kind = widgets.Dropdown(options=list(KINDS), value="Session folder", layout={"width": "230px"})
        self.save_button = widgets.Button(description="Save", icon="download", tooltip="write beside the notebook")
        self.message = widgets.HTML()
        self.written: list = []
        self.save_button.on_click(lambda _: self.save())
        super().__init__([self.kind, self.save_button, self.message],
                         layout={"align_items": "center", "flex_flow": "row wrap"})
        self.add_class("rw-save-menu")

    def save(self, kind=None) -> list:
        """Write ``kind`` (default: the dropdown's) and show where; returns the paths (``[]`` on failure)."""
        kind = kind or self.kind.value
        folder = Path(self.folder) if self.folder is not None else Path.cwd()
        self.message.value = f"writing the {html.escape(kind.lower())}…"
        try:
            paths = KINDS[kind](self.session, folder)
        except (ValueError, OSError, RuntimeError) as err:  # e.g. a workflow the nodes cannot express
            self.written = []
            self.message.value = f'<span style="color:#b00020">could not save: {html.escape(str(err))}</span>'
            return []
        self.written = paths
        shown = ", ".join(f"<code>{html.escape(str(p.resolve()))}</code>" for p in paths)
        self.message.value = f"wrote {shown}"
        return paths
