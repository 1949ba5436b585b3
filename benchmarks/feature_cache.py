"""A LoRA epoch from cached vision features (data.feature_cache) against decoding and encoding each time.

    python benchmarks/feature_cache.py                      # tiny model, 16 clips (about a minute on a CPU)
    python benchmarks/feature_cache.py --clips 64 --seconds 8
    python benchmarks/feature_cache.py --model runs/2b-2    # a model folder: here the 2b shape

Three runs of the same config on the tiny model (or --model), in one process: an epoch decoding and encoding every
video (the default), the first epoch with the cache (extraction, then the epoch from it), and a
second epoch with the cache (the shards reused). Prints each run's seconds, the ratio of the
decoding epoch to the cached one, and whether their losses agree.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from vidlab import train
from vidlab.data.synthetic import Scene, write_scene
from vidlab.models.tiny import build_tiny_model
from vidlab.training.config import load_config

SHAPES, COLOURS, DIRECTIONS = ("circle", "square", "triangle"), ("red", "blue", "green", "yellow"), ("left", "up")


def write_clips(root: Path, count: int, seconds: int) -> Path:
    lines = []
    for i in range(count):
        scene = Scene(shape=SHAPES[i % 3], colour=COLOURS[i % 4], direction=DIRECTIONS[i % 2], size=112,
                      seconds=seconds, fps=8)
        write_scene(root / f"v{i}.mp4", scene)
        lines.append({"id": f"v{i}", "video": [f"v{i}.mp4"], "conversations": [
            {"from": "human", "value": "<video>\nDescribe the video."}, {"from": "gpt", "value": scene.caption}]})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return root / "train.jsonl"


def timed_epoch(model: Path, data: Path, out: Path, *extra: str) -> tuple[float, list[float]]:
    config = load_config(None, [
        f"model.path={model}", f"data.train=[{data}]", f"output.dir={out}", "data.workers=0", "data.max_frames=8",
        "learning_rates.llm=1e-3", "lora.r=8", "train.batch_size=2", "train.epochs=1", "output.log_steps=1",
        "output.tensorboard=false", "output.progress=false", "output.save_steps=100000", *extra])
    start = time.perf_counter()
    result = train(config)
    return time.perf_counter() - start, [row["loss"] for row in result.log if "loss" in row]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--model", type=Path, help="a model folder (default: a tiny model built here)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model or build_tiny_model(root / "model")
        (root / "clips").mkdir()
        data = write_clips(root / "clips", args.clips, args.seconds)
        decoded, decoded_losses = timed_epoch(model, data, root / "decoded")
        cache = f"data.feature_cache={root / 'cache'}"
        extracting, _ = timed_epoch(model, data, root / "extracting", cache)
        cached, cached_losses = timed_epoch(model, data, root / "cached", cache)
    agree = max(abs(a - b) for a, b in zip(decoded_losses, cached_losses))
    print(json.dumps({
        "model": str(args.model or "tiny"), "clips": args.clips, "seconds": args.seconds, "steps": len(decoded_losses),
        "decode_encode_epoch_s": round(decoded, 2), "extract_then_epoch_s": round(extracting, 2),
        "cached_epoch_s": round(cached, 2), "ratio_decode_to_cached": round(decoded / cached, 2),
        "max_loss_difference": agree,
    }, indent=2))


if __name__ == "__main__":
    main()
