"""The app's Open row: an upload button for a ComfyUI image or workflow, or a mask PNG.

What is uploaded stays in memory: it is read by the same bounded readers as files (a PNG through
Pillow with ``formats=["PNG"]``, the workflow chunks and JSON size- and depth-bounded) and never
written anywhere. A PNG with a ComfyUI workflow in it (``prompt``/``workflow`` chunks) or a
``.json`` workflow opens as a new session (``RegionalSamplerSession.from_comfy``, its masks looked
up in ``folder``, the notebook's folder; a mask not there starts empty); any other PNG is a mask
for the selected region. The line beside the button says what happened.
"""
from __future__ import annotations

import html
import warnings
from pathlib import Path

import ipywidgets as widgets

from ..io import comfy_png
from ..io.comfy import MAX_WORKFLOW_BYTES, ComfyWorkflowError
from ..io.comfy_files import ComfyImportWarning
from ..session import RegionalSamplerSession


class OpenMenu(widgets.HBox):
    """``upload`` (a FileUpload), ``message``; ``on_session(session)`` and ``on_mask(bytes)`` do the rest."""

    def __init__(self, on_session, on_mask, model, folder=None):
        self._on_session, self._on_mask, self._model = on_session, on_mask, model
        self.folder = folder  # None: the working directory at the time of the upload
        self.upload = widgets.FileUpload(accept=".png,.json", multiple=False, description="Open",
                                         tooltip="a ComfyUI image or workflow, or a mask PNG for the selected region")
        self.message = widgets.HTML()
        self.upload.observe(self._on_upload, names="value")
        super().__init__([self.upload, self.message], layout={"align_items": "center", "flex_flow": "row wrap"})
        self.add_class("rw-open-menu")

    def _on_upload(self, change):
        if not change["new"]:
            return
        item = change["new"][0]
        try:
            self.open_file(item["name"], bytes(item["content"]))
        finally:
            self.upload.unobserve(self._on_upload, names="value")
            self.upload.value = ()  # the same file can be uploaded again
            self.upload.observe(self._on_upload, names="value")

    def open_file(self, name: str, data: bytes) -> str:
        """Open uploaded bytes: ``"session"``, ``"mask"`` or ``"error"`` (the message says why)."""
        shown = html.escape(name)
        try:
            if comfy_png.is_png(data):
                chunks = comfy_png.read_chunks(data, name)
                if all(v is None for v in chunks.values()):
                    self._on_mask(data)
                    self.message.value = f"{shown}: loaded as the selected region's mask"
                    return "mask"
            elif name.lower().endswith(".png"):
                raise ValueError(f"{name}: not a PNG image")
            elif len(data) > MAX_WORKFLOW_BYTES:
                raise ComfyWorkflowError(f"{name}: {len(data)} bytes, over the limit of {MAX_WORKFLOW_BYTES} bytes")
            folder = Path(self.folder) if self.folder is not None else Path.cwd()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ComfyImportWarning)  # shown below, from the report
                session = RegionalSamplerSession.from_comfy(data, self._model, mask_folder=folder, missing_masks="empty")
            session.comfy_report["source"] = name
            self._on_session(session)
            lines = session.comfy_report["messages"]
            self.message.value = f"{shown}: opened node {html.escape(session.comfy_report['node'])}" + (
                "; not mapped: " + "; ".join(html.escape(m) for m in lines) if lines else "")
            return "session"
        except (ValueError, OSError) as err:  # ComfyWorkflowError, ComfyPngError, FileSafetyError, mask errors
            self.message.value = f'<span style="color:#b00020">could not open {shown}: {html.escape(str(err))}</span>'
            return "error"

