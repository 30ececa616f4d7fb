"""Keep notebooks clean: committed without outputs or saved widget state; summary cells assert their content.

    python scripts/notebook_outputs.py notebooks/*.ipynb          # strip outputs, counts and widget state
    python scripts/notebook_outputs.py --check notebooks/*.ipynb  # fail if anything is left

nbval can only compare a ``# NBVAL_CHECK_OUTPUT`` cell with an output stored in the notebook, and
notebooks are committed without outputs, so each such summary cell also asserts its values: a
wrong number fails the nbval run in CI. Saved widget state (``metadata.widgets``, written by
"Save Widget State Automatically") is output too: hundreds of KB of model state that goes stale.

Notebooks that are apps rather than tutorials (``app.ipynb``, served by Voila) need no summary cell.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

MARK = "# NBVAL_CHECK_OUTPUT"
APPS = ("app.ipynb",)


def is_summary(cell) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith(MARK)


def problems(nb, app: bool = False) -> list:
    """What is wrong with ``nb``; an ``app`` notebook needs no summary cell."""
    found = []
    if "widgets" in nb.metadata:
        found.append("saved widget state committed (metadata.widgets)")
    for k, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if cell.outputs or cell.execution_count is not None:
            found.append(f"cell {k}: output or execution count committed")
        if is_summary(cell) and "assert " not in cell.source:
            found.append(f"cell {k}: summary cell without an assert")
    if not app and not any(is_summary(cell) for cell in nb.cells):
        found.append("no summary cell (# NBVAL_CHECK_OUTPUT with an assert)")
    return found


def strip(path: str) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    bad = 0
    for path in args.paths:
        if args.check:
            for line in problems(nbformat.read(path, as_version=4), app=Path(path).name in APPS):
                print(f"{path}: {line}")
                bad += 1
        else:
            strip(path)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
