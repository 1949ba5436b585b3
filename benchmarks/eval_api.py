"""Evaluation in-process vs through `vidlab serve` (`vidlab eval run --api`), on the tiny model, same records.

    python benchmarks/eval_api.py [--videos 24] [--size 64] [--concurrency 4] [--ray]

A synthetic caption set (`vidlab data synth`) is answered in-process (batch 1, the reference, and batch 8),
then through a `vidlab serve` of the same model started here on 127.0.0.1 (1 replica, its own batching), and
with --ray through `vidlab serve --ray --replicas 2` (1 CPU each). Each way writes its own run folder, after
warm-up records of other videos; the reference runs again last, to show how the machine's load drifted. Prints
samples/s, the ratio against the reference, how many predictions equal the reference's (greedy: all should),
and the endpoint's requests and tokens. Servers are stopped by their process id.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: Path, name: str, extra: list[str], log: Path, timeout: float) -> tuple[subprocess.Popen, str]:
    """`vidlab serve` in a session of its own; returns once /health answers."""
    import httpx2

    port = free_port()
    command = [sys.executable, "-c", "from vidlab.cli import main; main()", "serve", "--model", str(model), "--name",
               name, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu", "--log-level", "warning", *extra]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"vidlab serve exited ({process.returncode}); see {log}:\n{log.read_text()[-2000:]}")
        try:
            if httpx2.get(f"{url}/health", timeout=2).status_code == 200:
                return process, f"{url}/v1"
        except httpx2.HTTPError:
            pass
        time.sleep(0.5)
    stop_server(process)
    raise RuntimeError(f"vidlab serve did not answer within {timeout:.0f} s; see {log}")


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM (the server stops what it started, Ray included), then SIGKILL to its session if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the session this script started for it (its pid is the group id)
    except ProcessLookupError:
        pass
    process.wait()


def predictions(folder: Path) -> dict[str, str]:
    rows = (json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines())
    return {row["id"]: row["prediction"] for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=24)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--ray", action="store_true", help="also 2 replicas through Ray Serve")
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, here and in each server process (on "
                        "a shared machine, more threads spin against each other)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)  # the servers inherit it
    import torch

    torch.set_num_threads(args.threads)

    from vidlab.data.synthetic_dataset import SynthSettings, write_synthetic_dataset
    from vidlab.evaluation.api_usage import endpoint_usage
    from vidlab.evaluation.endpoint import ApiOptions, run_api_predictions
    from vidlab.evaluation.run import RunOptions, run_predictions
    from vidlab.models import load_model
    from vidlab.models.tiny import build_tiny_model
    from vidlab.settings import GenerationOptions

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        warm_count = 2 * args.concurrency
        data = write_synthetic_dataset(tmp / "data", SynthSettings(train=1, val=0, test=args.videos + warm_count,
                                                                   size=args.size), progress=False)
        # Warm-up records of their own (other videos), so that no cache of the timed records is warm.
        lines = (data / "test.caption.jsonl").read_text().splitlines()
        warm, records = data / "warm.jsonl", data / "timed.jsonl"
        warm.write_text("\n".join(lines[:warm_count]) + "\n")
        records.write_text("\n".join(lines[warm_count:]) + "\n")
        model_dir = build_tiny_model(tmp / "tiny")
        generation = GenerationOptions(max_new_tokens=12)

        loaded = load_model(model_dir, device="cpu")
        run_predictions(loaded, warm, tmp / "warm", options=RunOptions(generation=generation, progress=False))

        def in_process(label: str, batch: int, folder: Path) -> None:
            started = time.perf_counter()
            run = run_predictions(loaded, records, folder, options=RunOptions(batch_size=batch, generation=generation,
                                                                             progress=False))
            results.append((label, run.answered / (time.perf_counter() - started), folder, None))

        in_process("in-process, batch 1 (reference)", 1, tmp / "local1")
        in_process("in-process, batch 8", 8, tmp / "local8")

        ways = [(f"vidlab serve, 1 replica, --concurrency {args.concurrency}", [])]
        if args.ray:
            ways.append((f"vidlab serve --ray --replicas 2, --concurrency {args.concurrency}",
                         ["--ray", "--replicas", "2", "--cpus-per-replica", "1"]))
        for n, (label, extra) in enumerate(ways):
            process, url = start_server(model_dir, "tiny", extra, tmp / f"serve{n}.log", args.start_timeout)
            try:
                folder = tmp / f"api{n}"
                api = ApiOptions(url, "tiny", concurrency=args.concurrency)
                run_api_predictions(api, warm, tmp / f"warm{n}", options=RunOptions(generation=generation,
                                                                                   progress=False))
                started = time.perf_counter()
                run = run_api_predictions(api, records, folder, options=RunOptions(generation=generation,
                                                                                   progress=False))
                results.append((label, run.answered / (time.perf_counter() - started), folder,
                                endpoint_usage(folder)))
            finally:
                stop_server(process)
        in_process("in-process, batch 1, again last (load drift)", 1, tmp / "local1-again")

        reference = predictions(results[0][2])
        print(f"{args.videos} caption records, {args.size}x{args.size} synthetic videos, tiny model, greedy, "
              f"12 new tokens, {args.threads} torch thread(s) per process, {os.cpu_count()} CPUs")
        for label, rate, folder, usage in results:
            same = sum(predictions(folder).get(i) == p for i, p in reference.items())
            cost = f"  {usage.requests} requests, {usage.prompt_tokens}+{usage.completion_tokens} tokens" \
                if usage else ""
            print(f"{label:<52} {rate:6.2f} samples/s  {rate / results[0][1]:5.2f}x  "
                  f"{same}/{len(reference)} equal{cost}")


if __name__ == "__main__":
    main()
