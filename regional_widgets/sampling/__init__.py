"""The sampling layer: pure torch + numpy, no widgets, no traitlets."""
from .noise import prepare_noise
from .samplers import SAMPLER_NAMES, sample
from .schedules import SCHEDULER_NAMES, calculate_sigmas, sampler_sigmas, sd15_sigmas

__all__ = ["SAMPLER_NAMES", "SCHEDULER_NAMES", "calculate_sigmas", "prepare_noise", "sample", "sampler_sigmas",
           "sd15_sigmas"]
