"""The loop of methods grpo and dpo: prompts in SFT's data order, one group or pair at a time, one optimiser step.

It shares SFT's set-up and bookkeeping (loop.py): the accelerator, optimiser groups and schedule,
checkpoints that resume exactly (RNG included, so a resumed run samples the same answers),
log.jsonl and TensorBoard, the final adapter or model. What differs is the step: each prompt of the
step is encoded once and rolled out (`rollout`: GRPO's sampled answers, rewards and reference
log-probabilities; DPO's reference), then `update` does each one's forward and backward, scaled so
that the step's gradient is the mean over its prompts on every process; GRPO repeats the updates
`num_iterations` times (an optimiser step each) on the same rollouts. GRPO also writes each
step's prompts, answers and rewards to samples/step-NNNNNN.jsonl.
"""

from __future__ import annotations

import copy
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from vidlab.errors import MediaError, SampleError, VidlabError
from vidlab.files import write_atomic
from vidlab.training.checkpoint import load_checkpoint, register_trainable_weights, save_checkpoint
from vidlab.training.config import TrainConfig
from vidlab.training.data import SkipNote
from vidlab.training.loop import (
    TrainResult,
    _build_optimizer,
    _data_root,
    _finish_run,
    _print_start,
    _progress_bar,
    _save_final,
    _start_run,
    build_scheduler,
)
from vidlab.training.model import load_for_training
from vidlab.training.rl_records import load_prompt_records
from vidlab.training.run_folder import CONFIG_FILE, TENSORBOARD_DIR, RunLog
from vidlab.training.steps import EpochBatches

SAMPLES_DIR = "samples"
MAX_REPLACEMENTS = 8  # a prompt that cannot be encoded is replaced by the next records, as SFT's TrainDataset does


def _step_impl(config: TrainConfig, processor):
    settings = config.data.media_settings()
    if config.method == "grpo":
        from vidlab.training.grpo import GrpoStep

        return GrpoStep(config.grpo, processor, settings, config.data.model_max_length)
    from vidlab.training.dpo import DpoStep

    return DpoStep(config.dpo, processor, settings, config.data.model_max_length)


def _needs_reference(config: TrainConfig) -> bool:
    return config.method == "dpo" or config.grpo.beta != 0


def _encode_or_replace(impl, records, index: int, model, device, failed: set[int], strict: bool):
    """The prompt of record `index`, or of the next records when it cannot be encoded; and the skip notes."""
    notes = []
    for k in range(min(MAX_REPLACEMENTS + 1, len(records))):
        position = (index + k) % len(records)
        if position in failed:
            continue
        record = records[position]
        try:
            return record, impl.encode(record, model, device), notes
        except (SampleError, MediaError) as err:
            if strict:
                raise
            failed.add(position)
            notes.append(SkipNote.of(record.position, record.id, err))
    raise VidlabError(f"records {index} to {index + MAX_REPLACEMENTS} all failed to encode; the data seems broken "
                      "(see skipped.jsonl).")


def _reference_copy(model, config: TrainConfig):
    """A frozen copy of the starting model where switching the adapters off would not give it back: full
    fine-tuning, or LoRA that continues `model.adapter` (the reference is the adapted model, merged).
    None otherwise: under a new LoRA adapter the reference is the model with its adapters off."""
    if config.weights != "full" and config.model.adapter is None:
        return None
    reference = copy.deepcopy(model)
    if hasattr(reference, "merge_and_unload"):
        reference = reference.merge_and_unload()
    return reference.eval().requires_grad_(False)


def _mean_over_processes(accelerator, row: dict) -> dict:
    if accelerator.num_processes == 1:
        return row
    keys = sorted(k for k, v in row.items() if isinstance(v, (int, float)))
    values = accelerator.reduce(torch.tensor([float(row[k]) for k in keys], device=accelerator.device), "mean")
    return {**row, **dict(zip(keys, values.tolist()))}


def run_rl(config: TrainConfig, resume: bool | str | None = None) -> TrainResult:
    """Run (or resume) a grpo or dpo run as the config says (the same contract as `run_training`)."""
    from accelerate.utils import gather_object

    run_dir, accelerator, mixed_precision, config_yaml, checkpoint = _start_run(config, resume)
    is_main = accelerator.is_main_process

    records, load_skips = load_prompt_records([Path(f) for f in config.data.train], _data_root(config),
                                              config.method, config.data.strict)
    if not records:
        raise VidlabError(f"{', '.join(config.data.train)}: no usable {config.method} records (see skipped.jsonl in "
                          f"{run_dir}; docs/train.md says what a {config.method} record holds).")
    world, rank = accelerator.num_processes, accelerator.process_index
    batches_per_epoch = EpochBatches.count(len(records), config.train.batch_size, world)
    if batches_per_epoch == 0:
        raise VidlabError(f"{len(records)} records do not fill one batch of {config.train.batch_size} x {world} "
                          "process(es). Lower train.batch_size or add data.")
    steps_per_epoch = math.ceil(batches_per_epoch / config.train.grad_accum)
    total_steps = config.train.max_steps or steps_per_epoch * config.train.epochs
    # A step is one batch of rollouts and grpo.num_iterations optimiser updates on it; the schedule counts updates.
    updates = total_steps * (config.grpo.num_iterations if config.method == "grpo" else 1)
    warmup = int(round(config.optim.warmup_ratio * updates))

    model, processor = load_for_training(config.as_weights_config(), accelerator.device, mixed_precision)
    reference = _reference_copy(model, config) if _needs_reference(config) else None
    optimizer = _build_optimizer(model, config)
    base_rates = [group["lr"] for group in optimizer.param_groups]
    scheduler = build_scheduler(optimizer, config.optim.scheduler, updates, warmup)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    register_trainable_weights(accelerator)

    progress = {"step": 0, "samples": 0}
    if checkpoint is not None:
        progress = load_checkpoint(checkpoint, accelerator, config_yaml)
        if is_main:
            write_atomic(run_dir / CONFIG_FILE, config_yaml)
    start_step = progress["step"]
    if accelerator.log_with:
        accelerator.init_trackers(TENSORBOARD_DIR, init_kwargs={"tensorboard": {"purge_step": start_step or None}})
    log = RunLog(run_dir, accelerator, start_step)
    log.add_skips(load_skips)
    if is_main:
        _print_start(accelerator, model, config, len(records), total_steps, checkpoint)

    impl = _step_impl(config, processor)
    trainable = [p for p in model.parameters() if p.requires_grad]
    failed: set[int] = set()
    model.train()
    step, samples = start_step, progress["samples"]
    started_at, samples_at_start = time.monotonic(), samples
    bar = _progress_bar(total_steps, start_step, config.output.progress and is_main)
    try:
        while step < total_steps:
            epoch, group_in_epoch = divmod(step, steps_per_epoch)
            batches = iter(EpochBatches(len(records), config.train.batch_size, rank, world, config.train.seed,
                                        epoch, start=group_in_epoch * config.train.grad_accum))
            for _ in range(group_in_epoch, steps_per_epoch):
                done = (step % steps_per_epoch) * config.train.grad_accum
                micro = min(config.train.grad_accum, batches_per_epoch - done)
                indices = [i for _ in range(micro) for i in next(batches)]
                results, notes = [], []
                for index in indices:  # the rollouts: sampled answers, rewards, reference (no gradient)
                    record, prompt, skipped = _encode_or_replace(impl, records, index, model, accelerator.device,
                                                                 failed, config.data.strict)
                    notes += skipped
                    with accelerator.autocast():
                        results.append(impl.rollout(model, reference, record, prompt))
                for _ in range(impl.iterations):  # num_iterations optimiser updates on the same rollouts
                    for j, result in enumerate(results):
                        sync = j == len(results) - 1
                        context = accelerator.no_sync(model) if not sync and world > 1 else nullcontext()
                        with context, accelerator.autocast():
                            impl.update(model, result, 1 / len(results), accelerator.backward)
                    if config.optim.max_grad_norm is not None:
                        accelerator.clip_grad_norm_(trainable, config.optim.max_grad_norm)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    scheduler.step()
                step += 1
                samples += len(indices) * world
                if world > 1:
                    notes = [n for part in gather_object([notes]) for n in part]
                if log.add_skips(notes) and is_main:
                    bar.write(f"skipped sample(s); see {run_dir / 'skipped.jsonl'}")
                row = _mean_over_processes(accelerator, impl.summary(results))
                rate = (samples - samples_at_start) / max(time.monotonic() - started_at, 1e-9)
                bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k in ("loss", "reward", "rewards.accuracy",
                                                                                  "rewards/accuracies")})
                bar.update(1)
                if step % config.output.log_steps == 0 or step == total_steps:
                    log.write({"step": step, "epoch": round(step / steps_per_epoch, 4), **row, "samples": samples,
                               "prompts_per_s": round(rate, 3), "skipped": len(log.skipped),
                               **{f"lr.{g.get('name', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)}})
                _write_samples(accelerator, run_dir, step, impl, results)
                if step % config.output.save_steps == 0 or step == total_steps:
                    save_checkpoint(run_dir, step, accelerator, model, config_yaml, {"step": step, "samples": samples},
                                    config.output.save_total_limit)
                if step >= total_steps:
                    break
        _save_final(run_dir, accelerator, model, processor)
    finally:
        bar.close()
        log.close()
    return _finish_run(accelerator, model, run_dir, log, step, samples, base_rates, method=config.method)


def _write_samples(accelerator, run_dir: Path, step: int, impl, results) -> None:
    """samples/step-NNNNNN.jsonl: every process's prompts of the step with their answers and rewards."""
    if not getattr(impl, "writes_samples", False):
        return
    rows = [r.sample_row() for r in results]
    if accelerator.num_processes > 1:
        from accelerate.utils import gather_object

        rows = [row for part in gather_object([rows]) for row in part]
    if accelerator.is_main_process:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        write_atomic(run_dir / SAMPLES_DIR / f"step-{step:06d}.jsonl", text)
