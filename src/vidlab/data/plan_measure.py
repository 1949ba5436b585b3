"""Measure the peak memory of real training steps, to hold `vidlab data plan`'s estimate against.

    MALLOC_MMAP_THRESHOLD_=65536 python -m vidlab.data.plan_measure TRAIN.yaml --tokens 2048 [--labels 40]
        [--device cpu|cuda]

loads the model as `vidlab train` does (`load_for_training`), runs optimiser steps on one text
sample of the given length whose last --labels tokens are learned (the loss at label positions only,
backward, clipping and AdamW as in `vidlab.training.steps`), and
prints one JSON object: the measured step memory and the plan's estimate of the same run. The
first step creates the optimiser states; the second is measured, as every later step of a run
looks. On a GPU the measure is torch's peak allocation; on a CPU (Linux) the process's peak
resident memory, reset before the step through /proc/self/clear_refs. Run it in a fresh process
with MALLOC_MMAP_THRESHOLD_ fixed: glibc then maps every large tensor on its own and returns it on
free, so resident memory follows what tensors hold.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path


def _rss(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def measure_step(config, tokens: int, device: str = "cpu", overrides: list[str] = (), labels: int = 40) -> dict:
    """Peak memory of one training step beyond what the loaded model and optimiser already hold, and the estimate.

    Returns:
        {"measured_step", "estimated_step", "measured_weights", "estimated_weights", "tokens", "labels", "device",
        "seconds"}, bytes (seconds: the measured step's);
        a step is forward, backward, clipping and the optimiser update.
    """
    import torch

    from vidlab.data.plan import setup_of
    from vidlab.data.plan_memory import estimate
    from vidlab.data.plan_model import read_architecture
    from vidlab.training.config import load_config
    from vidlab.training.model import load_for_training, parameter_groups
    from vidlab.training.steps import label_token_loss

    train = load_config(config, list(overrides), check_paths=False)
    on_gpu = device == "cuda"
    mixed = {"bf16": "bf16", "fp16": "fp16", "auto": "bf16"}.get(train.train.precision, "no") if on_gpu else "no"
    torch.manual_seed(0)
    before = torch.cuda.memory_allocated() if on_gpu else _rss("VmRSS")
    model, _ = load_for_training(train, torch.device(device), mixed)
    model.to(device).train()
    optimizer = torch.optim.AdamW(parameter_groups(model, train), lr=1e-4)
    vocab = model.config.text_config.vocab_size
    ids = torch.randint(0, vocab, (train.train.batch_size, tokens), device=device)
    targets = ids.clone()
    targets[:, : tokens - labels] = -100  # a prompt, then a `labels`-token answer
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=mixed == "bf16")

    def step() -> None:
        with autocast:
            loss, _ = label_token_loss(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, targets)
        loss.backward()
        del loss
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # creates the optimiser states, as every step after the first finds them
    gc.collect()
    if on_gpu:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        started = time.perf_counter()
        step()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        peak = torch.cuda.max_memory_allocated()
    else:
        base = _rss("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets the peak (VmHWM) to the current resident size
        started = time.perf_counter()
        step()
        seconds = time.perf_counter() - started
        peak = _rss("VmHWM")
    arch = read_architecture(train.model.path, train.lora.r, train.lora.target_modules, train.lora.modules_to_save)
    estimated = estimate(arch, setup_of(train, tokens, 0, 1, "none", device).but(label_tokens=labels), train.lora.r)
    return {
        "device": device,
        "tokens": tokens,
        "labels": labels,
        "seconds": round(seconds, 2),
        "measured_step": peak - base,
        # The runtime's one-time cost (thread pools, workspaces) is already in the baseline after the first step.
        "estimated_step": estimated.peak - estimated.weights - estimated.optimizer - estimated.runtime,
        "measured_weights": base - before,
        "estimated_weights": estimated.weights + estimated.optimizer,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="training config (YAML)")
    parser.add_argument("--tokens", type=int, required=True, help="length of the text sample")
    parser.add_argument("--labels", type=int, default=40, help="learned tokens at the end of the sample")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="section.key=value")
    args = parser.parse_args(argv)
    json.dump(measure_step(args.config, args.tokens, args.device, args.overrides, args.labels), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
