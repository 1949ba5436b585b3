"""`vidlab model info` for a LLaMA-VID folder: parameters per part, dtype, tokens, processor settings."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from vidlab.models.convert.weights import find_weight_files

_PARTS = {"model.vision_model.": "vision", "model.projector.": "projector", "model.language_model.": "llm"}


def llama_vid_info(folder: Path) -> dict:
    config = json.loads((folder / "config.json").read_text())
    parts: Counter = Counter({part: 0 for part in _PARTS.values()})
    dtypes: Counter = Counter()
    for file in find_weight_files(folder):
        for key, info in file.infos().items():
            parts[next((part for prefix, part in _PARTS.items() if key.startswith(prefix)), "llm")] += info.numel
            dtypes[info.dtype] += info.numel
    processor_file = folder / "vidlab_processor.json"
    processor = json.loads(processor_file.read_text()) if processor_file.is_file() else {}
    vision, compress = config.get("vision_config", {}), config.get("compress", "mean")
    return {
        "path": str(folder),
        "format": "vidlab",
        "family": "LLaMA-VID",
        "layout": f"LLaMA-VID, EVA-ViT-G + Q-Former ({config.get('num_query')} queries), content tokens: {compress}, "
                  "Llama LLM",
        "dtype": dtypes.most_common(1)[0][0] if dtypes else "unknown",
        "parameters": {"total": sum(parts.values()), **parts},
        "tokens": {"image_token_id": config.get("image_token_id"),
                   "visual_tokens_per_frame": processor.get("tokens_per_frame")},
        "processor": {"template": "vicuna_v1", "image_size": vision.get("image_size"),
                      "image_aspect_ratio": processor.get("image_aspect_ratio"),
                      "qformer_max_length": processor.get("qformer_max_length")},
    }
