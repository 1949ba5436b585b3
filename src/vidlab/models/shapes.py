"""The released VideoLLaMA3 sizes, for models built offline with random weights (`vidlab model tiny --shape`).

A `--shape 2b` or `--shape 7b` model has the released checkpoint's widths, heads, key/value heads,
intermediate sizes, vocabulary, rope settings, vision patch and merge sizes and processor budgets;
only its numbers of LLM and vision layers are cut. It exists to measure memory and speed at the real
widths (the vocabulary alone is 151,936 rows), not to answer anything: its weights are random.
"""

from __future__ import annotations

from dataclasses import replace

from vidlab.errors import VidlabError
from vidlab.models.tiny import TinySpec

# config.json of DAMO-NLP-SG/VideoLLaMA3-2B / -7B: Qwen2.5-1.5B / -7B LLMs, the SigLIP-NaViT encoder (27 layers).
TEXT_2B = {"text_hidden": 1536, "text_intermediate": 8960, "text_layers": 28, "text_heads": 12, "text_kv_heads": 2,
           "model_vocab": 151936, "tie_word_embeddings": True}
TEXT_7B = {"text_hidden": 3584, "text_intermediate": 18944, "text_layers": 28, "text_heads": 28, "text_kv_heads": 4,
           "model_vocab": 152064, "tie_word_embeddings": False}
VISION = {"vision_hidden": 1152, "vision_intermediate": 4304, "vision_layers": 27, "vision_heads": 16}
# Qwen2.5's rope and norm settings and the released processors' budgets (16,384 visual tokens for a video with
# at least 16 a frame, images between 16 and 16,384 tokens at merge size 1).
RELEASED = {"rope_theta": 1_000_000.0, "rms_norm_eps": 1e-6, "max_positions": 32768,
            "video_tokens_per_video": 16384, "video_min_tokens_per_frame": 16,
            "image_max_tokens": 16384, "image_min_tokens": 16, "dtype": "bfloat16"}
SHAPES = {
    "tiny": TinySpec(),
    "2b": TinySpec(**TEXT_2B, **VISION, **RELEASED),
    "7b": TinySpec(**TEXT_7B, **VISION, **RELEASED),
}
REAL_SHAPE_LAYERS = 2  # LLM and vision layers of a real-size shape unless --layers says otherwise


class ShapeError(VidlabError):
    """A model shape or layer count that does not exist."""


def shape_spec(shape: str = "tiny", layers: int | None = None) -> TinySpec:
    """The sizes of a shape (tiny, 2b, 7b); `layers` sets the number of LLM and of vision layers.

    The real-size shapes keep REAL_SHAPE_LAYERS of each unless told; tiny keeps its own.
    """
    if shape not in SHAPES:
        raise ShapeError(f"unknown model shape {shape!r}. Use {', '.join(SHAPES)}.")
    if layers is not None and layers < 1:
        raise ShapeError(f"--layers {layers}: a model needs at least 1 layer.")
    spec = SHAPES[shape]
    if layers is None and shape != "tiny":
        layers = REAL_SHAPE_LAYERS
    return spec if layers is None else replace(spec, text_layers=layers, vision_layers=layers)
