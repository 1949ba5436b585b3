"""VideoCompressor setting -> its module (None for kind none)."""

from __future__ import annotations

from vidlab.models.compressors.base import VideoCompressorModule
from vidlab.models.compressors.llamavid import LlamaVidCompressor
from vidlab.models.compressors.pool import PoolCompressor
from vidlab.models.compressors.resampler import GroupResamplerCompressor
from vidlab.settings import VideoCompressor


def build_compressor(spec: VideoCompressor, width: int) -> VideoCompressorModule | None:
    """The module for `spec`, working at the LLM's width (it sits after the projector)."""
    if spec.kind == "llamavid":
        return LlamaVidCompressor(width, spec.content_tokens, spec.heads)
    if spec.kind == "group_resampler":
        return GroupResamplerCompressor(width, spec.groups, spec.latents, spec.layers, spec.heads,
                                        spec.position_code == "sinusoidal")
    if spec.kind == "pool":
        return PoolCompressor(spec.pool_size)
    return None
