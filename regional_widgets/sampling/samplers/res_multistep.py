"""RES multistep (Zhang, Song & Chen 2023, arXiv 2308.02157): a 2nd-order exponential integrator.

One routine with two switches, as the reference: ``eta`` (0, or 1 for the ancestral variants,
which step to ``sigma_down`` and add noise ``sigma_up``) and ``cfg_pp`` (CFG++: the history and
the integrated term use the unconditional prediction ``U``, the guided ``D`` only shifts x).
Each step uses the previous step's prediction (``memory["old"]``) and target ``sigma_down``; the
first step of a call, and the step to 0, is Euler. Float forms follow spec §3.5.2.
"""
from __future__ import annotations

import torch

from .core import StepOut, ancestral_step, call_model_pair, register
from .dpmpp import sigma_fn, t_fn


def phi1(z):
    return z.expm1() / z


def phi2(z):
    return (phi1(z) - 1.0) / z


def res_multistep_step(model, x, sigmas, i, memory, noise, eta, cfg_pp, s_noise=1.0):
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised, uncond = call_model_pair(model, x, sigma, cfg_pp)
    sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
    old = memory.get("old")
    if sigma_down == 0 or old is None:
        if cfg_pp:
            x = denoised + ((x - uncond) / sigma) * sigma_down
        else:
            x = x + ((x - denoised) / sigma) * (sigma_down - sigma)
    else:
        t, t_next = t_fn(sigma), t_fn(sigma_down)
        t_old, t_prev = t_fn(memory["sigma_down"]), t_fn(sigmas[i - 1])
        h = t_next - t
        c2 = (t_prev - t_old) / h
        p1, p2 = phi1(-h), phi2(-h)
        b1 = torch.nan_to_num(p1 - p2 / c2, nan=0.0)
        b2 = torch.nan_to_num(p2 / c2, nan=0.0)
        if cfg_pp:
            x = x + (denoised - uncond)
        x = sigma_fn(h) * x + h * (b1 * uncond + b2 * old)
    if sigma_next > 0:  # drawn at eta 0 too (times sigma_up = 0): it consumes the noise stream
        x = x + (noise(sigma, sigma_next) * s_noise) * sigma_up
    return StepOut(x, denoised, {"old": uncond, "sigma_down": sigma_down})


@register("res_multistep", noise="default")
def res_multistep(model, x, sigmas, i, memory, noise):
    """RES 2nd-order multistep from the previous D; Euler on the first step and to 0."""
    return res_multistep_step(model, x, sigmas, i, memory, noise, eta=0.0, cfg_pp=False)


@register("res_multistep_cfg_pp", noise="default", uncond=True)
def res_multistep_cfg_pp(model, x, sigmas, i, memory, noise):
    """RES multistep with CFG++: history and integrated term from U; CFG++ Euler first and to 0."""
    return res_multistep_step(model, x, sigmas, i, memory, noise, eta=0.0, cfg_pp=True)


@register("res_multistep_ancestral", noise="default")
def res_multistep_ancestral(model, x, sigmas, i, memory, noise):
    """RES multistep to ``sigma_down``, then fresh noise ``sigma_up`` (eta 1)."""
    return res_multistep_step(model, x, sigmas, i, memory, noise, eta=1.0, cfg_pp=False)


@register("res_multistep_ancestral_cfg_pp", noise="default", uncond=True)
def res_multistep_ancestral_cfg_pp(model, x, sigmas, i, memory, noise):
    """RES multistep with CFG++ to ``sigma_down``, then fresh noise ``sigma_up`` (eta 1)."""
    return res_multistep_step(model, x, sigmas, i, memory, noise, eta=1.0, cfg_pp=True)
