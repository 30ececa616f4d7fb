"""Every sampler by the reference's name, written step-wise (see `core`)."""
from .core import (SAMPLERS, SamplerDef, SamplerState, StepOut, ancestral_step, call_model,
                   get_sampler, register, sample, start, step, to_d)
from . import adams, classic, dpm_solver, dpmpp, extra, unipc  # noqa: F401  (register samplers)

# The reference's order (ComfyUI's KSAMPLER_NAMES, then ddim and the UniPC pair).
_ORDER = (
    "euler", "euler_ancestral", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast",
    "dpm_adaptive", "dpmpp_2s_ancestral", "dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde",
    "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "ddim", "uni_pc", "uni_pc_bh2",
)
SAMPLER_NAMES = tuple(n for n in _ORDER if n in SAMPLERS) + tuple(n for n in SAMPLERS if n not in _ORDER)

__all__ = ["SAMPLERS", "SAMPLER_NAMES", "SamplerDef", "SamplerState", "StepOut", "ancestral_step",
           "call_model", "get_sampler", "register", "sample", "start", "step", "to_d"]
