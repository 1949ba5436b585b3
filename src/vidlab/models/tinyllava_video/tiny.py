"""A tiny TinyLLaVA-Video built offline: vidlab's classes, the real template, small sizes, random weights.

The tokenizer is the tiny VideoLLaMA3's (a byte-level BPE in Qwen2.5's format, trained on the spot)
with `<|endoftext|>` as end and padding, as Qwen2.5's base tokenizer has them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import GenerationConfig, SiglipVisionConfig
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from vidlab.errors import VidlabError
from vidlab.folders import staged_folder
from vidlab.models.tinyllava_video.config import TinyLlavaVideoConfig
from vidlab.models.tinyllava_video.model import TinyLlavaVideoForConditionalGeneration
from vidlab.models.tinyllava_video.processor import TinyLlavaVideoProcessor
from vidlab.models.tinyllava_video.template import END

IMAGE_SIZE, PATCH = 56, 14  # 16 patches a frame


def build_tiny_tinyllava_video(out_dir: str | Path, seed: int = 0, resampler: str = "group",
                               overwrite: bool = False) -> Path:
    """Write a tiny random TinyLLaVA-Video (about 0.2 M parameters, 32 visual tokens) to `out_dir`.

    The same seed gives the same weights. The folder appears complete or not at all.
    """
    from vidlab.models.tiny import train_tokenizer

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise VidlabError(f"{out_dir}: folder exists and is not empty. Choose a new folder or pass --overwrite.")
    tokenizer = train_tokenizer(1024)
    tokenizer.eos_token = tokenizer.pad_token = END
    processor = TinyLlavaVideoProcessor(tokenizer, SiglipImageProcessorPil(size={"height": IMAGE_SIZE,
                                                                                 "width": IMAGE_SIZE}),
                                        num_queries=32, patch_size=PATCH)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=IMAGE_SIZE, patch_size=PATCH)
    text = {"model_type": "qwen2", "vocab_size": len(processor.tokenizer), "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
            "max_position_embeddings": 4096, "tie_word_embeddings": True}
    config = TinyLlavaVideoConfig(vision_config=vision, text_config=text, resampler=resampler, num_queries=32,
                                  group=4, num_resampler_layers=1, resampler_heads=2, resampler_head_dim=16,
                                  image_token_id=processor.image_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TinyLlavaVideoForConditionalGeneration(config)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, do_sample=False)
    with staged_folder(out_dir, replace=overwrite) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        (staging / "vidlab_tiny.json").write_text(json.dumps({"seed": seed, "family": "tinyllava_video",
                                                               "resampler": resampler}, indent=2) + "\n")
    return out_dir
