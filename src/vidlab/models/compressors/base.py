"""What every video compressor shares: the call it answers and the frame layout of its input.

A compressor gets, per video, the projector's output for every merged patch (frame by frame, rows
then columns: the order `VideoLlama3VisionModel.pixel_unshuffle` gives) and returns the video's LLM
tokens in the order the prompt announces them (`vidlab.inputs.compressed` writes that prompt).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def as_frames(features: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    """(frames x rows x columns, width) -> (frames, rows, columns, width)."""
    frames, rows, columns = grid
    return features.reshape(frames, rows, columns, features.shape[-1])


def pool_frames(frames: torch.Tensor, side: int) -> torch.Tensor:
    """(frames, rows, columns, width) -> (frames, side x side, width): each frame average-pooled to side x side."""
    pooled = nn.functional.adaptive_avg_pool2d(frames.permute(0, 3, 1, 2), side)
    return pooled.flatten(2).transpose(1, 2)


def sinusoidal_code(positions: torch.Tensor, width: int) -> torch.Tensor:
    """The transformer's sine/cosine position code: (n,) positions -> (n, width)."""
    half = width // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / max(half, 1))
    angles = positions.float()[:, None] * frequencies[None]
    code = torch.cat([angles.sin(), angles.cos()], dim=-1)
    return nn.functional.pad(code, (0, width - code.shape[-1]))


def grid_code(rows: int, columns: int, width: int, device=None) -> torch.Tensor:
    """A code of each patch's row and column, (rows x columns, width): half the width for each.

    The vision encoder's positions are rotary (relative), so its features do not say where in the
    frame a patch is; attention that pools a frame's patches as a set needs this to tell left from right.
    """
    row = sinusoidal_code(torch.arange(rows, device=device), width // 2)
    column = sinusoidal_code(torch.arange(columns, device=device), width - width // 2)
    return torch.cat([row[:, None].expand(-1, columns, -1), column[None].expand(rows, -1, -1)], -1).reshape(-1, width)


class VideoCompressorModule(nn.Module):
    """Per video: features (frames x rows x columns, width) -> LLM tokens (n, width)."""

    needs_question = False

    def compress(self, frames: torch.Tensor, question: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, features: list[torch.Tensor], grids: list[tuple[int, int, int]],
                questions: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """`questions`: per video, the embedded tokens of the question it came with (llamavid only)."""
        if self.needs_question and (questions is None or len(questions) != len(features)):
            raise ValueError(
                f"{type(self).__name__} needs the question asked with each video: pass video_query_ids and "
                "video_query_lengths (vidlab.inputs.encode adds them)."
            )
        return [self.compress(as_frames(f, g), questions[i] if self.needs_question else None)
                for i, (f, g) in enumerate(zip(features, grids))]

    def init_weights(self, init) -> None:
        """Initialise what the generic Linear / LayerNorm init does not (`init`: transformers.initialization)."""
