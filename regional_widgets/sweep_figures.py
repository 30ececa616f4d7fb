"""`Sweep.grid_figure`: an XY grid of a sweep's cells, as thumbnails or as a heat map of a metric."""
from __future__ import annotations

import numpy as np


def axes_cells(sweep, x, y=None, where=None) -> tuple:
    """``(xs, ys, index, free, fixed)``: the axis values, ``index[(yv, xv)]`` the cell rows in each place
    (every row of a key left free), the free keys with several values, the ``where`` settings as text."""
    keys = sweep.keys
    for name, key in (("x", x), ("y", y)):
        if key is not None and key not in keys:
            raise ValueError(f"{name}: expected one of the grid's keys {', '.join(keys)}, got {key!r}")
    where = dict(where or {})
    for key, value in where.items():
        if key not in keys or value not in sweep.grid[key]:
            accepted = ", ".join(map(repr, sweep.grid[key])) if key in keys else ", ".join(keys)
            raise ValueError(f"where: {key}={value!r} is not in the grid; accepted: {accepted}")
    free = [k for k in keys if k not in (x, y) and k not in where and len(sweep.grid[k]) > 1]
    xs = sweep.grid[x]
    ys = sweep.grid[y] if y is not None else (None,)
    index = {}
    for i, values in enumerate(sweep.cells):
        if any(values[k] != v for k, v in where.items()):
            continue
        index.setdefault((values[y] if y is not None else None, values[x]), []).append(i)
    fixed = [f"{k}={v}" for k, v in where.items()]
    return xs, ys, index, free, fixed


def grid_figure(sweep, x, y=None, value="image", where=None, ax=None):
    import matplotlib.pyplot as plt

    xs, ys, index, free, fixed = axes_cells(sweep, x, y, where)
    if value == "image":
        if "thumbnail" not in sweep.metrics:
            raise ValueError("value: 'image' needs the thumbnail metric")
        note = fixed + [f"{k}={sweep.grid[k][0]}" for k in free]
        fig, axes = plt.subplots(len(ys), len(xs), figsize=(1.3 * len(xs) + 0.6, 1.3 * len(ys) + 0.6),
                                 squeeze=False)
        for r, yv in enumerate(ys):
            for c, xv in enumerate(xs):
                a = axes[r][c]
                a.set_xticks([]), a.set_yticks([])
                rows = index.get((yv, xv), [])
                out = sweep.results[rows[0]] if rows else None
                if out is not None and out.get("thumbnail") is not None:
                    a.imshow(out["thumbnail"])
                if r == 0:
                    a.set_title(str(xv), fontsize=7)
                if c == 0 and y is not None:
                    a.set_ylabel(str(yv), fontsize=7)
        fig.suptitle(f"{y or ''}{' × ' if y else ''}{x}" + (f"  ({', '.join(note)})" if note else ""), fontsize=8)
        fig.tight_layout()
        fig.values = None
        return fig
    table = sweep.table
    if value not in table.columns or value in sweep.keys or value in ("status", "name"):
        metrics = [c for c in table.columns if c not in sweep.keys and c not in ("status", "name")]
        raise ValueError(f"value: expected 'image' or a metric ({', '.join(metrics)}), got {value!r}")
    grid = np.full((len(ys), len(xs)), np.nan)
    for r, yv in enumerate(ys):
        for c, xv in enumerate(xs):
            rows = index.get((yv, xv), [])
            numbers = table[value].iloc[rows].astype(float).dropna() if rows else []
            if len(numbers):
                grid[r, c] = float(np.mean(numbers))
    given = ax is not None
    if ax is None:
        fig, ax = plt.subplots(figsize=(0.9 * len(xs) + 2.2, 0.5 * len(ys) + 1.6))
    else:
        fig = ax.figure
    from matplotlib.colors import LogNorm

    finite = grid[np.isfinite(grid)]
    if value.startswith("detail") and len(finite) and (finite > 0).all():
        # a ratio: 1 (as detailed as a plain run) in the middle, under- and over-noised alike on a log scale
        top = max(float(finite.max()), 1 / float(finite.min()), 2.0)  # within 2x of a plain run: pale
        image = ax.imshow(grid, cmap="RdBu_r", norm=LogNorm(1 / top, top), aspect="auto")
        dark = np.abs(np.log(np.where(np.isfinite(grid), grid, 1.0))) > 0.6 * np.log(top)
    else:
        image = ax.imshow(grid, cmap="viridis", aspect="auto")
        dark = grid < np.nanmean(grid) if len(finite) else np.zeros(grid.shape, bool)
    bar = fig.colorbar(image, ax=ax, fraction=0.046)
    if isinstance(image.norm, LogNorm):
        bar.set_ticks([t for t in (0.01, 0.03, 0.1, 0.3, 0.5, 1, 2, 3, 10, 30, 100) if 1 / top <= t <= top])
        bar.ax.yaxis.set_major_formatter("{x:.3g}")
        bar.ax.yaxis.set_minor_formatter("")
    for r in range(len(ys)):
        for c in range(len(xs)):
            if np.isfinite(grid[r, c]):
                ax.text(c, r, f"{grid[r, c]:.3g}", ha="center", va="center", fontsize=7,
                        color="white" if dark[r, c] else "black")
    ax.set_xticks(range(len(xs)), [str(v) for v in xs], fontsize=7, rotation=30)
    ax.set_yticks(range(len(ys)), [str(v) for v in ys] if y is not None else [""], fontsize=7)
    ax.set_xlabel(x)
    if y is not None:
        ax.set_ylabel(y)
    note = fixed + [f"mean over {k}" for k in free]
    ax.set_title(value + (f"  ({', '.join(note)})" if note else ""), fontsize=9)
    fig.tight_layout()
    if given:  # several heat maps may share the figure: the numbers go with their axes
        ax.values = grid
        return ax
    fig.values = grid
    return fig
