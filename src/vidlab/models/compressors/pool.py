"""pool: each frame's features average-pooled to k x k tokens. No weights: the baseline every compressor must beat."""

from __future__ import annotations

import torch

from vidlab.models.compressors.base import VideoCompressorModule, pool_frames


class PoolCompressor(VideoCompressorModule):
    def __init__(self, side: int):
        super().__init__()
        self.side = side

    def compress(self, frames: torch.Tensor, question: torch.Tensor | None) -> torch.Tensor:
        return pool_frames(frames, self.side).reshape(-1, frames.shape[-1])
