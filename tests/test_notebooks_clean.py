"""Notebooks are committed without outputs, and their summary cells assert what they show."""
from pathlib import Path

import nbformat
import pytest

from scripts.notebook_outputs import problems

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_the_five_tutorials_are_there():
    assert [p.name[:3] for p in NOTEBOOKS] == ["01_", "02_", "03_", "04_", "05_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs_and_summaries_assert(path):
    assert problems(nbformat.read(path, as_version=4)) == []
