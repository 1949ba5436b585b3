"""`vidlab model info` for a TinyLLaVA-Video folder: parameters per part, dtype, tokens, processor settings."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from vidlab.models.convert.weights import find_weight_files

_PARTS = {"model.vision_model.": "vision", "model.projector.": "projector", "model.language_model.": "llm"}


def tinyllava_video_info(folder: Path) -> dict:
    config = json.loads((folder / "config.json").read_text())
    parts: Counter = Counter({part: 0 for part in _PARTS.values()})
    dtypes: Counter = Counter()
    for file in find_weight_files(folder):
        for key, info in file.infos().items():
            parts[next((part for prefix, part in _PARTS.items() if key.startswith(prefix)), "llm")] += info.numel
            dtypes[info.dtype] += info.numel
    processor_file = folder / "vidlab_processor.json"
    processor = json.loads(processor_file.read_text()) if processor_file.is_file() else {}
    text, vision = config.get("text_config", {}), config.get("vision_config", {})
    return {
        "path": str(folder),
        "format": "vidlab",
        "family": "TinyLLaVA-Video",
        "layout": f"TinyLLaVA-Video, {config.get('resampler')} resampler, {text.get('model_type')} LLM",
        "dtype": dtypes.most_common(1)[0][0] if dtypes else "unknown",
        "parameters": {"total": sum(parts.values()), **parts},
        "tokens": {"image_token_id": config.get("image_token_id"), "visual_tokens": config.get("num_queries")},
        "processor": {"template": config.get("template"), "image_size": vision.get("image_size"),
                      "image_aspect_ratio": processor.get("image_aspect_ratio"), "group": config.get("group")},
    }
