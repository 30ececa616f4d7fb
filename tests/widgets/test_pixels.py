"""The painter's pixel rules: the fill tool's connected component (scipy.ndimage.label) against the
run-by-run search it replaced, kept here as the oracle."""
import numpy as np
import pytest

from regional_widgets.widgets.pixels import connected_component, horizontal_runs as _runs


def runs_component(candidates, i, j):
    """The former implementation: 4-connected runs found by a stack search over the rows."""
    rows, starts, ends = _runs(candidates)
    first = np.searchsorted(rows, np.arange(candidates.shape[0] + 1))
    lo, hi = first[i], first[i + 1]
    k0 = lo + int(np.searchsorted(starts[lo:hi], j, side="right")) - 1
    seen = np.zeros(len(rows), dtype=bool)
    seen[k0] = True
    stack = [k0]
    while stack:
        k = stack.pop()
        r, s, e = rows[k], starts[k], ends[k]
        for rr in (r - 1, r + 1):
            if not 0 <= rr < candidates.shape[0]:
                continue
            lo, hi = first[rr], first[rr + 1]
            a = lo + int(np.searchsorted(ends[lo:hi], s, side="right"))
            b = lo + int(np.searchsorted(starts[lo:hi], e, side="left"))
            for kk in range(a, b):
                if not seen[kk]:
                    seen[kk] = True
                    stack.append(kk)
    ks = np.flatnonzero(seen)
    box = (int(rows[ks].min()), int(rows[ks].max()) + 1, int(starts[ks].min()), int(ends[ks].max()))
    inside = np.zeros((box[1] - box[0], box[3] - box[2]), dtype=bool)
    for k in ks:
        inside[rows[k] - box[0], starts[k] - box[2]:ends[k] - box[2]] = True
    return box, inside


@pytest.mark.parametrize("density", [0.3, 0.5, 0.59, 0.7, 0.95])
@pytest.mark.parametrize("shape", [(1, 1), (1, 17), (13, 1), (24, 31), (64, 64)])
def test_fill_component_equals_the_runs_oracle(shape, density):
    rng = np.random.default_rng([shape[0], shape[1], int(density * 100)])
    for _ in range(12):
        candidates = rng.random(shape) < density
        trues = np.argwhere(candidates)
        if not len(trues):
            continue
        for i, j in trues[rng.choice(len(trues), min(len(trues), 6), replace=False)]:
            box, inside = connected_component(candidates, int(i), int(j))
            want_box, want_inside = runs_component(candidates, int(i), int(j))
            assert box == want_box and all(type(v) is int for v in box)
            assert inside.dtype == bool and np.array_equal(inside, want_inside)


def test_fill_component_is_4_connected_not_8():
    candidates = np.eye(5, dtype=bool)  # touching only at corners
    box, inside = connected_component(candidates, 2, 2)
    assert box == (2, 3, 2, 3) and inside.tolist() == [[True]]
    ring = np.ones((6, 6), bool)
    ring[2:4, 2:4] = False  # a hole: the ring is one component around it
    box, inside = connected_component(ring, 0, 0)
    assert box == (0, 6, 0, 6) and np.array_equal(inside, ring)
    assert runs_component(ring, 0, 0)[0] == box
