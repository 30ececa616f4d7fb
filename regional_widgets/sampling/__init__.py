"""The sampling layer: pure torch + numpy, no widgets, no traitlets."""
from .latent_formats import LATENT_FORMATS, LatentFormat
from .model_sampling import (ModelSampling, ModelSamplingDiscrete, ModelSamplingDiscreteFlow, ModelSamplingFlux,
                             flux_model_sampling, flux_schnell_model_sampling, flux_shift, sd15_model_sampling,
                             sd3_model_sampling)
from .noise import prepare_noise
from .samplers import SAMPLER_NAMES, sample
from .schedules import SCHEDULER_NAMES, calculate_sigmas, sampler_sigmas, sd15_sigmas

__all__ = ["LATENT_FORMATS", "LatentFormat", "ModelSampling", "ModelSamplingDiscrete", "ModelSamplingDiscreteFlow",
           "ModelSamplingFlux", "SAMPLER_NAMES", "SCHEDULER_NAMES", "calculate_sigmas", "flux_model_sampling",
           "flux_schnell_model_sampling", "flux_shift", "prepare_noise", "sample", "sampler_sigmas", "sd15_model_sampling",
           "sd15_sigmas", "sd3_model_sampling"]
