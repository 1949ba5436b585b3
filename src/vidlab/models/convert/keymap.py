"""Tensor names: the original VideoLLaMA3 layouts and the native transformers one.

released (remote code)                       native (VideoLlama3ForConditionalGeneration)
  model.vision_encoder.*                  ->   model.vision_model.*
  model.mm_projector.readout.{0,2}.*      ->   model.projector.readout.{0,2}.*
  model.{embed_tokens,layers,norm}.*      ->   model.language_model.*
  lm_head.*                               ->   lm_head.*
The original training code wraps the encoder once more (`model.vision_encoder.vision_encoder.*`),
and peft prefixes everything with `base_model.model.` (and `.base_layer` inside wrapped Linears).
"""

from __future__ import annotations

import re

_TRAINING_ENCODER = "model.vision_encoder.vision_encoder."
_RELEASED_ENCODER = "model.vision_encoder."
# (original prefix, native prefix); the first match wins, so the LLM's catch-all `model.` comes last.
_PREFIXES = [
    (_RELEASED_ENCODER, "model.vision_model."),
    ("model.mm_projector.", "model.projector."),
    ("lm_head.", "lm_head."),
    ("model.", "model.language_model."),
]
# Rotary inverse frequencies are recomputed from the config; old transformers versions saved them.
_DERIVED = re.compile(r"(^|\.)rotary_(pos_)?emb\.inv_freq$")
_PEFT_WRAPPER = re.compile(r"\.base_layer(?=\.)")


def canonical_key(key: str) -> str:
    """The released layout's name of a tensor saved in the released or the training layout."""
    if key.startswith(_TRAINING_ENCODER):
        return _RELEASED_ENCODER + key[len(_TRAINING_ENCODER):]
    return key


def is_training_key(key: str) -> bool:
    return key.startswith(_TRAINING_ENCODER)


def strip_peft_names(key: str) -> str:
    """`base_model.model.model.x.q_proj.base_layer.weight` -> `model.x.q_proj.weight`."""
    if key.startswith("base_model.model."):
        key = key[len("base_model.model."):]
    elif key.startswith("base_model."):
        key = key[len("base_model."):]
        # the original loader's second case: names saved from the inner model keep one `model.` too many
        if key.startswith("model.model."):
            key = key[len("model."):]
    return _PEFT_WRAPPER.sub("", key)


def is_derived_buffer(key: str) -> bool:
    return bool(_DERIVED.search(key))


def native_key(canonical: str) -> str | None:
    """The native name of a released-layout tensor name; None when no rule applies."""
    for original, native in _PREFIXES:
        if canonical.startswith(original):
            return native + canonical[len(original):]
    return None


def original_key(native: str) -> str:
    """The released-layout name a native tensor comes from (for messages)."""
    for original, target in _PREFIXES:
        if native.startswith(target):
            return original + native[len(target):]
    return native


def part_of(native: str) -> str:
    """vision, projector, compressor (a vidlab video compressor) or llm: the part a native tensor belongs to."""
    if native.startswith("model.vision_model."):
        return "vision"
    if native.startswith("model.projector."):
        return "projector"
    if native.startswith("model.video_compressor."):
        return "compressor"
    return "llm"
