"""The diffusers backend's denoiser: one call of the UNet or transformer through the family's model sampling.

One call (k-diffusion's convention, ``model(x, sigma, cond) -> x0``) is the reference's
``calculate_input`` -> network at ``timestep(sigma)`` -> ``calculate_denoised``: EPS/V for the UNet
families (the UNet sees ``x / sqrt(sigma^2 + 1)``; the timestep map is `diffusers_schedule.TIMESTEP_MAPS`),
CONST for SD3 and Flux (the transformer sees x itself and predicts the velocity, ``D = x - sigma * out``).
Each family's network takes its conditioning its own way (`NetworkCall._network_call`): SDXL's ADM
sizes, SD3's pooled vector, Flux's 2x2 patch packing (`pack_flux`) and guidance embedding.
`NetworkCall` is the part of `diffusers.DiffusersModel` that does this; CFG is applied in `models.base`.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .diffusers_schedule import sigma_to_timestep
from .diffusers_text import FLUX_DEFAULT_GUIDANCE, SDXL_REFINER_AESTHETIC, Conditioning
from .families import SDXLSizes


def pack_flux(x: torch.Tensor) -> tuple:
    """The Flux network's own packing: pad ``[B, C, h, w]`` to even h, w (circular), cut 2x2 patches
    into ``h/2 * w/2`` tokens of ``4C`` features (channel-major, then row, column) and their ids
    ``(0, row, col)``. The sampler's latent stays on the /8 grid (masks too); this is inside the call."""
    batch, channels, height, width = x.shape
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="circular")
    rows, cols = x.shape[2] // 2, x.shape[3] // 2
    tokens = x.reshape(batch, channels, rows, 2, cols, 2).permute(0, 2, 4, 1, 3, 5).reshape(batch, rows * cols, -1)
    ids = torch.zeros(rows, cols, 3)
    ids[..., 1] += torch.arange(rows)[:, None]
    ids[..., 2] += torch.arange(cols)[None, :]
    return tokens, ids.reshape(rows * cols, 3).to(x.device, x.dtype)


def unpack_flux(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The inverse of `pack_flux`, cropped back to ``height`` x ``width``."""
    batch, _, features = tokens.shape
    rows, cols = (height + 1) // 2, (width + 1) // 2
    x = tokens.reshape(batch, rows, cols, features // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(batch, features // 4, rows * 2, cols * 2)[:, :, :height, :width]


class NetworkCall:
    """The denoiser side of `diffusers.DiffusersModel` (a mixin): ``model(x, sigma, cond)``, `call_batch`.

    Reads the model's ``family``, ``unet``/``transformer``, ``model_sampling``, ``timestep_map``,
    ``is_flow``, ``latent_channels``, ``downscale``, ``device`` and ``dtype``. Inputs are moved to the
    network's device and dtype for each call; the result comes back in x's dtype and device.
    """

    def timestep(self, sigma) -> torch.Tensor:
        """The network timestep for ``sigma``: `timestep_map` on the table (UNet families, float64) or
        the flow schedule's ``timestep`` (sigma x 1000 for SD3, sigma for Flux), on the CPU."""
        if self.is_flow:
            return self.model_sampling.timestep(torch.as_tensor(sigma).detach().cpu().float())
        return sigma_to_timestep(sigma, self.model_sampling, self.timestep_map)

    def __call__(self, x: torch.Tensor, sigma, cond) -> torch.Tensor:
        """The denoised (x0) prediction at ``sigma`` (one value per batch item), in x's dtype and device."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != self.latent_channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected a tensor [B, {self.latent_channels}, h, w], got {shape}")
        cond = self._check_cond(cond)
        if cond.context.shape[0] not in (1, len(x)):
            raise ValueError("cond: expected a text embedding [1 or B, tokens, dim] from model.encode(prompt)")
        sigma = self._sigma_per_item(sigma, x)
        return self._denoise(x, sigma, [cond] * len(x) if cond.context.shape[0] == 1 else None, cond)

    def call_batch(self, x: torch.Tensor, sigma, conds) -> torch.Tensor:
        """One cond per batch item; one network call per group of equal context length (one call when
        all prompts have the same number of chunks, the usual case)."""
        if len(conds) != len(x):
            raise ValueError(f"conds: expected one cond per batch item ({len(x)}), got {len(conds)}")
        conds = [self._check_cond(c) for c in conds]
        sigma = self._sigma_per_item(sigma, x)
        groups = {}
        for k, c in enumerate(conds):
            groups.setdefault(tuple(c.context.shape[1:]), []).append(k)
        if len(groups) == 1:
            return self._denoise(x, sigma, conds)
        out = torch.empty_like(x)
        for items in groups.values():
            index = torch.tensor(items, device=x.device)
            out[index] = self._denoise(x[index], sigma[index], [conds[k] for k in items])
        return out

    def _sigma_per_item(self, sigma, x) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(len(x))
        if sigma.numel() != len(x):
            raise ValueError(f"sigma: expected one value per batch item ({len(x)}), got {sigma.numel()}")
        return sigma

    def _check_cond(self, cond) -> Conditioning:
        if isinstance(cond, torch.Tensor) and cond.ndim == 3 and self.family in ("sd1", "sd2"):
            return Conditioning(cond)
        if isinstance(cond, Conditioning) and self.family not in ("sd1", "sd2"):
            return cond
        raise ValueError(f"cond: expected what model.encode(prompt) returns for {self.family} "
                         f"(got {type(cond).__name__})")

    def _denoise(self, x, sigma, conds, single: Optional[Conditioning] = None) -> torch.Tensor:
        """One network call through the model sampling: calculate_input -> network(timestep(sigma)) ->
        calculate_denoised (EPS/V: the input ``x / sqrt(sigma^2 + 1)``, bitwise diffusers'
        scale_model_input; CONST: x itself, the output a velocity)."""
        ms, device, dtype = self.model_sampling, self.device, self.dtype
        x_in = ms.calculate_input(sigma, x).to(device, dtype)
        t = self.timestep(sigma).to(device, torch.float32)
        if conds is None:  # one cond already batched [B, ...]
            context, pooled, conds = single.context, single.pooled, [single] * len(x)
        else:
            context = torch.cat([c.context.to(device) for c in conds])
            pooled = torch.cat([c.pooled.to(device) for c in conds]) if conds[0].pooled is not None else None
        context = context.to(device, dtype)
        pooled = pooled.to(device, dtype) if pooled is not None else None
        with torch.no_grad():
            out = self._network_call(x_in, t, context, pooled, conds).to(x.device, x.dtype)
        return ms.calculate_denoised(sigma, out, x)

    def _network_call(self, x_in, t, context, pooled, conds) -> torch.Tensor:
        if self.family in ("sd1", "sd2"):
            return self.unet(x_in, t, encoder_hidden_states=context).sample
        if self.family in ("sdxl", "sdxl_refiner"):
            height, width = x_in.shape[-2:]
            time_ids = torch.tensor([self._adm_sizes(c, height, width) for c in conds], dtype=x_in.dtype,
                                    device=x_in.device)
            return self.unet(x_in, t, encoder_hidden_states=context,
                             added_cond_kwargs={"text_embeds": pooled, "time_ids": time_ids}).sample
        if self.family == "sd3":
            return self.transformer(hidden_states=x_in, timestep=t, encoder_hidden_states=context,
                                    pooled_projections=pooled).sample
        tokens, img_ids = pack_flux(x_in)
        txt_ids = torch.zeros(context.shape[1], 3, device=x_in.device, dtype=x_in.dtype)
        guidance = None
        if self.transformer.config.guidance_embeds:
            guidance = torch.tensor([FLUX_DEFAULT_GUIDANCE if c.guidance is None else c.guidance for c in conds],
                                    device=x_in.device, dtype=torch.float32)
        out = self.transformer(hidden_states=tokens, timestep=t, guidance=guidance, pooled_projections=pooled,
                               encoder_hidden_states=context, txt_ids=txt_ids, img_ids=img_ids).sample
        return unpack_flux(out, *x_in.shape[-2:])

    def _adm_sizes(self, cond: Conditioning, height: int, width: int) -> tuple:
        """The size values of SDXL's ADM for a latent of ``height`` x ``width`` (see `families.sdxl_adm`;
        the UNet embeds them itself with the same sinusoids: checked in the tests)."""
        h, w, crop_h, crop_w, target_h, target_w = (cond.sizes or SDXLSizes()).resolve(height, width, self.downscale)
        if self.family == "sdxl_refiner":
            aesthetic = SDXL_REFINER_AESTHETIC[0] if cond.aesthetic_score is None else cond.aesthetic_score
            return (h, w, crop_h, crop_w, aesthetic)
        return (h, w, crop_h, crop_w, target_h, target_w)
