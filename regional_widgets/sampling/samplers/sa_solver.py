"""SA-Solver (Xue et al. 2023, arXiv 2309.05019): stochastic Adams predictor-corrector, data prediction.

Time is ``lam = -log sigma``. Each step evaluates the model at the *predicted* point, corrects the
current state with an Adams-Moulton combination of the last ``co`` predictions (the new one
included), then predicts the next point with an Adams-Bashforth combination of the last ``po``.
The coefficients integrate the Lagrange basis on the lams against the SDE's exponential weight
(`_coefficients`). Noise of size ``tau`` enters only on steps whose target sigma lies in the
model's ``[percent_to_sigma(0.8), percent_to_sigma(0.2)]``; the corrector re-adds the predictor's
noise. As the reference runs it (spec §3.5.2): predictor order 3, corrector order 4, and the
sampler's x is the *corrected* state, one step behind the prediction, so a slice that does not end
at 0 returns the state at its second-to-last sigma and a 1-step slice returns its input unchanged.
``sa_solver_pece`` re-evaluates the model at the corrected point (PECE).
"""
from __future__ import annotations

import math

import torch

from .core import StepOut, call_model, register
from .sde import half_log_snr

PREDICTOR_ORDER, CORRECTOR_ORDER = 3, 4
TAU_INTERVAL = (0.2, 0.8)  # fractions of the run (percent_to_sigma) where the SDE noise is on


def sa_solver_setup(x, sigmas, model_sampling):
    s_start, s_end = (model_sampling.percent_to_sigma(p) for p in TAU_INTERVAL)
    lam = half_log_snr({"const": getattr(model_sampling, "is_const", False)})[0]  # the flow lambda on CONST
    return {"lams": lam(sigmas), "tau_bounds": (s_start, s_end), "x_pred": x, "outputs": (),
            "tau": 0.0, "h": 0.0, "z": 0.0}


def _tau(sigma, bounds) -> float:
    s_start, s_end = bounds
    return 1.0 if s_start >= float(sigma) >= s_end else 0.0


def _coefficients(sigma_next, lams, lam_s, lam_t, tau):
    """The weights ``b_j`` of ``sum_j b_j D_j`` for one Adams step from ``lam_s`` to ``lam_t``.

    ``e_p = m int_{lam_s}^{lam_t} exp(m (u - lam_t)) u^p du`` with ``m = 1 + tau^2``, written as
    ``e = M @ E`` (``E_p = lam_t^p - lam_s^p exp(-m h)``, ``M`` the lower-triangular integration
    by parts weights); the Lagrange weights solve ``V^T ell = e`` for the Vandermonde matrix of
    ``lams``, and ``b = sigma_next exp(lam_t) ell``.
    """
    n = len(lams)
    m = 1 + tau**2
    hh = lam_t - lam_s
    p = torch.arange(n, dtype=lam_t.dtype)  # float32 for float32 sigmas, as the reference
    big_e = lam_t**p - lam_s**p * torch.exp((-m) * hh)
    lgam = torch.lgamma(p + 1)
    diff = p[:, None] - p[None, :]
    log_ratio = lgam[:, None] - lgam[None, :]
    if tau > 0:
        log_ratio = log_ratio - diff * math.log(m)
    sign = torch.where(diff % 2 == 0, 1.0, -1.0)
    big_m = torch.where(diff >= 0, torch.exp(log_ratio) * sign, big_e.new_zeros(()))
    e = big_m @ big_e
    vander = torch.vander(torch.stack(list(lams)), N=n, increasing=True)
    ell = torch.linalg.solve(vander.T, e)
    return (sigma_next * lam_t.exp()) * ell


def _adams(outputs, coefficients):
    """``sum_j b_j D_j`` over the last ``len(coefficients)`` predictions, oldest first."""
    stacked = torch.stack(outputs[-len(coefficients):], dim=1)
    return torch.tensordot(stacked, coefficients, dims=([1], [0]))


def _sa_solver_step(model, x, sigmas, i, memory, noise, pece, s_noise=1.0):
    lams, n = memory["lams"], len(sigmas) - 1
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, memory["x_pred"], sigma)
    outputs = (memory["outputs"] + (denoised,))[-max(PREDICTOR_ORDER, CORRECTOR_ORDER):]
    tau, h, z = memory["tau"], memory["h"], memory["z"]
    po = min(PREDICTOR_ORDER, len(outputs))
    co = 0 if i == 0 or (sigma_next == 0 and not pece) else min(CORRECTOR_ORDER, len(outputs))
    if sigmas[-1] == 0:
        po, co = min(po, n - 1 - i), min(co, n - i)

    if co == 0:
        x = memory["x_pred"]
    else:
        b = _coefficients(sigma, lams[i - co + 1:i + 1], lams[i - 1], lams[i], tau)
        x = ((sigma / sigmas[i - 1]) * torch.exp(-(tau**2) * h)) * x + _adams(outputs, b)
        if tau > 0 and s_noise > 0:
            x = x + z  # the corrector keeps the noise the previous prediction added
        if pece:
            denoised = call_model(model, x, sigma)
            outputs = outputs[:-1] + (denoised,)

    x_pred = x
    if sigma_next == 0:
        x = denoised
    else:
        tau = _tau(sigma_next, memory["tau_bounds"])
        h = lams[i + 1] - lams[i]
        b = _coefficients(sigma_next, lams[i - po + 1:i + 1], lams[i], lams[i + 1], tau)
        x_pred = ((sigma_next / sigma) * torch.exp(-(tau**2) * h)) * x + _adams(outputs, b)
        if tau > 0 and s_noise > 0:
            z = ((noise(sigma, sigma_next) * sigma_next) * torch.sqrt(-torch.expm1((-2 * tau**2) * h))) * s_noise
            x_pred = x_pred + z
    return StepOut(x, denoised, {**memory, "x_pred": x_pred, "outputs": outputs, "tau": tau, "h": h, "z": z})


@register("sa_solver", setup=sa_solver_setup, noise="default", const_offset=True)
def sa_solver(model, x, sigmas, i, memory, noise):
    """SA-Solver, predictor order 3 / corrector order 4; x is the corrected state (one step behind)."""
    return _sa_solver_step(model, x, sigmas, i, memory, noise, pece=False)


@register("sa_solver_pece", setup=sa_solver_setup, noise="default", const_offset=True)
def sa_solver_pece(model, x, sigmas, i, memory, noise):
    """SA-Solver PECE: the model is evaluated again at the corrected point before predicting."""
    return _sa_solver_step(model, x, sigmas, i, memory, noise, pece=True)
