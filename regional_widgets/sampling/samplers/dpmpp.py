"""DPM-Solver++ samplers (Lu et al. 2022), in the half-log-SNR time ``t = -log(sigma)``.

The SDE variants (dpmpp_sde, dpmpp_2m_sde, dpmpp_3m_sde and their kin) are in `sde`.
"""
from __future__ import annotations

from .core import StepOut, ancestral_step, call_model, register, rf_ancestral_step, to_d


def sigma_fn(t):
    return t.neg().exp()


def t_fn(sigma):
    return sigma.log().neg()


def _flow_lam(sigma):
    """dpmpp_2s_ancestral's own flow half-log-SNR form: ``log((1 - s) / s)``."""
    return ((1 - sigma) / sigma).log()


def _flow_sigma(lam_):
    return (lam_.exp() + 1) ** -1


def _dpmpp_2s_ancestral_rf(model, x, sigma, sigma_next, denoised, memory, noise, eta, s_noise, r=1 / 2):
    """The RF form on CONST (spec §3.6.3): flow ratio steps via the flow-lambda midpoint (0.9999 at 1)."""
    sigma_down, rescale, c = rf_ancestral_step(sigma, sigma_next, eta)
    if sigma_next == 0:
        x = x + to_d(x, sigma, denoised) * (sigma_down - sigma)
    else:
        if sigma == 1.0:
            sigma_mid = 0.9999
        else:
            lam_s, lam_down = _flow_lam(sigma), _flow_lam(sigma_down)
            sigma_mid = _flow_sigma(lam_s + r * (lam_down - lam_s))
        q = sigma_mid / sigma
        denoised_2 = call_model(model, q * x + (1 - q) * denoised, sigma_mid)
        q = sigma_down / sigma
        x = q * x + (1 - q) * denoised_2
    if sigma_next > 0 and eta > 0:
        x = rescale * x + noise(sigma, sigma_next) * s_noise * c
    return StepOut(x, denoised, memory)


@register("dpmpp_2s_ancestral", noise="default", model_sampling=True)
def dpmpp_2s_ancestral(model, x, sigmas, i, memory, noise, eta=1.0, s_noise=1.0):
    """DPM-Solver++(2S) to ``sigma_down`` (Euler if it is 0), then fresh noise ``sigma_up``; on a
    flow (CONST) model its RF form."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    if memory.get("const"):
        return _dpmpp_2s_ancestral_rf(model, x, sigma, sigma_next, denoised, memory, noise, eta, s_noise)
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


def _dpmpp_2m_scalars(sigma, sigma_next):
    t, t_next = t_fn(sigma), t_fn(sigma_next)
    h = t_next - t
    return t, h, sigma_fn(t_next) / sigma_fn(t), (-h).expm1()


def _dpmpp_2m_prepare(sigmas):
    """Per step, the scalars `dpmpp_2m` makes from the sigmas alone: ``(sigma, sigma_next, t, h, a, b)``
    with ``x' = a * x - b * D'``."""
    return tuple((sigmas[i], sigmas[i + 1]) + _dpmpp_2m_scalars(sigmas[i], sigmas[i + 1])
                 for i in range(len(sigmas) - 1))


@register("dpmpp_2m", prepare=_dpmpp_2m_prepare)
def dpmpp_2m(model, x, sigmas, i, memory, noise):
    """DPM-Solver++(2M): second order from the previous step's D (``memory["old_denoised"]``;
    ``memory["prepared"]``: `_dpmpp_2m_prepare`'s scalars, carried along)."""
    prepared = memory.get("prepared")
    if prepared is None:
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        t, h, a, b = _dpmpp_2m_scalars(sigma, sigma_next)
    else:
        sigma, sigma_next, t, h, a, b = prepared[i]
    denoised = call_model(model, x, sigma)
    old_denoised = memory.get("old_denoised")
    if old_denoised is None or sigma_next == 0:
        denoised_d = denoised
    else:
        r = (t - t_fn(sigmas[i - 1])) / h  # h_last / h
        denoised_d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
    x = a * x - b * denoised_d
    memory = {"old_denoised": denoised} if prepared is None else {"old_denoised": denoised, "prepared": prepared}
    return StepOut(x, denoised, memory, sigma, sigma_next)
