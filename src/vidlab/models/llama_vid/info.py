"""`vidlab model info` for a LLaMA-VID folder: parameters per part, dtype, tokens, processor settings."""

from __future__ import annotations

from pathlib import Path

from vidlab.models.family import family_info


def llama_vid_info(folder: Path) -> dict:
    config, processor, common = family_info(folder, "LLaMA-VID")
    vision, compress = config.get("vision_config", {}), config.get("compress", "mean")
    return {
        **common,
        "layout": f"LLaMA-VID, EVA-ViT-G + Q-Former ({config.get('num_query')} queries), content tokens: {compress}, "
                  "Llama LLM",
        "tokens": {"image_token_id": config.get("image_token_id"),
                   "visual_tokens_per_frame": processor.get("tokens_per_frame")},
        "processor": {"template": "vicuna_v1", "image_size": vision.get("image_size"),
                      "image_aspect_ratio": processor.get("image_aspect_ratio"),
                      "qformer_max_length": processor.get("qformer_max_length")},
    }
