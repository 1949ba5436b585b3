"""Evaluation throughput on the tiny model: samples per second, batched and decoding ahead in parallel.

    python benchmarks/eval_throughput.py [--videos 96] [--size 224]

A synthetic caption set (`vidlab data synth`; `--size` px, 16 frames) is answered four ways, each
in a new output folder: batch 1 with decoding in the same thread (the reference), batch 1 and
batch 8 with 2 decoding threads ahead, and batch 8 without them. Prints samples/s, the ratio
against the reference, and the process's peak memory.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=96)
    parser.add_argument("--size", type=int, default=224)
    args = parser.parse_args()

    from vidlab.data.synthetic_dataset import SynthSettings, write_synthetic_dataset
    from vidlab.evaluation.run import RunOptions, run_predictions
    from vidlab.models import load_model
    from vidlab.models.tiny import build_tiny_model
    from vidlab.settings import GenerationOptions

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_synthetic_dataset(tmp / "data", SynthSettings(train=1, val=0, test=args.videos, size=args.size),
                                       progress=False)
        loaded = load_model(build_tiny_model(tmp / "tiny"), device="cpu")
        records = data / "test.caption.jsonl"
        generation = GenerationOptions(max_new_tokens=12)
        runs = [("batch 1, decoding in line (reference)", 1, 0), ("batch 1, 2 decoding threads", 1, 2),
                ("batch 8, decoding in line", 8, 0), ("batch 8, 2 decoding threads", 8, 2)]
        results = []
        for n, (label, batch, workers) in enumerate(runs):
            options = RunOptions(batch_size=batch, workers=workers, generation=generation, progress=False)
            started = time.perf_counter()
            result = run_predictions(loaded, records, tmp / f"run{n}", options=options)
            results.append((label, result.answered / (time.perf_counter() - started)))
    reference = results[0][1]
    print(f"{args.videos} caption records, {args.size}x{args.size} videos of 16 frames, tiny model, 2 CPU threads")
    for label, rate in results:
        print(f"{label:<38} {rate:7.1f} samples/s  {rate / reference:5.2f}x")
    print(f"peak memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
