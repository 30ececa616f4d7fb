"""Adams-Bashforth family in sigma (Zhang & Chen 2022, DEIS; zju-pi/diff-sampler): ipndm, ipndm_v, deis.

Each keeps the slopes ``d`` of its last steps in ``memory["ds"]`` (newest first) and combines them
with the current one; the first step of a slice has no history, so a 1-step slice is Euler.
"""
from __future__ import annotations

import torch

from .core import StepOut, call_model, register, to_d

# Fixed-step Adams-Bashforth weights (numerators over a denominator), newest slope first.
_AB = {1: ((1,), 1), 2: ((3, -1), 2), 3: ((23, -16, 5), 12), 4: ((55, -59, 37, -9), 24)}


def _slope(model, x, sigmas, i):
    denoised = call_model(model, x, sigmas[i])
    return denoised, to_d(x, sigmas[i], denoised)


def _slopes(memory, d):
    """The current slope followed by the remembered ones, newest first."""
    return (d,) + memory.get("ds", ())


def _remember(memory, d, keep):
    """The next step's memory: ``d`` in front of the slope history, at most ``keep`` long."""
    return {**memory, "ds": _slopes(memory, d)[:keep]}


def _combine(weights, slopes):
    """``sum(w_k * slopes_k)`` over the newest-first ``slopes``."""
    return sum(w * s for w, s in zip(weights, slopes))


@register("ipndm")
def ipndm(model, x, sigmas, i, memory, noise):
    """Improved PNDM: Adams-Bashforth up to fourth order with the fixed-step weights."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised, d = _slope(model, x, sigmas, i)
    if sigma_next == 0:
        return StepOut(denoised, denoised, _remember(memory, d, 3))
    weights, scale = _AB[min(4, i + 1)]
    return StepOut(x + (sigma_next - sigma) * _combine(weights, _slopes(memory, d)) / scale, denoised,
                   _remember(memory, d, 3))


def _variable_step_weights(h, h1, h2=None, h3=None):
    """Variable-step Adams-Bashforth weights (newest first) from the last steps' widths.

    As the reference (and zju-pi/diff-sampler) computes them, 0-d float32 tensors in its grouping
    (``a * (b * c) / d`` where written so): bit-identical outputs. Its third-order term ``t1`` reads
    ``1 - a * b`` where the exact variable-step AB3 has ``(1 - a) * b``: the same for equal widths,
    different otherwise, which lowers the measured order on Karras grids to about 1.5. Kept: the
    reference's outputs depend on it (the exact form misses its fixtures by 4e-4 to 8e-3).
    """
    if h2 is None:
        return (2 + (h / h1)) / 2, -(h / h1) / 2
    t1 = (1 - h / (3 * (h + h1)) * (h * (h + h1)) / (h1 * (h1 + h2))) / 2
    if h3 is None:
        return (2 + (h / h1)) / 2 + t1, -(h / h1) / 2 - (1 + h1 / h2) * t1, t1 * h1 / h2
    q = h1 * (h1 + h2) / (h2 * (h2 + h3))
    t2 = (((1 - h / (3 * (h + h1))) / 2 + (1 - h / (2 * (h + h1))) * h / (6 * (h + h1 + h2)))
          * (h * (h + h1) * (h + h1 + h2)) / (h1 * (h1 + h2) * (h1 + h2 + h3)))
    return ((2 + (h / h1)) / 2 + t1 + t2,
            -(h / h1) / 2 - (1 + h1 / h2) * t1 - (1 + (h1 / h2) + q) * t2,
            t1 * h1 / h2 + ((h1 / h2) + q * (1 + h2 / h3)) * t2,
            -t2 * q * h1 / h2)


@register("ipndm_v")
def ipndm_v(model, x, sigmas, i, memory, noise):
    """Improved PNDM with variable-step Adams-Bashforth weights (up to fourth order)."""
    sigma_next = sigmas[i + 1]
    denoised, d = _slope(model, x, sigmas, i)
    if sigma_next == 0:
        return StepOut(denoised, denoised, _remember(memory, d, 3))
    order = min(4, i + 1)
    s = sigmas[i + 1 - order:i + 2]  # the order + 1 sigmas ending at sigma_next (0-d float32 each)
    widths = [s[k + 1] - s[k] for k in reversed(range(order))]  # h, h1, h2, h3 (newest first)
    if order == 1:
        return StepOut(x + widths[0] * d, denoised, _remember(memory, d, 3))
    weights = _variable_step_weights(*widths)
    return StepOut(x + widths[0] * _combine(weights, _slopes(memory, d)), denoised,
                   _remember(memory, d, 3))


def _deis_time(sigmas, sigma_min=0.002, sigma_max=80, eps=1e-3):
    """DEIS's VP time of each sigma (EDM's default VP-SDE fit) and that SDE's beta_0, beta_1.

    In the reference's float form: ``log(sigma_min^2 + 1)`` is float32, but ``sigma_max`` is the
    integer 80, whose ``log(80^2 + 1)`` the original takes in float64, so the fit's constants are
    0-d float64 tensors; the times come out in the sigmas' dtype (the constants enter as scalars).
    """
    log_min = torch.log(torch.tensor(sigma_min) ** 2 + 1)
    log_max = torch.log(torch.tensor(sigma_max**2 + 1, dtype=torch.float64))
    beta_d = 2 * (log_min / eps - log_max) / (eps - 1)
    beta_min = log_max - 0.5 * beta_d
    t = ((beta_min**2 + 2 * beta_d * (sigmas**2 + 1).log()).sqrt() - beta_min) / beta_d
    return t, beta_min, beta_d + beta_min


def _dsigma_dtau(taus, beta_0, beta_1):
    """``d sigma / d tau`` on the VP path, from autograd's ``d log alpha / d tau`` as the reference."""
    with torch.inference_mode(False), torch.enable_grad():
        taus = taus.clone().requires_grad_(True)
        alpha = torch.exp(-0.5 * taus**2 * (beta_1 - beta_0) - taus * beta_0)
        alpha.log().sum().backward()
    return -0.5 * taus.grad / torch.sqrt(alpha.detach() * (1 - alpha.detach()))


def deis_setup(x, sigmas, max_order=3, n=10000):
    """DEIS "tab" coefficients for the whole slice: ``c_j = integral of dsigma/dt * L_j(t)`` over each step.

    ``L_j`` are the Lagrange polynomials (in DEIS's VP time) through the step's current and past
    times; the integral is the original's quadrature (10,000 samples from end to end, each weighted
    by width / 10,000), in its float order. Steps of order 1 (the first, and any step to sigma 0)
    are Euler and get no coefficients (dsigma/dt is infinite at sigma 0).
    """
    t, beta_0, beta_1 = _deis_time(sigmas)
    coeffs = []
    for i in range(len(sigmas) - 1):
        order = min(max_order, i + 1)
        if order == 1 or sigmas[i + 1] <= 0:
            coeffs.append(())
            continue
        taus = torch.linspace(t[i], t[i + 1], n, dtype=t.dtype)
        dtau = (t[i + 1] - t[i]) / n
        integrand = _dsigma_dtau(taus, beta_0, beta_1)
        nodes = t[[i - k for k in range(order)]]  # t_i, t_{i-1}, ... newest first
        coeffs.append(tuple(torch.sum(integrand * _lagrange(nodes, j, taus)) * dtau for j in range(order)))
    return {"coeffs": tuple(coeffs)}


def _lagrange(nodes, j, taus):
    poly = 1
    for k in range(len(nodes)):
        if k != j:
            poly = poly * ((taus - nodes[k]) / (nodes[j] - nodes[k]))
    return poly


@register("deis", setup=deis_setup)
def deis(model, x, sigmas, i, memory, noise):
    """DEIS (Zhang & Chen 2022), tAB up to third order: exponential-integrator Adams-Bashforth."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised, d = _slope(model, x, sigmas, i)
    coeffs = memory["coeffs"][i]
    if not coeffs:  # order 1: Euler
        return StepOut(x + d * (sigma_next - sigma), denoised, _remember(memory, d, 2))
    for c, slope in zip(coeffs, _slopes(memory, d)):  # x + c_0 d + c_1 d_1 + ..., left to right
        x = x + c * slope
    return StepOut(x, denoised, _remember(memory, d, 2))
