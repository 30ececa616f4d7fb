"""DiffusersModel: a Stable-Diffusion-class UNet, VAE and CLIP text encoder (diffusers) as a `Model`.

Needs the optional extra: ``pip install 'regional-widgets[diffusers]'``. Nothing is ever downloaded:
`DiffusersModel.from_pretrained` reads a diffusers folder already on disk.

Conventions (the reference tool's, spec §1.1 and §3.1):

- **Latent spaces.** Every latent the session holds (``latent_image``, ``latent``, ``denoised``,
  ``result``) is in *VAE space*: the AutoencoderKL's own latent, what ComfyUI keeps in a LATENT and
  what its VAEDecode decodes. The sampler works in *model space* = VAE space x `latent_scale_factor`
  (``vae.config.scaling_factor``, 0.18215 for SD1.5): the session multiplies before each sampler call
  and divides after, and the noise is added in model space. So ``model(x, sigma, cond)`` takes and
  returns model-space tensors, while `decode`, `decode_preview` and `encode_image` work in VAE space:
  ``model.decode(session.result)`` is the picture. (diffusers' pipelines keep model-space latents and
  decode ``latents / scaling_factor``: the same picture.)
- **Denoiser** (k-diffusion): the UNet sees ``x / sqrt(sigma^2 + 1)`` at timestep ``t(sigma)``, as
  diffusers' ``scale_model_input`` makes it. Epsilon prediction gives ``D = x - sigma * eps``,
  v-prediction ``D = x / (sigma^2 + 1) - v * sigma / sqrt(sigma^2 + 1)`` (``prediction_type`` of the
  scheduler config). CFG is applied in `models.base`, as for every model.
- **Sigma table**: the checkpoint's scheduler config, betas -> ``alphas_cumprod`` -> ``sigma_t =
  sqrt((1 - acp_t) / acp_t)``, computed in float64 and stored ascending as float32 (`discrete_sigmas`).
- **Timestep map**: `TIMESTEP_MAPS`, see `sigma_to_timestep`; ``"argmin"`` (the reference tool) by default.
- **Device and dtype** follow the UNet: inputs are moved to it for each call and the result comes
  back in x's dtype and device. Noise stays the sampling layer's business (a CPU stream, as the reference).
"""
from __future__ import annotations

import importlib
import json
import math
import re
from pathlib import Path
from typing import Mapping

import torch

from ..sampling.model_sampling import ModelSamplingDiscrete
from ..sampling.schedules import as_model_sampling
from .latents import SDPreviewSpace, as_rgb_batch

try:
    import diffusers  # noqa: F401
    import transformers  # noqa: F401
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("DiffusersModel needs diffusers and transformers: "
                      "pip install 'regional-widgets[diffusers]'") from err

TIMESTEP_MAPS = ("argmin", "log_interp", "table")
PREDICTION_TYPES = ("epsilon", "v_prediction")
# The subfolders of a diffusers folder and the classes used when model_index.json does not name them.
_COMPONENTS = {
    "unet": ("diffusers", "UNet2DConditionModel"),
    "vae": ("diffusers", "AutoencoderKL"),
    "text_encoder": ("transformers", "CLIPTextModel"),
    "tokenizer": ("transformers", "CLIPTokenizer"),
}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def discrete_sigmas(scheduler_config: Mapping, dtype=torch.float32) -> torch.Tensor:
    """The ascending training sigma table of a diffusers scheduler config (float64 math, ``dtype`` out).

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


class DiffusersModel:
    """A diffusers UNet2DConditionModel + AutoencoderKL + CLIP text encoder behind the `Model` protocol.

    ``scheduler_config``: the checkpoint's scheduler config (a mapping, or a scheduler: its ``.config``);
    it gives the sigma table and ``prediction_type`` (epsilon or v_prediction). The scheduler itself is
    not used: the session's samplers and schedules replace it.
    ``timestep_map``: how a sigma becomes the UNet's timestep, one of `TIMESTEP_MAPS` (see
    `sigma_to_timestep`); an attribute you may change later.

    Prompts are encoded once each (``encode("")`` is the unconditional branch) and cached.
    """

    def __init__(self, unet, vae, text_encoder, tokenizer, scheduler_config, *, timestep_map: str = "argmin"):
        config = dict(getattr(scheduler_config, "config", scheduler_config))
        self.prediction_type = config.get("prediction_type", "epsilon")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"scheduler_config: prediction_type {self.prediction_type!r} is not supported; "
                             f"accepted: {', '.join(PREDICTION_TYPES)}")
        if getattr(unet.config, "addition_embed_type", None) is not None:
            raise ValueError(f"unet: addition_embed_type={unet.config.addition_embed_type!r} (SDXL-style extra "
                             "conditioning) is not supported; SD1.x/SD2.x UNets only")
        if getattr(vae.config, "shift_factor", None):
            raise ValueError("vae: a shift_factor (SD3/Flux latents) is not supported; SD1.x/SD2.x VAEs only")
        self.unet, self.vae, self.text_encoder, self.tokenizer = unet, vae, text_encoder, tokenizer
        self.scheduler_config = config
        # the float64 table kept: log-sigmas, timesteps and schedules are the reference's bit for bit
        parametrisation = "v" if self.prediction_type == "v_prediction" else "eps"
        self.model_sampling = ModelSamplingDiscrete(discrete_sigmas(config, torch.float64), parametrisation)
        self.sigmas = self.model_sampling.sigmas
        self._sampling = self.model_sampling
        self.timestep_map = timestep_map
        self.latent_channels = int(unet.config.in_channels)
        self.downscale = 2 ** (len(vae.config.block_out_channels) - 1)
        self.latent_scale_factor = float(vae.config.scaling_factor)
        self._preview = SDPreviewSpace(self.downscale)
        self._conds: dict = {}

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, local_path, *, torch_dtype=None, device=None, timestep_map: str = "argmin"):
        """Load a diffusers folder from disk (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``,
        ``scheduler/``, as ``pipeline.save_pretrained`` writes it). Never downloads.

        ``torch_dtype`` applies to the UNet, VAE and text encoder; ``device`` receives all three.
        """
        folder = _local_folder(local_path)
        index_file = folder / "model_index.json"
        index = json.loads(index_file.read_text()) if index_file.is_file() else {}
        modules = {}
        for name, default in _COMPONENTS.items():
            entry = index.get(name)
            library, class_name = entry[:2] if entry and entry[0] else default
            sub = folder / name
            if not sub.is_dir():
                raise FileNotFoundError(f"{folder}: missing the {name}/ subfolder; expected a diffusers folder "
                                        f"with {', '.join(_COMPONENTS)} and scheduler/")
            loader = getattr(importlib.import_module(library), class_name)
            native = library == "diffusers" and torch_dtype is not None  # diffusers keeps fp32-only parts fp32
            kwargs = {"torch_dtype": torch_dtype} if native else {}
            module = loader.from_pretrained(sub, local_files_only=True, **kwargs)
            if name != "tokenizer":
                module = module.to(device=device, dtype=None if native else torch_dtype).eval()
            modules[name] = module
        config_file = folder / "scheduler" / "scheduler_config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{folder}: missing scheduler/scheduler_config.json (the sigma table and "
                                    "prediction_type come from it)")
        model = cls(**modules, scheduler_config=json.loads(config_file.read_text()), timestep_map=timestep_map)
        model._spec = {"model": "DiffusersModel", "path": str(folder.resolve()),
                       "torch_dtype": None if torch_dtype is None else str(torch_dtype).removeprefix("torch."),
                       "device": None if device is None else str(device)}
        return model

    @classmethod
    def from_pipeline(cls, pipeline, *, timestep_map: str = "argmin"):
        """Wrap the components of a loaded ``StableDiffusionPipeline`` (no copy)."""
        return cls(pipeline.unet, pipeline.vae, pipeline.text_encoder, pipeline.tokenizer,
                   pipeline.scheduler.config, timestep_map=timestep_map)

    @property
    def spec(self):
        """How to read this model again (folder path, dtype, device, timestep map) as plain data for
        ``models.from_spec``; None for a model built from objects (`from_pipeline`, the constructor)."""
        spec = getattr(self, "_spec", None)
        return None if spec is None else dict(spec, timestep_map=self.timestep_map)

    # ---- the protocol ---------------------------------------------------------------------

    @property
    def timestep_map(self) -> str:
        return self._timestep_map

    @timestep_map.setter
    def timestep_map(self, value: str):
        if value not in TIMESTEP_MAPS:
            raise ValueError(f"timestep_map: unknown name {value!r}; accepted: {', '.join(TIMESTEP_MAPS)}")
        self._timestep_map = value

    @property
    def device(self) -> torch.device:
        return self.unet.device

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def timestep(self, sigma) -> torch.Tensor:
        """The UNet timestep for ``sigma`` under `timestep_map` (float64, on the CPU)."""
        return sigma_to_timestep(sigma, self._sampling, self.timestep_map)

    def encode(self, prompt: str) -> torch.Tensor:
        """The text encoder's last hidden state ``[1, tokens, dim]`` for ``prompt``, cached per prompt."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt: expected a string, got {type(prompt).__name__}")
        if prompt not in self._conds:
            tokens = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                                    truncation=True, return_tensors="pt")
            encoder = self.text_encoder
            use_mask = getattr(encoder.config, "use_attention_mask", False)  # as diffusers' SD pipeline
            mask = tokens.attention_mask.to(encoder.device) if use_mask else None
            with torch.no_grad():
                self._conds[prompt] = encoder(tokens.input_ids.to(encoder.device), attention_mask=mask)[0]
        return self._conds[prompt]

    def __call__(self, x: torch.Tensor, sigma, cond: torch.Tensor) -> torch.Tensor:
        """The denoised (x0) prediction at ``sigma`` (one value per batch item), in x's dtype and device."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != self.latent_channels:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"x: expected a tensor [B, {self.latent_channels}, h, w], got {shape}")
        if not isinstance(cond, torch.Tensor) or cond.ndim != 3 or cond.shape[0] not in (1, len(x)):
            raise ValueError("cond: expected a text embedding [1 or B, tokens, dim] from model.encode(prompt)")
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1)
        if sigma.numel() == 1:
            sigma = sigma.expand(len(x))
        if sigma.numel() != len(x):
            raise ValueError(f"sigma: expected one value per batch item ({len(x)}), got {sigma.numel()}")
        s = sigma.view(-1, 1, 1, 1)
        device, dtype = self.device, self.dtype
        # The same expressions as diffusers' scale_model_input and step(): bitwise equal at the same t.
        x_in = (x / ((s ** 2 + 1) ** 0.5)).to(device, dtype)
        t = self.timestep(sigma).to(device, torch.float32)
        context = cond.to(device, dtype).expand(len(x), -1, -1)
        with torch.no_grad():
            out = self.unet(x_in, t, encoder_hidden_states=context).sample.to(x.device, x.dtype)
        if self.prediction_type == "v_prediction":
            return out * (-s / (s ** 2 + 1) ** 0.5) + x / (s ** 2 + 1)
        return x - s * out

    def call_batch(self, x: torch.Tensor, sigma, conds) -> torch.Tensor:
        """One cond per batch item in a single UNet call (the protocol's optional batched member)."""
        if len(conds) != len(x):
            raise ValueError(f"conds: expected one cond per batch item ({len(x)}), got {len(conds)}")
        return self(x, sigma, torch.cat([cond.to(conds[0].device) for cond in conds]))

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """A VAE-space latent through the VAE: RGB float32 ``[B, H, W, 3]`` in [0, 1], on the CPU."""
        latent = self._check_latent(latent)
        with torch.no_grad():
            image = self.vae.decode(latent.to(self.vae.device, self.vae.dtype)).sample
        return (image.float() / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().contiguous()

    def decode_preview(self, latent: torch.Tensor) -> torch.Tensor:
        """A fast linear preview of a VAE-space latent (ComfyUI's latent-to-RGB), same shape as `decode`.

        The SD1.5 latent-to-RGB factors apply to model-space latents (the sampler's x0 that the
        reference previews), so the latent is scaled by `latent_scale_factor` first.
        """
        latent = self._check_latent(latent)
        if self.latent_channels != 4:
            raise ValueError(f"decode_preview: the SD1.5 preview factors need 4 latent channels, "
                             f"this model has {self.latent_channels}")
        return self._preview.decode(latent.detach().cpu().double() * self.latent_scale_factor)

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
        return (f"DiffusersModel(prediction_type={self.prediction_type!r}, timestep_map={self.timestep_map!r}, "
                f"latent_channels={self.latent_channels}, downscale={self.downscale}, "
                f"latent_scale_factor={self.latent_scale_factor}, device={self.device}, dtype={self.dtype})")

    def _check_latent(self, latent) -> torch.Tensor:
        latent = torch.as_tensor(latent)
        if latent.ndim != 4 or latent.shape[1] != self.latent_channels:
            raise ValueError(f"latent: expected [B, {self.latent_channels}, h, w], got {tuple(latent.shape)}")
        return latent


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
