"""Video compressors against VideoLLaMA3 as released, on a long-video task the tiny model learns on a CPU.

    python benchmarks/compressors.py --out runs/compressors --jobs 2   # docs/compressors.md's table (1-1.5 h)
    python benchmarks/compressors.py --out runs/compressors-smoke --fast   # the pipeline in minutes

The task (vidlab.data.flashes): a disc flashes for one second at a random moment in a 2-5 minute
grey video at 1 fps; "What colour was the disc?". Thinned below 1 fps a video loses the flash
with the frame that held it, so the task needs every frame.

1. data: 4-second clips with the disc on screen throughout, short clips (8-16 s) with flashes of
   1-6 s, long videos (120-300 s) with flashes of 1 s to train and test each option;
2. the base, the stand-in for a released checkpoint: the tiny VideoLLaMA3 trained from random weights
   as released (`none`), first on the 4-second clips (colours), then on the short clips (finding
   the flash); trained on the short clips alone it stayed at chance (one colour for every video);
   its accuracy on held-out short clips is printed;
3. each compressor with weights is first aligned, as LLaMA-VID and TinyLLaVA-Video align theirs and
   vidlab's recipes do: added new to the base and trained with the projector on the short clips,
   LLM and vision encoder frozen (trained on the long videos alone, 150 steps left llamavid at
   37.5% and group_resampler at chance);
4. each option then trains, every part, on the long videos for the same number of steps (and
   `group_resampler` and `none` once more for 4x the steps), and answers the long test videos;
5. the table: accuracy (all, videos up to 180 s, longer ones), visual tokens per video, frames
   kept, seconds per sample and peak resident memory of training and of answering.

Every step runs in its own process (its peak memory is its own), one torch thread each, and is
skipped when its result is there: rerun the same command after a crash. `--jobs 2` runs two
options at once (their timings then share the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# option -> (video_compressor, media settings). Frames of the long videos are 56x56: 4 merged patches each.
OPTIONS = {
    "none": (None, {"max_frames": 180, "max_visual_tokens": 720}),  # as released: 180 frames, every patch
    "llamavid": ({"kind": "llamavid", "heads": 4, "content_tokens": 1}, {"max_frames": 300}),
    "group_resampler": ({"kind": "group_resampler", "heads": 4, "groups": 16, "latents": 4, "layers": 2},
                        {"max_frames": 300}),
    "pool": ({"kind": "pool", "pool_size": 1}, {"max_frames": 300}),
    # the same 64-token budget as group_resampler (16 x 4)
    "pool, 64 tokens": ({"kind": "pool", "pool_size": 1}, {"max_frames": 300, "max_visual_tokens": 64}),
    "none, 64 tokens": (None, {"max_frames": 180, "max_visual_tokens": 64}),
    # 4x the steps for the resampler, and for the reference
    "group_resampler, 600 steps": ({"kind": "group_resampler", "heads": 4, "groups": 16, "latents": 4, "layers": 2},
                                   {"max_frames": 300}),
    "none, 600 steps": (None, {"max_frames": 180, "max_visual_tokens": 720}),  # the same steps for the reference
}
STEP_FACTOR = {"group_resampler, 600 steps": 4, "none, 600 steps": 4}
ALIGNED_AS = {"group_resampler, 600 steps": "group_resampler"}  # shares that option's alignment
MEDIA = {"fps": 1.0, "compression": False}  # DiffFP off: the grey frames would prune to nothing but the flash
BASE_RATE = 5.0e-3  # the base's first stage, from random weights
FLASH_RATE = 3.0e-3  # the base's second stage
RATE = 3.0e-3  # a new compressor
TUNE_RATE = 1.0e-3  # the base's parts on the long videos


def sizes(fast: bool) -> dict:
    if fast:
        return {"colours": 100, "short": 200, "short_test": 12, "long": 24, "test": 12, "colour_steps": 20,
                "base_steps": 40, "align_steps": 10, "steps": 6, "batch": 4, "base_batch": 8}
    return {"colours": 2000, "short": 3000, "short_test": 100, "long": 800, "test": 120, "colour_steps": 400,
            "base_steps": 800, "align_steps": 600, "steps": 150, "batch": 8, "base_batch": 16}


def slug(option: str) -> str:
    return option.replace(", ", "-").replace(" ", "-")


# ---------------------------------------------------------------- the steps, each in its own process


def step_data(out: Path, fast: bool, seed: int) -> dict:
    from vidlab.data.flashes import FlashSettings, write_flashes
    from vidlab.models.tiny import build_tiny_model

    n = sizes(fast)
    if not (out / "data" / "colours").exists():
        write_flashes(out / "data" / "colours", FlashSettings(train=n["colours"], test=0, seconds=(4, 4),
                                                              flash_seconds=(4, 4), seed=seed + 2))
    if not (out / "data" / "short").exists():
        write_flashes(out / "data" / "short", FlashSettings(train=n["short"], test=n["short_test"], seconds=(8, 16),
                                                            flash_seconds=(1, 6), seed=seed))
    if not (out / "data" / "long").exists():
        write_flashes(out / "data" / "long", FlashSettings(train=n["long"], test=n["test"], seconds=(120, 300),
                                                           seed=seed + 1), progress=True)
    if not (out / "models" / "init").exists():
        build_tiny_model(out / "models" / "init", seed=seed)
    return {}


def _train(config: dict) -> dict:
    import vidlab

    started = time.perf_counter()
    result = vidlab.train(config, resume="auto")
    seconds = time.perf_counter() - started
    log = [row for row in result.log if "loss" in row]
    samples = log[-1]["samples"] if log else 0
    return {"steps": result.steps, "final_loss": result.final_loss, "seconds": seconds,
            "seconds_per_sample": seconds / max(samples, 1)}


def _base_stage(out: Path, fast: bool, seed: int, start: Path, data: str, rate: float, steps: int,
                name: str) -> dict:
    n = sizes(fast)
    return _train({
        "model": {"path": str(start)},
        "data": {"train": [str(out / "data" / data / "train.jsonl")], **MEDIA, "max_visual_tokens": 1000,
                 "workers": 1},
        "method": "full", "learning_rates": {"vision": rate, "projector": rate, "llm": rate},
        "optim": {"warmup_ratio": 0.05},
        "train": {"batch_size": n["base_batch"], "max_steps": steps, "seed": seed},
        "output": {"dir": str(out / "runs" / name), "save_steps": 200, "log_steps": 10, "tensorboard": False,
                   "progress": False},
    })


def step_colours(out: Path, fast: bool, seed: int) -> dict:
    return _base_stage(out, fast, seed, out / "models" / "init", "colours", BASE_RATE, sizes(fast)["colour_steps"],
                       "base-colours")


def step_base(out: Path, fast: bool, seed: int) -> dict:
    result = _base_stage(out, fast, seed, out / "runs" / "base-colours", "short", FLASH_RATE,
                         sizes(fast)["base_steps"], "base")
    answered = _answer(out / "runs" / "base", out / "data" / "short" / "test.jsonl", out / "eval" / "base-short",
                       {"max_visual_tokens": 1000})
    return {**result, "short_clip_accuracy": answered["accuracy"]}


def learns(option: str) -> bool:
    """Whether the option's compressor has weights (and so an alignment stage)."""
    compressor = OPTIONS[option][0]
    return compressor is not None and compressor["kind"] != "pool"


def step_align(out: Path, fast: bool, seed: int, option: str) -> dict:
    n = sizes(fast)
    option = ALIGNED_AS.get(option, option)
    return _train({
        "model": {"path": str(out / "runs" / "base"), "video_compressor": OPTIONS[option][0]},
        "data": {"train": [str(out / "data" / "short" / "train.jsonl")], **MEDIA, "workers": 1},
        "method": "full", "learning_rates": {"projector": TUNE_RATE, "compressor": RATE},
        "optim": {"warmup_ratio": 0.05},
        "train": {"batch_size": n["base_batch"], "max_steps": n["align_steps"], "seed": seed},
        "output": {"dir": str(out / "runs" / f"align-{slug(option)}"), "save_steps": 200, "log_steps": 10,
                   "tensorboard": False, "progress": False},
    })


def step_train(out: Path, fast: bool, seed: int, option: str) -> dict:
    n = sizes(fast)
    compressor, media = OPTIONS[option]
    rates = {"vision": TUNE_RATE, "projector": TUNE_RATE, "llm": TUNE_RATE}
    start, added = out / "runs" / "base", compressor
    if learns(option):
        rates["compressor"] = RATE
        start, added = out / "runs" / f"align-{slug(ALIGNED_AS.get(option, option))}", None  # it carries it
    return _train({
        "model": {"path": str(start), "video_compressor": added},
        "data": {"train": [str(out / "data" / "long" / "train.jsonl")], **MEDIA, **media, "workers": 1},
        "method": "full", "learning_rates": rates, "optim": {"warmup_ratio": 0.05},
        "train": {"batch_size": n["batch"], "max_steps": n["steps"] * STEP_FACTOR.get(option, 1), "seed": seed},
        "output": {"dir": str(out / "runs" / slug(option)), "save_steps": 50, "log_steps": 5, "tensorboard": False,
                   "progress": False},
    })


def _answer(model: Path, test: Path, folder: Path, media: dict) -> dict:
    import vidlab

    started = time.perf_counter()
    vidlab.evaluate(model, test, folder,
                    options=vidlab.RunOptions(batch_size=4, settings=vidlab.MediaSettings(**MEDIA, **media),
                                              generation=vidlab.GenerationOptions(max_new_tokens=8),
                                              progress=False, workers=1),
                    metrics=["exact_match"])
    seconds = time.perf_counter() - started
    records = {json.loads(line)["id"]: json.loads(line) for line in test.read_text().splitlines()}
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    right = {row["id"]: row["prediction"].strip().lower() == row["references"][0] for row in rows}
    short = [right[i] for i in right if records[i]["seconds"] <= 180]
    long = [right[i] for i in right if records[i]["seconds"] > 180]
    return {
        "answered": len(rows), "accuracy": 100 * sum(right.values()) / len(rows),
        "accuracy_short": 100 * sum(short) / max(len(short), 1), "accuracy_long": 100 * sum(long) / max(len(long), 1),
        "videos_short": len(short), "videos_long": len(long),
        "visual_tokens": sum(row["visual_tokens"] for row in rows) / len(rows),
        "frames": sum(len(row["frames"][0]) for row in rows) / len(rows),
        "seconds": seconds, "seconds_per_sample": seconds / len(rows),
    }


def step_answer(out: Path, fast: bool, seed: int, option: str) -> dict:
    return _answer(out / "runs" / slug(option), out / "data" / "long" / "test.jsonl", out / "eval" / slug(option),
                   OPTIONS[option][1])


STEPS = {"data": step_data, "colours": step_colours, "base": step_base, "align": step_align, "train": step_train,
         "answer": step_answer}


def child(args) -> None:
    """Run one step here and write its result, with this process's peak resident memory, as JSON."""
    import torch

    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    extra = [args.option] if args.option else []
    result = STEPS[args.step](args.out, args.fast, args.seed, *extra)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    target = args.out / "results" / f"{args.step}{'-' + slug(args.option) if args.option else ''}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, target)


def run_step(args, step: str, option: str | None = None) -> dict:
    """The step's result: read if an earlier run wrote it, else computed in a child process."""
    target = args.out / "results" / f"{step}{'-' + slug(option) if option else ''}.json"
    if not target.exists():
        label = f"{step} {option}" if option else step
        print(f"[{time.strftime('%H:%M:%S')}] {label} ...", flush=True)
        command = [sys.executable, __file__, "--child", step, "--out", str(args.out), "--seed", str(args.seed),
                   "--threads", str(args.threads), *(["--fast"] if args.fast else []),
                   *(["--option", option] if option else [])]
        log = args.out / "logs" / f"{step}{'-' + slug(option) if option else ''}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("w") as handle:
            done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise SystemExit(f"{label} failed (exit {done.returncode}); see {log}")
        print(f"[{time.strftime('%H:%M:%S')}] {label} done", flush=True)
    return json.loads(target.read_text())


def table(results: dict[str, dict]) -> str:
    width = max(len(option) for option in results)
    header = (f"{'option':<{width}} {'accuracy %':>10} {'<=180 s':>8} {'>180 s':>7} {'visual tokens':>13} "
              f"{'frames':>7} {'train s/sample':>14} {'answer s/sample':>15} {'train peak MB':>13} "
              f"{'answer peak MB':>14}")
    lines = [header]
    for option, (trained, answered) in results.items():
        lines.append(
            f"{option:<{width}} {answered['accuracy']:>10.1f} {answered['accuracy_short']:>8.1f} "
            f"{answered['accuracy_long']:>7.1f} {answered['visual_tokens']:>13.1f} {answered['frames']:>7.1f} "
            f"{trained['seconds_per_sample']:>14.3f} {answered['seconds_per_sample']:>15.3f} "
            f"{trained['peak_rss_mb']:>13.0f} {answered['peak_rss_mb']:>14.0f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/compressors"), help="Folder for everything it makes.")
    parser.add_argument("--fast", action="store_true", help="A smoke run: few videos and steps, the pipeline only.")
    parser.add_argument("--seed", type=int, default=0, help="Seeds the data, the initial weights and training.")
    parser.add_argument("--jobs", type=int, default=1, help="Options trained and answered at once.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process.")
    parser.add_argument("--options", nargs="*", default=list(OPTIONS), help=f"Which of: {', '.join(OPTIONS)}.")
    parser.add_argument("--child", choices=list(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--option", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.step = args.child
        child(args)
        return
    unknown = sorted(set(args.options) - set(OPTIONS))
    if unknown:
        raise SystemExit(f"--options: unknown {', '.join(unknown)}; choose from {', '.join(OPTIONS)}")
    started = time.perf_counter()
    run_step(args, "data")
    colours = run_step(args, "colours")
    base = run_step(args, "base")
    print(f"base: {colours['steps']} steps on the 4-second clips, then {base['steps']} on the short clips; "
          f"{base['short_clip_accuracy']:.1f}% right on held-out short clips (chance: 25%)", flush=True)

    aligned = {}

    def option_results(option: str) -> tuple[dict, dict]:
        if learns(option):
            aligned[option] = run_step(args, "align", ALIGNED_AS.get(option, option))
        return run_step(args, "train", option), run_step(args, "answer", option)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = dict(zip(args.options, pool.map(option_results, args.options)))
    text = table(results)
    summary = {"settings": {"fast": args.fast, "seed": args.seed, "jobs": args.jobs, "threads": args.threads,
                            "sizes": sizes(args.fast)}, "base": {"colours": colours, "flashes": base},
               "options": {o: {"compressor": OPTIONS[o][0], "media": OPTIONS[o][1], "align": aligned.get(o), "train": t,
                               "answer": a}
                           for o, (t, a) in results.items()}}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print()
    print(text)
    print(f"\n{time.perf_counter() - started:.0f} s; every number in {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
