"""SEEDS-2 and SEEDS-3 (Gonzalez et al. 2023, arXiv 2305.14267): exponential SDE solvers, data prediction.

Single-step, in the half-log-SNR ``lam = -log sigma`` with the stages at ``lerp(lam_s, lam_t, r)``.
The noise of the stages is one Brownian path: each stage's ``z`` is the previous one decayed by
``exp(g)`` plus a fresh seeded draw, so a step draws 2 (SEEDS-2) or 3 (SEEDS-3) samples. Written in
the reference's float order (spec §3.5.2); the step to sigma 0 gives x = D. On a flow (CONST) model
the flow lambda and its sigmoid inverse (spec §3.6.4), after the first-sigma offset.
"""
from __future__ import annotations

import torch

from .core import StepOut, call_model, register
from .sde import half_log_snr


def _phi2h(z):
    return (z.expm1() - z) / z


def _renoise(z, g, n):
    """The next stage's noise on the same path: ``z e^g + sqrt(1 - e^(2g)) n``."""
    return z * g.exp() + (g * 2).expm1().neg().sqrt() * n


@register("seeds_2", noise="default", const_offset=True)
def seeds_2(model, x, sigmas, i, memory, noise, eta=1.0, s_noise=1.0, r=0.5):
    """SEEDS-2: a stochastic move to ``lam_s + r h``, then the whole step with the stage's prediction."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    if sigma_next == 0:
        return StepOut(denoised, denoised, memory)
    lam, sig = half_log_snr(memory)
    lam_s, lam_t = lam(sigma), lam(sigma_next)
    h = lam_t - lam_s
    h_eta = h * (eta + 1)
    lam_1 = torch.lerp(lam_s, lam_t, r)
    sigma_1 = sig(lam_1)
    alpha_1, alpha_t = sigma_1 * lam_1.exp(), sigma_next * lam_t.exp()

    x_2 = ((sigma_1 / sigma) * (-r * h * eta).exp()) * x - (alpha_1 * (-r * h_eta).expm1()) * denoised
    z = (-2 * r * h * eta).expm1().neg().sqrt() * noise(sigma, sigma_1)
    x_2 = x_2 + (z * sigma_1) * s_noise
    denoised_2 = call_model(model, x_2, sigma_1)

    denoised_d = torch.lerp(denoised, denoised_2, 1 / (2 * r))
    x = ((sigma_next / sigma) * (-h * eta).exp()) * x - (alpha_t * (-h_eta).expm1()) * denoised_d
    z = _renoise(z, ((r - 1) * h) * eta, noise(sigma_1, sigma_next))
    return StepOut(x + (z * sigma_next) * s_noise, denoised, memory)


@register("seeds_3", noise="default", const_offset=True)
def seeds_3(model, x, sigmas, i, memory, noise, eta=1.0, s_noise=1.0, r_1=1 / 3, r_2=2 / 3):
    """SEEDS-3: stages at ``r_1`` and ``r_2`` of the step in lam, third order in the ODE part."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    if sigma_next == 0:
        return StepOut(denoised, denoised, memory)
    lam, sig = half_log_snr(memory)
    lam_s, lam_t = lam(sigma), lam(sigma_next)
    h = lam_t - lam_s
    h_eta = h * (eta + 1)
    lam_1, lam_2 = torch.lerp(lam_s, lam_t, r_1), torch.lerp(lam_s, lam_t, r_2)
    sigma_1, sigma_2 = sig(lam_1), sig(lam_2)
    alpha_1, alpha_2, alpha_t = sigma_1 * lam_1.exp(), sigma_2 * lam_2.exp(), sigma_next * lam_t.exp()

    x_2 = ((sigma_1 / sigma) * (-r_1 * h * eta).exp()) * x - (alpha_1 * (-r_1 * h_eta).expm1()) * denoised
    z = (-2 * r_1 * h * eta).expm1().neg().sqrt() * noise(sigma, sigma_1)
    x_2 = x_2 + (z * sigma_1) * s_noise
    denoised_2 = call_model(model, x_2, sigma_1)

    c2 = (r_2 / r_1) * _phi2h(-r_2 * h_eta)
    c1 = (-r_2 * h_eta).expm1() - c2
    x_3 = ((sigma_2 / sigma) * (-r_2 * h * eta).exp()) * x - alpha_2 * (c1 * denoised + c2 * denoised_2)
    z = _renoise(z, ((r_1 - r_2) * h) * eta, noise(sigma_1, sigma_2))
    x_3 = x_3 + (z * sigma_2) * s_noise
    denoised_3 = call_model(model, x_3, sigma_2)

    b3 = _phi2h(-h_eta) / r_2
    b1 = (-h_eta).expm1() - b3
    x = ((sigma_next / sigma) * (-h * eta).exp()) * x - alpha_t * (b1 * denoised + b3 * denoised_3)
    z = _renoise(z, ((r_2 - 1) * h) * eta, noise(sigma_2, sigma_next))
    return StepOut(x + (z * sigma_next) * s_noise, denoised, memory)
