"""Region colours for the widgets: re-exported from `regional_widgets.colors` (plain data)."""
from ..colors import BASE_COLOR, REGION_COLORS, region_color, region_hex

__all__ = ["BASE_COLOR", "REGION_COLORS", "region_color", "region_hex"]
