"""Samplers in sigma: Euler, Heun, DPM-2, their ancestral variants, LMS (k-diffusion's rules)."""
from __future__ import annotations

import math

from scipy import integrate

from .core import StepOut, ancestral_step, call_model, register, rf_ancestral_step, to_d


def _euler_prepare(sigmas):
    """Per step, the scalars `euler` makes from the sigmas alone: ``(sigma, sigma_next, sigma_next - sigma)``."""
    return tuple((sigmas[i], sigmas[i + 1], sigmas[i + 1] - sigmas[i]) for i in range(len(sigmas) - 1))


@register("euler", prepare=_euler_prepare)
def euler(model, x, sigmas, i, memory, noise):
    """Euler's method on the probability-flow ODE (``memory["prepared"]``: `_euler_prepare`'s scalars)."""
    prepared = memory.get("prepared")
    if prepared is None:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        dt = None
    else:
        sigma, sigma_next, dt = prepared[i]
    denoised = call_model(model, x, sigma)
    d = to_d(x, sigma, denoised)
    return StepOut(x + d * (sigma_next - sigma if dt is None else dt), denoised, memory, sigma, sigma_next)


@register("euler_ancestral", noise="default", model_sampling=True)
def euler_ancestral(model, x, sigmas, i, memory, noise, eta=1.0, s_noise=1.0):
    """Euler to ``sigma_down``, then fresh noise of size ``sigma_up``; the step to 0 gives x = D.

    On a flow (CONST) model the RF form: a ratio step ``q x + (1 - q) D`` to ``sigma_down``, the
    signal rescaled and the noise topped up (`rf_ancestral_step`).
    """
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    if sigma_next == 0:
        return StepOut(denoised, denoised, memory)
    if memory.get("const"):
        sigma_down, rescale, c = rf_ancestral_step(sigma, sigma_next, eta)
        q = sigma_down / sigma
        x = q * x + (1 - q) * denoised
        if eta > 0:
            x = rescale * x + noise(sigma, sigma_next) * s_noise * c
        return StepOut(x, denoised, memory)
    sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
    x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
    return StepOut(x + noise(sigma, sigma_next) * s_noise * sigma_up, denoised, memory)


@register("heun")
def heun(model, x, sigmas, i, memory, noise):
    """Heun's method (Karras et al. 2022, Algorithm 2, no churn); Euler on the step to sigma 0."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    d = to_d(x, sigma, denoised)
    dt = sigma_next - sigma
    if sigma_next == 0:
        return StepOut(x + d * dt, denoised, memory)
    x_2 = x + d * dt
    d_2 = to_d(x_2, sigma_next, call_model(model, x_2, sigma_next))
    return StepOut(x + (d + d_2) / 2 * dt, denoised, memory)


def _midpoint_move(model, x, d, sigma, sigma_to):
    """DPM-Solver-2's move from sigma to sigma_to, with the derivative taken at their log-midpoint."""
    sigma_mid = sigma.log().lerp(sigma_to.log(), 0.5).exp()
    x_2 = x + d * (sigma_mid - sigma)
    d_2 = to_d(x_2, sigma_mid, call_model(model, x_2, sigma_mid))
    return x + d_2 * (sigma_to - sigma)


@register("dpm_2")
def dpm_2(model, x, sigmas, i, memory, noise):
    """DPM-Solver-2 in sigma: the derivative at the log-midpoint; Euler on the step to sigma 0."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    d = to_d(x, sigma, denoised)
    if sigma_next == 0:
        return StepOut(x + d * (sigma_next - sigma), denoised, memory)
    return StepOut(_midpoint_move(model, x, d, sigma, sigma_next), denoised, memory)


@register("dpm_2_ancestral", noise="default", model_sampling=True)
def dpm_2_ancestral(model, x, sigmas, i, memory, noise, eta=1.0, s_noise=1.0):
    """DPM-Solver-2 to ``sigma_down``, then fresh noise; Euler (no noise) if ``sigma_down`` is 0.

    On CONST the RF split (`rf_ancestral_step`): the same move to its ``sigma_down``, then the
    signal rescaled and noise of std ``c`` (drawn even when ``c`` is 0).
    """
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    const = memory.get("const")
    if const:
        sigma_down, rescale, c = rf_ancestral_step(sigma, sigma_next, eta)
    else:
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
    d = to_d(x, sigma, denoised)
    if sigma_down == 0:
        return StepOut(x + d * (sigma_down - sigma), denoised, memory)
    x = _midpoint_move(model, x, d, sigma, sigma_down)
    if const:
        return StepOut(rescale * x + noise(sigma, sigma_next) * s_noise * c, denoised, memory)
    return StepOut(x + noise(sigma, sigma_next) * s_noise * sigma_up, denoised, memory)


def linear_multistep_coeff(order, t, i, j):
    """The integral over [t_i, t_{i+1}] of the j-th Lagrange basis on t_i, ..., t_{i-order+1}."""
    def basis(tau):
        return math.prod((tau - t[i - k]) / (t[i - j] - t[i - k]) for k in range(order) if k != j)
    return integrate.quad(basis, t[i], t[i + 1], epsrel=1e-4)[0]


@register("lms")
def lms(model, x, sigmas, i, memory, noise, order=4):
    """Linear multistep on the last ``order`` d's (``memory["ds"]``); the step to 0 gives x = D."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    if sigma_next == 0:  # the reference's lms, unlike k-diffusion's, does not integrate this step
        return StepOut(denoised, denoised, {})
    ds = (*memory.get("ds", ()), to_d(x, sigma, denoised))[-order:]
    t = sigmas.detach().cpu().numpy()
    coeffs = [linear_multistep_coeff(len(ds), t, i, j) for j in range(len(ds))]
    x = x + sum(coeff * d for coeff, d in zip(coeffs, reversed(ds)))
    return StepOut(x, denoised, {"ds": ds})
