"""Stochastic DPM-Solver++ (Lu et al. 2022, arXiv 2211.01095): dpmpp_sde, dpmpp_2m_sde(_heun), dpmpp_3m_sde.

Written in the reference's current float form (spec §3.5.4 b): half-log-SNR ``lam = -log sigma``,
``sigma = exp(-lam)``, and the factors ``alpha = sigma * exp(lam)`` that are 1 in exact arithmetic
but not in float32 are kept, in the reference's order of operations, so outputs are bit-identical.
Each ``_gpu`` name is the same rule with its Brownian tree on the latent's device (``noise="brownian_gpu"``,
see `noise.BrownianTreeNoiseSampler`); on a CPU run the two are bit-identical.

On a flow (CONST) model (spec regional_sampler.md §3.6.4) the same rules run with the flow
half-log-SNR ``lam = -logit(s)``, ``sigma = sigmoid(-lam)`` (`half_log_snr`), so every alpha factor
becomes about ``1 - s``, and on a first sigma >= 1 (``const_offset``, see `core.const_offset_sigmas`).
"""
from __future__ import annotations

from .core import StepOut, ancestral_step, call_model, register
from .dpmpp import sigma_fn as sig, t_fn as lam  # the EPS half-log-SNR -log(sigma) and its inverse


def lam_const(sigma):
    """The flow (CONST) half-log-SNR ``log((1 - s) / s)``, as ``-logit(s)``."""
    return sigma.logit().neg()


def sig_const(lam_):
    """Its inverse ``1 / (1 + e^lam)``, as ``sigmoid(-lam)``."""
    return lam_.neg().sigmoid()


def half_log_snr(memory) -> tuple:
    """``(lam, sig)`` for the model the sampler runs on: the flow forms if ``memory["const"]``."""
    return (lam_const, sig_const) if memory.get("const") else (lam, sig)


def dpmpp_sde(model, x, sigmas, i, memory, noise, eta=1.0, s_noise=1.0, r=1 / 2):
    """DPM-Solver++ SDE, single step: an ancestral move to ``lam + r h``, then the whole step.

    Two evaluations (one on the step to 0, which gives x = D) and two draws per step, both
    from sigma_i: to the midpoint, then to sigma_{i+1}.
    """
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    if sigma_next == 0:
        return StepOut(denoised, denoised, memory)
    lam_fn, sig_fn = half_log_snr(memory)
    lam_s, lam_t = lam_fn(sigma), lam_fn(sigma_next)
    h = lam_t - lam_s
    lam_1 = lam_s + r * h
    sigma_1 = sig_fn(lam_1)
    alpha_s, alpha_1, alpha_t = sigma * lam_s.exp(), sigma_1 * lam_1.exp(), sigma_next * lam_t.exp()
    fac = 1 / (2 * r)
    noisy = eta > 0 and s_noise > 0

    sd, su = ancestral_step(lam_s.neg().exp(), lam_1.neg().exp(), eta)
    h_ = lam(sd) - lam_s
    x_2 = ((alpha_1 / alpha_s) * (-h_).exp()) * x - (alpha_1 * (-h_).expm1()) * denoised
    if noisy:
        x_2 = x_2 + ((alpha_1 * noise(sigma, sigma_1)) * s_noise) * su
    denoised_2 = call_model(model, x_2, sigma_1)

    sd, su = ancestral_step(lam_s.neg().exp(), lam_t.neg().exp(), eta)
    h_ = lam(sd) - lam_s
    denoised_d = (1 - fac) * denoised + fac * denoised_2
    x = ((alpha_t / alpha_s) * (-h_).exp()) * x - (alpha_t * (-h_).expm1()) * denoised_d
    if noisy:
        x = x + ((alpha_t * noise(sigma, sigma_next)) * s_noise) * su
    return StepOut(x, denoised, memory)


def _sde_noise(x, noise, sigma, sigma_next, h, eta, s_noise):
    if eta > 0 and s_noise > 0:
        x = x + ((noise(sigma, sigma_next) * sigma_next) * (-2 * h * eta).expm1().neg().sqrt()) * s_noise
    return x


def _multistep_sde_first_order(x, sigma, sigma_next, denoised, memory, eta):
    """The first-order part of a DPM-Solver++(2M/3M) SDE step: ``(x, h, h_eta, alpha_t)``."""
    lam_fn = half_log_snr(memory)[0]
    lam_s, lam_t = lam_fn(sigma), lam_fn(sigma_next)
    h = lam_t - lam_s
    h_eta = h * (eta + 1)
    alpha_t = sigma_next * lam_t.exp()
    x = ((sigma_next / sigma) * (-h * eta).exp()) * x + (alpha_t * (-h_eta).expm1().neg()) * denoised
    return x, h, h_eta, alpha_t


def dpmpp_2m_sde(model, x, sigmas, i, memory, noise, eta=1.0, s_noise=1.0, solver_type="midpoint"):
    """DPM-Solver++(2M) SDE: history ``old_denoised``, ``h_last``; the step to 0 gives x = D."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    if sigma_next == 0:
        return StepOut(denoised, denoised, {**memory, "old_denoised": denoised, "h_last": memory.get("h_last")})
    x, h, h_eta, alpha_t = _multistep_sde_first_order(x, sigma, sigma_next, denoised, memory, eta)
    old_denoised = memory.get("old_denoised")
    if old_denoised is not None:
        r = memory["h_last"] / h
        if solver_type == "heun":
            coef = alpha_t * ((-h_eta).expm1().neg() / (-h_eta) + 1)
        else:
            coef = (0.5 * alpha_t) * (-h_eta).expm1().neg()
        x = x + (coef * (1 / r)) * (denoised - old_denoised)
    x = _sde_noise(x, noise, sigma, sigma_next, h, eta, s_noise)
    return StepOut(x, denoised, {**memory, "old_denoised": denoised, "h_last": h})


def dpmpp_2m_sde_heun(model, x, sigmas, i, memory, noise, eta=1.0, s_noise=1.0):
    """`dpmpp_2m_sde` with the Heun correction ``(expm1(-h_eta) / -h_eta + 1)`` for the history term."""
    return dpmpp_2m_sde(model, x, sigmas, i, memory, noise, eta, s_noise, solver_type="heun")


def dpmpp_3m_sde(model, x, sigmas, i, memory, noise, eta=1.0, s_noise=1.0):
    """DPM-Solver++(3M) SDE from the last two D's and step sizes; the step to 0 gives x = D."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    denoised_1, denoised_2 = memory.get("denoised_1"), memory.get("denoised_2")
    h_1, h_2 = memory.get("h_1"), memory.get("h_2")
    if sigma_next == 0:
        return StepOut(denoised, denoised, {**memory, "denoised_1": denoised, "denoised_2": denoised_1,
                                            "h_1": h_1, "h_2": h_1})
    x, h, h_eta, alpha_t = _multistep_sde_first_order(x, sigma, sigma_next, denoised, memory, eta)
    if h_2 is not None:
        r0, r1 = h_1 / h, h_2 / h
        d1_0 = (denoised - denoised_1) / r0
        d1_1 = (denoised_1 - denoised_2) / r1
        d1 = d1_0 + ((d1_0 - d1_1) * r0) / (r0 + r1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        phi_2 = (-h_eta).expm1() / h_eta + 1
        phi_3 = phi_2 / h_eta - 0.5
        x = (x + (alpha_t * phi_2) * d1) - (alpha_t * phi_3) * d2
    elif h_1 is not None:
        r = h_1 / h
        d = (denoised - denoised_1) / r
        phi_2 = (-h_eta).expm1() / h_eta + 1
        x = x + (alpha_t * phi_2) * d
    x = _sde_noise(x, noise, sigma, sigma_next, h, eta, s_noise)
    return StepOut(x, denoised, {**memory, "denoised_1": denoised, "denoised_2": denoised_1, "h_1": h, "h_2": h_1})


for _suffix, _tree in (("", "brownian"), ("_gpu", "brownian_gpu")):
    register("dpmpp_sde" + _suffix, noise=_tree, const_offset=True)(dpmpp_sde)
    register("dpmpp_2m_sde" + _suffix, noise=_tree, const_offset=True)(dpmpp_2m_sde)
    register("dpmpp_2m_sde_heun" + _suffix, noise=_tree, const_offset=True)(dpmpp_2m_sde_heun)
    register("dpmpp_3m_sde" + _suffix, noise=_tree, const_offset=True)(dpmpp_3m_sde)
