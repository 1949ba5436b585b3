"""TinyLLaVA-Video's connectors: Perceiver resamplers from a video's SigLIP patches to a fixed number of LLM tokens.

Written from the paper and the original's arithmetic (its groupresampler.py / naiveresampler.py), so
that a converted checkpoint computes what the original computes: latents cross-attend to the
(normalised) patches concatenated with themselves, a feed-forward with a residual, a final LayerNorm.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


def sinusoid_positions(length: int, dim: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(1, length, dim) sine / cosine position code, rounded through float16 as the original stores it."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    rate = torch.exp(torch.arange(0, dim, 2, device=device).float() * -(math.log(10000.0) / dim))
    code = torch.zeros(length, dim, device=device, dtype=torch.float16)
    code[:, 0::2] = torch.sin(position * rate)
    code[:, 1::2] = torch.cos(position * rate)
    return code.unsqueeze(0).to(dtype)


class PerceiverAttention(nn.Module):
    """Latents attend to [media; latents] (Flamingo's Perceiver attention); multi-head, no biases."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        media, latents = self.norm_media(media), self.norm_latents(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat([media, latents], dim=1)).chunk(2, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, -1)).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(head_dim)) v
        return self.to_out(out.transpose(1, 2).flatten(2))


def feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    # A Sequential, as in the original, so that its parameter names (0 norm, 1 up, 3 down) carry over.
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * mult, bias=False), nn.GELU(),
                         nn.Linear(dim * mult, dim, bias=False))


class PerceiverLayer(nn.Module):
    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.attention = PerceiverAttention(dim, heads, head_dim)
        self.feed_forward = feed_forward(dim)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        latents = self.attention(media, latents) + latents
        return self.feed_forward(latents) + latents


class Resampler(nn.Module):
    """(batch, patches, vision_hidden) -> (batch, num_queries, hidden).

    group: the patches (all frames, in order) are split into `group` consecutive runs (the first
    `patches % group` runs one longer), each read by the same num_queries / group latents, and the
    position code is added to the concatenated result. naive: the position code is added to the
    projected patches, and num_queries latents read them all.
    """

    def __init__(self, kind: str, vision_hidden: int, hidden: int, num_queries: int, group: int, layers: int,
                 heads: int = 8, head_dim: int = 64):
        super().__init__()
        self.kind = kind
        self.group = group
        latents = num_queries // group if kind == "group" else num_queries
        self.latents = nn.Parameter(torch.randn(latents, hidden))
        self.linear = nn.Linear(vision_hidden, hidden)
        self.layers = nn.ModuleList(PerceiverLayer(hidden, heads, head_dim) for _ in range(layers))
        self.norm = nn.LayerNorm(hidden)

    def _read(self, media: torch.Tensor) -> torch.Tensor:
        latents = self.latents.unsqueeze(0).expand(media.shape[0], -1, -1)
        for layer in self.layers:
            latents = layer(media, latents)
        return self.norm(latents)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        media = self.linear(patches)
        if self.kind == "naive":
            media = media + sinusoid_positions(media.shape[1], media.shape[2], media.dtype, media.device)
            return self._read(media)
        length, runs = media.shape[1], self.group  # fewer patches than groups: some runs are empty, as in the original
        sizes = [length // runs + 1] * (length % runs) + [length // runs] * (runs - length % runs)
        out = torch.cat([self._read(run) for run in media.split(sizes, dim=1)], dim=1)
        return out + sinusoid_positions(out.shape[1], out.shape[2], out.dtype, out.device)
