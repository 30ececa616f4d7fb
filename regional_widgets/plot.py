"""Static matplotlib figures of a session, for notebooks, papers and the headless demo."""
from __future__ import annotations

import numpy as np
import torch


def _rgb(model, latent: torch.Tensor) -> np.ndarray:
    return model.decode(latent)[0].clamp(0, 1).cpu().numpy()


def schedule(session, ax=None):
    """The sigma schedules of the base and every region, the current step marked."""
    import matplotlib.pyplot as plt

    from .sampling.schedules import sampler_sigmas

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3))
    steps = session.steps if session.node == "RegionalSamplerAdvanced" else int(session.steps / session.denoise)
    configs = [("base", session.base)] + [(f"region {j}", r.config) for j, r in enumerate(session.regions, 1)]
    for label, config in configs:
        sig = sampler_sigmas(session.model.sigmas, config.sampler, config.scheduler, steps).numpy()
        ax.plot(np.arange(len(sig)), sig, marker=".", label=f"{label}: {config.scheduler}/{config.sampler}")
    if session.sigma is not None:
        ax.axhline(session.sigma, color="k", lw=0.8, ls="--")
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_xlabel("step")
    ax.set_ylabel("sigma")
    ax.legend(fontsize=7)
    return fig if fig is not None else ax.figure


def step_strip(session, every: int = 1):
    """Run ``session`` from its start, one regional step at a time, and show the x0 prediction after
    each step above the masks and the final image. Leaves the session at the end of the run."""
    import matplotlib.pyplot as plt

    session.reset()
    frames = []
    while not session.done:
        session.step()
        if session.denoised is not None and (session.step_index % every == 0 or session.done):
            frames.append((session.step_index, session.sigma_next, _rgb(session.model, session.denoised)))
    n = len(frames)
    cols = min(n, 10)
    rows = -(-n // cols) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, (step, sigma, rgb) in enumerate(frames):
        ax = axes[k // cols][k % cols]
        ax.imshow(rgb)
        ax.set_title(f"{step}: σ→{sigma:.2f}" if sigma is not None else f"{step}", fontsize=6)
    last = axes[-1]
    masks = session.masks
    colours = np.array([[0.5, 0.5, 0.5], [1, 0.2, 0.2], [0.2, 0.4, 1], [0.2, 0.8, 0.2], [1, 0.8, 0.1]])
    overlay = np.zeros(tuple(masks[0].shape) + (3,))
    for j, m in enumerate(masks):
        overlay += m.numpy()[..., None] * colours[j % len(colours)]
    last[0].imshow(np.clip(overlay, 0, 1), interpolation="nearest")
    last[0].set_title("masks (latent)", fontsize=6)
    last[1].imshow(_rgb(session.model, session.result))
    last[1].set_title("result", fontsize=6)
    fig.suptitle(f"{session.node}: per-step x0 prediction", fontsize=8)
    fig.tight_layout()
    return fig
