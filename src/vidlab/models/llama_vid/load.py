"""`load_model` for a LLaMA-VID folder written by `vidlab model convert` (or `tiny`)."""

from __future__ import annotations

from pathlib import Path

import torch


def load_llama_vid(folder: str | Path, *, adapters: dict, dtype: torch.dtype, device: torch.device,
                   attn_implementation: str | None = None, quantize: str | None = None):
    """(model in eval mode on `device`, its LlamaVidProcessor); adapters as `vidlab.models.load.load_model`."""
    from vidlab.models.family import load_family
    from vidlab.models.llama_vid.model import LlamaVidForConditionalGeneration
    from vidlab.models.llama_vid.processor import LlamaVidProcessor

    return load_family("LLaMA-VID", LlamaVidForConditionalGeneration, LlamaVidProcessor, folder,
                       adapters=adapters, dtype=dtype, device=device, attn_implementation=attn_implementation,
                       quantize=quantize)
