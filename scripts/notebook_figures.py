"""Save each tutorial's last figure as docs/tutorial_NN.png (the pictures in the README).

    python scripts/notebook_figures.py notebooks/0*.ipynb
"""
from __future__ import annotations

import base64
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

DOCS = Path(__file__).parents[1] / "docs"


def last_png(nb) -> bytes:
    for cell in reversed(nb.cells):
        for out in reversed(cell.get("outputs", [])):
            data = out.get("data", {})
            if "image/png" in data:
                return base64.b64decode(data["image/png"])
    raise ValueError("no figure in the notebook")


def main(paths) -> int:
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        NotebookClient(nb, timeout=300, kernel_name="python3").execute()
        target = DOCS / f"tutorial_{Path(path).name[:2]}.png"
        target.write_bytes(last_png(nb))
        if target.stat().st_size > 150_000:  # keep the README light: 256 colours are plenty here
            from PIL import Image

            Image.open(target).convert("RGB").quantize(256).save(target, optimize=True)
        print(f"{path} -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
