"""A file over its size limit is told apart from an unsafe path by its type, never by its message."""
import os

import pytest

from regional_widgets.io import comfy, comfy_files
from regional_widgets.io.comfy import ComfyWorkflowError
from regional_widgets.io.paths import FileSafetyError, FileTooLargeError, read_bytes


def test_over_the_limit_is_a_file_too_large_error(tmp_path):
    (tmp_path / "w.json").write_bytes(b"{}" * 10)
    with pytest.raises(FileTooLargeError, match="20 bytes, over the limit of 5 bytes"):
        read_bytes(tmp_path, "w.json", 5)
    assert issubclass(FileTooLargeError, FileSafetyError)
    with pytest.raises(ComfyWorkflowError, match="over the limit of 5 bytes"):
        comfy.read_file(tmp_path / "w.json", 5)


def test_an_unsafe_path_whose_name_says_over_the_limit_stays_a_file_safety_error(tmp_path):
    (tmp_path / "real.json").write_text("{}")
    link = tmp_path / "over the limit.json"
    link.symlink_to(tmp_path / "real.json")
    for read in (lambda: comfy.read_workflow(link), lambda: comfy_files.read_source(link)):
        with pytest.raises(FileSafetyError) as caught:
            read()
        assert not isinstance(caught.value, (ComfyWorkflowError, FileTooLargeError))
