"""Notebooks are committed without outputs, except the values nbval compares."""
from pathlib import Path

import nbformat
import pytest

from scripts.notebook_outputs import problems

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 1


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_only_checked_cells_carry_outputs(path):
    nb = nbformat.read(path, as_version=4)
    assert problems(nb) == []
    assert sum(1 for c in nb.cells if c.cell_type == "code" and c.source.lstrip().startswith("# NBVAL_CHECK_OUTPUT")) >= 1
