"""`load_model` for a LLaMA-VID folder written by `vidlab model convert` (or `tiny`)."""

from __future__ import annotations

from pathlib import Path

import torch

from vidlab.errors import ModelLoadError


def load_llama_vid(folder: str | Path, *, adapters: dict, dtype: torch.dtype, device: torch.device,
                   attn_implementation: str | None = None, quantize: str | None = None):
    """(model in eval mode on `device`, its LlamaVidProcessor); adapters as `vidlab.models.load.load_model`."""
    from vidlab.models.adapters import load_adapters
    from vidlab.models.llama_vid.model import LlamaVidForConditionalGeneration
    from vidlab.models.llama_vid.processor import LlamaVidProcessor
    from vidlab.models.quantize import quantize_weights, quantized_placement

    try:
        dtype, placement = quantized_placement(quantize, dtype, device)
        model = LlamaVidForConditionalGeneration.from_pretrained(
            folder, dtype=dtype, attn_implementation=attn_implementation, **placement)
    except OSError as err:
        raise ModelLoadError(f"{folder}: could not load the LLaMA-VID model ({err}). "
                             "Convert the original checkpoint again with `vidlab model convert`.") from err
    processor = LlamaVidProcessor.from_pretrained(folder)
    model = load_adapters(model, adapters)
    if quantize is not None and device.type != "cuda":  # the base layers; a LoRA adapter on them stays full
        quantize_weights(model, quantize)
    model.eval()
    return model, processor
