"""Logits only where they are used: the LM head applied to chosen positions of the last hidden states.

At VideoLLaMA3's vocabulary (151,936) the logits of a 16K-token video prompt are 16,384 x 151,936
values: 10 GB in fp32, where supervised training needs the few dozen answer positions and
generation the last one. transformers' `logits_to_keep` does this for text models, but the native
VideoLlama3ForConditionalGeneration.forward (transformers 5.x) has no such argument and applies
its LM head to every position, in training and in generation's prefill alike. A forward pre-hook
on the LM head selects the positions instead (hand-written because of that gap); it goes through
whatever wraps the model (peft, DDP, FSDP, vidlab's compressor class), which still runs its forward.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch


def output_head(model) -> torch.nn.Module:
    """The LM head of a model, under DDP/FSDP (`.module`) and peft wrappers alike."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    head = model.get_output_embeddings()
    if head is None:
        raise TypeError(f"{type(model).__name__} has no output embeddings (LM head)")
    return head


@contextmanager
def logits_at(model, positions: torch.Tensor | int):
    """Inside, `model(...)` returns logits only at `positions` of the sequence (dim 1), for every row.

    positions: a 1-D tensor of indices (sorted, as transformers' `logits_to_keep`), or an int n for the last n.
    """
    def select(_module, args):
        hidden = args[0]
        if hidden.dim() < 3:
            return None
        if isinstance(positions, int):
            return (hidden[:, -positions:], *args[1:])
        return (hidden.index_select(1, positions.to(hidden.device)), *args[1:])

    handle = output_head(model).register_forward_pre_hook(select)
    try:
        yield
    finally:
        handle.remove()


def label_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions, targets): the positions t whose next token t+1 has a label in any row, and those labels.

    targets has shape (rows, len(positions)); -100 where a row has no label at a position another row has.
    """
    following = labels[:, 1:]
    positions = (following != -100).any(dim=0).nonzero().squeeze(1)
    return positions, following[:, positions]


LOSS_CHUNK = 1024  # label positions whose fp32 log-softmax exists at once


def _summed_cross_entropy(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(scores.float(), targets, ignore_index=-100, reduction="sum")


def chunked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, chunk: int = LOSS_CHUNK) -> torch.Tensor:
    """Cross-entropy summed over `targets` (-100 ignored), upcast to fp32 one chunk of `chunk` rows at a time.

    Each chunk's fp32 log-softmax is recomputed in backward (torch.utils.checkpoint) rather than kept,
    so a long answer holds one chunk in fp32 at a time, as torchtune's CEWithChunkedOutputLoss does.
    """
    flat = logits.reshape(-1, logits.size(-1))
    wanted = targets.reshape(-1).to(flat.device)
    if flat.size(0) <= chunk:
        return _summed_cross_entropy(flat, wanted)
    from torch.utils.checkpoint import checkpoint

    total = flat.new_zeros((), dtype=torch.float32)
    for part, target in zip(flat.split(chunk), wanted.split(chunk), strict=True):
        total = total + checkpoint(_summed_cross_entropy, part, target, use_reentrant=False)
    return total
