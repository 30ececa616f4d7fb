"""The diffusers backend's loading: which components each family needs, reading them from a local folder.

`load_folder` reads a folder as ``pipeline.save_pretrained`` writes it (``model_index.json``, one
subfolder per component, ``scheduler/scheduler_config.json``), after `families.detect_family` has
recognised its family; nothing is ever downloaded. `infer_family` tells the family of components
already in memory (`DiffusersModel.from_pipeline`, the constructor). The diffusers and transformers
classes are imported by name, only when a component is loaded.
"""
from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import torch

from .families import SUPPORTED, UnknownModelFolder, detect_family

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
# The components DiffusersModel takes as keyword arguments (from_pipeline reads these attributes).
COMPONENT_NAMES = ("unet", "vae", "text_encoder", "tokenizer", "transformer", "text_encoder_2", "tokenizer_2",
                   "text_encoder_3", "tokenizer_3")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def load_folder(local_path, *, torch_dtype=None, device=None, offload_encoders: bool = False) -> tuple:
    """``(folder, family, components, scheduler_config)`` of a local diffusers folder: the components a
    `DiffusersModel` takes, loaded with ``torch_dtype`` onto ``device`` (text encoders on the CPU with
    ``offload_encoders``), and the scheduler config as a dict. Clear errors for a missing folder, a Hub id,
    a folder of no supported family and a missing subfolder."""
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
    return folder, family, modules, json.loads(config_file.read_text())


def infer_family(unet, transformer, text_encoder, text_encoder_2) -> str:
    """The family of components already loaded: the transformer's class (SD3, Flux dev/schnell), else the
    UNet's ADM (SDXL, or its refiner without CLIP-L), else the CLIP width (SD2's 1024, else SD1)."""
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


def check_components(model) -> None:
    """Raise if ``model`` (a `DiffusersModel` being built) lacks a component of its family or holds one
    this backend cannot drive (extra input channels: inpainting, instruct, Flux Fill/Canny/Depth)."""
    needed = FAMILY_COMPONENTS[model.family]
    missing = [name for name in needed if getattr(model, name) is None and name not in OPTIONAL_COMPONENTS]
    if missing:
        raise ValueError(f"{model.family}: missing components {', '.join(missing)}; this family needs "
                         f"{', '.join(needed)}")
    unet = model.unet
    if unet is not None and getattr(unet.config, "addition_embed_type", None) not in (None, "text_time"):
        raise ValueError(f"unet: addition_embed_type={unet.config.addition_embed_type!r} is not supported; "
                         f"supported: {SUPPORTED}")
    channels = int(model.vae.config.latent_channels)
    if model.family.startswith("flux") and model.transformer.config.in_channels != 4 * channels:
        raise ValueError(f"transformer: in_channels={model.transformer.config.in_channels}, expected "
                         f"{4 * channels} (2x2 patches of {channels} channels); Flux Fill/Canny/Depth "
                         "(image-conditioned inputs) are not supported")
    if model.unet is not None and model.unet.config.in_channels != channels:
        raise ValueError(f"unet: in_channels={model.unet.config.in_channels}, the VAE has {channels} latent "
                         "channels; inpainting/instruct UNets (extra input channels) are not supported")


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
