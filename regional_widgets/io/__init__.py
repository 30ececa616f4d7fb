"""Plain data in and out (JSON, npz, safetensors, PNG); never pickle, never the session or widgets.

Every file is read and written through `paths`: inside the folder given, never through a symlink,
writes atomic, never over a file regional_widgets did not write. A refused path raises
`FileSafetyError` (a ValueError); damaged or tampered contents raise
`session_files.SessionFileError` or `comfy.ComfyWorkflowError` (ValueErrors too).
See docs/files_and_safety.md.
"""
from .paths import FileSafetyError

__all__ = ["FileSafetyError"]
