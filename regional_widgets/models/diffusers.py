"""DiffusersModel: SD1.x/SD2.x, SDXL, SD3/SD3.5 and Flux diffusers folders as a `Model`, conditioned as the reference.

Needs the optional extra: ``pip install 'regional-widgets[diffusers]'``. Nothing is ever downloaded:
`DiffusersModel.from_pretrained` reads a diffusers folder already on disk and recognises its family
(`families.detect_family`: spec model_families.md §1.3) from ``model_index.json`` and the configs.

This module is the entry: the class, its construction and its properties. Each concern has its own
module, and every public name of them is importable from here too:

- `diffusers_loading`: the components each family needs and reading them from a folder;
- `diffusers_schedule`: scheduler config -> sigma table (`discrete_sigmas`), timestep map
  (`sigma_to_timestep`), model sampling;
- `diffusers_text`: conditioning (`encode`, `conditioning`; `Conditioning`, `sdxl_context`, `sd3_context`,
  `sd3_pooled`, `flux_context`, `clip_layer_output`);
- `diffusers_network`: the denoiser call (``model(x, sigma, cond)``, `call_batch`; `pack_flux`);
- `diffusers_vae`: `decode`, `decode_preview`, `encode_image`.

Conventions (the reference tool's, spec §1.1, §3.1 and model_families.md):

- **Latent spaces.** Every latent the session holds (``latent_image``, ``latent``, ``denoised``,
  ``result``) is in *VAE space*: the AutoencoderKL's own latent, what ComfyUI keeps in a LATENT and
  what its VAEDecode decodes. The sampler works in *model space* = ``(VAE space - shift) * scale``
  (`latent_format`: the family's constants, e.g. 0.18215 for SD1.5, 0.13025 for SDXL, 1.5305/0.0609
  for SD3, 0.3611/0.1159 for Flux; `latent_scale_factor` and `latent_shift_factor` name them).
  ``model(x, sigma, cond)`` takes and returns model-space tensors, while `decode`, `decode_preview`
  and `encode_image` work in VAE space: ``model.decode(session.result)`` is the picture.
- **Denoiser** (k-diffusion): one call is the reference's ``calculate_input`` -> network at
  ``timestep(sigma)`` -> ``calculate_denoised`` of the family's model sampling (`model_sampling`):
  EPS/V for the UNet families (the UNet sees ``x / sqrt(sigma^2 + 1)``; the timestep map is
  `TIMESTEP_MAPS`), CONST for SD3 and Flux (the transformer sees x itself and predicts the velocity,
  ``D = x - sigma * out``). CFG is applied in `models.base`, as for every model.
- **Conditioning** (`encode`): the reference's prompt syntax (`prompts`: weights, 75-token chunks,
  concatenation) for every family, then the family's rule: `sdxl_context`, `sd3_context`,
  `sd3_pooled`, `flux_context`, `families.sdxl_adm`; where these differ from diffusers' pipelines the
  function says how. `clip_layer` is the reference's CLIPSetLastLayer.
- **Device and dtype** follow the network: inputs are moved to it for each call and the result comes
  back in x's dtype and device. Noise stays the sampling layer's business (a CPU stream, as the reference).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..sampling.latent_formats import LATENT_FORMATS
from .base import PromptCache
from .diffusers_loading import (COMPONENT_NAMES, FAMILY_COMPONENTS, OPTIONAL_COMPONENTS, check_components,
                                infer_family, load_folder)
from .diffusers_network import NetworkCall, pack_flux, unpack_flux
from .diffusers_schedule import (PREDICTION_TYPES, TIMESTEP_MAPS, discrete_sigmas, model_sampling_for,
                                 sigma_to_timestep)
from .diffusers_text import (FLUX_DEFAULT_GUIDANCE, FLUX_T5_MIN_TOKENS, SD3_T5_MIN_TOKENS, SDXL_REFINER_AESTHETIC,
                             Conditioning, TextEncoding, clip_layer_output, flux_context, sd3_context, sd3_pooled,
                             sdxl_context)
from .diffusers_vae import VAEImages
from .families import FAMILY_LATENT_FORMAT, SDXLSizes, UnknownModelFolder
from .latents import SDPreviewSpace

try:
    import diffusers  # noqa: F401
    import transformers  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("DiffusersModel needs diffusers and transformers: "
                      "pip install 'regional-widgets[diffusers]'") from err

__all__ = ["DiffusersModel", "Conditioning", "FAMILY_COMPONENTS", "OPTIONAL_COMPONENTS", "TIMESTEP_MAPS",
           "PREDICTION_TYPES", "FLUX_DEFAULT_GUIDANCE", "SD3_T5_MIN_TOKENS", "FLUX_T5_MIN_TOKENS",
           "SDXL_REFINER_AESTHETIC", "discrete_sigmas", "sigma_to_timestep", "sdxl_context", "sd3_context",
           "sd3_pooled", "flux_context", "clip_layer_output", "pack_flux", "unpack_flux", "SDXLSizes",
           "UnknownModelFolder"]


class DiffusersModel(TextEncoding, NetworkCall, VAEImages):
    """A diffusers UNet/transformer + AutoencoderKL + text encoders behind the `Model` protocol.

    The positional form ``DiffusersModel(unet, vae, text_encoder, tokenizer, scheduler_config)`` is an
    SD1.x/SD2.x stack; SDXL adds ``text_encoder_2``/``tokenizer_2`` (the refiner has only those),
    SD3 and Flux pass ``transformer=`` (and ``unet=None``) with their encoders. ``family`` (one of
    `families.FAMILIES`) is inferred from the components when not given.

    ``scheduler_config``: the checkpoint's scheduler config (a mapping, or a scheduler: its ``.config``).
    For the UNet families it gives the sigma table and ``prediction_type``; SD3 and Flux use the
    reference's model sampling for the family (DiscreteFlow shift 3, Flux mu 1.15, schnell shift 1 x1),
    whatever the config says. The scheduler itself is not used: the session's samplers replace it.
    ``timestep_map``: how a sigma becomes the UNet's timestep (`TIMESTEP_MAPS`, UNet families).
    ``clip_layer``: CLIPSetLastLayer (``-1`` last, ``-2`` penultimate; None: the family's default) for
    every CLIP encoder. ``offload_encoders``: keep the text encoders on the CPU and move each to the
    network's device only while it encodes.

    Prompts are encoded once per (prompt, clip_layer) and cached (`base.PromptCache`). The text side
    lives in `diffusers_text.TextEncoding`, the network call in `diffusers_network.NetworkCall`, the VAE
    in `diffusers_vae.VAEImages`.
    """

    def __init__(self, unet=None, vae=None, text_encoder=None, tokenizer=None, scheduler_config=None, *,
                 timestep_map: str = "argmin", family: Optional[str] = None, transformer=None,
                 text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
                 clip_layer: Optional[int] = None, offload_encoders: bool = False):
        config = dict(getattr(scheduler_config, "config", scheduler_config) or {})
        self.family = family or infer_family(unet, transformer, text_encoder, text_encoder_2)
        self.unet, self.transformer, self.vae = unet, transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.text_encoder_3, self.tokenizer_3 = text_encoder_3, tokenizer_3
        check_components(self)
        self.scheduler_config = config
        self.model_sampling = model_sampling_for(self.family, config)
        self.prediction_type = {"eps": "epsilon", "v": "v_prediction"}.get(self.model_sampling.parametrisation,
                                                                           "flow")
        self.timestep_map = timestep_map
        self.clip_layer = clip_layer
        self.offload_encoders = bool(offload_encoders)
        self.latent_format = LATENT_FORMATS[FAMILY_LATENT_FORMAT[self.family]]
        self.latent_channels = int(vae.config.latent_channels)
        self.downscale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_scale_factor = self.latent_format.scale_factor
        self.latent_shift_factor = self.latent_format.shift_factor
        self._preview = SDPreviewSpace(self.downscale) if self.family in ("sd1", "sd2") else None
        self._preview_factors = None
        self._conds = PromptCache()

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, local_path, *, torch_dtype=None, device=None, timestep_map: str = "argmin",
                        clip_layer: Optional[int] = None, offload_encoders: bool = False):
        """Load a diffusers folder from disk, as ``pipeline.save_pretrained`` writes it. Never downloads.

        The family comes from ``model_index.json`` and the configs (`families.detect_family`); a
        folder of no supported family raises `families.UnknownModelFolder` saying what was found.
        ``torch_dtype`` applies to every module (a T5 asked for float16 gets bfloat16: T5 overflows in
        float16); ``device`` receives them (text encoders stay on the CPU with ``offload_encoders``).
        """
        folder, family, modules, scheduler_config = load_folder(local_path, torch_dtype=torch_dtype, device=device,
                                                                offload_encoders=offload_encoders)
        model = cls(**modules, scheduler_config=scheduler_config, timestep_map=timestep_map,
                    family=family, clip_layer=clip_layer, offload_encoders=offload_encoders)
        model._spec = {"model": "DiffusersModel", "path": str(folder.resolve()),
                       "torch_dtype": None if torch_dtype is None else str(torch_dtype).removeprefix("torch."),
                       "device": None if device is None else str(device)}
        return model

    @classmethod
    def from_pipeline(cls, pipeline, *, timestep_map: str = "argmin", **options):
        """Wrap the components of a loaded diffusers pipeline of a supported family (no copy)."""
        components = {name: getattr(pipeline, name, None) for name in COMPONENT_NAMES}
        return cls(**components, scheduler_config=pipeline.scheduler.config, timestep_map=timestep_map, **options)

    @property
    def spec(self):
        """How to read this model again (folder path, dtype, device and the loading options) as plain data
        for ``models.from_spec``; None for a model built from objects (`from_pipeline`, the constructor)."""
        spec = getattr(self, "_spec", None)
        return None if spec is None else dict(spec, timestep_map=self.timestep_map, clip_layer=self.clip_layer,
                                              offload_encoders=self.offload_encoders)

    # ---- the protocol's properties --------------------------------------------------------

    @property
    def sigmas(self) -> torch.Tensor:
        """The ascending training sigma table (float32): `model_sampling`'s, so a model whose sampling
        is swapped (ModelSamplingSD3/Flux-style patching) stays consistent."""
        return self.model_sampling.sigmas

    @property
    def network(self):
        """The denoising network: the UNet or the transformer."""
        return self.unet if self.unet is not None else self.transformer

    @property
    def timestep_map(self) -> str:
        return self._timestep_map

    @timestep_map.setter
    def timestep_map(self, value: str):
        if value not in TIMESTEP_MAPS:
            raise ValueError(f"timestep_map: unknown name {value!r}; accepted: {', '.join(TIMESTEP_MAPS)}")
        self._timestep_map = value

    @property
    def is_flow(self) -> bool:
        return self.model_sampling.parametrisation == "const"

    @property
    def device(self) -> torch.device:
        return self.network.device

    @property
    def dtype(self) -> torch.dtype:
        return self.network.dtype

    def __repr__(self):
        return (f"DiffusersModel(family={self.family!r}, model_sampling={self.model_sampling!r}, "
                f"timestep_map={self.timestep_map!r}, latent_channels={self.latent_channels}, "
                f"downscale={self.downscale}, latent_format={self.latent_format.name}, device={self.device}, "
                f"dtype={self.dtype})")
