"""`vidlab model info` for a TinyLLaVA-Video folder: parameters per part, dtype, tokens, processor settings."""

from __future__ import annotations

from pathlib import Path

from vidlab.models.family import family_info


def tinyllava_video_info(folder: Path) -> dict:
    config, processor, common = family_info(folder, "TinyLLaVA-Video")
    text, vision = config.get("text_config", {}), config.get("vision_config", {})
    return {
        **common,
        "layout": f"TinyLLaVA-Video, {config.get('resampler')} resampler, {text.get('model_type')} LLM",
        "tokens": {"image_token_id": config.get("image_token_id"), "visual_tokens": config.get("num_queries")},
        "processor": {"template": config.get("template"), "image_size": vision.get("image_size"),
                      "image_aspect_ratio": processor.get("image_aspect_ratio"), "group": config.get("group")},
    }
