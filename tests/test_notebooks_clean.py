"""Notebooks are committed without outputs or widget state, and their summary cells assert what they show."""
from pathlib import Path

import nbformat
import pytest

from scripts import notebook_outputs
from scripts.notebook_outputs import APPS, problems

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


def test_the_tutorials_and_the_app_are_there():
    tutorials = [p.name[:3] for p in NOTEBOOKS if p.name not in APPS]
    assert {"01_", "02_", "03_", "04_", "05_", "07_"} <= set(tutorials) and tutorials == sorted(tutorials)
    assert [p.name for p in NOTEBOOKS if p.name in APPS] == ["app.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs_and_summaries_assert(path):
    assert problems(nbformat.read(path, as_version=4), app=path.name in APPS) == []


def a_clean_notebook():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nassert 1 + 1 == 2")]
    return nb


WIDGET_STATE = {"application/vnd.jupyter.widget-state+json": {
    "state": {"abc": {"model_name": "LayoutModel", "model_module": "@jupyter-widgets/base", "state": {}}},
    "version_major": 2, "version_minor": 0}}


def test_saved_widget_state_fails_the_check_and_strip_removes_it(tmp_path, capsys):
    path = tmp_path / "nb.ipynb"
    nb = a_clean_notebook()
    nbformat.write(nb, path)
    assert notebook_outputs.main(["--check", str(path)]) == 0
    nb.metadata["widgets"] = WIDGET_STATE
    nbformat.write(nb, path)
    assert problems(nbformat.read(path, as_version=4)) == ["saved widget state committed (metadata.widgets)"]
    assert notebook_outputs.main(["--check", str(path)]) == 1
    assert "metadata.widgets" in capsys.readouterr().out
    notebook_outputs.main([str(path)])  # strip
    assert "widgets" not in nbformat.read(path, as_version=4).metadata
    assert notebook_outputs.main(["--check", str(path)]) == 0


def test_outputs_and_a_missing_summary_fail_the_check():
    nb = a_clean_notebook()
    nb.cells[0].outputs = [nbformat.v4.new_output("stream", text="2\n")]
    nb.cells.append(nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(2)"))
    assert problems(nb) == ["cell 0: output or execution count committed", "cell 1: summary cell without an assert"]
    bare = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    assert problems(bare) == ["no summary cell (# NBVAL_CHECK_OUTPUT with an assert)"]
    assert problems(bare, app=True) == []
