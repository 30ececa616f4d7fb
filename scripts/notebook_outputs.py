"""Keep notebooks clean: outputs only in the cells marked ``# NBVAL_CHECK_OUTPUT``.

    python scripts/notebook_outputs.py notebooks/*.ipynb          # execute, keep checked outputs
    python scripts/notebook_outputs.py --check notebooks/*.ipynb  # fail if anything else has output

nbval compares a checked cell's fresh output with the stored one, so those few outputs are the
expected values; every other cell is committed without outputs.
"""
from __future__ import annotations

import argparse
import sys

import nbformat

MARK = "# NBVAL_CHECK_OUTPUT"


def is_checked(cell) -> bool:
    return cell.cell_type == "code" and cell.source.lstrip().startswith(MARK)


def problems(nb) -> list:
    found = []
    for k, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if is_checked(cell):
            if not cell.outputs:
                found.append(f"cell {k}: checked cell has no stored output")
        elif cell.outputs or cell.execution_count is not None:
            found.append(f"cell {k}: output or execution count committed")
    return found


def refresh(path: str) -> None:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3").execute()
    for cell in nb.cells:
        if cell.cell_type == "code" and not is_checked(cell):
            cell.outputs = []
            cell.execution_count = None  # nbval needs the count only where outputs are compared
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true")
    parser.add_argument("paths", nargs="+")
    args = parser.parse_args(argv)
    bad = 0
    for path in args.paths:
        if args.check:
            for line in problems(nbformat.read(path, as_version=4)):
                print(f"{path}: {line}")
                bad += 1
        else:
            refresh(path)
            print(f"refreshed {path}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
