"""The region palette as plain data, shared by plots and widgets: region j is drawn in ``region_color(j)``
everywhere. No widget or plotting imports here."""
from __future__ import annotations

# Regions 1..9 (REGION_COLORS[j - 1]); well separated hues, after Trubetskoy's "20 distinct colours".
REGION_COLORS = [
    (230, 25, 75),    # 1 red
    (60, 180, 75),    # 2 green
    (0, 130, 200),    # 3 blue
    (255, 225, 25),   # 4 yellow
    (145, 30, 180),   # 5 purple
    (245, 130, 48),   # 6 orange
    (70, 240, 240),   # 7 cyan
    (240, 50, 230),   # 8 magenta
    (128, 128, 0),    # 9 olive
]
# The base prompt's area (no region): region index 0.
BASE_COLOR = (128, 128, 128)


def region_color(j: int) -> tuple:
    """RGB (0-255) of region ``j`` (1-based; 0 is the base area); regions past 9 reuse the palette."""
    if j == 0:
        return BASE_COLOR
    if j < 0:
        raise ValueError(f"region: expected an index >= 0, got {j}")
    return REGION_COLORS[(j - 1) % len(REGION_COLORS)]


def region_hex(j: int) -> str:
    """``region_color(j)`` as a CSS hex string, e.g. ``"#e6194b"``."""
    return "#{:02x}{:02x}{:02x}".format(*region_color(j))
