"""Everything observable about a session, for "nothing changed" assertions."""
import numpy as np
import torch

import regional_widgets as rw


def _plain(value):
    if isinstance(value, torch.Tensor):
        return ("tensor", value.dtype, tuple(value.shape), value.clone())
    if isinstance(value, np.ndarray):
        return ("array", value.dtype, value.shape, value.copy())
    if isinstance(value, rw.Region):
        return ("region", snapshot_region(value))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, [_plain(v) for v in value])
    return value


def snapshot_region(region) -> dict:
    return {name: _plain(getattr(region, name)) for name in region.trait_names()}


def snapshot(session) -> dict:
    """Every trait (tensors and masks copied), the program, the cursor and the history's entries."""
    out = {name: _plain(getattr(session, name)) for name in session.trait_names()}
    out["_ops"] = [op.phase for op in session.ops]
    out["_cursor"] = session.cursor
    out["_history_len"] = len(session.history)
    out["_history_kept"] = [entry is not None for entry in session.timeline.entries]
    out["_batch_index"] = session.batch_index
    return out


def _same(a, b) -> bool:
    if isinstance(a, tuple) and a and a[0] in ("tensor", "array"):
        if not (isinstance(b, tuple) and b[:3] == a[:3]):
            return False
        return torch.equal(a[3], b[3]) if a[0] == "tensor" else np.array_equal(a[3], b[3])
    if isinstance(a, tuple) and a and a[0] == "region":
        return isinstance(b, tuple) and b[0] == "region" and all(_same(a[1][k], b[1][k]) for k in a[1])
    if isinstance(a, tuple) and len(a) == 2 and a[0] in ("list", "tuple"):
        return b[0] == a[0] and len(a[1]) == len(b[1]) and all(_same(x, y) for x, y in zip(a[1], b[1]))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def changed(before: dict, after: dict) -> list:
    """Names whose values differ between two snapshots (empty: nothing changed)."""
    return sorted(k for k in before.keys() | after.keys() if k not in after or k not in before
                  or not _same(before[k], after[k]))
