"""`vidlab data plan`: will a training config fit the GPUs, and how many steps is an epoch?

From the model's sizes (its config, no weights: `plan_model`), the config's method, precision,
activation checkpointing and batch, and the token statistics `vidlab data check` wrote (the longest
sample; without them, the worst case data.model_max_length), `plan_memory` estimates the peak
memory of each process. When a GPU size is given and the run does not fit, the plan tries the
changes that lower memory (checkpointing, QLoRA, a smaller batch with more accumulation, shorter
samples, sharding) and lists those that fit, as `--set` overrides.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from vidlab.data.plan_memory import GIB, STRATEGIES, Estimate, Setup, estimate, label_count
from vidlab.data.plan_model import Architecture, PlanError, read_architecture
from vidlab.training.config import TrainConfig, load_config
from vidlab.training.steps import EpochBatches


@dataclass
class Change:
    """One way to lower memory: the overrides, what they do, and the new estimate."""

    overrides: list[str]
    why: str
    estimate: Estimate
    fits: bool


@dataclass
class PlanResult:
    """What `plan_run` found.

    Attributes:
        architecture: the model's sizes.
        setup: what the estimate assumed (method, precision, tokens of the longest sample, ...).
        estimate: bytes per process by component, and the peak.
        gpu_memory: the GPU size compared against, in bytes (None: not given).
        fits: the peak is within gpu_memory (None when no size was given).
        records: usable training records (from check.json, else read from data.train; None when the
            files are not here).
        steps_per_epoch, total_steps: optimiser steps, as `vidlab train` counts them (None without records):
            on usable records when the config's data.check is that check.json (training then leaves out
            the records it found bad), else on the records data.train holds.
        records_note: where training would count otherwise (a check.json given, but not as data.check).
        tokens_from: where the sample length came from (check.json, or the model_max_length limit).
        changes: when it does not fit, the changes tried, those that fit first.
    """

    architecture: Architecture
    setup: Setup
    estimate: Estimate
    gpu_memory: int | None
    fits: bool | None
    records: int | None
    steps_per_epoch: int | None
    total_steps: int | None
    tokens_from: str
    changes: list[Change] = field(default_factory=list)
    records_note: str | None = None

    def to_dict(self) -> dict:
        return {
            "model": self.architecture.source,
            "parameters": self.architecture.parameters,
            "setup": self.setup.__dict__,
            "estimate_bytes": self.estimate.to_dict(),
            "peak_gib": round(self.estimate.peak / GIB, 2),
            "gpu_memory_gib": None if self.gpu_memory is None else round(self.gpu_memory / GIB, 2),
            "fits": self.fits,
            "records": self.records,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "tokens_from": self.tokens_from,
            "records_note": self.records_note,
            "changes": [{"set": c.overrides, "why": c.why, "peak_gib": round(c.estimate.peak / GIB, 2), "fits": c.fits}
                        for c in self.changes],
        }


def _stats(path: Path) -> dict:
    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise PlanError(f"{path}: cannot read it ({err}). Pass the check.json `vidlab data check` wrote.") from err
    if not isinstance(report, dict) or "stats" not in report or "ok" not in report:
        raise PlanError(f"{path}: not a check.json from `vidlab data check` (no stats). Run the check first.")
    if not report["ok"]:
        raise PlanError(f"{path}: the check found no usable record (see bad.jsonl beside it); fix the data first.")
    return report


def _max(report: dict, key: str) -> int:
    summary = (report.get("stats") or {}).get(key) or {}
    return int(summary.get("max") or 0)


def setup_of(config: TrainConfig, tokens: int, vision_tokens: int, gpus: int, strategy: str, device: str) -> Setup:
    """The memory-relevant settings of a training config, for samples of `tokens` LLM tokens."""
    precision = config.train.precision
    if device == "cpu" or precision == "fp32":
        precision = "fp32"
    elif precision == "auto":
        precision = "bf16"
    setup = Setup(
        method=config.weights, trained=tuple(config.learning_rates.trained()), precision=precision,
        checkpointing=config.train.gradient_checkpointing, batch_size=config.train.batch_size,
        grad_accum=config.train.grad_accum, tokens=tokens, vision_tokens=vision_tokens,
        lora_dropout=config.lora.dropout, bits=config.lora.bits, optimizer=config.optim.name,
        momentum=config.optim.momentum, gpus=gpus, strategy=strategy, device=device,
    )
    if config.method not in ("grpo", "dpo"):
        return setup
    # One prompt at a time: its rows (G answers, or chosen and rejected) in one forward; the step's prompts accumulate.
    rows = config.grpo.num_generations if config.method == "grpo" else 2
    copy = config.weights == "full" or config.model.adapter is not None
    return setup.but(rl=config.method, batch_size=rows, grad_accum=config.train.batch_size * config.train.grad_accum,
                     reference_copy=copy and (config.method == "dpo" or config.grpo.beta != 0))


def _rl_tokens(config: TrainConfig, tokens: int, label_tokens: int | None) -> tuple[int, int | None]:
    """GRPO: a sample is its prompt and a sampled answer of up to max_completion_length tokens (the prompt is cut
    to leave it room), not the reference answer the check measured."""
    if config.method != "grpo":
        return tokens, label_tokens
    completion = config.grpo.max_completion_length
    prompt = tokens - (label_tokens or 0)
    return min(prompt + completion, config.data.model_max_length), completion


def _fitting_tokens(arch: Architecture, setup: Setup, budget: int, rank: int) -> int:
    """The longest sample (in tokens) whose peak stays within budget (0 if none does)."""
    low, high = 0, setup.tokens
    while low < high:
        middle = (low + high + 1) // 2
        trial = setup.but(tokens=middle, vision_tokens=min(setup.vision_tokens, middle))
        if estimate(arch, trial, rank).peak <= budget:
            low = middle
        else:
            high = middle - 1
    return low


def _changes(arch: Architecture, setup: Setup, config: TrainConfig, budget: int, rank: int,
             text_tokens: int) -> list[Change]:
    tried: list[tuple[list[str], str, Setup]] = []
    if not setup.checkpointing:
        tried.append((["train.gradient_checkpointing=true"], "keep only each layer's input; recompute the rest in "
                      "backward (about 30% slower)", setup.but(checkpointing=True)))
    weights_key = f"{setup.rl}.weights" if setup.rl != "sft" else "method"
    if setup.method == "lora" and setup.device == "cuda":
        tried.append(([f"{weights_key}=qlora"], "4-bit base weights (needs bitsandbytes)", setup.but(method="qlora")))
    if setup.method == "full":
        tried.append(([f"{weights_key}=lora", "learning_rates.llm=2e-4"],
                      "train LoRA adapters instead of every LLM weight", setup.but(method="lora")))
    if setup.rl == "grpo" and setup.batch_size > 2:
        fewer = setup.batch_size // 2
        tried.append(([f"grpo.num_generations={fewer}"], f"a group of {fewer} answers per prompt (a noisier "
                      "advantage)", setup.but(batch_size=fewer)))
    if setup.batch_size > 1 and setup.rl == "sft":
        tried.append((["train.batch_size=1", f"train.grad_accum={setup.grad_accum * setup.batch_size}"],
                      "one sample per step, the same samples per optimiser step",
                      setup.but(batch_size=1, grad_accum=setup.grad_accum * setup.batch_size)))
    if setup.gpus > 1 and setup.strategy not in ("zero3", "fsdp"):
        tried.append((["(launch with configs/accelerate/deepspeed_zero3.yaml)"],
                      f"shard weights, gradients and optimizer states over the {setup.gpus} GPUs",
                      setup.but(strategy="zero3")))
    lean = (setup.but(checkpointing=True, batch_size=1, grad_accum=setup.grad_accum * setup.batch_size)
            if setup.rl == "sft" else setup.but(checkpointing=True))
    longest = _fitting_tokens(arch, lean, budget, rank)
    if 0 < longest < setup.tokens:
        limit = max(16, longest // 256 * 256 or longest)
        overrides = [f"data.model_max_length={limit}"]
        visual = limit - text_tokens
        current = config.data.max_visual_tokens
        if 0 < visual < (current or limit + 1):
            overrides.append(f"data.max_visual_tokens={visual}")
        visual = min(visual, current or visual)
        if not setup.checkpointing:
            overrides.append("train.gradient_checkpointing=true")
        if setup.batch_size > 1 and setup.rl == "sft":
            overrides += ["train.batch_size=1", f"train.grad_accum={lean.grad_accum}"]
        why = (f"samples of at most {limit} tokens (the longest now has {setup.tokens}); longer ones get smaller, then "
               "fewer frames")
        tried.append((overrides, why, lean.but(tokens=limit, vision_tokens=min(setup.vision_tokens, max(visual, 0)))))
    changes = [Change(o, why, est := estimate(arch, s, rank), est.peak <= budget) for o, why, s in tried]
    return sorted(changes, key=lambda c: (not c.fits, c.estimate.peak))


def plan_run(
    config: str | Path | dict | TrainConfig,
    *,
    stats: str | Path | None = None,
    gpus: int = 1,
    gpu_memory: float | None = None,
    strategy: str | None = None,
    model: str | None = None,
    device: str = "cuda",
    overrides: list[str] = (),
) -> PlanResult:
    """Estimate the peak memory per GPU and the steps per epoch of a training config.

    Args:
        config: the training config (YAML path, mapping or TrainConfig).
        stats: the check.json of `vidlab data check` on the training data (longest sample, records);
            default: the config's data.check.
            Without it the longest sample is taken to be data.model_max_length tokens, as many of them
            visual as data.max_visual_tokens allows.
        gpus: training processes (one per GPU).
        gpu_memory: GiB per GPU to compare against (None: only estimate).
        strategy: none, ddp, zero2, zero3 or fsdp (default: ddp on several GPUs).
        model: plan for this model instead of model.path: a folder, hub id, or videollama3-2b / videollama3-7b
            (the published sizes, when the checkpoint is not on this machine).
        device: cuda (bf16 when precision is auto) or cpu (fp32, as vidlab trains on a CPU).
        overrides: `section.key=value` changes to the config, as `vidlab train --set`.

    Raises:
        PlanError / ConfigError: a config, model or check.json that cannot be used.
    """
    if gpus < 1:
        raise PlanError("--gpus must be 1 or more.")
    strategy = strategy or ("ddp" if gpus > 1 else "none")
    if strategy not in STRATEGIES:
        raise PlanError(f"--strategy {strategy!r}: use one of {', '.join(STRATEGIES)}.")
    if device not in ("cuda", "cpu"):
        raise PlanError(f"--device {device!r}: use cuda or cpu.")
    if gpu_memory is not None and not gpu_memory > 0:
        raise PlanError("--gpu-memory must be above 0 (GiB per GPU).")
    train = load_config(config, list(overrides), check_paths=False)
    arch = read_architecture(model or train.model.path, train.lora.r, train.lora.target_modules,
                             train.lora.modules_to_save)
    text_tokens = 0
    note = None
    stats = stats if stats is not None else train.data.check
    if stats is not None:
        report = _stats(Path(stats))
        tokens, vision_tokens = _max(report, "total_tokens"), _max(report, "visual_tokens_before_pruning")
        text_tokens = int(((report["stats"].get("text_tokens") or {}).get("p99")) or 0)
        label_tokens = _max(report, "label_tokens") or None  # a check.json from before label counts: the text
        records, tokens_from = int(report["ok"]), f"{stats} (longest sample)"
        if train.data.check is None or Path(train.data.check).expanduser().resolve() != Path(stats).resolve():
            parsed = _count_records(train)
            note = (f"vidlab train leaves out the records the check found bad only with data.check: {stats} in the "
                    "config" + (f"; without it, it trains on all {parsed} readable records" if parsed else ""))
    else:
        tokens = train.data.model_max_length
        vision_tokens = min(tokens, train.data.max_visual_tokens or tokens)
        label_tokens = None  # every text token could be an answer's
        records, tokens_from = _count_records(train), "data.model_max_length (no check.json: the worst case)"
    if stats is not None:
        tokens, label_tokens = _rl_tokens(train, tokens, label_tokens)
    elif train.method == "grpo":
        label_tokens = train.grpo.max_completion_length
    setup = setup_of(train, tokens, vision_tokens, gpus, strategy, device).but(label_tokens=label_tokens)
    result = estimate(arch, setup, train.lora.r)
    steps = total = None
    if records is not None:
        steps = math.ceil(EpochBatches.count(records, train.train.batch_size, gpus) / train.train.grad_accum)
        total = train.train.max_steps or steps * train.train.epochs
    budget = None if gpu_memory is None else int(gpu_memory * GIB)
    fits = None if budget is None else result.peak <= budget
    changes = _changes(arch, setup, train, budget, train.lora.r, text_tokens) if budget is not None and not fits else []
    return PlanResult(arch, setup, result, budget, fits, records, steps, total, tokens_from, changes, note)


def _count_records(config: TrainConfig) -> int | None:
    from vidlab.training.data import load_records
    from vidlab.training.rl_records import load_prompt_records

    files = [Path(f).expanduser() for f in config.data.train]
    if not all(f.is_file() for f in files):
        return None
    root = Path(config.data.data_root).expanduser() if config.data.data_root else None
    if config.method in ("grpo", "dpo"):
        return len(load_prompt_records(files, root, config.method)[0])
    return len(load_records(files, root)[0])


def _gib(value: float) -> str:
    return f"{value / GIB:6.2f} GiB"


def render_plan(plan: PlanResult) -> str:
    """The plan as text for a terminal."""
    arch, setup, est = plan.architecture, plan.setup, plan.estimate
    parts = ", ".join(f"{part} {count / 1e6:,.1f} M" for part, count in arch.parameters.items())
    lines = [
        f"model        {arch.source}: {arch.total / 1e9:.2f} B parameters ({parts})",
        f"run          {setup.method}, {setup.precision}, checkpointing {'on' if setup.checkpointing else 'off'}, "
        + (f"batch {setup.batch_size} x accum {setup.grad_accum}" if setup.rl == "sft" else
           f"{setup.rl}: {setup.batch_size} rows per prompt x {setup.grad_accum} prompts per step, reference "
           f"{'a frozen copy' if setup.reference_copy else 'the adapters switched off (or none)'}")
        + f", {setup.gpus} GPU(s) ({setup.strategy})",
        f"longest      {setup.tokens} tokens ({setup.vision_tokens} visual before pruning), from {plan.tokens_from}",
        f"labels       logits at {label_count(setup)} label positions a sample"
        + (" (the most: every text token; a check.json counts them)" if setup.label_tokens is None else ""),
        f"trainable    {est.trainable / 1e6:,.1f} M parameters",
        "",
        "peak memory per GPU (estimate)",
        f"  weights      {_gib(est.weights)}",
        f"  gradients    {_gib(est.gradients)}",
        f"  optimizer    {_gib(est.optimizer)}",
        f"  activations  {_gib(est.activations)}",
        f"  logits       {_gib(est.logits)}",
        f"  vision       {_gib(est.vision)}",
    ]
    if est.buckets:
        lines.append(f"  DDP buckets  {_gib(est.buckets)}")
    lines += [
        f"  runtime      {_gib(est.runtime)}  (CUDA context and allocator reserve: assumed, not measured)"
        if setup.device == "cuda" else f"  runtime      {_gib(est.runtime)}",
        f"  peak         {_gib(est.peak)}  = weights + optimizer + max(forward {est.forward_phase / GIB:.2f}, "
        f"backward {est.backward_phase / GIB:.2f}, update {est.update_phase / GIB:.2f}"
        + (f", generation {est.generation_phase / GIB:.2f}" if setup.rl == "grpo" else "") + ") + runtime",
    ]
    if plan.gpu_memory is not None:
        verdict = "fits" if plan.fits else "does NOT fit"
        lines.append(f"  {verdict} in {plan.gpu_memory / GIB:.0f} GiB per GPU")
    if plan.records is None:
        lines += ["", "steps        unknown: data.train is not on this machine (or give --stats check.json)"]
    else:
        lines += ["", f"steps        {plan.records} records: {plan.steps_per_epoch} optimiser steps per epoch, "
                      f"{plan.total_steps} in all"]
        if plan.records_note:
            lines.append(f"             ({plan.records_note})")
    if plan.changes:
        lines += ["", "to fit, change (estimated peak per GPU):"]
        for change in plan.changes:
            mark = "fits" if change.fits else "still too big"
            shown = " ".join(o if o.startswith("(") else f"--set {o}" for o in change.overrides)
            lines.append(f"  {shown}")
            lines.append(f"      {change.why}: {change.estimate.peak / GIB:.2f} GiB, {mark}")
    return "\n".join(lines)


__all__ = ["Change", "PlanResult", "plan_run", "render_plan"]
