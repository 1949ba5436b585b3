"""One optimiser step: data order, token-weighted loss over micro-batches and processes, clipping.

The loss of a step is the mean over every label token of the step, on every process: the summed
loss of each micro-batch is back-propagated and the gradients are divided by the step's token count
before clipping, so long and short samples weigh what their tokens weigh, and a two-process run
computes what one process computes on the same global batch.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from vidlab.models.logits import LOSS_CHUNK, chunked_cross_entropy, label_positions, logits_at
from vidlab.training.data import raise_if_fatal


class EpochBatches(torch.utils.data.Sampler):
    """This process's batches of one epoch: a seeded permutation cut into global batches.

    Global batch b holds samples perm[b*G : (b+1)*G] with G = batch_size * processes; process r takes
    its r-th slice. The tail that does not fill a global batch is dropped, so every process runs
    the same number of steps. `start` skips batches already trained on (resume). Data order is a pure
    function of (seed, epoch, step), so a resumed run reads the same batches.
    """

    def __init__(self, size: int, batch_size: int, rank: int, world: int, seed: int, epoch: int, start: int = 0):
        self.size, self.batch_size, self.rank, self.world = size, batch_size, rank, world
        self.seed, self.epoch, self.start = seed, epoch, start

    @staticmethod
    def count(size: int, batch_size: int, world: int) -> int:
        return size // (batch_size * world)

    def __len__(self) -> int:
        return max(self.count(self.size, self.batch_size, self.world) - self.start, 0)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        step = self.batch_size * self.world
        for batch in range(self.start, self.count(self.size, self.batch_size, self.world)):
            begin = batch * step + self.rank * self.batch_size
            yield order[begin : begin + self.batch_size]


def summed_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Cross-entropy summed over the label tokens (token t predicts token t+1), and their count, from the
    logits of every position (the reference `label_token_loss` is held against)."""
    targets = labels[:, 1:].reshape(-1)
    scores = logits[:, :-1].reshape(-1, logits.size(-1)).float()
    loss = torch.nn.functional.cross_entropy(scores, targets.to(scores.device), ignore_index=-100, reduction="sum")
    return loss, int((targets != -100).sum())


def label_token_loss(model, inputs: dict, labels: torch.Tensor, chunk: int = LOSS_CHUNK) -> tuple[torch.Tensor, int]:
    """`model(**inputs)`'s cross-entropy summed over the label tokens, and their count: the LM head runs only at
    the positions whose next token has a label, and the fp32 loss one chunk of `chunk` positions at a time.

    Equal to `summed_token_loss(model(**inputs).logits, labels)` without the logits of every position (at
    VideoLLaMA3's vocabulary, 2.4 GB in fp32 per thousand prompt tokens).
    """
    positions, targets = label_positions(labels)
    with logits_at(model, positions):
        logits = model(**inputs).logits
    return chunked_cross_entropy(logits, targets, chunk), int((targets != -100).sum())


def move_batch(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def accumulate(accelerator, model, batches, group: int):
    """Forward and backward `group` micro-batches; gradients sync across processes on the last one.

    Returns (summed loss, label tokens, skip notes, samples) of this process's micro-batches.
    """
    from accelerate.utils import DistributedType

    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    loss_sum = torch.zeros((), device=accelerator.device)
    tokens, count, notes = 0, 0, []
    for index in range(group):
        batch = raise_if_fatal(next(batches))
        notes.extend(batch["skipped"])
        count += batch["num_samples"]
        inputs = move_batch(batch["inputs"], accelerator.device)
        if "video_features" in inputs:  # data.feature_cache: embeddings read from disk instead of pixels
            from vidlab.training.feature_cache import with_cached_features

            inputs = with_cached_features(inputs)
        labels = inputs.pop("labels")
        sync = index == group - 1
        context = accelerator.no_sync(model) if not sync and accelerator.num_processes > 1 else nullcontext()
        with context, accelerator.autocast():
            loss, n = label_token_loss(model, inputs, labels)
            # DeepSpeed owns the gradients (they are not reachable to rescale): give it a per-token mean;
            # it averages micro-batches itself.
            accelerator.backward(loss / max(n, 1) if deepspeed else loss)
        loss_sum += loss.detach()
        tokens += n
    return loss_sum, tokens, notes, count


def finish_step(accelerator, optimizer, trainable, loss_sum, tokens: int, max_grad_norm: float | None):
    """Scale the summed gradients to a per-token mean over all processes, clip, step.

    Returns (the step's mean loss, its label tokens over all processes).
    """
    totals = torch.stack([loss_sum.float(), torch.tensor(float(tokens), device=loss_sum.device)])
    if accelerator.num_processes > 1:
        totals = accelerator.reduce(totals, reduction="sum")
    total_loss, total_tokens = totals.tolist()
    # DDP averaged the gradients over processes; multiply back to a sum, then divide by the tokens.
    scale = accelerator.num_processes / max(total_tokens, 1.0)
    for param in trainable:
        if param.grad is not None:
            param.grad.mul_(scale)
    if max_grad_norm is not None:
        accelerator.clip_grad_norm_(trainable, max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total_loss / max(total_tokens, 1.0), total_tokens


def configure_deepspeed(accelerator, batch_size: int, grad_accum: int, max_grad_norm: float | None) -> None:
    """DeepSpeed accumulates and clips inside its engine: hand it vidlab's settings before prepare."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    plugin.deepspeed_config.update({
        "train_micro_batch_size_per_gpu": batch_size,
        "gradient_accumulation_steps": grad_accum,
        "gradient_clipping": max_grad_norm or 0.0,
    })
