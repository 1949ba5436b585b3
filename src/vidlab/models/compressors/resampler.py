"""group_resampler: learnable latents per group of frames, after TinyLLaVA-Video's group resampler.

The video's frames are cut into consecutive groups (VideoCompressor.group_bounds, the same cut the
prompt announces); the same learnable latents cross-attend to each group's features through a few
Perceiver layers (each latent attends to the group's features and to the latents), so a video
costs groups x latents tokens whatever its length. A sinusoidal code of each frame's place in its
group, and of each patch's row and column, is added to the features, so the latents can tell early
from late within a group and left from right within a frame.
"""

from __future__ import annotations

import torch
from torch import nn

from vidlab.models.compressors.base import VideoCompressorModule, grid_code, sinusoidal_code
from vidlab.settings import group_bounds


class PerceiverLayer(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.norm_latents = nn.LayerNorm(width)
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_ffn = nn.LayerNorm(width)
        self.ffn = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, width))

    def forward(self, latents: torch.Tensor, inputs: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        query = self.norm_latents(latents)
        keys = torch.cat([inputs, query], dim=1)
        mask = torch.cat([padding, torch.zeros(query.shape[:2], dtype=torch.bool, device=padding.device)], dim=1)
        latents = latents + self.attention(query, keys, keys, key_padding_mask=mask, need_weights=False)[0]
        return latents + self.ffn(self.norm_ffn(latents))


class GroupResamplerCompressor(VideoCompressorModule):
    def __init__(self, width: int, groups: int, latents: int, layers: int, heads: int, position_code: bool):
        super().__init__()
        if width % heads:
            raise ValueError(f"video_compressor.heads {heads} does not divide the LLM width {width}")
        self.groups = groups
        self.position_code = position_code
        self.latents = nn.Parameter(torch.empty(latents, width))
        self.norm_inputs = nn.LayerNorm(width)
        self.layers = nn.ModuleList(PerceiverLayer(width, heads) for _ in range(layers))
        self.norm_out = nn.LayerNorm(width)
        self.out = nn.Linear(width, width)

    def compress(self, frames: torch.Tensor, question: torch.Tensor | None) -> torch.Tensor:
        count, width = frames.shape[0], frames.shape[-1]
        bounds = group_bounds(count, self.groups)
        patches = self.norm_inputs(frames.reshape(count, -1, width))  # (frames, patches, width)
        if self.position_code:
            place = torch.cat([torch.arange(stop - start, device=frames.device) for start, stop in bounds])
            when = sinusoidal_code(place, width // 2)[:, None].expand(-1, patches.shape[1], -1)
            where = grid_code(frames.shape[1], frames.shape[2], width - width // 2, frames.device)
            code = torch.cat([when, where[None].expand(count, -1, -1)], dim=-1)
            patches = patches + code.to(patches.dtype)
        groups = [patches[start:stop].reshape(-1, width) for start, stop in bounds]
        inputs = nn.utils.rnn.pad_sequence(groups, batch_first=True)
        lengths = torch.tensor([len(g) for g in groups], device=frames.device)
        padding = torch.arange(inputs.shape[1], device=frames.device)[None] >= lengths[:, None]
        latents = self.latents.to(inputs.dtype)[None].expand(len(groups), -1, -1)
        for layer in self.layers:
            latents = layer(latents, inputs, padding)
        return self.out(self.norm_out(latents)).reshape(-1, width)

    def init_weights(self, init) -> None:
        init.normal_(self.latents, std=0.02)
