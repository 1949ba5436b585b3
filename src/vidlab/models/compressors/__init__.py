"""Video compressors between VideoLLaMA3's projector and its LLM: llamavid, group_resampler, pool.

Importing this package registers the compressed model type (`vidlab_video_llama_3`) with
transformers' Auto classes. The setting itself is `vidlab.settings.VideoCompressor`; the prompt
layout is `vidlab.inputs.compressed`.
"""

from vidlab.models.compressors.base import VideoCompressorModule
from vidlab.models.compressors.build import build_compressor
from vidlab.models.compressors.llamavid import LlamaVidCompressor
from vidlab.models.compressors.model import (
    CompressedVideoLlama3Config,
    CompressedVideoLlama3ForConditionalGeneration,
    CompressedVideoLlama3Model,
    VideoFeatures,
)
from vidlab.models.compressors.pool import PoolCompressor
from vidlab.models.compressors.resampler import GroupResamplerCompressor

__all__ = [
    "CompressedVideoLlama3Config",
    "CompressedVideoLlama3ForConditionalGeneration",
    "CompressedVideoLlama3Model",
    "GroupResamplerCompressor",
    "LlamaVidCompressor",
    "PoolCompressor",
    "VideoCompressorModule",
    "VideoFeatures",
    "build_compressor",
]
