"""VideoLLaMA3-2B at its real widths on a CPU: a LoRA step on a 180-frame video, the vision encoder, the plan.

    vidlab model tiny runs/2b-2 --shape 2b --layers 2        # once: the 2b shape, 2 LLM + 2 vision layers
    python benchmarks/real_size.py step --model runs/2b-2     # vidlab's step vs transformers' plain path
    python benchmarks/real_size.py vision --model runs/2b-2   # the vision encoder at 45 / 90 / 180 frames
    python benchmarks/real_size.py calibrate --model runs/2b-2 --model runs/2b-4 --tokens 2048 8192
    python benchmarks/real_size.py gpu --tokens 17560      # the plan for 2B LoRA / 7B QLoRA on 24/48/80 GB

Every measurement runs in its own process (MALLOC_MMAP_THRESHOLD_ fixed, so resident memory follows what
tensors hold) and prints one JSON row: peak resident memory of the process (peak_gib) and of the step above
the loaded model and inputs (step_gib), seconds, and `vidlab data plan`'s estimate of the same step.

step: one LoRA step (r 64 on every LLM Linear, as the recipes; activation checkpointing on; forward,
backward, AdamW) on a 180-frame video at 1 fps within the released 16,384-visual-token budget, with a
40-token answer. `vidlab` computes the loss as `vidlab train` does (logits at the label positions only);
`plain` is transformers' `model(**inputs, labels=labels)`. Where the plain path would not fit under
--limit-gib, it runs on fewer frames (shorter prompts) and its peak is extrapolated linearly in tokens.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import peak

GIB = 2**30
VOCAB = 151936


def _row(**values) -> None:
    print(json.dumps(values), flush=True)


def _child(*args: str) -> list[dict]:
    """Run this script's `args` in a fresh process; its JSON rows."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return [{"args": list(args), "error": done.stderr.strip().splitlines()[-1:] or ["killed"],
                 "returncode": done.returncode}]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def _noise_video(path: Path, frames: int) -> Path:
    """`frames` seconds at 1 fps of 448x252 noise: DiffFP keeps every block, so the budget is all used."""
    import numpy as np

    from vidlab.media.writer import write_video

    generator = np.random.default_rng(0)
    write_video(path, (generator.integers(0, 256, (252, 448, 3), dtype=np.uint8) for _ in range(frames)), fps=1)
    return path


def _sample(model_dir: Path, frames: int, answer_tokens: int, folder: Path, budget: int | None = None):
    """A 180-frame-style training sample (vidlab's encoder, the model's released budgets), labels included."""
    from transformers import AutoProcessor

    from vidlab.settings import MediaSettings
    from vidlab.training.data import encode_record, load_records

    video = _noise_video(folder / f"noise{frames}.mp4", frames)
    processor = AutoProcessor.from_pretrained(model_dir)
    answer = " ".join(["red"] * answer_tokens)
    record = {"video": [video.name], "conversations": [{"from": "human", "value": "<video>\nDescribe the video."},
                                                       {"from": "gpt", "value": answer}]}
    (folder / "one.jsonl").write_text(json.dumps(record) + "\n")
    records, _ = load_records([folder / "one.jsonl"], folder)
    settings = MediaSettings(fps=1, max_frames=frames, max_visual_tokens=budget)
    sample = encode_record(records[0], processor, settings, 65536)
    return {k: v.unsqueeze(0) if k in ("input_ids", "attention_mask", "labels") else v
            for k, v in sample.tensors.items()}


def _lora_model(model_dir: Path, checkpointing: bool, path: str):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import VideoLlama3ForConditionalGeneration

    from vidlab.training.model import drop_input_grads_of_frozen_vision

    model = VideoLlama3ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32)
    model.config.use_cache = False
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    lora = LoraConfig(r=64, lora_alpha=16, lora_dropout=0.05, target_modules=r".*language_model.*_proj")
    model = get_peft_model(model, lora).train()
    if path == "vidlab":  # as `vidlab train`: no backward through the frozen vision encoder
        drop_input_grads_of_frozen_vision(model)
    return model


def run_step(model_dir: Path, path: str, frames: int, answer_tokens: int, checkpointing: bool,
             budget: int | None) -> None:
    import torch

    from vidlab.training.steps import label_token_loss

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        inputs = _sample(model_dir, frames, answer_tokens, Path(folder), budget)
    model = _lora_model(model_dir, checkpointing, path)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    labels = inputs.pop("labels")
    before = peak.start()
    started = time.perf_counter()
    if path == "vidlab":
        loss, count = label_token_loss(model, inputs, labels)
        loss = loss / count
    else:
        loss = model(**inputs, labels=labels).loss
    loss.backward()
    optimizer.step()
    seconds = time.perf_counter() - started
    tokens, visual = int(labels.shape[1]), int((inputs["input_ids"] == model.config.video_token_id).sum())
    labelled = tokens if path == "plain" else int((labels[:, 1:] != -100).sum())  # where each path builds logits
    _row(kind="step", path=path, frames=frames, tokens=tokens, visual_tokens=visual,
         labels=int((labels[:, 1:] != -100).sum()), checkpointing=checkpointing, loss=round(float(loss), 6),
         peak_gib=round(peak.peak_mb() / 1024, 3), step_gib=round((peak.peak_mb() - before) / 1024, 3),
         plan_step_gib=round(_plan_step(model_dir, tokens, visual, labelled, checkpointing) / GIB, 3),
         seconds=round(seconds, 1))


def _plan_step(model_dir: Path, tokens: int, visual: int, labelled: int, checkpointing: bool) -> float:
    """`vidlab data plan`'s estimate of what `run_step` measures: the peak above the loaded weights (the
    optimiser states are made by the step)."""
    from vidlab.data.plan_memory import Setup, estimate
    from vidlab.data.plan_model import read_architecture

    setup = Setup(method="lora", precision="fp32", checkpointing=checkpointing, tokens=tokens, vision_tokens=visual,
                  label_tokens=labelled, lora_dropout=0.05, device="cpu")
    planned = estimate(read_architecture(str(model_dir), 64, "all-linear"), setup, 64)
    return planned.peak - planned.weights - planned.runtime


def run_vision(model_dir: Path, frames: int, budget: int | None) -> None:
    import torch
    from transformers import VideoLlama3ForConditionalGeneration

    with tempfile.TemporaryDirectory() as folder:
        inputs = _sample(model_dir, frames, 8, Path(folder), budget)
    model = VideoLlama3ForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
    before = peak.start()
    started = time.perf_counter()
    with torch.no_grad():
        model.model.get_video_features(inputs["pixel_values_videos"], inputs["video_grid_thw"],
                                       inputs["video_merge_sizes"])
    _row(kind="vision", frames=frames, patches=int(inputs["pixel_values_videos"].shape[0]),
         peak_gib=round(peak.peak_mb() / 1024, 3), step_gib=round((peak.peak_mb() - before) / 1024, 3),
         seconds=round(time.perf_counter() - started, 1))


def _config(model_dir: Path, folder: Path, method: str, checkpointing: bool) -> Path:
    import yaml

    data = folder / "train.jsonl"
    data.write_text(json.dumps({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "ok"}]})
                    + "\n")
    config = {"model": {"path": str(model_dir)}, "data": {"train": [str(data)]}, "method": method,
              "lora": {"r": 64, "alpha": 16, "dropout": 0.05, "target_modules": "all-linear"},
              "learning_rates": {"llm": 1e-4 if method == "lora" else 1e-5},
              "train": {"gradient_checkpointing": checkpointing}, "output": {"dir": str(folder / "run")}}
    path = folder / f"{method}-{checkpointing}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def calibrate(models: list[Path], token_counts: list[int], methods: list[str], limit_gib: float,
              checkpointings: tuple[bool, ...] = (True, False)) -> None:
    """`python -m vidlab.data.plan_measure` per row, in its own process; rows the plan puts over the limit are
    not run."""
    from vidlab.data.plan import setup_of
    from vidlab.data.plan_memory import estimate
    from vidlab.data.plan_model import read_architecture
    from vidlab.training.config import load_config

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    with tempfile.TemporaryDirectory() as tmp:
        for model_dir in models:
            for method in methods:
                for checkpointing in checkpointings:
                    config = _config(model_dir, Path(tmp), method, checkpointing)
                    train = load_config(config, check_paths=False)
                    arch = read_architecture(str(model_dir), 64, "all-linear")
                    for tokens in token_counts:
                        planned = estimate(arch, setup_of(train, tokens, 0, 1, "none", "cpu").but(label_tokens=40), 64)
                        row = {"kind": "calibrate", "model": model_dir.name, "layers": arch.layers, "method": method,
                               "checkpointing": checkpointing, "tokens": tokens,
                               "plan_peak_gib": round(planned.peak / GIB, 3)}
                        if planned.peak > limit_gib * GIB:
                            _row(**row, skipped=f"the plan says {planned.peak / GIB:.1f} GiB > --limit-gib")
                            continue
                        done = subprocess.run([sys.executable, "-m", "vidlab.data.plan_measure", str(config),
                                               "--tokens", str(tokens), "--labels", "40"],
                                              capture_output=True, text=True, env=env)
                        if done.returncode != 0:
                            _row(**row, error=done.stderr.strip().splitlines()[-1:])
                            continue
                        result = json.loads(done.stdout.strip().splitlines()[-1])
                        _row(**row, measured_step_gib=round(result["measured_step"] / GIB, 3),
                             estimated_step_gib=round(result["estimated_step"] / GIB, 3),
                             ratio=round(result["estimated_step"] / result["measured_step"], 3),
                             seconds=result["seconds"])


def on_gpus(tokens: int, visual: int, answer: int) -> None:
    """The calibrated plan's peak for the released models at 180 frames, bf16, checkpointing, one sample a step;
    beside it the same run with the logits of every position (the plain path's loss)."""
    from vidlab.data.plan_memory import Setup, estimate
    from vidlab.data.plan_model import read_architecture

    for name, method in (("videollama3-2b", "lora"), ("videollama3-7b", "qlora"), ("videollama3-7b", "lora")):
        arch = read_architecture(name, 64, "all-linear")
        setup = Setup(method=method, precision="bf16", checkpointing=True, tokens=tokens, vision_tokens=visual,
                      label_tokens=answer, lora_dropout=0.05)
        mine, plain = estimate(arch, setup, 64), estimate(arch, setup.but(label_tokens=tokens), 64)
        _row(kind="gpu plan", model=name, method=method, tokens=tokens, visual_tokens=visual, labels=answer,
             peak_gib=round(mine.peak / GIB, 2), all_position_logits_peak_gib=round(plain.peak / GIB, 2),
             fits={f"{size} GiB": mine.peak <= size * GIB for size in (24, 48, 80)})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["step", "vision", "calibrate", "gpu", "one-step", "one-vision"])
    parser.add_argument("--model", type=Path, action="append", help="a --shape 2b model folder")
    parser.add_argument("--frames", type=int, nargs="*", default=None)
    parser.add_argument("--answer", type=int, default=40, help="answer tokens")
    parser.add_argument("--path", choices=["vidlab", "plain"], default="vidlab")
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--checkpointing-only", action="store_true", help="calibrate: only rows with checkpointing")
    parser.add_argument("--tokens", type=int, nargs="*", default=[2048, 8192, 16384])
    parser.add_argument("--methods", nargs="*", default=["lora", "full"])
    parser.add_argument("--plain-frames", type=int, nargs="*", default=[22, 45],
                        help="frames for the plain path where 180 would not fit (its peak is extrapolated)")
    parser.add_argument("--budget", type=int, default=None,
                        help="visual tokens of the video (default: the model's released 16,384)")
    parser.add_argument("--limit-gib", type=float, default=12.0, help="run nothing the plan puts above this")
    args = parser.parse_args(argv)
    if args.what == "gpu":
        on_gpus(args.tokens[-1], args.budget or 16384, args.answer)
        return
    model = args.model[0]
    checkpointing = not args.no_checkpointing
    if args.what == "one-step":
        run_step(model, args.path, args.frames[0], args.answer, checkpointing, args.budget)
    elif args.what == "one-vision":
        run_vision(model, args.frames[0], args.budget)
    elif args.what == "vision":
        for frames in args.frames or [45, 90, 180]:
            budget = ["--budget", str(args.budget)] if args.budget else []
            for row in _child("one-vision", "--model", str(model), "--frames", str(frames), *budget):
                _row(**row)
    elif args.what == "calibrate":
        calibrate(args.model, args.tokens, args.methods, args.limit_gib,
                  (True,) if args.checkpointing_only else (True, False))
    else:
        flags = ["--model", str(model), "--answer", str(args.answer)] + (["--no-checkpointing"] if
                                                                           not checkpointing else [])
        flags += ["--budget", str(args.budget)] if args.budget else []
        frames = (args.frames or [180])[0]
        vidlab_rows = _child("one-step", "--path", "vidlab", "--frames", str(frames), *flags)
        for row in vidlab_rows:
            _row(**row)
        plain = [row for f in args.plain_frames for row in _child("one-step", "--path", "plain", "--frames", str(f),
                                                                   *flags)]
        for row in plain:
            _row(**row)
        measured = [r for r in plain if "step_gib" in r]
        if len(measured) >= 2 and vidlab_rows and "tokens" in vidlab_rows[0]:
            (a, b), tokens = measured[-2:], vidlab_rows[0]["tokens"]
            slope = (b["peak_gib"] - a["peak_gib"]) / (b["tokens"] - a["tokens"])
            _row(kind="plain extrapolated", tokens=tokens, frames=frames,
                 peak_gib=round(b["peak_gib"] + slope * (tokens - b["tokens"]), 2),
                 gib_per_1k_tokens=round(slope * 1000, 3), from_tokens=[a["tokens"], b["tokens"]])


if __name__ == "__main__":
    main()
