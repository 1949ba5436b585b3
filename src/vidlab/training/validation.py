"""Validation during training: the loss on data.val, and BLEU-4 / exact match of generated answers.

Both encode the validation records through `vidlab.inputs.encode` with the run's media settings,
as training does, so the loss and the generated answers see the same tokens.
"""

from __future__ import annotations

from pathlib import Path

import torch

from vidlab.training.config import TrainConfig
from vidlab.training.data import Collator, TrainDataset, TrainRecord, raise_if_fatal
from vidlab.training.steps import label_token_loss, move_batch


@torch.no_grad()
def validate(accelerator, model, processor, config: TrainConfig, records: list[TrainRecord], step: int) -> dict:
    """Validation loss (token-weighted mean over every record, on all processes), plus generation
    scores when output.eval_generate is on. Leaves the model in eval mode."""
    settings = config.data.media_settings()
    with accelerator.split_between_processes(records) as mine:
        mine = list(mine)
    dataset = TrainDataset(mine, processor, settings, config.data.model_max_length, config.data.strict) \
        if mine else None
    collate = Collator(processor.tokenizer.pad_token_id)
    model.eval()
    loss_sum = torch.zeros((), device=accelerator.device)
    tokens = 0
    for start in range(0, len(mine), config.train.batch_size):
        items = [dataset[i] for i in range(start, min(start + config.train.batch_size, len(mine)))]
        batch = raise_if_fatal(collate(items))
        inputs = move_batch(batch["inputs"], accelerator.device)
        labels = inputs.pop("labels")
        with accelerator.autocast():
            loss, n = label_token_loss(model, inputs, labels)
        loss_sum += loss.float()
        tokens += n
    totals = torch.stack([loss_sum, torch.tensor(float(tokens), device=loss_sum.device)])
    if accelerator.num_processes > 1:
        totals = accelerator.reduce(totals, reduction="sum")
    total_loss, total_tokens = totals.tolist()
    row = {"eval_loss": total_loss / max(total_tokens, 1.0), "eval_samples": len(records)}
    if config.output.eval_generate:
        row.update(_generation_scores(accelerator, model, processor, config, step))
    return row


def _generation_scores(accelerator, model, processor, config: TrainConfig, step: int) -> dict:
    """BLEU-4 and exact match of the model's answers to the validation records, through vidlab.evaluation."""
    from vidlab.evaluation.metrics import score_file
    from vidlab.evaluation.run import RunOptions, run_predictions
    from vidlab.settings import GenerationOptions

    unwrapped = accelerator.unwrap_model(model)
    options = RunOptions(
        batch_size=config.train.batch_size, settings=config.data.media_settings(),
        generation=GenerationOptions(max_new_tokens=config.output.eval_max_new_tokens), workers=0, progress=False,
    )
    data_root = Path(config.data.data_root).expanduser() if config.data.data_root else None
    scores = {}
    unwrapped.config.use_cache = True  # generation is far faster with the KV cache; training runs without
    try:
        for file in config.data.val:
            out = Path(config.output.dir).expanduser() / "eval" / f"step-{step:06d}" / Path(file).stem
            run_predictions((unwrapped, processor), file, out, data_root=data_root, options=options)
            if accelerator.is_main_process:
                metrics = score_file(out / "predictions.jsonl", ["bleu4", "exact_match"])
                suffix = "" if len(config.data.val) == 1 else f".{Path(file).stem}"
                scores.update({f"eval_{name}{suffix}": metrics[name] for name in ("bleu4", "exact_match")
                               if name in metrics})
    finally:
        unwrapped.config.use_cache = False
    return scores
