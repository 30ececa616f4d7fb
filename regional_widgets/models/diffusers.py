"""DiffusersModel: SD1.x/SD2.x, SDXL, SD3/SD3.5 and Flux folders (diffusers) as a `Model`, conditioned
as the reference conditions them.

Needs the optional extra: ``pip install 'regional-widgets[diffusers]'``. Nothing is ever downloaded:
`DiffusersModel.from_pretrained` reads a diffusers folder already on disk and recognises its family
(`families.detect_family`: spec model_families.md §1.3) from ``model_index.json`` and the configs.

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

import contextlib
import importlib
import json
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Mapping, Optional

import torch
import torch.nn.functional as F

from ..sampling.latent_formats import LATENT_FORMATS
from ..sampling.model_sampling import (ModelSamplingDiscrete, flux_model_sampling, flux_schnell_model_sampling,
                                       sd3_model_sampling)
from ..sampling.schedules import as_model_sampling
from .base import PromptCache
from .families import (FAMILY_LATENT_FORMAT, SUPPORTED, SDXLSizes, UnknownModelFolder, detect_family,
                       fit_latent_rgb)
from .latents import SDPreviewSpace, as_rgb_batch, linear_preview
from .prompts import TokenizerSpec, empty_chunk, encode_weighted, tokenize

try:
    import diffusers  # noqa: F401
    import transformers  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("DiffusersModel needs diffusers and transformers: "
                      "pip install 'regional-widgets[diffusers]'") from err

TIMESTEP_MAPS = ("argmin", "log_interp", "table")
PREDICTION_TYPES = ("epsilon", "v_prediction")
FLUX_DEFAULT_GUIDANCE = 3.5  # what the reference passes when no FluxGuidance node set one
SD3_T5_MIN_TOKENS, FLUX_T5_MIN_TOKENS = 77, 256
SDXL_REFINER_AESTHETIC = (6.0, 2.5)  # the reference's defaults for positive and negative conds
_CLIP, _CLIP_PROJ, _T5 = ("transformers", "CLIPTextModel"), ("transformers", "CLIPTextModelWithProjection"), \
    ("transformers", "T5EncoderModel")
_CLIP_TOK, _T5_TOK = ("transformers", "CLIPTokenizer"), ("transformers", "T5Tokenizer")
_VAE = ("diffusers", "AutoencoderKL")
_UNET = ("diffusers", "UNet2DConditionModel")
# The subfolders each family needs, with the classes used when model_index.json does not name them.
FAMILY_COMPONENTS = {
    "sd1": {"unet": _UNET, "vae": _VAE, "text_encoder": _CLIP, "tokenizer": _CLIP_TOK},
    "sdxl": {"unet": _UNET, "vae": _VAE, "text_encoder": _CLIP, "tokenizer": _CLIP_TOK,
             "text_encoder_2": _CLIP_PROJ, "tokenizer_2": _CLIP_TOK},
    "sdxl_refiner": {"unet": _UNET, "vae": _VAE, "text_encoder_2": _CLIP_PROJ, "tokenizer_2": _CLIP_TOK},
    "sd3": {"transformer": ("diffusers", "SD3Transformer2DModel"), "vae": _VAE, "text_encoder": _CLIP_PROJ,
            "tokenizer": _CLIP_TOK, "text_encoder_2": _CLIP_PROJ, "tokenizer_2": _CLIP_TOK,
            "text_encoder_3": _T5, "tokenizer_3": _T5_TOK},
    "flux": {"transformer": ("diffusers", "FluxTransformer2DModel"), "vae": _VAE, "text_encoder": _CLIP,
             "tokenizer": _CLIP_TOK, "text_encoder_2": _T5, "tokenizer_2": _T5_TOK},
}
FAMILY_COMPONENTS.update(sd2=FAMILY_COMPONENTS["sd1"], flux_dev=FAMILY_COMPONENTS["flux"],
                         flux_schnell=FAMILY_COMPONENTS["flux"])
OPTIONAL_COMPONENTS = ("text_encoder_3", "tokenizer_3")  # SD3 without T5: the reference drops its part
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def discrete_sigmas(scheduler_config: Mapping, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The ascending training sigma table of a diffusers scheduler config (float64 math, ``dtype`` out;
    the model sampling keeps the float64 table, as the reference).

    Reads ``num_train_timesteps``, ``beta_schedule`` (``scaled_linear``, ``linear`` or
    ``squaredcos_cap_v2``), ``beta_start``, ``beta_end`` and ``trained_betas``, with diffusers'
    defaults for missing keys. SD1.5's config gives exactly `schedules.sd15_sigmas`.
    """
    config = dict(scheduler_config)
    if config.get("rescale_betas_zero_snr"):
        raise ValueError("scheduler_config: rescale_betas_zero_snr gives sigma_max = inf, which the "
                         "sigma-space samplers cannot start from; not supported")
    n = int(config.get("num_train_timesteps", 1000))
    start, end = float(config.get("beta_start", 0.0001)), float(config.get("beta_end", 0.02))
    schedule = config.get("beta_schedule", "linear")
    if config.get("trained_betas") is not None:
        betas = torch.tensor(config["trained_betas"], dtype=torch.float64)
    elif schedule == "scaled_linear":
        betas = torch.linspace(start ** 0.5, end ** 0.5, n, dtype=torch.float64) ** 2
    elif schedule == "linear":
        betas = torch.linspace(start, end, n, dtype=torch.float64)
    elif schedule == "squaredcos_cap_v2":
        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        betas = torch.tensor([min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)],
                             dtype=torch.float64)
    else:
        raise ValueError(f"scheduler_config: beta_schedule {schedule!r} is not supported; accepted: "
                         "scaled_linear, linear, squaredcos_cap_v2 (or trained_betas)")
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    return (((1 - alphas_cumprod) / alphas_cumprod) ** 0.5).to(dtype)


def sigma_to_timestep(sigma, sigmas, method: str = "argmin") -> torch.Tensor:
    """The UNet timestep of each ``sigma`` on the ascending table ``sigmas`` (float64, same shape).

    ``sigmas``: the table (a tensor) or a `schedules.ModelSampling`.

    - ``"argmin"`` (the reference tool, ComfyUI): the integer ``t`` nearest in log space,
      ``argmin_t |log sigma - log sigma_t|`` (`ModelSampling.timestep`).
    - ``"log_interp"`` (k-diffusion's ``sigma_to_t``; diffusers' ``_sigma_to_t``, which places custom,
      Karras and exponential sigmas and DPM-2's midpoints): fractional, linear in log sigma between the
      neighbouring entries, ``t = k + (log sigma - log sigma_k) / (log sigma_{k+1} - log sigma_k)`` with
      ``sigma_k <= sigma < sigma_{k+1}``. The inverse of `ModelSampling.sigma`.
    - ``"table"`` (the inverse of diffusers' default ``interpolation_type="linear"``, which places the
      sigmas of its ``timestep_spacing`` schedules): fractional, linear in sigma itself,
      ``t = k + (sigma - sigma_k) / (sigma_{k+1} - sigma_k)``, i.e. ``numpy.interp(sigma, sigmas, arange(T))``.

    All three give ``t`` itself at a table entry ``sigma_t`` and clamp to [0, T - 1] outside the table.
    """
    if method not in TIMESTEP_MAPS:
        raise ValueError(f"timestep_map: unknown name {method!r}; accepted: {', '.join(TIMESTEP_MAPS)}")
    sampling = as_model_sampling(sigmas)
    sigma = torch.as_tensor(sigma).detach().cpu()
    if method == "argmin":
        return sampling.timestep(sigma.float()).double()
    table = sampling.sigmas.double()
    value = sigma.double().reshape(-1)
    if method == "log_interp":
        table, value = table.log(), value.clamp_min(1e-10).log()
    low = (torch.searchsorted(table, value, right=True) - 1).clamp(0, len(table) - 2)
    w = ((value - table[low]) / (table[low + 1] - table[low])).clamp(0, 1)
    return (low + w).view(sigma.shape)




# ---- conditioning as the reference builds it (each rule one function; spec model_families.md §4-§5) ----

@dataclass(frozen=True, eq=False)
class Conditioning:
    """What `DiffusersModel.encode` returns for SDXL, SD3 and Flux (SD1.x/SD2.x: the context tensor).

    ``context`` ``[1, tokens, dim]``; ``pooled`` ``[1, p]``; ``guidance``: Flux-dev's guidance
    embedding (FluxGuidance); ``sizes``: SDXL's ADM sizes (CLIPTextEncodeSDXL; defaults from the
    latent); ``aesthetic_score``: the SDXL refiner's (None: 6.0, or 2.5 for a negative made with
    ``conditioning(..., negative=True)``). Change fields with `dataclasses.replace`.
    """

    context: torch.Tensor
    pooled: Optional[torch.Tensor] = None
    guidance: Optional[float] = None
    sizes: Optional[SDXLSizes] = None
    aesthetic_score: Optional[float] = None


def sdxl_context(clip_l: torch.Tensor, clip_g: torch.Tensor) -> torch.Tensor:
    """SDXL's cross-attention context: CLIP-L then CLIP-G along the features (768 + 1280 = 2048), both
    cut to the shorter token count when they differ (the reference; diffusers concatenates the same way
    for equal lengths and cannot have unequal ones, as it truncates to 77)."""
    tokens = min(clip_l.shape[1], clip_g.shape[1])
    return torch.cat([clip_l[:, :tokens], clip_g[:, :tokens].to(clip_l.dtype)], dim=-1)


def sd3_context(clip_l: torch.Tensor, clip_g: torch.Tensor, t5: Optional[torch.Tensor], width: int) -> torch.Tensor:
    """SD3's context: ``[CLIP-L | CLIP-G]`` zero-padded to ``width`` features (4096), then T5's tokens
    appended along the sequence axis. The reference pads T5 to at least 77 tokens (`SD3_T5_MIN_TOKENS`)
    where diffusers pads to ``max_sequence_length`` (256 by default); no T5 (not loaded): CLIP part only."""
    clip = sdxl_context(clip_l, clip_g)
    clip = F.pad(clip, (0, width - clip.shape[-1]))
    return clip if t5 is None else torch.cat([clip, t5.to(clip.dtype)], dim=1)


def sd3_pooled(clip_l_pooled: torch.Tensor, clip_g_projected: torch.Tensor) -> torch.Tensor:
    """SD3's pooled vector ``[CLIP-L pooled, *unprojected* (768) | CLIP-G pooled, projected (1280)]``.
    diffusers' SD3 pipeline takes CLIP-L's *projected* ``text_embeds``: the two agree only where
    CLIP-L's text_projection is the identity."""
    return torch.cat([clip_l_pooled, clip_g_projected.to(clip_l_pooled.dtype)], dim=-1)


def flux_context(t5: torch.Tensor) -> torch.Tensor:
    """Flux's context: T5's last layer, its tokens padded with 0 to at least 256 (`FLUX_T5_MIN_TOKENS`,
    done by the tokenizer spec), no attention mask. diffusers' FluxPipeline pads to
    ``max_sequence_length`` (512 by default): the pad length changes every embedding."""
    return t5


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


def clip_layer_output(hidden_states, layer: int, final_norm=None) -> torch.Tensor:
    """CLIPSetLastLayer(``layer``): ``hidden_states[layer]`` (the embeddings first, then one entry per
    layer), followed by the final layer norm only where the family's encoder applies it (SD1.x/SD2.x).
    So -1 is the last layer and -2 the penultimate, for every CLIP encoder of the model at once.
    diffusers' ``clip_skip=k`` means ``hidden_states[-(k + 2)]`` in SDXL/SD3 (default -2 in both):
    CLIPSetLastLayer(-1) there has no diffusers twin."""
    hidden = hidden_states[layer]
    return final_norm(hidden) if final_norm is not None else hidden


def _encoder_kind(family: str) -> dict:
    """Per family: the default CLIP layer and whether the final layer norm follows it."""
    if family in ("sd1", "sd2"):
        return {"layer": -1, "final_norm": True}  # the loaded encoder's last layer with its norm
    return {"layer": -2, "final_norm": False}  # penultimate, no final norm (SDXL, SD3)


class DiffusersModel:
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

    Prompts are encoded once per (prompt, clip_layer) and cached (`base.PromptCache`).
    """

    def __init__(self, unet=None, vae=None, text_encoder=None, tokenizer=None, scheduler_config=None, *,
                 timestep_map: str = "argmin", family: Optional[str] = None, transformer=None,
                 text_encoder_2=None, tokenizer_2=None, text_encoder_3=None, tokenizer_3=None,
                 clip_layer: Optional[int] = None, offload_encoders: bool = False):
        config = dict(getattr(scheduler_config, "config", scheduler_config) or {})
        self.family = family or _infer_family(unet, transformer, text_encoder, text_encoder_2)
        self.unet, self.transformer, self.vae = unet, transformer, vae
        self.text_encoder, self.tokenizer = text_encoder, tokenizer
        self.text_encoder_2, self.tokenizer_2 = text_encoder_2, tokenizer_2
        self.text_encoder_3, self.tokenizer_3 = text_encoder_3, tokenizer_3
        self._check_components()
        self.scheduler_config = config
        self.model_sampling = self._build_model_sampling(config)
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

    def _check_components(self):
        needed = FAMILY_COMPONENTS[self.family]
        missing = [name for name in needed if getattr(self, name) is None and name not in OPTIONAL_COMPONENTS]
        if missing:
            raise ValueError(f"{self.family}: missing components {', '.join(missing)}; this family needs "
                             f"{', '.join(needed)}")
        unet = self.unet
        if unet is not None and getattr(unet.config, "addition_embed_type", None) not in (None, "text_time"):
            raise ValueError(f"unet: addition_embed_type={unet.config.addition_embed_type!r} is not supported; "
                             f"supported: {SUPPORTED}")
        channels = int(self.vae.config.latent_channels)
        if self.family.startswith("flux") and self.transformer.config.in_channels != 4 * channels:
            raise ValueError(f"transformer: in_channels={self.transformer.config.in_channels}, expected "
                             f"{4 * channels} (2x2 patches of {channels} channels); Flux Fill/Canny/Depth "
                             "(image-conditioned inputs) are not supported")
        if self.unet is not None and self.unet.config.in_channels != channels:
            raise ValueError(f"unet: in_channels={self.unet.config.in_channels}, the VAE has {channels} latent "
                             "channels; inpainting/instruct UNets (extra input channels) are not supported")

    def _build_model_sampling(self, config: dict):
        if str(config.get("_class_name", "")).startswith("EDM"):
            raise ValueError(f"scheduler_config: {config['_class_name']} (an EDM model such as Playground 2.5) "
                             "is not supported; discrete EPS/V and flow models only")
        if self.family == "sd3":
            return sd3_model_sampling()  # DiscreteFlow(shift 3, x1000) x CONST, whatever the config's shift
        if self.family == "flux_dev":
            return flux_model_sampling()  # Flux(mu 1.15) x CONST: the reference without the ModelSamplingFlux node
        if self.family == "flux_schnell":
            return flux_schnell_model_sampling()  # DiscreteFlow(shift 1, x1) x CONST
        prediction_type = config.get("prediction_type", "epsilon")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"scheduler_config: prediction_type {prediction_type!r} is not supported; "
                             f"accepted: {', '.join(PREDICTION_TYPES)}")
        return ModelSamplingDiscrete(discrete_sigmas(config, torch.float64),
                                     "v" if prediction_type == "v_prediction" else "eps")

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
        folder = _local_folder(local_path)
        family = detect_family(folder)
        index_file = folder / "model_index.json"
        index = json.loads(index_file.read_text()) if index_file.is_file() else {}
        modules = {}
        for name, default in FAMILY_COMPONENTS[family].items():
            entry = index.get(name, default)
            sub = folder / name
            if (entry is None or entry[0] is None or not sub.is_dir()) and name in OPTIONAL_COMPONENTS:
                continue
            if not sub.is_dir():
                raise FileNotFoundError(f"{folder}: missing the {name}/ subfolder; a {family} folder has "
                                        f"{', '.join(FAMILY_COMPONENTS[family])} and scheduler/")
            library, class_name = entry[:2] if entry and entry[0] else default
            modules[name] = _load_component(sub, library, class_name, torch_dtype,
                                            "cpu" if offload_encoders and name.startswith("text_encoder") else device)
        config_file = folder / "scheduler" / "scheduler_config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{folder}: missing scheduler/scheduler_config.json (the sigma table and "
                                    "prediction_type come from it)")
        model = cls(**modules, scheduler_config=json.loads(config_file.read_text()), timestep_map=timestep_map,
                    family=family, clip_layer=clip_layer, offload_encoders=offload_encoders)
        model._spec = {"model": "DiffusersModel", "path": str(folder.resolve()),
                       "torch_dtype": None if torch_dtype is None else str(torch_dtype).removeprefix("torch."),
                       "device": None if device is None else str(device)}
        return model

    @classmethod
    def from_pipeline(cls, pipeline, *, timestep_map: str = "argmin", **options):
        """Wrap the components of a loaded diffusers pipeline of a supported family (no copy)."""
        names = ("unet", "vae", "text_encoder", "tokenizer", "transformer", "text_encoder_2", "tokenizer_2",
                 "text_encoder_3", "tokenizer_3")
        components = {name: getattr(pipeline, name, None) for name in names}
        return cls(**components, scheduler_config=pipeline.scheduler.config, timestep_map=timestep_map, **options)

    @property
    def spec(self):
        """How to read this model again (folder path, dtype, device and the loading options) as plain data
        for ``models.from_spec``; None for a model built from objects (`from_pipeline`, the constructor)."""
        spec = getattr(self, "_spec", None)
        return None if spec is None else dict(spec, timestep_map=self.timestep_map, clip_layer=self.clip_layer,
                                              offload_encoders=self.offload_encoders)

    # ---- the protocol ---------------------------------------------------------------------

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

    def timestep(self, sigma) -> torch.Tensor:
        """The network timestep for ``sigma``: `timestep_map` on the table (UNet families, float64) or
        the flow schedule's ``timestep`` (sigma x 1000 for SD3, sigma for Flux), on the CPU."""
        if self.is_flow:
            return self.model_sampling.timestep(torch.as_tensor(sigma).detach().cpu().float())
        return sigma_to_timestep(sigma, self.model_sampling, self.timestep_map)

    def encode(self, prompt: str):
        """Conditioning for ``prompt`` in the reference's syntax, cached per (prompt, clip_layer).

        SD1.x/SD2.x: the context tensor ``[1, 77k, dim]``; SDXL, SD3, Flux: a `Conditioning`.
        ``encode("")`` is the empty prompt *encoded* (the reference's negative), never zeros.
        """
        if not isinstance(prompt, str):
            raise ValueError(f"prompt: expected a string, got {type(prompt).__name__}")
        return self._conds.get((prompt, self.clip_layer), lambda: self._encode(prompt))

    def conditioning(self, prompt: str, *, guidance: Optional[float] = None, sizes: Optional[SDXLSizes] = None,
                     aesthetic_score: Optional[float] = None, negative: bool = False,
                     text_l: Optional[str] = None) -> Conditioning:
        """`encode` with the options of the reference's family nodes: Flux ``guidance`` (FluxGuidance /
        CLIPTextEncodeFlux), SDXL ``sizes`` and ``text_l`` (CLIPTextEncodeSDXL: ``prompt`` is text_g,
        ``text_l`` CLIP-L's own text), the refiner's ``aesthetic_score`` (default 6.0, 2.5 with
        ``negative=True``)."""
        if text_l is not None and text_l != prompt:
            if self.family != "sdxl":
                raise ValueError(f"text_l: a separate CLIP-L text is an SDXL option, not {self.family}'s")
            cond = self._conds.get((prompt, self.clip_layer, "text_l", text_l),
                                   lambda: self._encode_sdxl(prompt, text_l))
        else:
            cond = self.encode(prompt)
        if not isinstance(cond, Conditioning):
            raise ValueError(f"conditioning: {self.family} prompts have no options; use encode(prompt)")
        changes = {}
        if guidance is not None:
            changes["guidance"] = float(guidance)
        if sizes is not None:
            changes["sizes"] = sizes
        if self.family == "sdxl_refiner" and (aesthetic_score is not None or negative):
            changes["aesthetic_score"] = float(aesthetic_score if aesthetic_score is not None
                                               else SDXL_REFINER_AESTHETIC[1])
        return replace(cond, **changes) if changes else cond

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

    # ---- text encoders --------------------------------------------------------------------

    @contextlib.contextmanager
    def _encoder_on_device(self, encoder):
        if not self.offload_encoders:
            yield encoder
            return
        encoder.to(self.device)
        try:
            yield encoder
        finally:
            encoder.to("cpu")

    def _clip(self, encoder, tokenizer, prompt: str, pooled: Optional[str], chunks: int = 1):
        """A CLIP encoder's weighted, chunked context and its first chunk's pooled vector
        (``"projected"``, ``"unprojected"`` or None); at least ``chunks`` chunks (empty ones appended)."""
        kind = _encoder_kind(self.family)
        layer = kind["layer"] if self.clip_layer is None else int(self.clip_layer)
        spec = TokenizerSpec.clip(tokenizer)
        tokens = tokenize(tokenizer, prompt, spec)
        tokens += [empty_chunk(spec, len(tokens[0]))] * (chunks - len(tokens))

        def run(ids):
            with self._encoder_on_device(encoder) as enc, torch.no_grad():
                body = getattr(enc, "text_model", enc)  # transformers 5's CLIPTextModel is the body itself
                out = body(ids.to(enc.device), output_hidden_states=True)
                norm = body.final_layer_norm if kind["final_norm"] else None
                hidden = clip_layer_output(out.hidden_states, layer, norm)
                vector = out.pooler_output
                if pooled == "projected":
                    vector = enc.text_projection(vector)
                return hidden.float(), (vector.float() if pooled else None)

        return encode_weighted(tokens, spec, run)

    def _t5(self, encoder, tokenizer, prompt: str, min_tokens: int) -> torch.Tensor:
        spec = TokenizerSpec.t5(tokenizer, min_tokens)

        def run(ids):
            with self._encoder_on_device(encoder) as enc, torch.no_grad():
                return enc(ids.to(enc.device)).last_hidden_state.float(), None

        return encode_weighted(tokenize(tokenizer, prompt, spec), spec, run)[0]

    def _encode_sdxl(self, text_g: str, text_l: str) -> Conditioning:
        """CLIP-L gets ``text_l``, CLIP-G ``text_g`` (the same text with CLIPTextEncode); with two texts the
        shorter token list is padded with empty chunks (CLIPTextEncodeSDXL)."""
        chunks = 1
        if text_g != text_l:
            chunks = max(len(tokenize(tok, text, TokenizerSpec.clip(tok)))
                         for tok, text in ((self.tokenizer, text_l), (self.tokenizer_2, text_g)))
        clip_l = self._clip(self.text_encoder, self.tokenizer, text_l, None, chunks)[0]
        clip_g, pooled = self._clip(self.text_encoder_2, self.tokenizer_2, text_g, "projected", chunks)
        return Conditioning(sdxl_context(clip_l, clip_g), pooled)

    def _encode(self, prompt: str):
        family = self.family
        if family in ("sd1", "sd2"):
            return self._clip(self.text_encoder, self.tokenizer, prompt, None)[0]
        if family == "sdxl":
            return self._encode_sdxl(prompt, prompt)
        if family == "sdxl_refiner":
            clip_g, pooled = self._clip(self.text_encoder_2, self.tokenizer_2, prompt, "projected")
            return Conditioning(clip_g, pooled)
        if family == "sd3":
            clip_l, pooled_l = self._clip(self.text_encoder, self.tokenizer, prompt, "unprojected")
            clip_g, pooled_g = self._clip(self.text_encoder_2, self.tokenizer_2, prompt, "projected")
            t5 = None
            if self.text_encoder_3 is not None:
                t5 = self._t5(self.text_encoder_3, self.tokenizer_3, prompt, SD3_T5_MIN_TOKENS)
            width = int(self.transformer.config.joint_attention_dim)
            return Conditioning(sd3_context(clip_l, clip_g, t5, width), sd3_pooled(pooled_l, pooled_g))
        pooled = self._clip(self.text_encoder, self.tokenizer, prompt, "unprojected")[1]
        context = flux_context(self._t5(self.text_encoder_2, self.tokenizer_2, prompt, FLUX_T5_MIN_TOKENS))
        guidance = FLUX_DEFAULT_GUIDANCE if family == "flux_dev" else None
        return Conditioning(context, pooled, guidance=guidance)

    # ---- pictures -------------------------------------------------------------------------

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """A VAE-space latent through the VAE: RGB float32 ``[B, H, W, 3]`` in [0, 1], on the CPU."""
        latent = self._check_latent(latent)
        with torch.no_grad():
            image = self.vae.decode(latent.to(self.vae.device, self.vae.dtype)).sample
        return (image.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().contiguous()

    def decode_preview(self, latent: torch.Tensor) -> torch.Tensor:
        """A fast linear preview of a VAE-space latent (no VAE call per step), same shape as `decode`.

        SD1.x/SD2.x: the SD1.5 latent-to-RGB factors on the model-space latent (what the reference
        shows). Other families (4 or 16 channels): linear factors fitted once on this VAE's own encoder
        (`families.fit_latent_rgb`, one small encoder call, then cached) or set with `set_preview_factors`.
        """
        latent = self._check_latent(latent)
        if self._preview is not None:
            return self._preview.decode(latent.detach().cpu().double() * self.latent_scale_factor)
        if self._preview_factors is None:
            self._preview_factors = fit_latent_rgb(self.vae, self.latent_channels)
        return linear_preview(latent.detach().cpu(), *self._preview_factors, self.downscale)

    def set_preview_factors(self, weights, bias=None):
        """Use your own latent-to-RGB factors (``[C, 3]`` on VAE-space latents, optional bias ``[3]``)."""
        weights = torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (self.latent_channels, 3):
            raise ValueError(f"weights: expected [{self.latent_channels}, 3], got {tuple(weights.shape)}")
        bias = torch.zeros(3, dtype=torch.float64) if bias is None else torch.as_tensor(bias, dtype=torch.float64)
        self._preview, self._preview_factors = None, (weights, bias.reshape(3))

    def encode_image(self, rgb) -> torch.Tensor:
        """RGB ``[H, W, 3]`` or ``[B, H, W, 3]`` in [0, 1] (or uint8) -> VAE-space float32 latent (the
        posterior mean, deterministic), on the CPU, for img2img."""
        rgb = as_rgb_batch(rgb)
        if rgb.shape[1] % self.downscale or rgb.shape[2] % self.downscale:
            raise ValueError(f"rgb: height and width must be multiples of {self.downscale}, "
                             f"got {tuple(rgb.shape[1:3])}")
        pixels = (rgb * 2 - 1).permute(0, 3, 1, 2).to(self.vae.device, self.vae.dtype)
        with torch.no_grad():
            return self.vae.encode(pixels).latent_dist.mean.float().cpu()

    def __repr__(self):
        return (f"DiffusersModel(family={self.family!r}, model_sampling={self.model_sampling!r}, "
                f"timestep_map={self.timestep_map!r}, latent_channels={self.latent_channels}, "
                f"downscale={self.downscale}, latent_format={self.latent_format.name}, device={self.device}, "
                f"dtype={self.dtype})")

    def _check_latent(self, latent) -> torch.Tensor:
        latent = torch.as_tensor(latent)
        if latent.ndim != 4 or latent.shape[1] != self.latent_channels:
            raise ValueError(f"latent: expected [B, {self.latent_channels}, h, w], got {tuple(latent.shape)}")
        return latent


def _infer_family(unet, transformer, text_encoder, text_encoder_2) -> str:
    if transformer is not None:
        kind = type(transformer).__name__
        if "Flux" in kind:
            return "flux_dev" if transformer.config.guidance_embeds else "flux_schnell"
        if "SD3" in kind:
            return "sd3"
        raise UnknownModelFolder(f"transformer: {kind} is not supported; supported: {SUPPORTED}")
    if unet is None:
        raise ValueError("expected a unet (SD1.x/SD2.x/SDXL) or a transformer (SD3/Flux)")
    if getattr(unet.config, "addition_embed_type", None) == "text_time":
        return "sdxl" if text_encoder is not None else "sdxl_refiner"
    hidden = getattr(getattr(text_encoder, "config", None), "hidden_size", None)
    return "sd2" if hidden == 1024 else "sd1"


def _load_component(sub: Path, library: str, class_name: str, torch_dtype, device):
    loader = getattr(importlib.import_module(library), class_name)
    if class_name.endswith("Tokenizer") or "Tokenizer" in class_name:
        return loader.from_pretrained(sub, local_files_only=True)
    native = library == "diffusers" and torch_dtype is not None  # diffusers keeps fp32-only parts fp32
    module = loader.from_pretrained(sub, local_files_only=True, **({"torch_dtype": torch_dtype} if native else {}))
    dtype = None if native else torch_dtype
    if dtype == torch.float16 and class_name.startswith("T5"):
        dtype = torch.bfloat16  # T5's activations overflow float16
    if dtype is not None:
        module = module.to(dtype=dtype)
    return (module.to(device) if device is not None else module).eval()


def _local_folder(path) -> Path:
    """``path`` as an existing folder, or a clear error: weights must already be on disk."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    text = str(path)
    if folder.exists():
        raise NotADirectoryError(f"{text!r} is a file; expected a diffusers folder (model_index.json, unet/, "
                                 "vae/, text_encoder/, tokenizer/, scheduler/). For a single-file checkpoint, load "
                                 "it with diffusers' StableDiffusionPipeline.from_single_file and use "
                                 "DiffusersModel.from_pipeline")
    if _HUB_ID.fullmatch(text):
        raise FileNotFoundError(f"{text!r} looks like a Hugging Face Hub id, and there is no such local folder. "
                                "DiffusersModel never downloads: the weights must be on disk. Download them "
                                f"where a network is available (e.g. `hf download {text} --local-dir <folder>`) "
                                "and pass that folder")
    raise FileNotFoundError(f"{text!r}: no such folder. DiffusersModel loads weights from a local diffusers folder "
                            "only (nothing is downloaded)")
