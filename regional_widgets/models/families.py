"""Model families of the diffusers backend: recognising a folder, latent formats, SDXL's ADM vector.

A family (spec model_families.md §1.3) decides the text conditioning, the model sampling and the
latent format. `detect_family` reads ``model_index.json`` and the component configs of a diffusers
folder; nothing is loaded or downloaded.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

FAMILIES = ("sd1", "sd2", "sdxl", "sdxl_refiner", "sd3", "flux_dev", "flux_schnell")
SUPPORTED = ("StableDiffusionPipeline (SD1.x/SD2.x), StableDiffusionXLPipeline (SDXL base), "
             "StableDiffusionXLImg2ImgPipeline with only text_encoder_2 (SDXL refiner), "
             "StableDiffusion3Pipeline (SD3/SD3.5), FluxPipeline (Flux-dev/-schnell)")


# The reference's latent format of each family (`sampling.latent_formats`), by name.
FAMILY_LATENT_FORMAT = {"sd1": "SD15", "sd2": "SD15", "sdxl": "SDXL", "sdxl_refiner": "SDXL", "sd3": "SD3",
                        "flux_dev": "Flux", "flux_schnell": "Flux"}


class UnknownModelFolder(ValueError):
    """A folder that is not one of the supported diffusers layouts."""


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def detect_family(folder) -> str:
    """The family of a diffusers folder, one of `FAMILIES`, from its ``model_index.json`` and configs.

    Raises `UnknownModelFolder` naming what was found and what is supported.
    """
    folder = Path(folder)
    index = _read_json(folder / "model_index.json")
    pipeline = index.get("_class_name", "")
    present = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    transformer = _read_json(folder / "transformer" / "config.json")
    unet = _read_json(folder / "unet" / "config.json")
    kind = transformer.get("_class_name", "")
    if kind == "FluxTransformer2DModel" or pipeline.startswith("Flux"):
        return "flux_dev" if transformer.get("guidance_embeds", True) else "flux_schnell"
    if kind == "SD3Transformer2DModel" or pipeline.startswith("StableDiffusion3"):
        return "sd3"
    if unet:
        if unet.get("addition_embed_type") == "text_time":
            has_l = (folder / "text_encoder").is_dir() and index.get("text_encoder", [None])[0] is not None
            return "sdxl" if has_l else "sdxl_refiner"
        if unet.get("addition_embed_type") is None:
            return _sd1_or_sd2(folder)
    elif pipeline.startswith("StableDiffusionXL"):  # components missing: the loader says which
        return "sdxl" if index.get("text_encoder", [None])[0] is not None else "sdxl_refiner"
    elif pipeline == "StableDiffusionPipeline":
        return _sd1_or_sd2(folder)
    found = f"pipeline {pipeline!r}" if pipeline else (
        "model_index.json without _class_name" if index else "model_index.json missing")
    details = f"unet addition_embed_type={unet.get('addition_embed_type')!r}" if unet else (
        f"transformer {kind!r}" if kind else "unet/ and transformer/ configs missing")
    raise UnknownModelFolder(f"{folder}: not a supported diffusers model folder (found {found}, {details}, "
                             f"subfolders {present}); supported: {SUPPORTED}")


def _sd1_or_sd2(folder: Path) -> str:
    text = _read_json(folder / "text_encoder" / "config.json")
    return "sd2" if text.get("hidden_size") == 1024 else "sd1"


# ---- SDXL's ADM ("y", 2816 wide) -------------------------------------------------------------

def fourier_embedding(value: float, dim: int = 256) -> torch.Tensor:
    """The reference's sinusoidal size embedding E(v): ``[cos(v f_k), sin(v f_k)]``, cosines first,
    ``f_k = exp(-ln(10000) k / (dim / 2))`` (float32, ``dim`` wide)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = float(value) * freqs
    return torch.cat([torch.cos(args), torch.sin(args)])


@dataclass(frozen=True)
class SDXLSizes:
    """The six size values of SDXL's ADM; ``None`` = the reference's default for a plain
    CLIPTextEncode: height/width = the latent's size x 8, crops 0, target = height/width."""

    height: Optional[int] = None
    width: Optional[int] = None
    crop_h: int = 0
    crop_w: int = 0
    target_height: Optional[int] = None
    target_width: Optional[int] = None

    def resolve(self, latent_height: int, latent_width: int, downscale: int = 8) -> tuple:
        """``(height, width, crop_h, crop_w, target_height, target_width)`` for a latent of that size."""
        height = self.height if self.height is not None else latent_height * downscale
        width = self.width if self.width is not None else latent_width * downscale
        return (height, width, self.crop_h, self.crop_w,
                self.target_height if self.target_height is not None else height,
                self.target_width if self.target_width is not None else width)


def sdxl_adm(pooled: torch.Tensor, sizes: tuple) -> torch.Tensor:
    """SDXL's ADM vector: ``[pooled G (1280) | E(h) | E(w) | E(crop_h) | E(crop_w) | E(target_h) | E(target_w)]``
    (refiner: ``(h, w, crop_h, crop_w, aesthetic)``). ``pooled`` is ``[1, 1280]``; returns ``[1, 1280 + 256 n]``."""
    embeds = [fourier_embedding(v).to(pooled.device, pooled.dtype) for v in sizes]
    return torch.cat([pooled.reshape(1, -1)] + [e[None] for e in embeds], dim=1)


# ---- cheap previews ---------------------------------------------------------------------------

def fit_latent_rgb(vae, channels: int, size: int = 64, seed: int = 0) -> tuple:
    """Linear latent-to-RGB factors for a VAE, fitted on its own encoder: ``(weights [C, 3], bias [3])``.

    Smooth random colour fields are encoded once (posterior mean, VAE space) and a least-squares
    map from each latent pixel to its block's mean RGB in [-1, 1] is solved (float64, with a bias).
    One encoder call at ``size`` x ``size``; used by `DiffusersModel.decode_preview` for the
    families whose preview the reference gives as fixed factors we do not ship.
    """
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(8, 3, 4, 4, generator=gen) * 2 - 1
    pixels = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    with torch.no_grad():
        latents = vae.encode(pixels.to(vae.device, vae.dtype)).latent_dist.mean.double().cpu()
    down = size // latents.shape[-1]
    blocks = F.avg_pool2d(pixels.double(), down)
    a = latents.permute(0, 2, 3, 1).reshape(-1, channels)
    a = torch.cat([a, torch.ones(len(a), 1, dtype=a.dtype)], dim=1)
    b = blocks.permute(0, 2, 3, 1).reshape(-1, 3)
    ridge = 1e-6 * torch.eye(a.shape[1], dtype=a.dtype)
    solution = torch.linalg.solve(a.T @ a + ridge, a.T @ b)
    return solution[:-1], solution[-1]
