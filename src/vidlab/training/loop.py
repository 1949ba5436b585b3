"""`vidlab train`: the training loop, on one process or many under `accelerate launch`.

The loop is explicit (STYLE.md): setup in dependency order, then steps of `grad_accum`
micro-batches. What a resume needs is exact:
- data order is a pure function of (seed, epoch, step), so a resumed run reads the same batches;
- every process's RNG, the optimiser and the scheduler are restored from the checkpoint;
- the DataLoader draws its worker seeds from its own generator, not from the global RNG that
  dropout uses.
The loss of a step is the mean over every label token of the step, on every process: the summed
loss of each micro-batch is back-propagated and the gradients are divided by the step's token
count before clipping, so long and short samples weigh what their tokens weigh.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vidlab.errors import VidlabError
from vidlab.files import LineAppender, read_jsonl, write_atomic, write_jsonl
from vidlab.folders import usual_permissions
from vidlab.media import Sampling
from vidlab.training.checkpoint import (
    is_sharded,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    trainable_state,
)
from vidlab.training.config import TrainConfig
from vidlab.training.data import Collator, DataOptions, SkipNote, TrainDataset, load_records
from vidlab.training.model import load_for_training, parameter_groups, resolve_precision, summarize_parts

LOG_FILE = "log.jsonl"
SKIPPED_FILE = "skipped.jsonl"
CONFIG_FILE = "config.yaml"
RESULT_FILE = "train_result.json"


class RunFolderError(VidlabError):
    """An output folder that holds another run, or nothing to resume."""


@dataclass
class TrainResult:
    run_dir: Path
    steps: int
    final_loss: float | None
    skipped: int
    log: list[dict] = field(default_factory=list)


class EpochBatches(torch.utils.data.Sampler):
    """This process's batches of one epoch: a seeded permutation cut into global batches.

    Global batch b holds samples perm[b*G : (b+1)*G] with G = batch_size * processes; process r takes
    its r-th slice. The tail that does not fill a global batch is dropped, so every process runs
    the same number of steps. `start` skips batches already trained on (resume).
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


def lr_multiplier(step: int, total: int, warmup: int, kind: str) -> float:
    """Factor on the base learning rate at optimiser step `step` (0-based): linear warmup, then decay."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(total - warmup, 1)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def summed_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Cross-entropy summed over the label tokens (token t predicts token t+1), and their count."""
    targets = labels[:, 1:].reshape(-1)
    scores = logits[:, :-1].reshape(-1, logits.size(-1)).float()
    loss = torch.nn.functional.cross_entropy(scores, targets.to(scores.device), ignore_index=-100, reduction="sum")
    return loss, int((targets != -100).sum())


def data_options(config: TrainConfig) -> DataOptions:
    data = config.data
    limit = {"num_frames": data.num_frames} if data.num_frames is not None else {}
    return DataOptions(
        sampling=Sampling(fps=data.fps, max_frames=data.max_frames, **limit),
        compression=data.compression,
        model_max_length=data.model_max_length,
        max_visual_tokens=data.max_visual_tokens,
        image_merge_size=data.image_merge_size,
        folder_fps=data.folder_fps,
        strict=data.strict,
    )


def _build_optimizer(model, config: TrainConfig):
    groups = parameter_groups(model, config)
    if config.optim.name == "sgd":
        return torch.optim.SGD(groups, lr=groups[0]["lr"], momentum=config.optim.momentum)
    fused = {"fused": True} if next(model.parameters()).is_cuda else {}
    return torch.optim.AdamW(groups, lr=groups[0]["lr"], betas=config.optim.betas, eps=config.optim.eps, **fused)


class _RunFiles:
    """log.jsonl, skipped.jsonl and TensorBoard, written by process 0 only."""

    def __init__(self, run_dir: Path, config: TrainConfig, start_step: int, enabled: bool):
        self.enabled = enabled
        self.run_dir = run_dir
        self.seen_skips: set[tuple] = set()
        self.skipped: list[dict] = []
        self.log: list[dict] = []
        self.tensorboard = None
        if not enabled:
            return
        log_path = run_dir / LOG_FILE
        if log_path.exists():  # a resumed run: drop what was logged after the checkpoint
            self.log = [row for row in read_jsonl(log_path, torn_tail_ok=True) if row.get("step", 0) <= start_step]
            write_jsonl(log_path, self.log)
        skipped_path = run_dir / SKIPPED_FILE
        if skipped_path.exists():
            self.skipped = read_jsonl(skipped_path, torn_tail_ok=True)
            self.seen_skips = {(r["file"], r["line"], r["reason"]) for r in self.skipped}
        self._log_file = LineAppender(log_path)
        self._skip_file = LineAppender(skipped_path)
        if config.output.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                SummaryWriter = None  # tensorboard is optional: log.jsonl has the same numbers
            if SummaryWriter is not None:
                self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step or None)

    def add_skips(self, notes: list[SkipNote]) -> int:
        """Record skipped samples not seen before; returns how many were new."""
        new = 0
        for note in notes:
            key = (note.file, note.line, note.reason)
            if key in self.seen_skips:
                continue
            self.seen_skips.add(key)
            row = note.to_dict()
            self.skipped.append(row)
            if self.enabled:
                self._skip_file.write(row)
            new += 1
        return new

    def write_log(self, row: dict) -> None:
        self.log.append(row)
        if not self.enabled:
            return
        self._log_file.write(row)
        if self.tensorboard is not None:
            for key, value in row.items():
                if isinstance(value, (int, float)) and key != "step":
                    self.tensorboard.add_scalar(key.replace(".", "/"), value, row["step"])

    def close(self) -> None:
        if self.enabled:
            self._log_file.close()
            self._skip_file.close()
            if self.tensorboard is not None:
                self.tensorboard.close()


def _prepare_run_dir(run_dir: Path, config: TrainConfig, resume, is_main: bool) -> Path | None:
    """Check the output folder against the resume setting; returns the checkpoint to resume from."""
    checkpoint = latest_checkpoint(run_dir)
    started = (run_dir / CONFIG_FILE).exists()
    if resume is True and checkpoint is None:
        raise RunFolderError(
            f"{run_dir}: no complete checkpoint to resume from. Run without --resume to start, or check output.dir."
        )
    if resume is False and started:
        raise RunFolderError(
            f"{run_dir}: holds a run already ({CONFIG_FILE} is there). Pass --resume to continue it "
            "(or set resume: auto), or choose a new output.dir."
        )
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not started or checkpoint is None:
            write_atomic(run_dir / CONFIG_FILE, config.to_yaml())
    return checkpoint


def _move_batch(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _gather_skips(accelerator, notes: list[SkipNote]) -> list[SkipNote]:
    if accelerator.num_processes == 1:
        return notes
    from accelerate.utils import gather_object

    return [note for part in gather_object([notes]) for note in part]


def train(config: TrainConfig, resume: bool | str | None = None) -> TrainResult:
    """Run (or resume) the training the config describes; returns where the results are.

    Args:
        resume: overrides config.resume: True continues from the newest checkpoint (error if none),
            "auto" continues if there is one, False starts (error if the folder holds a run).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    resume = config.resume if resume is None else resume
    on_gpu = torch.cuda.is_available()
    device_hint = torch.device("cuda" if on_gpu else "cpu")
    mixed_precision = resolve_precision(config.train.precision, device_hint)
    accelerator = Accelerator(cpu=not on_gpu, mixed_precision=mixed_precision)
    if accelerator.gradient_accumulation_steps != 1 and not is_sharded(accelerator):
        raise VidlabError(
            f"the accelerate config sets gradient_accumulation_steps={accelerator.gradient_accumulation_steps}, which "
            "would rescale vidlab's loss. Remove it from the accelerate config and set train.grad_accum instead."
        )
    is_main = accelerator.is_main_process
    run_dir = Path(config.output.dir).expanduser()
    checkpoint = _prepare_run_dir(run_dir, config, resume, is_main) if is_main else None
    accelerator.wait_for_everyone()
    if not is_main:
        checkpoint = latest_checkpoint(run_dir) if resume in (True, "auto") else None
    set_seed(config.train.seed)

    records, load_skips = load_records([Path(f) for f in config.data.train], _data_root(config), config.data.strict)
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
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, total_steps, warmup, config.optim.scheduler)
    )
    _configure_deepspeed(accelerator, config)
    model, optimizer = accelerator.prepare(model, optimizer)

    progress = {"step": 0, "samples": 0}
    if checkpoint is not None:
        progress = load_checkpoint(checkpoint, accelerator, model, optimizer, scheduler)
    start_step = progress["step"]
    files = _RunFiles(run_dir, config, start_step, enabled=is_main)
    files.add_skips(load_skips)
    if is_main:
        _print_start(accelerator, model, config, len(records), total_steps, checkpoint)

    options = data_options(config)
    dataset = TrainDataset(records, processor, options)
    val_records = []
    if config.output.eval_steps:  # read once; bad validation records are left out (they are not trained on)
        val_records, _ = load_records([Path(f) for f in config.data.val], _data_root(config), strict=False)
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
                loss_sum, tokens, notes, count = _accumulate(accelerator, model, batches, group)
                step_loss, tokens = _finish_step(accelerator, model, optimizer, trainable, loss_sum, tokens, config)
                scheduler.step()
                step += 1
                samples += count * world
                window.append(step_loss)
                new_skips = files.add_skips(_gather_skips(accelerator, notes))
                if new_skips and is_main:
                    bar.write(f"skipped {new_skips} sample(s); see {run_dir / SKIPPED_FILE}")
                rate = (samples - samples_at_start) / max(time.monotonic() - started_at, 1e-9)
                lrs = [g["lr"] for g in optimizer.param_groups]
                bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lrs[0]:.2e}", samples_s=f"{rate:.1f}")
                bar.update(1)
                if step % config.output.log_steps == 0 or step == total_steps:
                    row = {"step": step, "epoch": round(step / steps_per_epoch, 4), "loss": sum(window) / len(window),
                           "samples": samples, "samples_per_s": round(rate, 3), "skipped": len(files.skipped)}
                    row.update({f"lr.{g.get('name', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)})
                    files.write_log(row)
                    window = []
                if config.output.eval_steps and (step % config.output.eval_steps == 0 or step == total_steps):
                    scores = _evaluate(accelerator, model, processor, config, options, val_records, step)
                    files.write_log({"step": step, **scores})
                    model.train()
                if step % config.output.save_steps == 0 or step == total_steps:
                    save_checkpoint(run_dir, step, accelerator, model, optimizer, scheduler,
                                    {"step": step, "samples": samples}, config.output.save_total_limit)
                if step >= total_steps:
                    break
        _save_final(run_dir, accelerator, model, processor)
    finally:
        bar.close()
        files.close()
    final_loss = next((row["loss"] for row in reversed(files.log) if "loss" in row), None)
    checksums = _process_checksums(accelerator, model)
    if is_main:
        if len(set(checksums)) > 1:
            raise VidlabError(f"the {world} processes ended with different weights ({checksums}); this is a bug.")
        write_atomic(run_dir / RESULT_FILE, json.dumps(
            {"steps": step, "final_loss": final_loss, "samples": samples, "skipped": len(files.skipped),
             "base_learning_rates": base_rates, "process_checksums": checksums}, indent=2) + "\n")
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return TrainResult(run_dir, step, final_loss, len(files.skipped), files.log)


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


def _configure_deepspeed(accelerator, config: TrainConfig) -> None:
    """DeepSpeed accumulates and clips inside its engine: hand it vidlab's settings before prepare."""
    plugin = getattr(accelerator.state, "deepspeed_plugin", None)
    if plugin is None:
        return
    plugin.deepspeed_config.update({
        "train_micro_batch_size_per_gpu": config.train.batch_size,
        "gradient_accumulation_steps": config.train.grad_accum,
        "gradient_clipping": config.optim.max_grad_norm or 0.0,
    })


def _data_root(config: TrainConfig) -> Path | None:
    return Path(config.data.data_root).expanduser() if config.data.data_root else None


def _accumulate(accelerator, model, batches, group: int):
    """Forward and backward `group` micro-batches; gradients sync across processes on the last one."""
    from accelerate.utils import DistributedType

    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    loss_sum = torch.zeros((), device=accelerator.device)
    tokens, count, notes = 0, 0, []
    for index in range(group):
        batch = next(batches)
        notes.extend(batch["skipped"])
        count += batch["num_samples"]
        inputs = _move_batch(batch["inputs"], accelerator.device)
        labels = inputs.pop("labels")
        sync = index == group - 1
        context = accelerator.no_sync(model) if not sync and accelerator.num_processes > 1 else nullcontext()
        with context, accelerator.autocast():
            logits = model(**inputs).logits
            loss, n = summed_token_loss(logits, labels)
            # DeepSpeed owns the gradients (they are not reachable to rescale): give it a per-token mean;
            # it averages micro-batches itself.
            accelerator.backward(loss / max(n, 1) if deepspeed else loss)
        loss_sum += loss.detach()
        tokens += n
    return loss_sum, tokens, notes, count


def _finish_step(accelerator, model, optimizer, trainable, loss_sum, tokens: int, config: TrainConfig):
    """Scale the summed gradients to a per-token mean over all processes, clip, step; returns the step loss."""
    totals = torch.stack([loss_sum.float(), torch.tensor(float(tokens), device=loss_sum.device)])
    if accelerator.num_processes > 1:
        totals = accelerator.reduce(totals, reduction="sum")
    total_loss, total_tokens = totals.tolist()
    # DDP averaged the gradients over processes; multiply back to a sum, then divide by the tokens.
    scale = accelerator.num_processes / max(total_tokens, 1.0)
    for param in trainable:
        if param.grad is not None:
            param.grad.mul_(scale)
    if config.optim.max_grad_norm is not None:
        accelerator.clip_grad_norm_(trainable, config.optim.max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total_loss / max(total_tokens, 1.0), total_tokens


@torch.no_grad()
def _evaluate(accelerator, model, processor, config: TrainConfig, options: DataOptions, records: list,
              step: int) -> dict:
    """Validation loss: token-weighted mean over every validation sample, on all processes."""
    mine = records[accelerator.process_index :: accelerator.num_processes]
    dataset = TrainDataset(mine, processor, options) if mine else None
    collate = Collator(processor.tokenizer.pad_token_id)
    model.eval()
    loss_sum = torch.zeros((), device=accelerator.device)
    tokens = 0
    for start in range(0, len(mine), config.train.batch_size):
        batch = collate([dataset[i] for i in range(start, min(start + config.train.batch_size, len(mine)))])
        inputs = _move_batch(batch["inputs"], accelerator.device)
        labels = inputs.pop("labels")
        with accelerator.autocast():
            loss, n = summed_token_loss(model(**inputs).logits, labels)
        loss_sum += loss.float()
        tokens += n
    totals = torch.stack([loss_sum, torch.tensor(float(tokens), device=loss_sum.device)])
    if accelerator.num_processes > 1:
        totals = accelerator.reduce(totals, reduction="sum")
    total_loss, total_tokens = totals.tolist()
    row = {"eval_loss": total_loss / max(total_tokens, 1.0), "eval_samples": len(records)}
    if config.output.eval_generate:
        row.update(_generation_scores(accelerator, model, processor, config, options, step))
    return row


def _generation_scores(accelerator, model, processor, config: TrainConfig, options: DataOptions, step: int) -> dict:
    """BLEU-4 and exact match of the model's answers to the validation records, through vidlab.evaluation."""
    from vidlab.evaluation.metrics import score_file
    from vidlab.evaluation.run import RunOptions, run_predictions
    from vidlab.generate import GenerationOptions

    unwrapped = accelerator.unwrap_model(model)
    run_options = RunOptions(
        batch_size=config.train.batch_size, sampling=options.sampling, compression=options.compression,
        folder_fps=options.folder_fps, generation=GenerationOptions(max_new_tokens=config.output.eval_max_new_tokens),
        workers=0, progress=False,
    )
    scores = {}
    unwrapped.config.use_cache = True  # generation is far faster with the KV cache; training runs without
    try:
        for file in config.data.val:
            out = Path(config.output.dir).expanduser() / "eval" / f"step-{step:06d}" / Path(file).stem
            run_predictions((unwrapped, processor), file, out, data_root=_data_root(config), options=run_options)
            if accelerator.is_main_process:
                metrics = score_file(out / "predictions.jsonl", ["bleu4", "exact_match"])
                suffix = "" if len(config.data.val) == 1 else f".{Path(file).stem}"
                scores.update({f"eval_{name}{suffix}": metrics[name] for name in ("bleu4", "exact_match")
                               if name in metrics})
    finally:
        unwrapped.config.use_cache = False
    return scores


def _save_final(run_dir: Path, accelerator, model, processor) -> None:
    """The adapter (LoRA) or whole model (full) plus the processor, in the run folder, file by file atomically."""
    accelerator.wait_for_everyone()
    state = accelerator.get_state_dict(model) if accelerator.num_processes > 1 else None
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        staging = Path(tempfile.mkdtemp(dir=run_dir, prefix=".final."))
        try:
            if hasattr(unwrapped, "peft_config"):
                unwrapped.save_pretrained(staging, state_dict=state)  # state: gathered from FSDP/ZeRO-3 shards
            else:
                unwrapped.config.use_cache = True
                unwrapped.save_pretrained(staging, state_dict=state)
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
