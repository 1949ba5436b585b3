"""`vidlab train`: the training loop, on one process or many under `accelerate launch`.

The loop is explicit (STYLE.md): setup in dependency order, then steps of `grad_accum`
micro-batches (steps.py). What a resume needs is exact:
- data order is a pure function of (seed, epoch, step), so a resumed run reads the same batches;
- every process's RNG, the optimiser and the scheduler are restored from the checkpoint (accelerate);
- the DataLoader draws its worker seeds from its own generator, not from the global RNG that
  dropout uses.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vidlab.errors import VidlabError
from vidlab.files import write_atomic
from vidlab.folders import usual_permissions
from vidlab.training.checkpoint import (
    is_sharded,
    load_checkpoint,
    register_trainable_weights,
    save_checkpoint,
    trainable_state,
)
from vidlab.training.config import TrainConfig
from vidlab.training.data import Collator, SkipNote, TrainDataset, leave_out_checked, load_records
from vidlab.training.model import (
    load_for_training,
    parameter_groups,
    resolve_precision,
    save_adapter_compressor,
    summarize_parts,
)
from vidlab.training.run_folder import (
    CONFIG_FILE,
    RESULT_FILE,
    SKIPPED_FILE,
    TENSORBOARD_DIR,
    RunLog,
    prepare_run_dir,
    tensorboard_available,
)
from vidlab.training.steps import EpochBatches, accumulate, configure_deepspeed, finish_step
from vidlab.training.validation import validate


@dataclass
class TrainResult:
    """What a training run did.

    Attributes:
        run_dir: the output folder (the adapter or model, logs, checkpoints).
        steps: optimiser steps done (all of them, resumed or not).
        final_loss: mean training loss of the last logged window.
        skipped: samples not trained on (listed in skipped.jsonl).
        log: the rows of log.jsonl (process 0; other processes' are empty).
        is_main: process 0 (or the only process).
    """

    run_dir: Path
    steps: int
    final_loss: float | None
    skipped: int
    log: list[dict] = field(default_factory=list)
    is_main: bool = True


def lr_multiplier(step: int, total: int, warmup: int, kind: str) -> float:
    """Factor on each part's learning rate before optimiser step `step` (0-based): linear warmup, then
    cosine or linear decay to 0, or flat.

    Written by hand: transformers' schedules are the same after warmup but warm up from 0
    (step / warmup), which spends the first step at rate 0 and shifts every warmup step by one;
    vidlab's runs and published numbers use (step + 1) / warmup.
    """
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(total - warmup, 1)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def build_scheduler(optimizer, kind: str, total_steps: int, warmup: int):
    """The schedule on every parameter group, each part from its own learning rate."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(step, total_steps, warmup, kind))


def _build_optimizer(model, config: TrainConfig):
    groups = parameter_groups(model, config)
    if config.optim.name == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=config.optim.momentum)
    fused = {"fused": True} if next(model.parameters()).is_cuda else {}
    return torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=config.optim.betas, eps=config.optim.eps, **fused)


def _accelerator(config: TrainConfig, run_dir: Path):
    """accelerate's Accelerator for this run: device, precision, DDP settings, TensorBoard tracker."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, ProjectConfiguration

    on_gpu = torch.cuda.is_available()
    mixed_precision = resolve_precision(config.train.precision, torch.device("cuda" if on_gpu else "cpu"))
    # A vision encoder or projector that trains gets no gradient from a text-only batch: DDP must be
    # told to expect unused parameters, or processes whose batches differ wait on each other forever.
    vision_trains = any(part in config.learning_rates.trained() for part in ("vision", "projector", "compressor"))
    tracker = config.output.tensorboard and tensorboard_available()
    accelerator = Accelerator(
        cpu=not on_gpu,
        mixed_precision=mixed_precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=vision_trains)],
        log_with="tensorboard" if tracker else None,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir)),
    )
    _refuse_unsharded(accelerator)
    if accelerator.gradient_accumulation_steps != 1 and not is_sharded(accelerator):
        raise VidlabError(
            f"the accelerate config sets gradient_accumulation_steps={accelerator.gradient_accumulation_steps}, which "
            "would rescale vidlab's loss. Remove it from the accelerate config and set train.grad_accum instead."
        )
    return accelerator, mixed_precision


def _refuse_unsharded(accelerator) -> None:
    """An FSDP or DeepSpeed launch that accelerate turned into plain data parallelism is an error, not a quiet DDP run.

    accelerate (1.16) applies FSDP only to GPU-like devices and DeepSpeed only without `cpu=True`
    (accelerate/state.py); on a CPU the same launch runs every process with a whole copy of the model.
    """
    asked = [name for name, variable in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED"))
             if os.environ.get(variable, "false").lower() == "true"]
    if asked and not is_sharded(accelerator):
        raise VidlabError(
            f"the accelerate config asks for {asked[0]}, but accelerate runs {asked[0]} only on GPUs: on this "
            f"{accelerator.device.type} it would train as plain {accelerator.distributed_type.value} with a whole copy "
            "of the model in every process. Launch on GPUs, or use configs/accelerate/ddp.yaml "
            "(see docs/train.md, 'Sharded training')."
        )


def _gather_skips(accelerator, notes: list[SkipNote]) -> list[SkipNote]:
    if accelerator.num_processes == 1:
        return notes
    from accelerate.utils import gather_object

    return [note for part in gather_object([notes]) for note in part]


def _data_root(config: TrainConfig) -> Path | None:
    return Path(config.data.data_root).expanduser() if config.data.data_root else None


def run_training(config: TrainConfig, resume: bool | str | None = None) -> TrainResult:
    """Run (or resume) the training the config describes; returns where the results are.

    Args:
        resume: overrides config.resume: True continues from the newest checkpoint (error if none),
            "auto" continues if there is one, False starts (error if the folder holds a run).
    """

    if config.method in ("grpo", "dpo"):  # reinforcement / preference tuning: its own step (rl_loop.py)
        from vidlab.training.rl_loop import run_rl

        return run_rl(config, resume)
    run_dir, accelerator, mixed_precision, config_yaml, checkpoint = _start_run(config, resume)
    is_main = accelerator.is_main_process

    records, load_skips = load_records([Path(f) for f in config.data.train], _data_root(config), config.data.strict)
    if config.data.check is not None:  # the records the data check found bad are left out, as the plan counts
        records, checked_out = leave_out_checked(records, Path(config.data.check), config.data.media_settings(),
                                                 config.data.model_max_length)
        load_skips += checked_out
    if not records:
        raise VidlabError(f"{', '.join(config.data.train)}: no usable training records (see {run_dir / SKIPPED_FILE}).")
    batches_per_epoch = EpochBatches.count(len(records), config.train.batch_size, accelerator.num_processes)
    if batches_per_epoch == 0:
        raise VidlabError(
            f"{len(records)} training records do not fill one batch of {config.train.batch_size} x "
            f"{accelerator.num_processes} process(es). Lower train.batch_size or add data."
        )
    steps_per_epoch = math.ceil(batches_per_epoch / config.train.grad_accum)
    # max_steps, when given, decides the length (running more epochs than `epochs` if it must).
    total_steps = config.train.max_steps or steps_per_epoch * config.train.epochs
    warmup = int(round(config.optim.warmup_ratio * total_steps))

    model, processor = load_for_training(config, accelerator.device, mixed_precision)
    optimizer = _build_optimizer(model, config)
    base_rates = [group["lr"] for group in optimizer.param_groups]
    scheduler = build_scheduler(optimizer, config.optim.scheduler, total_steps, warmup)
    configure_deepspeed(accelerator, config.train.batch_size, config.train.grad_accum, config.optim.max_grad_norm)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)
    register_trainable_weights(accelerator)

    progress = {"step": 0, "samples": 0}
    if checkpoint is not None:
        progress = load_checkpoint(checkpoint, accelerator, config_yaml)
        if is_main:
            write_atomic(run_dir / CONFIG_FILE, config_yaml)  # the config of the run as it goes on
    start_step = progress["step"]
    if accelerator.log_with:
        accelerator.init_trackers(TENSORBOARD_DIR, init_kwargs={"tensorboard": {"purge_step": start_step or None}})
    log = RunLog(run_dir, accelerator, start_step)
    log.add_skips(load_skips)
    if is_main:
        _print_start(accelerator, model, config, len(records), total_steps, checkpoint)

    settings = config.data.media_settings()
    dataset = TrainDataset(records, processor, settings, config.data.model_max_length, config.data.strict)
    if config.data.feature_cache is not None:  # opt-in: the videos' frozen vision features read from disk
        from vidlab.training.feature_cache import cached_dataset

        dataset = cached_dataset(config, dataset, accelerator.unwrap_model(model), accelerator)
    val_records = []
    if config.output.eval_steps:  # read once; bad validation records are left out (they are not trained on)
        val_records = list(load_records([Path(f) for f in config.data.val], _data_root(config), strict=False)[0])
    collate = Collator(processor.tokenizer.pad_token_id)
    world, rank = accelerator.num_processes, accelerator.process_index
    trainable = [p for p in model.parameters() if p.requires_grad]
    model.train()
    step = start_step
    samples = progress["samples"]
    window: list[float] = []
    started_at = time.monotonic()
    samples_at_start = samples
    bar = _progress_bar(total_steps, start_step, config.output.progress and is_main)
    try:
        while step < total_steps:
            epoch, group_in_epoch = divmod(step, steps_per_epoch)
            loader = torch.utils.data.DataLoader(
                dataset,
                batch_sampler=EpochBatches(len(records), config.train.batch_size, rank, world, config.train.seed,
                                           epoch, start=group_in_epoch * config.train.grad_accum),
                collate_fn=collate,
                num_workers=config.data.workers,
                timeout=config.data.worker_timeout if config.data.workers > 0 else 0,
                generator=torch.Generator().manual_seed(config.train.seed + epoch),
            )
            batches = iter(loader)
            for _ in range(group_in_epoch, steps_per_epoch):
                done = (step % steps_per_epoch) * config.train.grad_accum
                group = min(config.train.grad_accum, batches_per_epoch - done)  # an epoch's last step may be short
                loss_sum, tokens, notes, count = accumulate(accelerator, model, batches, group)
                step_loss, tokens = finish_step(accelerator, optimizer, trainable, loss_sum, tokens,
                                                config.optim.max_grad_norm)
                scheduler.step()
                step += 1
                samples += count * world
                window.append(step_loss)
                new_skips = log.add_skips(_gather_skips(accelerator, notes))
                if new_skips and is_main:
                    bar.write(f"skipped {new_skips} sample(s); see {run_dir / SKIPPED_FILE}")
                rate = (samples - samples_at_start) / max(time.monotonic() - started_at, 1e-9)
                lrs = [g["lr"] for g in optimizer.param_groups]
                bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lrs[0]:.2e}", samples_s=f"{rate:.1f}")
                bar.update(1)
                if step % config.output.log_steps == 0 or step == total_steps:
                    row = {"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": sum(window) / len(window),
                           "samples": samples, "samples_per_s": round(rate, 3), "skipped": len(log.skipped)}
                    row.update({f"lr.{g.get('name', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)})
                    log.write(row)
                    window = []
                if config.output.eval_steps and (step % config.output.eval_steps == 0 or step == total_steps):
                    log.write({"step": step, **validate(accelerator, model, processor, config, val_records, step)})
                    model.train()
                if step % config.output.save_steps == 0 or step == total_steps:
                    save_checkpoint(run_dir, step, accelerator, model, config_yaml, {"step": step, "samples": samples},
                                    config.output.save_total_limit)
                if step >= total_steps:
                    break
        _save_final(run_dir, accelerator, model, processor)
    finally:
        bar.close()
        log.close()
    return _finish_run(accelerator, model, run_dir, log, step, samples, base_rates)


def _start_run(config: TrainConfig, resume):
    """Every method's start: the accelerator, the run folder (new, or the checkpoint to resume), the seed."""
    from accelerate.utils import set_seed

    resume = config.resume if resume is None else resume
    run_dir = Path(config.output.dir).expanduser()
    accelerator, mixed_precision = _accelerator(config, run_dir)
    is_main = accelerator.is_main_process
    checkpoint = prepare_run_dir(run_dir, config, resume, is_main) if is_main else None
    accelerator.wait_for_everyone()
    if not is_main and resume in (True, "auto"):
        from vidlab.training.checkpoint import latest_checkpoint

        checkpoint = latest_checkpoint(run_dir)
    set_seed(config.train.seed)
    return run_dir, accelerator, mixed_precision, config.to_yaml(), checkpoint


def _finish_run(accelerator, model, run_dir: Path, log: RunLog, step: int, samples: int, base_rates: dict,
                **extra) -> TrainResult:
    """Every method's end: the processes' weights checked equal, result.json written, accelerate closed."""
    final_loss = next((row["loss"] for row in reversed(log.log) if "loss" in row), None)
    checksums = _process_checksums(accelerator, model)
    if accelerator.is_main_process:
        if len(set(checksums)) > 1:
            raise VidlabError(f"the {accelerator.num_processes} processes ended with different weights "
                              f"({checksums}); this is a bug.")
        write_atomic(run_dir / RESULT_FILE, json.dumps(
            {**extra, "steps": step, "final_loss": final_loss, "samples": samples, "skipped": len(log.skipped),
             "base_learning_rates": base_rates, "process_checksums": checksums}, indent=2) + "\n")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(run_dir, step, final_loss, len(log.skipped), log.log, accelerator.is_main_process)


def _process_checksums(accelerator, model) -> list[str]:
    """A hash of each process's trainable weights: data-parallel processes must end identical."""
    if is_sharded(accelerator):
        return []  # each process holds a different shard
    digest = hashlib.sha256()
    for name, tensor in sorted(trainable_state(accelerator.unwrap_model(model)).items()):
        digest.update(name.encode())
        digest.update(tensor.float().numpy().tobytes())
    if accelerator.num_processes == 1:
        return [digest.hexdigest()]
    from accelerate.utils import gather_object

    return list(gather_object([digest.hexdigest()]))


def _save_final(run_dir: Path, accelerator, model, processor) -> None:
    """The adapter (LoRA) or whole model (full) plus the processor, in the run folder, file by file atomically."""
    accelerator.wait_for_everyone()
    state = accelerator.get_state_dict(model) if accelerator.num_processes > 1 else None
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        staging = Path(tempfile.mkdtemp(dir=run_dir, prefix=".final."))
        try:
            if not hasattr(unwrapped, "peft_config"):
                unwrapped.config.use_cache = True
            unwrapped.save_pretrained(staging, state_dict=state)  # state: gathered from FSDP/ZeRO-3 shards
            if hasattr(unwrapped, "peft_config"):
                save_adapter_compressor(unwrapped, staging)
            processor.save_pretrained(staging)
            usual_permissions(staging)
            for item in staging.iterdir():
                os.replace(item, run_dir / item.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    accelerator.wait_for_everyone()


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", disable=not enabled, dynamic_ncols=True)


def _print_start(accelerator, model, config: TrainConfig, records: int, total_steps: int, checkpoint) -> None:
    rows = summarize_parts(accelerator.unwrap_model(model), config)
    total = sum(r.parameters for r in rows)
    trainable = sum(r.trainable for r in rows)
    lines = [f"method {config.method}: {trainable:,} of {total:,} parameters train ({100 * trainable / total:.2f}%)"]
    for r in rows:
        rate = f"lr {r.learning_rate:g}" if r.learning_rate is not None else "frozen"
        lines.append(f"  {r.part:<9} {r.parameters:>14,} params, {r.trainable:>14,} trainable, {rate}")
    lines.append(
        f"{records} records, {accelerator.num_processes} process(es), batch {config.train.batch_size} x "
        f"accum {config.train.grad_accum}, {total_steps} steps, precision {accelerator.mixed_precision}"
    )
    if checkpoint is not None:
        lines.append(f"resuming from {checkpoint}")
    print("\n".join(lines), flush=True)
