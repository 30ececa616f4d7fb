"""regional_widgets: step, inspect and paint regional diffusion sampling in Jupyter."""
from . import models, plot
from .models import empty_latent
from .regional import Quirks, SamplerConfig
from .session import Region, RegionalSamplerSession, regional_sampler, regional_sampler_advanced

__all__ = ["RegionalSamplerSession", "Region", "SamplerConfig", "Quirks", "empty_latent", "regional_sampler",
           "regional_sampler_advanced", "models", "plot"]
__version__ = "0.1.0"
