"""ipywidgets views bound to a RegionalSamplerSession (one import per line; append yours)."""
from .palette import BASE_COLOR, REGION_COLORS, region_color, region_hex
from .mask_canvas import MaskCanvas
from .mask_toolbar import MaskToolbar
from .region_panel import RegionPanel
from .controls import StepControls
from .inspector import Inspector
from .app import RegionalSamplerApp
from .save_menu import SaveMenu
from .open_menu import OpenMenu

__all__ = [
    "BASE_COLOR",
    "REGION_COLORS",
    "region_color",
    "region_hex",
    "MaskCanvas",
    "MaskToolbar",
    "RegionPanel",
    "StepControls",
    "Inspector",
    "RegionalSamplerApp",
    "SaveMenu",
    "OpenMenu",
]
