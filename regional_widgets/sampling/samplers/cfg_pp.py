"""CFG++ samplers (Chung et al. 2024, arXiv 2406.08070): guided x0, unconditional noise direction.

Each step evaluates the model once through `call_model_uncond`, which returns the guided
prediction ``D`` and the raw unconditional one ``U`` of the same evaluation. The next point is
rebuilt from ``D`` while the direction back to the noise (and any history) uses ``U``: Euler's
``x' = D + (sigma' / sigma) (x - U)`` instead of ``x' = D + (sigma' / sigma) (x - D)``.

The float forms follow the reference (spec §3.5.2): ``alpha(s) = s * exp(-log s)`` is 1 only in
exact arithmetic and is kept, and every product is taken in the order written.
"""
from __future__ import annotations

from .core import StepOut, ancestral_step, call_model_uncond, register
from .dpmpp import sigma_fn, t_fn
from .sde import half_log_snr


def _alpha(sigma, lam=t_fn):
    """``s * exp(lam(s))``: 1 (EPS) or 1 - s (CONST) in exact arithmetic, not always in float32
    (kept for bit-identity)."""
    return sigma * lam(sigma).exp()


@register("euler_ancestral_cfg_pp", noise="default", uncond=True, model_sampling=True)
def euler_ancestral_cfg_pp(model, x, sigmas, i, memory, noise, eta=1.0, s_noise=1.0):
    """CFG++ Euler to ``sigma_down`` from the unconditional direction, then fresh noise ``sigma_up``.

    On a flow (CONST) model the alphas are ``s exp(lam(s))`` with the flow lambda (about 1 - s) and
    the split runs on the VE sigmas ``s / alpha``; at sigma 1 (alpha 0) the step is a full re-noise.
    """
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised, uncond = call_model_uncond(model, x, sigma)
    if sigma_next == 0:
        return StepOut(denoised, denoised, memory)
    lam = half_log_snr(memory)[0]
    alpha_s, alpha_t = _alpha(sigma, lam), _alpha(sigma_next, lam)
    d = (x - alpha_s * uncond) / sigma
    sigma_down, sigma_up = ancestral_step(sigma / alpha_s, sigma_next / alpha_t, eta)
    sigma_down = alpha_t * sigma_down
    x = alpha_t * denoised + sigma_down * d
    if eta:
        x = x + ((alpha_t * noise(sigma, sigma_next)) * s_noise) * sigma_up
    return StepOut(x, denoised, memory)


@register("euler_cfg_pp", uncond=True, model_sampling=True)
def euler_cfg_pp(model, x, sigmas, i, memory, noise):
    """CFG++ Euler (DDIM): ``x' = D + (sigma' / sigma) (x - U)``; the step to 0 gives x = D."""
    return euler_ancestral_cfg_pp(model, x, sigmas, i, memory, noise, eta=0.0, s_noise=0.0)


@register("dpmpp_2s_ancestral_cfg_pp", noise="default", uncond=True)
def dpmpp_2s_ancestral_cfg_pp(model, x, sigmas, i, memory, noise, eta=1.0, s_noise=1.0):
    """CFG++ DPM-Solver++(2S) to ``sigma_down``, then fresh noise ``sigma_up``.

    As the reference, the last move mixes the *first* evaluation's guided ``D`` with the
    *midpoint's* unconditional ``U_2``, so even at cfg 1 it differs from dpmpp_2s_ancestral.
    """
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised, uncond = call_model_uncond(model, x, sigma)
    sigma_down, sigma_up = ancestral_step(sigma, sigma_next, eta)
    if sigma_down == 0:
        d = (x - uncond) / sigma
        x = denoised + d * sigma_down
    else:
        r = 1 / 2
        t, t_next = t_fn(sigma), t_fn(sigma_down)
        h = t_next - t
        s = t + r * h
        x_2 = (sigma_fn(s) / sigma_fn(t)) * (x + (denoised - uncond)) - (-h * r).expm1() * denoised
        denoised_2, uncond = call_model_uncond(model, x_2, sigma_fn(s))
        x = (sigma_fn(t_next) / sigma_fn(t)) * (x + (denoised - uncond)) - (-h).expm1() * denoised_2
    if sigma_next > 0:
        x = x + (noise(sigma, sigma_next) * s_noise) * sigma_up
    return StepOut(x, denoised, memory)


@register("dpmpp_2m_cfg_pp", uncond=True)
def dpmpp_2m_cfg_pp(model, x, sigmas, i, memory, noise):
    """CFG++ DPM-Solver++(2M): the history is the previous step's ``U`` (``memory["old_uncond"]``)."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised, uncond = call_model_uncond(model, x, sigma)
    old_uncond = memory.get("old_uncond")
    t, t_next = t_fn(sigma), t_fn(sigma_next)
    h = t_next - t
    if old_uncond is None or sigma_next == 0:
        m = (-(-h).exp()) * uncond
    else:
        r = (t - t_fn(sigmas[i - 1])) / h  # h_last / h
        m = (-(-h).exp()) * uncond - ((-h).expm1() * (1 / (2 * r))) * (denoised - old_uncond)
    x = (denoised + m) + (-h).exp() * x
    return StepOut(x, denoised, {"old_uncond": uncond})
