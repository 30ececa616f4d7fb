"""Every sampler by the reference's name, written step-wise (see `core`)."""
from .core import (SAMPLERS, SamplerDef, SamplerState, Start, StepOut, ancestral_step, call_model, check_options,
                   get_sampler, register, sample, sampler_options, start, step, to_d)
from . import adams, classic, dpm_solver, dpmpp, extra, unipc  # noqa: F401  (register samplers)
from . import sde  # noqa: F401  (the stochastic DPM-Solver++ family and its _gpu twins)
from . import er_sde  # noqa: F401
from . import seeds  # noqa: F401
from . import cfg_pp  # noqa: F401  (CFG++: euler, euler_ancestral, dpmpp_2s_ancestral, dpmpp_2m)
from . import res_multistep  # noqa: F401
from . import gradient_estimation  # noqa: F401
from . import sa_solver  # noqa: F401

# The reference's order (ComfyUI's KSAMPLER_NAMES, then ddim and the UniPC pair): all 42.
_ORDER = (
    "euler", "euler_cfg_pp", "euler_ancestral", "euler_ancestral_cfg_pp", "heun", "heunpp2",
    "dpm_2", "dpm_2_ancestral", "lms", "dpm_fast", "dpm_adaptive", "dpmpp_2s_ancestral",
    "dpmpp_2s_ancestral_cfg_pp", "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_cfg_pp",
    "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun", "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde",
    "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v", "deis", "res_multistep",
    "res_multistep_cfg_pp", "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp",
    "gradient_estimation", "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver",
    "sa_solver_pece", "ddim", "uni_pc", "uni_pc_bh2",
)
SAMPLER_NAMES = tuple(n for n in _ORDER if n in SAMPLERS) + tuple(n for n in SAMPLERS if n not in _ORDER)

__all__ = ["SAMPLERS", "SAMPLER_NAMES", "SamplerDef", "SamplerState", "Start", "StepOut", "ancestral_step",
           "call_model", "check_options", "get_sampler", "register", "sample", "sampler_options", "start", "step",
           "to_d"]
