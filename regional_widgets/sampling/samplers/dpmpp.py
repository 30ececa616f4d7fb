"""DPM-Solver++ samplers (Lu et al. 2022), in the half-log-SNR time ``t = -log(sigma)``."""
from __future__ import annotations

import torch

from .core import StepOut, ancestral_step, call_model, register, to_d


def sigma_fn(t):
    return t.neg().exp()


def t_fn(sigma):
    return sigma.log().neg()


@register("dpmpp_2s_ancestral", noise="default", nfe="2 (1 on the step to sigma 0)")
def dpmpp_2s_ancestral(model, x, sigmas, i, memory, noise, eta=1.0, s_noise=1.0):
    """DPM-Solver++(2S) to ``sigma_down`` (Euler if it is 0), then fresh noise ``sigma_up``."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
    if sigma_down == 0:
        x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
    else:
        t, t_next = t_fn(sigma), t_fn(sigma_down)
        r = 1 / 2
        h = t_next - t
        s = t + r * h
        x_2 = (sigma_fn(s) / sigma_fn(t)) * x - (-h * r).expm1() * denoised
        denoised_2 = call_model(model, x_2, sigma_fn(s))
        x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised_2
    if sigma_next > 0:
        x = x + noise(sigma, sigma_next) * s_noise * sigma_up
    return StepOut(x, denoised, memory)


@register("dpmpp_sde", noise="brownian", nfe="2 (1 on the step to sigma 0)")
def dpmpp_sde(model, x, sigmas, i, memory, noise, eta=1.0, s_noise=1.0, r=1 / 2):
    """Stochastic DPM-Solver++: ancestral steps via ``s = t + r h`` and to t_next; Euler to 0."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    if sigma_next == 0:
        return StepOut(x + to_d(x, sigma, denoised) * (sigma_next - sigma), denoised, memory)
    t, t_next = t_fn(sigma), t_fn(sigma_next)
    h = t_next - t
    s = t + h * r
    fac = 1 / (2 * r)
    # to the intermediate time s
    sd, su = ancestral_step(sigma_fn(t), sigma_fn(s), eta)
    s_ = t_fn(sd)
    x_2 = (sigma_fn(s_) / sigma_fn(t)) * x - (t - s_).expm1() * denoised
    x_2 = x_2 + noise(sigma_fn(t), sigma_fn(s)) * s_noise * su
    denoised_2 = call_model(model, x_2, sigma_fn(s))
    # the whole step, with the two predictions mixed
    sd, su = ancestral_step(sigma_fn(t), sigma_fn(t_next), eta)
    t_next_ = t_fn(sd)
    denoised_d = (1 - fac) * denoised + fac * denoised_2
    x = (sigma_fn(t_next_) / sigma_fn(t)) * x - (t - t_next_).expm1() * denoised_d
    x = x + noise(sigma_fn(t), sigma_fn(t_next)) * s_noise * su
    return StepOut(x, denoised, memory)


@register("dpmpp_2m")
def dpmpp_2m(model, x, sigmas, i, memory, noise):
    """DPM-Solver++(2M): second order from the previous step's D (``memory["old_denoised"]``)."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    old_denoised = memory.get("old_denoised")
    t, t_next = t_fn(sigma), t_fn(sigma_next)
    h = t_next - t
    if old_denoised is None or sigma_next == 0:
        denoised_d = denoised
    else:
        r = (t - t_fn(sigmas[i - 1])) / h  # h_last / h
        denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
    x = (sigma_fn(t_next) / sigma_fn(t)) * x - (-h).expm1() * denoised_d
    return StepOut(x, denoised, {"old_denoised": denoised})


@register("dpmpp_2m_sde", noise="brownian")
def dpmpp_2m_sde(model, x, sigmas, i, memory, noise, eta=1.0, s_noise=1.0, solver_type="midpoint"):
    """DPM-Solver++(2M) SDE with history ``old_denoised``, ``h_last``; the step to 0 gives x = D."""
    if solver_type not in ("heun", "midpoint"):
        raise ValueError(f"solver_type: expected 'heun' or 'midpoint', got {solver_type!r}")
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    if sigma_next == 0:
        return StepOut(denoised, denoised, {})
    t, t_next = t_fn(sigma), t_fn(sigma_next)
    h = t_next - t
    eta_h = eta * h
    decay = (-h - eta_h).expm1().neg()
    x = sigma_next / sigma * (-eta_h).exp() * x + decay * denoised
    old_denoised = memory.get("old_denoised")
    if old_denoised is not None:
        r = memory["h_last"] / h
        if solver_type == "heun":
            x = x + (decay / (-h - eta_h) + 1) * (1 / r) * (denoised - old_denoised)
        else:
            x = x + 0.5 * decay * (1 / r) * (denoised - old_denoised)
    if eta:
        x = x + noise(sigma, sigma_next) * sigma_next * (-2 * eta_h).expm1().neg().sqrt() * s_noise
    return StepOut(x, denoised, {"old_denoised": denoised, "h_last": h})


@register("dpmpp_3m_sde", noise="brownian")
def dpmpp_3m_sde(model, x, sigmas, i, memory, noise, eta=1.0, s_noise=1.0):
    """DPM-Solver++(3M) SDE from the last two D's and step sizes; the step to 0 gives x = D."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    if sigma_next == 0:
        return StepOut(denoised, denoised, {})
    denoised_1, denoised_2 = memory.get("denoised_1"), memory.get("denoised_2")
    h_1, h_2 = memory.get("h_1"), memory.get("h_2")
    t, t_next = t_fn(sigma), t_fn(sigma_next)
    h = t_next - t
    h_eta = h * (eta + 1)
    x = torch.exp(-h_eta) * x + (-h_eta).expm1().neg() * denoised
    phi_2 = h_eta.neg().expm1() / h_eta + 1
    if h_2 is not None:
        r0, r1 = h_1 / h, h_2 / h
        d1_0 = (denoised - denoised_1) / r0
        d1_1 = (denoised_1 - denoised_2) / r1
        d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi_3 = phi_2 / h_eta - 0.5
        x = x + phi_2 * d1 - phi_3 * d2
    elif h_1 is not None:
        r = h_1 / h
        x = x + phi_2 * ((denoised - denoised_1) / r)
    if eta:
        decay = (-2 * h * eta).expm1().neg().sqrt()
        x = x + noise(sigma, sigma_next) * sigma_next * decay * s_noise
    return StepOut(x, denoised, {"denoised_1": denoised, "denoised_2": denoised_1,
                                 "h_1": h, "h_2": h_1})
