"""UniPC (Zhao et al. 2023, arXiv 2302.04867): multistep predictor-corrector, variants B1(h) and B2(h).

As the reference runs it (spec §3.4, §3.5.4 c), in the variance-preserving frame with the slice's
sigmas as time: x enters as ``x / sqrt(1 + sigma_0^2)``, each time ``t`` has
``log alpha = 0.5 log(1 / (t t + 1))``, ``sigma_vp = sqrt(1 - alpha^2)`` and
``lambda = log alpha - log sigma_vp``, and the model is seen as a data predictor through its noise
estimate. A step from ``t`` to ``t_next`` starts from the exponential-integrator value
``(sigma_vp' / sigma_vp) x - alpha' expm1(-h) D_0`` and subtracts ``alpha' B(h)`` times weighted
differences of past predictions (the predictor, UniP); the model's prediction at the predicted point
then corrects the step (UniC) and is kept for the next step, so each step costs one evaluation.
The order is ``min(3, len(sigmas) - 2)``, lowered at the start (warm-up) and at the end
(``lower_order_final``), no corrector on the last step, and a final ``sigma = 0`` becomes 0.001 (the
run ends at sigma 0.001, then x is divided by that time's alpha). A 2-sigma slice has order 0: one
evaluation and only that rescale (`_order_zero`). Everything is float32 in the reference's order of
operations, so outputs are bit-identical to its fixtures.

Step-wise: ``memory`` holds the last ``order`` predictions (``models``), the VP state ``x_vp`` and
the x this step returned (``x_out = x_vp / alpha(t_next)``). A caller that hands that same x back
continues on the exact VP state; a caller that changed it (coherent mode's blend) has it converted.
"""
from __future__ import annotations

import torch

from .core import StepOut, call_model, register

_FINAL_SIGMA = 0.001  # lambda must stay finite


def _vp(t):
    """``alpha``, ``sigma_vp`` and ``lambda`` of the VP schedule at time (sigma) ``t``, float32."""
    log_alpha = 0.5 * torch.log(1 / ((t * t) + 1))
    alpha = torch.exp(log_alpha)
    sigma_vp = torch.sqrt(1.0 - torch.exp(2.0 * log_alpha))
    lam = log_alpha - 0.5 * torch.log(1.0 - torch.exp(2.0 * log_alpha))
    return alpha, sigma_vp, lam


def _times(sigmas):
    ts = sigmas.clone()
    if ts[-1] == 0:
        ts[-1] = _FINAL_SIGMA
    return ts


def _data_prediction(model, x_vp, t):
    """x0 from the denoiser seen as a noise predictor at the VP point ``x_vp`` (the reference's route)."""
    x_in = x_vp * (t**2 + 1.0) ** 0.5
    eps = (x_in - call_model(model, x_in, t)) / t
    alpha, sigma_vp, _ = _vp(t)
    return (x_vp - sigma_vp * eps) / alpha


def _weights(rks, hh, order, variant):
    """B(h) and ``b_k = k! phi_{k+1}(hh) / B(h)``, with the rows ``r^(k-1)`` they are solved against."""
    h_phi_1 = torch.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1
    b_h = hh if variant == "bh1" else torch.expm1(hh)
    rows, b, factorial = [], [], 1
    for k in range(1, order + 1):
        rows.append(torch.pow(rks, k - 1))
        b.append(h_phi_k * factorial / b_h)
        factorial *= k + 1
        h_phi_k = h_phi_k / hh - 1 / factorial
    return h_phi_1, b_h, torch.stack(rows), torch.stack(b)


def _uni_pc_update(model, x, models, times, t, order, variant, corrector):
    """One UniP(-C) step of ``order`` from ``times[-1]`` to ``t``; returns x and the new prediction."""
    alpha_t, sigma_t, lambda_t = _vp(t)
    _, sigma_0, lambda_0 = _vp(times[-1])
    model_0 = models[-1]
    h = lambda_t - lambda_0
    rks, diffs = [], []
    for k in range(1, order):
        rk = (_vp(times[-(k + 1)])[2] - lambda_0) / h
        rks.append(rk)
        diffs.append((models[-(k + 1)] - model_0) / rk)
    rks = torch.stack(rks + [torch.ones_like(h)])
    h_phi_1, b_h, rows, b = _weights(rks, -h, order, variant)
    x_first = sigma_t / sigma_0 * x - alpha_t * h_phi_1 * model_0  # DPM-Solver++(1)
    if diffs:
        diffs = torch.stack(diffs, dim=1)
        rhos_p = torch.tensor([0.5], dtype=b.dtype) if order == 2 else torch.linalg.solve(rows[:-1, :-1], b[:-1])
        x_t = x_first - alpha_t * b_h * torch.einsum("k,bkchw->bchw", rhos_p, diffs)
    else:
        x_t = x_first - alpha_t * b_h * 0
    if not corrector:
        return x_t, None
    rhos_c = torch.tensor([0.5], dtype=b.dtype) if order == 1 else torch.linalg.solve(rows, b)
    model_t = _data_prediction(model, x_t, t)
    corr_res = torch.einsum("k,bkchw->bchw", rhos_c[:-1], diffs) if order > 1 else 0
    return x_first - alpha_t * b_h * (corr_res + rhos_c[-1] * (model_t - model_0)), model_t


def _order_zero(model, x, sigmas):
    """A 2-sigma slice (spec §3.5.4 c): one evaluation, then only the VP scaling is undone.

    In the reference's float order: ``q = x / sqrt(1 + s_0^2)``, the model sees
    ``q * (s_0^2 + 1)^0.5``, and the output is ``q / alpha(t_1)`` with
    ``alpha(t) = exp(0.5 log(1 / (t t + 1)))`` (a final 0 becomes 0.001; the reference writes that
    into its caller's sigmas, we do not).
    """
    s_0, s_1 = sigmas[0], sigmas[1]
    t_1 = torch.full_like(s_1, _FINAL_SIGMA) if s_1 == 0 else s_1
    q = x / torch.sqrt(1.0 + s_0**2.0)
    denoised = call_model(model, q * (s_0**2 + 1.0) ** 0.5, s_0)
    alpha_1 = torch.exp(0.5 * torch.log(1 / ((t_1 * t_1) + 1)))
    return StepOut(q / alpha_1, denoised, {})


def _uni_pc_step(model, x, sigmas, i, memory, variant):
    n = len(sigmas) - 1
    max_order = min(3, n - 1)
    if max_order == 0:
        return _order_zero(model, x, sigmas)
    ts = _times(sigmas)
    if i == 0:
        x_vp = x / torch.sqrt(1.0 + sigmas[0] ** 2.0)
    elif torch.equal(x, memory["x_out"]):
        x_vp = memory["x_vp"]
    else:  # x was changed between steps: carry it into the VP frame
        x_vp = x * _vp(ts[i])[0]
    models = memory.get("models") or (_data_prediction(model, x_vp, ts[0]),)  # newest last
    order = min(i + 1, max_order, n - i)  # warm-up, then lower_order_final
    times = [ts[k] for k in range(i + 1 - len(models), i + 1)]
    x_vp, model_x = _uni_pc_update(model, x_vp, models, times, ts[i + 1], order, variant, corrector=i + 1 < n)
    x_out = x_vp / _vp(ts[i + 1])[0]
    if model_x is None:  # the last step: no corrector, its prediction would never be used
        return StepOut(x_out, models[-1], {**memory, "x_vp": x_vp, "x_out": x_out})
    return StepOut(x_out, model_x, {"models": (models + (model_x,))[-max_order:], "x_vp": x_vp, "x_out": x_out})


@register("uni_pc")
def uni_pc(model, x, sigmas, i, memory, noise):
    """UniPC with B(h) = h (bh1)."""
    return _uni_pc_step(model, x, sigmas, i, memory, "bh1")


@register("uni_pc_bh2")
def uni_pc_bh2(model, x, sigmas, i, memory, noise):
    """UniPC with B(h) = expm1(h) (bh2)."""
    return _uni_pc_step(model, x, sigmas, i, memory, "bh2")
