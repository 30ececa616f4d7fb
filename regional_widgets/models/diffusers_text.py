"""The diffusers backend's text conditioning: each family's rule, and prompts through its text encoders.

Every family first reads the prompt the reference's way (`prompts`: weights, 75-token chunks,
concatenation), then builds its conditioning by its own rule, one function each (spec
model_families.md §4-§5): `sdxl_context`, `sd3_context`, `sd3_pooled`, `flux_context`, with
`families.sdxl_adm` for SDXL's sizes; where a rule differs from diffusers' pipelines its function
says how. `clip_layer_output` is CLIPSetLastLayer. `TextEncoding` is the part of
`diffusers.DiffusersModel` that runs the encoders (`encode`, `conditioning`), cached per prompt.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F

from .families import SDXLSizes
from .prompts import TokenizerSpec, empty_chunk, encode_weighted, tokenize

FLUX_DEFAULT_GUIDANCE = 3.5  # what the reference passes when no FluxGuidance node set one
SD3_T5_MIN_TOKENS, FLUX_T5_MIN_TOKENS = 77, 256
SDXL_REFINER_AESTHETIC = (6.0, 2.5)  # the reference's defaults for positive and negative conds


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


class TextEncoding:
    """The text side of `diffusers.DiffusersModel` (a mixin): prompts -> conditioning, cached.

    Reads the model's ``family``, ``text_encoder``/``tokenizer`` (``_2``, ``_3``), ``transformer``
    (SD3's context width), ``clip_layer``, ``offload_encoders``, ``device`` and ``_conds``
    (a `base.PromptCache`).
    """

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
