"""The reference's prompt syntax: weights, 75-token chunks, and weighted encoding.

What a user types into a ComfyUI text box means (spec model_families.md §4.1):

- ``(text)`` multiplies the weight of ``text`` by 1.1 per nesting level; ``(text:w)`` sets it to ``w``
  (nested groups inside start from ``w``); a group whose text after the last ``:`` is not a number is
  an ordinary 1.1 group. ``\\(`` and ``\\)`` are literal parentheses. An unmatched ``(`` or ``)`` stays
  literal text.
- Words (split at spaces) are tokenized one by one. Token lists are cut into chunks of 75; a word of
  fewer than 8 tokens that does not fit in the current chunk moves whole to the next one, a longer
  word is split. Each chunk becomes ``[start] + 75 tokens + [end]``, padded to 77.
- A token of weight ``w != 1`` is encoded as ``z_empty + w * (z - z_empty)``, where ``z_empty`` is the
  encoding of the empty prompt's chunk (same length), per position. Chunks are concatenated along
  the sequence axis; the pooled vector comes from the first chunk and is not weighted.

Encoder-specific parts (which layer, pooled or not) are the caller's ``encode_chunks`` function.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch

CHUNK = 75  # tokens per chunk between the start and end tokens
MOVE_WHOLE_BELOW = 8  # words with fewer tokens move whole to the next chunk
_OPEN, _CLOSE = "\0\1", "\0\2"  # stand-ins for escaped parentheses while parsing


def parse_weights(text: str, weight: float = 1.0) -> List[Tuple[str, float]]:
    """``text`` as ``[(segment, weight), ...]`` in order, by the reference's parenthesis syntax."""
    escaped = text.replace("\\(", _OPEN).replace("\\)", _CLOSE)
    return [(_unescape(s), w) for s, w in _parse(escaped, weight) if s]


def _unescape(text: str) -> str:
    return text.replace(_OPEN, "(").replace(_CLOSE, ")")


def _split_groups(text: str) -> List[str]:
    """Top-level pieces: plain runs and balanced ``(...)`` groups (unmatched brackets stay text)."""
    pieces, current, depth = [], "", 0
    for char in text:
        if char == "(" and depth == 0:
            if current:
                pieces.append(current)
            current, depth = "(", 1
        elif char == "(":
            current, depth = current + char, depth + 1
        elif char == ")" and depth == 1:
            pieces.append(current + ")")
            current, depth = "", 0
        elif char == ")" and depth > 1:
            current, depth = current + char, depth - 1
        else:
            current += char
    if current:
        pieces.append(current)
    return pieces


def _parse(text: str, weight: float) -> List[Tuple[str, float]]:
    out = []
    for piece in _split_groups(text):
        if not (len(piece) >= 2 and piece[0] == "(" and piece[-1] == ")"):
            out.append((piece, weight))
            continue
        inner, inner_weight = piece[1:-1], weight * 1.1
        colon = inner.rfind(":")
        if colon >= 0:
            try:
                inner_weight = float(inner[colon + 1:])
                inner = inner[:colon]
            except ValueError:
                pass
        out.extend(_parse(inner, inner_weight))
    return out


@dataclass(frozen=True)
class TokenizerSpec:
    """How one encoder's token sequences are built from a Hugging Face tokenizer.

    ``start``/``end``/``pad``: token ids (``start=None``: no start token, as T5). ``chunk``: tokens per
    chunk (None: one sequence, never cut, as T5 in the reference). ``min_length``: pad the whole
    sequence to at least this many tokens (T5: 77 for SD3, 256 for Flux).
    """

    start: Optional[int]
    end: int
    pad: int
    chunk: Optional[int] = CHUNK
    min_length: int = 0

    @classmethod
    def clip(cls, tokenizer) -> "TokenizerSpec":
        """A CLIP tokenizer: start/end from it; pad = its pad token (end for CLIP-L, ``!`` = 0 for CLIP-G)."""
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return cls(tokenizer.bos_token_id, tokenizer.eos_token_id, pad)

    @classmethod
    def t5(cls, tokenizer, min_length: int) -> "TokenizerSpec":
        return cls(None, tokenizer.eos_token_id, tokenizer.pad_token_id, None, min_length)


def word_tokens(tokenizer, word: str) -> List[int]:
    """The ids of one word without start/end tokens."""
    return list(tokenizer(word, add_special_tokens=False)["input_ids"])


def chunk_tokens(words: Sequence[Tuple[List[int], float]], spec: TokenizerSpec) -> List[List[Tuple[int, float]]]:
    """Weighted word token lists -> padded chunks of ``(id, weight)`` (see the module docstring)."""
    head = [(spec.start, 1.0)] if spec.start is not None else []
    if spec.chunk is None:  # one sequence, padded to min_length
        body = [(t, w) for ids, w in words for t in ids] + [(spec.end, 1.0)]
        body += [(spec.pad, 1.0)] * max(spec.min_length - len(head) - len(body), 0)
        return [head + body]
    chunks, batch = [], []

    def close(current):
        filled = head + current + [(spec.end, 1.0)]
        chunks.append(filled + [(spec.pad, 1.0)] * (spec.chunk + 2 - len(filled)))

    for ids, weight in words:
        ids = list(ids)
        while ids:
            room = spec.chunk - len(batch)
            if len(ids) <= room:
                batch.extend((t, weight) for t in ids)
                ids = []
            elif len(ids) >= MOVE_WHOLE_BELOW:  # a long word is split to fill the chunk
                batch.extend((t, weight) for t in ids[:room])
                ids = ids[room:]
                close(batch)
                batch = []
            else:  # a short word moves whole to the next chunk
                close(batch)
                batch = []
    if batch or not chunks:
        close(batch)
    return chunks


def tokenize(tokenizer, text: str, spec: TokenizerSpec) -> List[List[Tuple[int, float]]]:
    """``text`` in the reference's syntax -> chunks of ``(token id, weight)``."""
    words = []
    for segment, weight in parse_weights(text):
        for word in re.split(" ", segment.replace("\n", " ")):
            if word:
                words.append((word_tokens(tokenizer, word), weight))
    return chunk_tokens(words, spec)


def empty_chunk(spec: TokenizerSpec, length: int) -> List[Tuple[int, float]]:
    """The empty prompt's tokens, ``length`` long: [start,] end, pad... (all weight 1)."""
    head = [(spec.start, 1.0)] if spec.start is not None else []
    return (head + [(spec.end, 1.0)] + [(spec.pad, 1.0)] * length)[:length]


EncodeChunks = Callable[[torch.Tensor], Tuple[torch.Tensor, Optional[torch.Tensor]]]


def encode_weighted(chunks: List[List[Tuple[int, float]]], spec: TokenizerSpec,
                    encode_chunks: EncodeChunks) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Encode token chunks with the reference's weighting: ``(context [1, 77k, d], pooled or None)``.

    ``encode_chunks(ids [n, L]) -> (hidden [n, L, d], pooled [n, p] or None)``: one encoder call on
    all chunks (plus the empty chunk when a weight is not 1). Weighted positions are interpolated
    from the empty chunk's encoding: ``z_empty + w * (z - z_empty)``.
    """
    weights = torch.tensor([[w for _, w in chunk] for chunk in chunks], dtype=torch.float32)
    ids = [[t for t, _ in chunk] for chunk in chunks]
    weighted = bool((weights != 1.0).any())
    if weighted:
        ids.append([t for t, _ in empty_chunk(spec, len(ids[0]))])
    hidden, pooled = encode_chunks(torch.tensor(ids, dtype=torch.long))
    if weighted:
        hidden, empty = hidden[:-1], hidden[-1:]
        w = weights.to(hidden.device, hidden.dtype)[..., None]
        hidden = torch.where(w != 1, (hidden - empty) * w + empty, hidden)
    context = hidden.reshape(1, -1, hidden.shape[-1])
    return context, (pooled[:1] if pooled is not None else None)
