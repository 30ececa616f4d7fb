"""regional_widgets: step, inspect and paint regional diffusion sampling in Jupyter."""
from . import models, plot
from .compare import compare, detail_ratios
from .models import empty_latent
from .params import ParameterError
from .node_params import Quirks, SamplerConfig
from .session import Region, RegionalSamplerSession, regional_sampler, regional_sampler_advanced
from .sweep import Sweep, sweep  # the function shadows the module name: `rw.sweep(...)`

__all__ = ["RegionalSamplerSession", "Region", "ParameterError", "SamplerConfig", "Quirks", "empty_latent",
           "regional_sampler", "regional_sampler_advanced", "models", "plot", "compare", "detail_ratios",
           "RegionalSamplerApp", "sweep", "Sweep", "SweepBrowser"]
__version__ = "0.1.0"


def __getattr__(name):
    # The widgets import ipywidgets, ipycanvas and matplotlib: only when the app is asked for.
    if name == "RegionalSamplerApp":
        from .widgets.app import RegionalSamplerApp

        return RegionalSamplerApp
    if name == "SweepBrowser":
        from .widgets.sweep_browser import SweepBrowser

        return SweepBrowser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
