"""`load_model` for a TinyLLaVA-Video folder written by `vidlab model convert` (or `tiny`)."""

from __future__ import annotations

from pathlib import Path

import torch

from vidlab.errors import ModelLoadError


def load_tinyllava_video(folder: str | Path, *, adapters: dict, dtype: torch.dtype, device: torch.device,
                         attn_implementation: str | None = None, quantize: str | None = None):
    """(model in eval mode on `device`, its TinyLlavaVideoProcessor); adapters as `vidlab.models.load.load_model`."""
    from vidlab.models.adapters import load_adapters
    from vidlab.models.quantize import quantize_weights, quantized_placement
    from vidlab.models.tinyllava_video.model import TinyLlavaVideoForConditionalGeneration
    from vidlab.models.tinyllava_video.processor import TinyLlavaVideoProcessor

    try:
        dtype, placement = quantized_placement(quantize, dtype, device)
        model = TinyLlavaVideoForConditionalGeneration.from_pretrained(
            folder, dtype=dtype, attn_implementation=attn_implementation, **placement)
    except OSError as err:
        raise ModelLoadError(f"{folder}: could not load the TinyLLaVA-Video model ({err}). "
                             "Convert the original checkpoint again with `vidlab model convert`.") from err
    processor = TinyLlavaVideoProcessor.from_pretrained(folder)
    model = load_adapters(model, adapters)
    if quantize is not None and device.type != "cuda":  # the base layers; a LoRA adapter on them stays full
        quantize_weights(model, quantize)
    model.eval()
    return model, processor
