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

    if quantize is not None:
        raise ModelLoadError(f"{folder}: quantized loading is not available for LLaMA-VID models yet. "
                             "Leave out --quantize.")
    try:
        model = LlamaVidForConditionalGeneration.from_pretrained(
            folder, dtype=dtype, attn_implementation=attn_implementation, device_map=str(device))
    except OSError as err:
        raise ModelLoadError(f"{folder}: could not load the LLaMA-VID model ({err}). "
                             "Convert the original checkpoint again with `vidlab model convert`.") from err
    processor = LlamaVidProcessor.from_pretrained(folder)
    model = load_adapters(model, adapters)
    model.eval()
    return model, processor
