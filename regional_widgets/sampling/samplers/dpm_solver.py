"""DPM-Solver (Lu et al. 2022, arXiv 2206.00927) on a grid of its own, in ``t = -log(sigma)``.

As the reference calls them, both integrate from ``sigmas[0]`` to the slice's last positive
sigma and ignore the sigmas in between. `setup` lays out the run (dpm_fast: a fixed grid;
dpm_adaptive: a step-size controller) and each step does one step of it, so the driver's step
count differs from ``len(sigmas) - 1`` and ``StepOut.done`` (at the start, `Start.done`) says when
the run is over.
"""
from __future__ import annotations

import math

import torch

from .core import Start, StepOut, call_model, register
from .dpmpp import sigma_fn, t_fn


def eps_fn(model, x, t):
    """The noise prediction at time ``t``."""
    sigma = sigma_fn(t)
    return (x - call_model(model, x, sigma)) / sigma


def dpm_solver_1(x, t, t_next, eps):
    return x - sigma_fn(t_next) * (t_next - t).expm1() * eps


def dpm_solver_2(model, x, t, t_next, eps, r1=1 / 2):
    h = t_next - t
    s1 = t + r1 * h
    u1 = x - sigma_fn(s1) * (r1 * h).expm1() * eps
    eps_r1 = eps_fn(model, u1, s1)
    x_1 = dpm_solver_1(x, t, t_next, eps)
    return x_1 - sigma_fn(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)


def dpm_solver_3(model, x, t, t_next, eps, r1=1 / 3, r2=2 / 3):
    """DPM-Solver-3, and the DPM-Solver-2 (at ``r1``) that shares its first stage."""
    h = t_next - t
    s1, s2 = t + r1 * h, t + r2 * h
    u1 = x - sigma_fn(s1) * (r1 * h).expm1() * eps
    eps_r1 = eps_fn(model, u1, s1)
    x_1 = dpm_solver_1(x, t, t_next, eps)
    x_2 = x_1 - sigma_fn(t_next) / (2 * r1) * h.expm1() * (eps_r1 - eps)
    u2 = (x - sigma_fn(s2) * (r2 * h).expm1() * eps
          - sigma_fn(s2) * (r2 / r1) * ((r2 * h).expm1() / (r2 * h) - 1) * (eps_r1 - eps))
    eps_r2 = eps_fn(model, u2, s2)
    x_3 = x_1 - sigma_fn(t_next) / r2 * (h.expm1() / h - 1) * (eps_r2 - eps)
    return x_3, x_2


class ZeroSigmaError(ValueError):
    """The slice has no positive end point to integrate to (the reference's "sigma_min and sigma_max
    must not be 0"); the recovery pass treats such a call as a no-op."""


def time_span(sigmas):
    """``t`` at ``sigmas[0]`` and at the last positive sigma (the one before a final 0)."""
    sigma_min = sigmas[-1] if sigmas[-1] > 0 else sigmas[-2]
    if sigma_min <= 0 or sigmas[0] <= 0:
        raise ZeroSigmaError(f"sigmas: sigma_min and sigma_max must not be 0 (DPM-Solver needs positive end points, got {sigmas.tolist()})")
    return t_fn(sigmas[0]), t_fn(sigma_min)


def fast_setup(x, sigmas):
    """A grid uniform in t, ``n = len(sigmas) - 1`` evaluations in all: orders 3, ..., 3, 2, 1."""
    n = len(sigmas) - 1
    if n < 1:
        return Start({}, done=True)
    t_start, t_end = time_span(sigmas)
    m = n // 3 + 1
    orders = [3] * (m - 2) + [2, 1] if n % 3 == 0 else [3] * (m - 1) + [n % 3]
    ts = torch.linspace(t_start, t_end, m + 1, device=x.device)
    return Start({"ts": ts, "orders": tuple(orders)}, done=False)


@register("dpm_fast", setup=fast_setup)  # 3, 2 or 1 evaluations per step of its grid; len(sigmas) - 1 in all
def dpm_fast(model, x, sigmas, i, memory, noise):
    """DPM-Solver-fast: step i of the grid, of order ``memory["orders"][i]``."""
    ts, orders = memory["ts"], memory["orders"]
    t, t_next = ts[i], ts[i + 1]
    eps = eps_fn(model, x, t)
    denoised = x - sigma_fn(t) * eps
    if orders[i] == 1:
        x = dpm_solver_1(x, t, t_next, eps)
    elif orders[i] == 2:
        x = dpm_solver_2(model, x, t, t_next, eps)
    else:
        x, _ = dpm_solver_3(model, x, t, t_next, eps)
    return StepOut(x, denoised, memory, sigma_fn(t), sigma_fn(t_next), done=i + 1 == len(orders))


# k-diffusion's defaults; its PID controller with pcoeff = dcoeff = 0 is this integral controller.
ORDER, RTOL, ATOL, H_INIT, ACCEPT_SAFETY = 3, 0.05, 0.0078, 0.05, 0.81


def adaptive_setup(x, sigmas):
    if len(sigmas) < 2:
        return Start({}, done=True)
    t_start, t_end = time_span(sigmas)
    return Start({"s": t_start, "t_end": t_end, "h": H_INIT, "x_prev": x}, done=not t_start < t_end - 1e-5)


def propose_step(h, error):
    """Scale h by ``1 + atan(f - 1)``, ``f = error^(-1/order)``; accept if that is large enough."""
    factor = (1 / (float(error) + 1e-8)) ** (1 / ORDER)
    factor = 1 + math.atan(factor - 1)
    return factor >= ACCEPT_SAFETY, h * factor


@register("dpm_adaptive", setup=adaptive_setup)  # 3 evaluations per attempted step; the step count adapts
def dpm_adaptive(model, x, sigmas, i, memory, noise):
    """One attempted DPM-Solver-23 step from ``s`` to ``s + h``, kept if its error is small."""
    s, t_end, x_prev = memory["s"], memory["t_end"], memory["x_prev"]
    t = torch.minimum(t_end, s + memory["h"])
    eps = eps_fn(model, x, s)
    denoised = x - sigma_fn(s) * eps
    x_high, x_low = dpm_solver_3(model, x, s, t, eps)
    scale = torch.maximum(x_low.abs(), x_prev.abs())
    delta = torch.maximum(x.new_tensor(ATOL), x.new_tensor(RTOL) * scale)
    error = torch.linalg.norm((x_low - x_high) / delta) / x.numel() ** 0.5
    accept, h = propose_step(memory["h"], error)
    s_next = t if accept else s
    memory = {"s": s_next, "t_end": t_end, "h": h, "x_prev": x_low if accept else x_prev}
    return StepOut(x_high if accept else x, denoised, memory, sigma_fn(s), sigma_fn(s_next),
                   done=not s_next < t_end - 1e-5)
