"""llamavid: two kinds of token per frame, after LLaMA-VID (Li, Wang, Jia; ECCV 2024).

- the context token: the question's tokens (embedded by the LLM's own embedding table, read in
  context by one transformer layer) become queries that attend over the frame's features (keys
  carry a code of each patch's row and column); the mean over queries of softmax(Q K^T / sqrt(d)) V,
  plus a learned correction, is the token;
- the content tokens: the frame's features average-pooled to a k x k grid.

LLaMA-VID reads the question with a BERT Q-Former; here the LLM's embeddings and one small layer do
that job, so the compressor adds a few weight matrices of the LLM's width and no second tokenizer.
The values are the projector's features themselves, so before any training the context token is
an attention-weighted average of them: something the LLM already reads.
"""

from __future__ import annotations

import torch
from torch import nn

from vidlab.models.compressors.base import VideoCompressorModule, grid_code, pool_frames


class LlamaVidCompressor(VideoCompressorModule):
    needs_question = True

    def __init__(self, width: int, content_tokens: int, heads: int):
        super().__init__()
        if width % heads:
            raise ValueError(f"video_compressor.heads {heads} does not divide the LLM width {width}")
        self.heads = heads
        self.side = round(content_tokens**0.5)
        # A question with no words still gets a query: this learned one, always appended.
        self.default_query = nn.Parameter(torch.empty(1, width))
        self.text_layer = nn.TransformerEncoderLayer(
            width, heads, dim_feedforward=2 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        # Queries and keys read normalised inputs (the projector's features can be of any scale), keys with a
        # code of the patch's place in the frame added after the norm (grid_code).
        self.query = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width))
        self.key_norm = nn.LayerNorm(width)
        self.key = nn.Linear(width, width)
        self.correction = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, width))

    def context(self, frames: torch.Tensor, question: torch.Tensor) -> torch.Tensor:
        """(frames, rows, columns, width), (words, width) -> one context token per frame (frames, width)."""
        count, width = frames.shape[0], frames.shape[-1]
        words = torch.cat([question.to(frames.dtype), self.default_query.to(frames.dtype)])
        text = self.text_layer(words[None])[0]
        head = width // self.heads
        queries = self.query(text).view(-1, self.heads, head)  # (words, heads, head)
        patches = frames.reshape(count, -1, width)
        where = grid_code(frames.shape[1], frames.shape[2], width, frames.device).to(frames.dtype)
        keys = self.key(self.key_norm(patches) + where).view(count, -1, self.heads, head)  # frames, patches, heads
        values = patches.view(count, -1, self.heads, head)
        scores = torch.einsum("qhd,fphd->fhqp", queries, keys) / head**0.5
        attended = torch.einsum("fhqp,fphd->fhqd", scores.softmax(-1), values)  # (frames, heads, words, head)
        pooled = attended.mean(2).reshape(count, width)  # mean over the question's words
        return pooled + self.correction(pooled)

    def compress(self, frames: torch.Tensor, question: torch.Tensor | None) -> torch.Tensor:
        context = self.context(frames, question)
        content = pool_frames(frames, self.side)
        return torch.cat([context[:, None], content], dim=1).reshape(-1, frames.shape[-1])

    def init_weights(self, init) -> None:
        init.normal_(self.default_query, std=0.02)
        # The correction starts at zero: the context token starts as the attention-weighted feature.
        init.zeros_(self.correction[2].weight)
        init.zeros_(self.correction[2].bias)
