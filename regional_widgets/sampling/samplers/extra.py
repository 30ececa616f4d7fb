"""Single-step samplers k-diffusion lacks: heunpp2, ddpm, lcm, and ddim (an alias of euler)."""
from __future__ import annotations

import torch

from ..model_sampling import noise_scaling
from .classic import euler
from .core import StepOut, call_model, register, to_d


@register("heunpp2")
def heunpp2(model, x, sigmas, i, memory, noise):
    """Heun++ (sd-webui-samplers-scheduler): Euler, Heun or a three-point average of slopes.

    The extra slopes are taken along the Euler path to the next one or two sigmas, weighted by how
    far they are from the *slice's* first sigma, so the step's order depends on the slice: the last
    step, and every step of a 1-step slice, is plain Euler.
    """
    sigma, sigma_next, sigma_end = sigmas[i], sigmas[i + 1], sigmas[-1]
    denoised = call_model(model, x, sigma)
    d = to_d(x, sigma, denoised)
    dt = sigma_next - sigma
    if sigma_next == sigma_end:
        return StepOut(x + d * dt, denoised, memory)
    x_2 = x + d * dt
    d_2 = to_d(x_2, sigma_next, call_model(model, x_2, sigma_next))
    sigma_after = sigmas[i + 2]
    if sigma_after == sigma_end:
        w2 = sigma_next / (2 * sigmas[0])
        return StepOut(x + ((1 - w2) * d + w2 * d_2) * dt, denoised, memory)
    x_3 = x_2 + d_2 * (sigma_after - sigma_next)
    d_3 = to_d(x_3, sigma_after, call_model(model, x_3, sigma_after))
    w2, w3 = sigma_next / (3 * sigmas[0]), sigma_after / (3 * sigmas[0])
    return StepOut(x + ((1 - w2 - w3) * d + w2 * d_2 + w3 * d_3) * dt, denoised, memory)


@register("ddpm", noise="default")
def ddpm(model, x, sigmas, i, memory, noise):
    """Ancestral DDPM (Ho et al. 2020) in the variance-preserving frame, alpha_bar = 1 / (sigma^2 + 1).

    In the reference's float order (spec §3.5.4 d): x goes to the VP frame (``q``), the posterior
    mean ``mu`` takes noise when sigma_next > 0 and is scaled back; on the step to 0 it stays ``mu``.
    """
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    q = x / torch.sqrt(1.0 + sigma**2.0)
    eps = (x - denoised) / sigma
    alpha_bar, alpha_bar_next = 1 / ((sigma * sigma) + 1), 1 / ((sigma_next * sigma_next) + 1)
    alpha = alpha_bar / alpha_bar_next
    mu = torch.sqrt(1.0 / alpha) * (q - ((1 - alpha) * eps) / torch.sqrt(1 - alpha_bar))
    if sigma_next > 0:
        mu = mu + torch.sqrt(((1 - alpha) * (1.0 - alpha_bar_next)) / (1.0 - alpha_bar)) * noise(sigma, sigma_next)
    if sigma_next != 0:
        mu = mu * torch.sqrt(1.0 + sigma_next**2.0)
    return StepOut(mu, denoised, memory)


@register("lcm", noise="default", model_sampling=True)
def lcm(model, x, sigmas, i, memory, noise):
    """Latent-consistency sampling: jump to the prediction, then re-noise it with fresh noise through
    the model's ``noise_scaling``: ``D + s' n`` (EPS), ``s' n + (1 - s') D`` on a flow (CONST) model."""
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    denoised = call_model(model, x, sigma)
    if sigma_next == 0:
        return StepOut(denoised, denoised, memory)
    parametrisation = "const" if memory.get("const") else "eps"
    return StepOut(noise_scaling(parametrisation, sigma_next, noise(sigma, sigma_next), denoised), denoised, memory)


@register("ddim", inpaint_random=True)
def ddim(model, x, sigmas, i, memory, noise):
    """DDIM is Euler's update; only inpainting differs (the kept area is re-noised from seed + 1)."""
    return euler(model, x, sigmas, i, memory, noise)
