"""Matplotlib figures and animations of a session, for notebooks, papers, the CLI and the headless demo."""
from __future__ import annotations

import numpy as np
import torch

from .node_params import schedule_steps  # the one "steps for this node" rule (rw.plot.schedule_steps too)


def rgb(model, latent: torch.Tensor, full: bool = False) -> np.ndarray:
    """Batch item 0 as an ``[H, W, 3]`` float array for ``imshow``: the model's cheap preview
    (`models.base.preview_rgb`); ``full``: its full decode (the VAE)."""
    from .models.base import preview_rgb

    return preview_rgb(model, latent, full)[0].float().numpy()


def _is_flow(session) -> bool:
    from .models.base import is_flow_model

    return is_flow_model(session.model)


def picture(session, which: str = "latent") -> torch.Tensor:
    """What the session's ``latent`` (or ``result``) really shows, ready to decode: on a flow model a
    leftover-noise latent ``x / (1 - sigma)`` is shown as ``(1 - sigma) * latent`` at each pixel's sigma;
    EPS/V models: the latent itself (`RegionalSamplerSession.picture`). The session's traits are unchanged.
    """
    return session.picture(which)


def sigma_axis(ax, session, label: str = "sigma"):
    """A sigma axis: log-like from 14.6 down for EPS/V models, linear 0..1 for flow models.
    ``label`` None: no axis label (compact panels name the range in their title)."""
    if _is_flow(session):
        ax.set_yscale("linear")
        ax.set_ylim(-0.02, 1.02)
    else:
        ax.set_yscale("symlog", linthresh=0.01)
    if label is not None:
        ax.set_ylabel(f"{label} (flow, 0..1)" if _is_flow(session) else label)


def sigma_range(session, data) -> tuple:
    """Colour limits of a sigma map: 0..1 on a flow model, 0..max otherwise."""
    top = float(np.max(data)) if np.size(data) else 0.0
    return (0.0, 1.0) if _is_flow(session) else (0.0, max(top, 1e-6))


def schedules(session) -> list:
    """``(label, config, sigmas)`` for the base and every region; ``sigmas`` a float numpy array."""
    from .sampling.schedules import sampler_sigmas

    steps = schedule_steps(session)
    configs = [("base", session.base)] + [(f"region {j}", r.config) for j, r in enumerate(session.regions, 1)]
    return [(label, config, sampler_sigmas(session.model, config.sampler, config.scheduler, steps).numpy())
            for label, config in configs]


def schedule(session, ax=None):
    """The sigma schedules of the base and every region, the current step marked."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(5, 3))
    for label, config, sig in schedules(session):
        ax.plot(np.arange(len(sig)), sig, marker=".", label=f"{label}: {config.scheduler}/{config.sampler}")
    if session.sigma is not None:
        ax.axhline(session.sigma, color="k", lw=0.8, ls="--")
    sigma_axis(ax, session)
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    return fig if fig is not None else ax.figure


def palette(n: int) -> np.ndarray:
    """RGB in [0, 1] of the base (row 0) and regions 1..n-1: the widgets' colours."""
    from .colors import region_color

    return np.array([region_color(j) for j in range(n)], dtype=np.float64) / 255.0


def mask_overlay(masks, colors=None) -> np.ndarray:
    """``[base, region 1, ...]`` masks (h, w) as one RGB picture: each painted in its colour over the
    earlier ones, so a later region covers an earlier one where they overlap (as in the composite)."""
    arrays = [np.asarray(m, dtype=np.float64) for m in masks]
    colors = palette(len(arrays)) if colors is None else np.asarray(colors, dtype=np.float64)
    out = np.zeros(arrays[0].shape + (3,))
    for m, color in zip(arrays, colors):
        m = np.clip(m, 0, 1)[..., None]
        out = out * (1 - m) + color * m
    return out


def tile(arrays, gap: int = 1) -> np.ndarray:
    """Equal-shape 2-D arrays side by side, separated by ``gap`` columns of NaN (drawn as background)."""
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    h = arrays[0].shape[0]
    parts = []
    for k, a in enumerate(arrays):
        if k and gap:
            parts.append(np.full((h, gap), np.nan))
        parts.append(a)
    return np.concatenate(parts, axis=1)


def masks(session, ax=None):
    """The base and region masks at latent resolution (region masks grown by overlap_factor)."""
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(3, 3))
    ms = session.masks
    colors = palette(len(ms))
    ax.imshow(mask_overlay([m.numpy() for m in ms], colors), interpolation="nearest")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors]
    labels = ["base"] + [f"region {j}" for j in range(1, len(ms))]
    ax.legend(handles, labels, fontsize=6, loc="upper right", framealpha=0.7)
    ax.set_title("masks (latent resolution)", fontsize=8)
    ax.axis("off")
    return fig if fig is not None else ax.figure


def sigma_map(session):
    """The effective noise level of every latent pixel and how many calls denoised it in this step."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(6, 2.8))
    flow = " (flow, 0..1)" if _is_flow(session) else ""
    for ax, (title, data, cmap) in zip(axes, ((f"effective sigma{flow}", session.sigma_map, "viridis"),
                                              ("calls this step", session.times_map, "magma"))):
        clim = sigma_range(session, data.numpy()) if cmap == "viridis" and flow else (None, None)
        image = ax.imshow(data.numpy(), cmap=cmap, interpolation="nearest", vmin=clim[0], vmax=clim[1])
        fig.colorbar(image, ax=ax, fraction=0.046)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"{session.status or 'ready'}", fontsize=8)
    fig.tight_layout()
    return fig


def step_strip(session, every: int = 1):
    """Run ``session`` from its start, one regional step at a time, and show the x0 prediction after
    each step above the masks and the final image. Leaves the session at the end of the run."""
    import matplotlib.pyplot as plt

    session.reset()
    frames = []
    while not session.done:
        session.step()
        if session.denoised is not None and (session.step_index % every == 0 or session.done):
            frames.append((session.step_index, session.sigma_next, rgb(session.model, session.denoised)))
    n = len(frames)
    cols = min(n, 10)
    rows = -(-n // cols) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, (step, sigma, image) in enumerate(frames):
        ax = axes[k // cols][k % cols]
        ax.imshow(image)
        ax.set_title(f"{step}: σ→{sigma:.2f}" if sigma is not None else f"{step}", fontsize=6)
    last = axes[-1]
    last[0].imshow(mask_overlay([m.numpy() for m in session.masks]), interpolation="nearest")
    last[0].set_title("masks (latent)", fontsize=6)
    last[1].imshow(rgb(session.model, picture(session, "result")))
    last[1].set_title("result", fontsize=6)
    fig.suptitle(f"{session.node}: per-step x0 prediction", fontsize=8)
    fig.tight_layout()
    return fig


# ---- animations -------------------------------------------------------------------------------

PANELS = {
    "latent": "latent (decoded)",
    "x0": "x0 prediction",
    "sigma_map": "effective σ",
    "times_map": "calls this step",
    "masks": "masks (latent)",
}


def _panel_frame(session, panel: str) -> np.ndarray:
    if panel == "latent":
        return rgb(session.model, picture(session))
    if panel == "x0":
        denoised = session.denoised if session.denoised is not None else session.latent
        return rgb(session.model, denoised)
    if panel == "sigma_map":
        return session.sigma_map.numpy().astype(np.float64)
    if panel == "times_map":
        return session.times_map.numpy().astype(np.float64)
    return mask_overlay([m.numpy() for m in session.masks])


def animate(session, panels=("latent", "x0", "sigma_map"), fps: float = 4, every: int = 1, dpi: int = 80):
    """Run ``session`` from its start one regional step at a time and animate the chosen panels,
    one frame per step shown (every ``every``-th step and the last). Returns a matplotlib
    ``FuncAnimation`` with ``.steps`` (the step index of each frame) and ``.fps``; save it with
    `save_animation` (GIF through Pillow, MP4 through ffmpeg). Leaves the session at the end of the run.

    Panels: ``"latent"`` (the decoded latent), ``"x0"`` (the decoded x0 prediction), ``"sigma_map"``
    (the effective noise level per latent pixel), ``"times_map"`` and ``"masks"``.
    """
    import matplotlib.pyplot as plt
    from matplotlib.animation import FuncAnimation

    panels = tuple(panels)
    unknown = [p for p in panels if p not in PANELS]
    if unknown or not panels:
        raise ValueError(f"panels: expected some of {', '.join(PANELS)}, got {list(panels)}")
    if not (isinstance(every, int) and every >= 1):
        raise ValueError(f"every: expected an integer >= 1, got {every!r}")
    if not fps > 0:
        raise ValueError(f"fps: expected a positive number, got {fps!r}")
    session.reset()
    frames = []  # (step, sigma_next, {panel: array})
    while not session.done:
        session.step()
        if session.step_index % every == 0 or session.done:
            frames.append((session.step_index, session.sigma_next,
                           {p: _panel_frame(session, p) for p in panels}))
    if not frames:
        raise ValueError("the session has no steps to animate")
    fig, axes = plt.subplots(1, len(panels), figsize=(2.2 * len(panels), 2.6), squeeze=False, dpi=dpi)
    images, titles = [], []
    for ax, p in zip(axes[0], panels):
        first = frames[0][2][p]
        cmap = ("viridis" if p == "sigma_map" else "magma") if first.ndim == 2 else None
        images.append(ax.imshow(first, cmap=cmap, interpolation="nearest"))
        titles.append(ax.set_title(PANELS[p], fontsize=8))
        ax.axis("off")
    title = fig.suptitle("", fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.92))

    def draw(k):
        step, sigma, data = frames[k]
        for image, text, p in zip(images, titles, panels):
            image.set_data(data[p])
            if data[p].ndim == 2:  # scaled per frame (sigma falls ~500x over a run): the range in the title
                top = float(np.nanmax(data[p]))
                image.set_clim(0, top or 1.0)
                text.set_text(f"{PANELS[p]}: 0 to {top:.3g}")
        sigma_text = f", σ → {sigma:.3g}" if sigma is not None else ""
        title.set_text(f"{session.node}: step {step}/{session.num_steps}{sigma_text}")
        return images + titles + [title]

    draw(0)
    anim = FuncAnimation(fig, draw, frames=len(frames), interval=1000 / fps, blit=False, repeat=True)
    anim.steps = [step for step, _, _ in frames]
    anim.fps = fps
    plt.close(fig)  # shown through the animation (``anim.to_jshtml()``) or saved, not as a still
    return anim


def save_animation(anim, path, fps=None, dpi=None) -> str:
    """Write ``anim`` to ``path``: ``.gif`` with Pillow, ``.mp4`` with ffmpeg (when it is installed)."""
    from pathlib import Path

    from matplotlib.animation import FFMpegWriter, PillowWriter

    path = Path(path)
    fps = fps or getattr(anim, "fps", 4)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        writer = PillowWriter(fps=fps)
    elif suffix == ".mp4":
        if not FFMpegWriter.isAvailable():
            raise RuntimeError(f"{path}: writing MP4 needs ffmpeg on PATH; write a .gif instead")
        writer = FFMpegWriter(fps=fps)
    else:
        raise ValueError(f"{path}: expected a .gif or .mp4 file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    anim.save(str(path), writer=writer, dpi=dpi)
    return str(path)
