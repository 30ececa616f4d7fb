"""UniPC (Zhao et al. 2023, arXiv 2302.04867): multistep predictor-corrector, variants B1(h) and B2(h).

Written in the variance-exploding frame with the slice's sigmas as time (``lambda = -log sigma``)
and the data-prediction form: a step from ``t`` to ``t_next`` starts from the exponential-integrator
value ``(t_next / t) x - expm1(-h) D_0`` and adds weighted differences of past predictions (the
predictor); the model's prediction at the predicted point then corrects the step (UniC) and is
kept for the next step, so each step costs one evaluation. As the reference runs it: the order is
``min(3, len(sigmas) - 2)``, lowered at the start (warm-up) and at the end (``lower_order_final``),
no corrector on the last step, and a final ``sigma = 0`` replaced by 0.001 (so the run ends at
sigma 0.001, not 0). A 2-sigma slice has order 0: the reference evaluates the model once and only
rescales x (see ``_uni_pc_step``). ``memory["models"]`` holds the last three predictions.

The reference's x lives in the VP frame (``x / sqrt(1 + sigma_0^2)`` in, ``/ alpha(t_last)`` out);
in the VE frame the same update reads as above, with its float32 schedule kept in ``_times``.
"""
from __future__ import annotations

import math

import torch

from .core import StepOut, call_model, register

_FINAL_SIGMA = 0.001  # lambda = -log(sigma) must stay finite


def _times(sigmas):
    """UniPC's time grid: each sigma as the reference's float32 VP schedule sees it.

    The reference keeps x in the VP frame and gets ``alpha = exp(log_alpha)``,
    ``sigma_vp = sqrt(1 - exp(2 log_alpha))`` and ``lambda = log alpha - log sigma_vp`` from
    ``log_alpha = 0.5 log(1 / (sigma^2 + 1))`` in float32. The step only sees the ratio
    ``sigma_vp / alpha``, which is sigma up to that round trip's cancellation: in float32 about 2e-5
    relative at SD1.5's sigma_min and 2.3% at the final 0.001 (it becomes 0.000977), enough to move
    outputs by 3e-4, so we keep it (in the sigmas' own dtype: float64 sigmas get an accurate grid).
    """
    ts = sigmas.clone()
    if ts[-1] == 0:
        ts[-1] = _FINAL_SIGMA
    log_alpha = 0.5 * torch.log(1 / (ts * ts + 1))
    return (torch.sqrt(1 - torch.exp(2 * log_alpha)) / torch.exp(log_alpha)).tolist()


def _weights(rks, hh, variant):
    """B(h) and the predictor and corrector weights for the ratios ``rks`` (r_1 .. r_{K-1}) of order K.

    The weights solve ``sum_k rho_k r_k^(i-1) = i! phi_{i+1}(hh) / B(h)``, i = 1 .. K (the corrector
    adds r_K = 1 for the new prediction); orders 1 and 2 use the paper's simplified 1/2.
    """
    order = len(rks) + 1
    b_h = hh if variant == "bh1" else math.expm1(hh)
    r = torch.tensor(list(rks) + [1.0], dtype=torch.float64)
    rows = torch.stack([r**k for k in range(order)])
    phi, factorial, b = math.expm1(hh) / hh - 1, 1, []
    for k in range(1, order + 1):
        b.append(phi * factorial / b_h)
        factorial *= k + 1
        phi = phi / hh - 1 / factorial
    b = torch.tensor(b, dtype=torch.float64)
    rhos_p = {1: [], 2: [0.5]}.get(order) or torch.linalg.solve(rows[:-1, :-1], b[:-1]).tolist()
    rhos_c = [0.5] if order == 1 else torch.linalg.solve(rows, b).tolist()
    return b_h, rhos_p, rhos_c


def _weighted(rhos, tensors):
    return sum(rho * t for rho, t in zip(rhos, tensors))


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
    ts, n = _times(sigmas), len(sigmas) - 1
    max_order = min(3, n - 1)
    if max_order == 0:
        return _order_zero(model, x, sigmas)
    models = memory.get("models") or (call_model(model, x, sigmas[0]),)  # newest last
    order = min(i + 1, max_order, n - i)  # warm-up, then lower_order_final
    t, t_next, d0 = ts[i], ts[i + 1], models[-1]
    h = math.log(t / t_next)  # lambda_next - lambda with lambda = -log(t)
    rks = [math.log(t / ts[i - k]) / h for k in range(1, order)]
    diffs = [(models[-1 - k] - d0) / rk for k, rk in enumerate(rks, start=1)]
    b_h, rhos_p, rhos_c = _weights(rks, -h, variant)
    x_first = (t_next / t) * x - math.expm1(-h) * d0  # DPM-Solver++(1), i.e. DDIM
    x_next = x_first - b_h * _weighted(rhos_p, diffs)
    if i + 1 == n:  # no corrector on the last step: its prediction would never be used
        return StepOut(x_next, d0, memory)
    d_next = call_model(model, x_next, sigmas[i + 1])
    x_next = x_first - b_h * (_weighted(rhos_c[:-1], diffs) + rhos_c[-1] * (d_next - d0))
    return StepOut(x_next, d_next, {"models": (models + (d_next,))[-3:]})


@register("uni_pc")
def uni_pc(model, x, sigmas, i, memory, noise):
    """UniPC with B(h) = h (bh1)."""
    return _uni_pc_step(model, x, sigmas, i, memory, "bh1")


@register("uni_pc_bh2")
def uni_pc_bh2(model, x, sigmas, i, memory, noise):
    """UniPC with B(h) = expm1(h) (bh2)."""
    return _uni_pc_step(model, x, sigmas, i, memory, "bh2")
