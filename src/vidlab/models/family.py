"""What the seed-system families (TinyLLaVA-Video, LLaMA-VID) load and report the same way: a folder written by
`vidlab model convert` (or `model tiny`) with the family's model and processor classes."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import torch

from vidlab.errors import ModelLoadError

_PARTS = {"model.vision_model.": "vision", "model.projector.": "projector", "model.language_model.": "llm"}


def load_family(family: str, model_class, processor_class, folder: str | Path, *, adapters: dict, dtype: torch.dtype,
                device: torch.device, attn_implementation: str | None = None, quantize: str | None = None):
    """(model in eval mode on `device`, its processor); adapters as `vidlab.models.load.load_model`."""
    from vidlab.models.adapters import load_adapters
    from vidlab.models.quantize import quantize_weights, quantized_placement

    try:
        dtype, placement = quantized_placement(quantize, dtype, device)
        model = model_class.from_pretrained(folder, dtype=dtype, attn_implementation=attn_implementation,
                                            **placement)
    except OSError as err:
        raise ModelLoadError(f"{folder}: could not load the {family} model ({err}). "
                             "Convert the original checkpoint again with `vidlab model convert`.") from err
    processor = processor_class.from_pretrained(folder)
    model = load_adapters(model, adapters)
    if quantize is not None and device.type != "cuda":  # the base layers; a LoRA adapter on them stays full
        quantize_weights(model, quantize)
    model.eval()
    return model, processor


def family_info(folder: Path, family: str) -> tuple[dict, dict, dict]:
    """(config.json, vidlab_processor.json, the info fields every family reports: path, format, family, dtype,
    parameters per part)."""
    from vidlab.models.convert.weights import find_weight_files

    config = json.loads((folder / "config.json").read_text())
    parts: Counter = Counter({part: 0 for part in _PARTS.values()})
    dtypes: Counter = Counter()
    for file in find_weight_files(folder):
        for key, info in file.infos().items():
            parts[next((part for prefix, part in _PARTS.items() if key.startswith(prefix)), "llm")] += info.numel
            dtypes[info.dtype] += info.numel
    processor_file = folder / "vidlab_processor.json"
    processor = json.loads(processor_file.read_text()) if processor_file.is_file() else {}
    common = {"path": str(folder), "format": "vidlab", "family": family,
              "dtype": dtypes.most_common(1)[0][0] if dtypes else "unknown",
              "parameters": {"total": sum(parts.values()), **parts}}
    return config, processor, common
