"""A million annotation records: `vidlab train` start-up and memory, and `vidlab data check` throughput;
and DDP: vidlab's training step on 2 processes against 1.

    python benchmarks/scale.py [--records 1000000] [--list-records 100000] [--check-records 10000,100000,1000000]
                               [--ddp-steps 20] [--only records|ddp]

Writes, in a temporary folder (deleted at the end), a few hundred small videos and RECORDS
LLaVA-Video-style caption records (~1 KB each: ~1 GB) as one JSON list and as JSONL. For each file it
runs `vidlab train` on the tiny model with 4 data-loader workers up to its first optimiser step and
reports the seconds to that step and the peak memory of the whole process tree (the trainer and its
workers): the sum of RSS (shared pages counted in every process) and of PSS (shared pages split
between the processes that share them: the memory the run really holds).

Compared:
- index: vidlab's reader (the file's record index, records parsed when used), first run (one pass
  that checks every record and builds the index; both are saved) and second run (reads the saved
  index and check: no record is parsed before training);
- parsed list: what the reader before the index kept, a Python list of every parsed record, made by
  materialising the index (run at --list-records only, since at a million it needs several GB;
  its per-record cost is reported so it can be scaled).
`one parsed copy` is the memory a list of all the records' parsed JSON takes (measured on
--list-records records and scaled to RECORDS), the yardstick of the goal (<= 1.5x in all processes).

DDP and FSDP2 (`--only ddp` runs this part alone, in minutes): `vidlab train` on the tiny model, 1 process of
batch 4 and then 2 processes of batch 2 (`accelerate launch --multi_gpu`, gloo on the CPU: the same
global batch, the same run), --ddp-steps steps each, one thread a process.
Step time is taken from the loop's own log (samples and samples/s of each row) after 2 warm-up steps;
peak memory is each training process's own (the launcher left out). FSDP2: tests/fsdp_check.py (the
tiny model sharded with torch's fully_shard outside accelerate, which runs FSDP only on GPUs:
docs/train.md) on 1 and 2 processes, the same global batch; its step time is timed around each step,
its peak is each process's own peak RSS. On a GPU machine these runs still use the CPU
(CUDA_VISIBLE_DEVICES="").

`vidlab data check` (`--only check` runs this part alone): the command on JSONL files of each
--check-records size over the same videos (2 workers, model_max_length 2048), a first run and a rerun
from its cache: seconds, records/s, and the peak RSS and PSS of the check and its workers together,
which should not grow with the file.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

WORDS = ("the a person walks into the room and picks up a cup then puts it on the table while talking to "
         "someone near the window before leaving through the door").split()


def write_videos(folder: Path, count: int) -> list[str]:
    from vidlab.data.synthetic import Scene, write_scene

    names = []
    shapes, colours, directions = ("circle", "square", "triangle"), ("red", "blue", "green"), ("left", "right")
    for i in range(count):
        name = f"v{i:03d}.mp4"
        write_scene(folder / name, Scene(shape=shapes[i % 3], colour=colours[i // 3 % 3],
                                         direction=directions[i // 9 % 2], size=32, seconds=1, fps=4))
        names.append(name)
    return names


def record(i: int, videos: list[str], rng: random.Random) -> dict:
    question = " ".join(rng.choices(WORDS, k=20))
    answer = " ".join(rng.choices(WORDS, k=150))
    return {"id": f"rec-{i:07d}", "video": [videos[i % len(videos)]], "data_source": "synthetic",
            "conversations": [{"from": "human", "value": f"<video>\n{question}?"}, {"from": "gpt", "value": answer}]}


def write_records(path: Path, count: int, videos: list[str], layout: str) -> Path:
    """Streamed to disk, never held: `count` records as one JSON list on one line, or as JSONL."""
    rng = random.Random(0)
    with open(path, "w", encoding="utf-8") as out:
        if layout == "json":
            out.write("[")
        for i in range(count):
            text = json.dumps(record(i, videos, rng))
            if layout == "json":
                out.write(text if i == 0 else ", " + text)
            else:
                out.write(text + "\n")
        if layout == "json":
            out.write("]")
    return path


def parsed_copy_mb(path: Path, count: int) -> float:
    """Resident MB a list of `count` parsed records of `path` takes (in a fresh process)."""
    code = ("import gc, psutil; import vidlab.record_index; from vidlab.annotations import read_records\n"
            "p = psutil.Process(); gc.collect(); before = p.memory_info().rss; items = []\n"
            f"for r in read_records({str(path)!r}):\n    items.append(r.item)\n    if len(items) >= {count}: break\n"
            "gc.collect(); print((p.memory_info().rss - before) / 2**20)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def tree_memory(pid: int) -> tuple[float, float, int]:
    """(RSS MB summed, PSS MB summed, processes) of a process and all its descendants."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0, 0.0, 0
    rss = pss = 0.0
    for process in processes:
        try:
            full = process.memory_full_info()
        except psutil.Error:
            continue
        rss += full.rss / 2**20
        pss += getattr(full, "pss", full.rss) / 2**20
    return rss, pss, len(processes)


_RUNNER = """
import sys
from pathlib import Path
import vidlab.training.loop as loop
from vidlab import train
from vidlab.training.config import load_config

reader = sys.argv[1]
if reader == "list":  # the reader before the index: every parsed record held in a list
    load = loop.load_records
    def load_list(*args, **kwargs):
        records, skipped = load(*args, **kwargs)
        return list(records), skipped
    loop.load_records = load_list
train(load_config(Path(sys.argv[2])))
"""


def first_step(model: Path, data: Path, out: Path, reader: str, workers: int = 4, limit: float = 900) -> dict:
    """`vidlab train` up to its first logged step: seconds, and the process tree's peak memory."""
    from vidlab.training.config import load_config

    config = load_config(None, [
        f"model.path={model}", f"data.train=[{data}]", f"output.dir={out}", f"data.workers={workers}",
        "data.max_frames=2", "train.batch_size=4", "train.max_steps=2", "output.log_steps=1",
        "output.save_steps=1000", "output.tensorboard=false", "output.progress=false", "lora.r=4",
        "learning_rates.llm=2e-4",
    ])
    path = out.with_suffix(".yaml")
    path.write_text(config.to_yaml())
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-c", _RUNNER, reader, str(path)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    peak_rss = peak_pss = 0.0
    most = 0
    log = out / "log.jsonl"
    seconds = None
    try:
        while time.monotonic() - started < limit:
            rss, pss, count = tree_memory(process.pid)
            peak_rss, peak_pss, most = max(peak_rss, rss), max(peak_pss, pss), max(most, count)
            if log.is_file() and log.read_text().strip():
                seconds = time.monotonic() - started
                break
            if process.poll() is not None:
                raise RuntimeError(f"vidlab train ended before its first step:\n{process.stderr.read()[-3000:]}")
            time.sleep(0.25)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return {"seconds": seconds, "peak_rss_mb": round(peak_rss), "peak_pss_mb": round(peak_pss), "processes": most}


def ddp_step(model: Path, data: Path, out: Path, processes: int, steps: int, global_batch: int = 4) -> dict:
    """`vidlab train` for `steps` steps on 1 or 2 processes (same global batch): seconds a step after warm-up,
    samples/s, and the peak RSS and PSS of the busiest training process."""
    from vidlab.training.config import load_config

    config = load_config(None, [
        f"model.path={model}", f"data.train=[{data}]", f"output.dir={out}", "data.workers=0",
        "data.max_frames=4", f"train.batch_size={global_batch // processes}", f"train.max_steps={steps}",
        "output.log_steps=1", "output.save_steps=100000", "output.tensorboard=false", "output.progress=false",
        "lora.r=8", "lora.dropout=0", "learning_rates.llm=1e-3", "train.seed=3",
    ])
    path = out.with_suffix(".yaml")
    path.write_text(config.to_yaml())
    train = ["-m", "vidlab.cli", "train", str(path)]
    if processes == 1:
        command = [sys.executable, *train]
    else:
        command = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes",
                   str(processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *train]
    # One thread a process: a process's work stays the same and 2 processes use 2 cores (torch's threads
    # spinning on a shared, busy machine made the 1-process run 12x slower in a first try).
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    peaks: dict[int, tuple[float, float]] = {}
    try:
        while process.poll() is None:
            for trainer in _trainers(process.pid):
                try:
                    full = trainer.memory_full_info()
                except psutil.Error:
                    continue
                rss, pss = peaks.get(trainer.pid, (0.0, 0.0))
                peaks[trainer.pid] = (max(rss, full.rss / 2**20), max(pss, getattr(full, "pss", full.rss) / 2**20))
            time.sleep(0.2)
        if process.returncode != 0:
            raise RuntimeError(f"vidlab train on {processes} process(es) failed:\n{process.stderr.read()[-3000:]}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    rows = [row for row in rows if "samples_per_s" in row]
    elapsed = [row["samples"] / row["samples_per_s"] for row in rows]  # seconds since the loop's start
    warm = 2
    return {"processes": processes, "engine": "DDP (vidlab train)" if processes > 1 else "vidlab train",
            "batch_per_process": global_batch // processes, "steps": steps,
            "step_s": round((elapsed[-1] - elapsed[warm - 1]) / (len(rows) - warm), 3),
            "samples_per_s": round(rows[-1]["samples_per_s"], 2), "final_loss": round(rows[-1]["loss"], 4),
            "peak_rss_mb_per_process": round(max(r for r, _ in peaks.values())),
            "peak_pss_mb_per_process": round(max(p for _, p in peaks.values()))}


def _trainers(pid: int) -> list[psutil.Process]:
    """The training processes of a run (under accelerate: its workers, not the launcher)."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return []
    found = []
    for process in tree:
        try:
            line = process.cmdline()
        except psutil.Error:
            continue
        if "vidlab.cli" in line and "launch" not in line:
            found.append(process)
    return found


def fsdp2_step(model: Path, data: Path, out: Path, processes: int, steps: int, global_batch: int = 4) -> dict:
    """tests/fsdp_check.py (FSDP2 outside accelerate, which runs FSDP only on GPUs) on 1 or 2 processes:
    seconds a step after warm-up, and the peak RSS of the busiest process."""
    from vidlab.training.config import load_config

    config = load_config(None, [
        f"model.path={model}", f"data.train=[{data}]", f"output.dir={out}", "data.max_frames=4",
        f"train.batch_size={global_batch}", "lora.r=8", "lora.dropout=0", "learning_rates.llm=1e-3",
    ])
    out.mkdir(parents=True)
    path = out / "config.yaml"
    path.write_text(config.to_yaml())
    check = Path(__file__).parents[1] / "tests" / "fsdp_check.py"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                    "--master_port", str(29700 + processes), str(check), str(path), str(out / "result.json"),
                    str(steps)], check=True, capture_output=True, env=env)
    result = json.loads((out / "result.json").read_text())
    warm = 2
    return {"processes": processes, "engine": "FSDP2" if result["sharded"] else "FSDP2 check, unsharded",
            "batch_per_process": global_batch // processes, "steps": steps,
            "step_s": round(sum(result["seconds"][warm:]) / (steps - warm), 3),
            "final_loss": round(result["losses"][-1], 4), "peak_rss_mb_per_process": round(max(result["peak_rss_mb"]))}


def ddp_rows(model: Path, videos: list[str], folder: Path, steps: int) -> list[dict]:
    data = folder / "ddp.jsonl"
    rng = random.Random(0)
    data.write_text("".join(json.dumps(record(i, videos, rng)) + "\n" for i in range(32)))
    rows = [ddp_step(model, data, folder / f"ddp-{n}", n, steps) for n in (1, 2)]
    rows += [fsdp2_step(model, data, folder / f"fsdp2-{n}", n, steps) for n in (1, 2)]
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def check_run(model: Path, data: Path, out: Path, workers: int = 2, limit: float = 14400) -> dict:
    """`vidlab data check` on `data` (the command, in its own process): seconds, records/s, and the peak RSS and
    PSS of the check and its workers together (sampled every second)."""
    command = [sys.executable, "-m", "vidlab.cli", "data", "check", str(data), "--model", str(model), "--out",
               str(out), "--workers", str(workers), "--max-length", "2048", "--no-progress"]
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    peak_rss = peak_pss = 0.0
    try:
        while process.poll() is None:
            if time.monotonic() - started > limit:
                raise RuntimeError(f"vidlab data check on {data} ran past {limit:g} s")
            rss, pss, _ = tree_memory(process.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(1.0)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    seconds = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"vidlab data check failed:\n{process.stderr.read()[-3000:]}")
    report = json.loads((out / "check.json").read_text())
    return {"records": report["records"], "cached": report["cached"], "seconds": round(seconds, 1),
            "records_per_s": round(report["records"] / seconds, 1), "peak_rss_mb": round(peak_rss),
            "peak_pss_mb": round(peak_pss)}


def check_rows(model: Path, videos: list[str], folder: Path, sizes: list[int], workers: int = 2) -> list[dict]:
    """`vidlab data check` on JSONL files of each size (records over the same videos), a first run and a rerun
    that reads its cache: the rate, and memory that should not grow with the file."""
    rows = []
    for count in sizes:
        data = write_records(folder / f"check-{count}.jsonl", count, videos, "jsonl")
        for run in ("first", "cached"):
            found = check_run(model, data, folder / f"check-{count}", workers)
            rows.append({"run": run, "workers": workers, **found})
            print(json.dumps(rows[-1]), flush=True)
        data.unlink()
    return rows


def _print_check(rows: list[dict]) -> None:
    if not rows:
        return
    print("\n| vidlab data check (JSONL) | run | seconds | records/s | peak RSS, all processes (MB) | peak PSS (MB) |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['records']:,} records | {row['run']} | {row['seconds']:.1f} | {row['records_per_s']:,} | "
              f"{row['peak_rss_mb']:,} | {row['peak_pss_mb']:,} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--list-records", type=int, default=100_000,
                        help="records for the parsed-list run (its memory grows with them)")
    parser.add_argument("--videos", type=int, default=300)
    parser.add_argument("--check-records", default="10000,100000,1000000",
                        help="sizes (comma-separated) of the JSONL files `vidlab data check` runs on")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--ddp-steps", type=int, default=20, help="steps of each DDP run (1 and 2 processes)")
    parser.add_argument("--only", choices=("records", "ddp", "check"),
                        help="run only the million records, only DDP or only `vidlab data check`")
    args = parser.parse_args()

    from vidlab.models.tiny import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="vidlab-scale-"))
    os.environ["VIDLAB_CACHE_DIR"] = str(work / "cache")  # the runs' index cache, deleted with the rest
    rows, ddp, check = [], [], []
    try:
        model = build_tiny_model(work / "tiny", seed=0)
        videos = write_videos(work, args.videos if args.only != "ddp" else 8)
        if args.only in (None, "ddp"):
            ddp = ddp_rows(model, videos, work, args.ddp_steps)
        if args.only == "ddp":
            return _print_ddp(ddp)
        sizes = [int(n) for n in args.check_records.split(",")]
        if args.only == "check":
            return _print_check(check_rows(model, videos, work, sizes))
        started = time.monotonic()
        big = {layout: write_records(work / f"train.{layout}", args.records, videos, layout)
               for layout in ("json", "jsonl")}
        print(f"wrote {args.records:,} records ({big['json'].stat().st_size / 2**30:.2f} GiB as a JSON list, "
              f"{big['jsonl'].stat().st_size / 2**30:.2f} GiB as JSONL) in {time.monotonic() - started:.0f} s",
              flush=True)
        small = write_records(work / "small.json", args.list_records, videos, "json")
        per_record = parsed_copy_mb(small, args.list_records) / args.list_records
        copy_mb = per_record * args.records
        print(f"one parsed copy: {per_record * 1024:.2f} KB a record, {copy_mb:,.0f} MB for {args.records:,}",
              flush=True)
        for layout, path in big.items():
            for run in ("first", "cached") if layout == "json" else ("first",):
                found = first_step(model, path, work / f"run-{layout}-{run}", "index", args.workers)
                rows.append({"reader": f"index ({run} run)", "file": f"{args.records:,} records, {layout}", **found,
                             "pss_vs_parsed_copy": round(found["peak_pss_mb"] / copy_mb, 2)})
                print(json.dumps(rows[-1]), flush=True)
        found = first_step(model, small, work / "run-list", "list", args.workers)
        small_copy = per_record * args.list_records
        rows.append({"reader": "parsed list", "file": f"{args.list_records:,} records, json", **found,
                     "pss_vs_parsed_copy": round(found["peak_pss_mb"] / small_copy, 2)})
        print(json.dumps(rows[-1]), flush=True)
        found = first_step(model, small, work / "run-small-index", "index", args.workers)
        rows.append({"reader": "index (first run)", "file": f"{args.list_records:,} records, json", **found,
                     "pss_vs_parsed_copy": round(found["peak_pss_mb"] / small_copy, 2)})
        print(json.dumps(rows[-1]), flush=True)
        for path in big.values():
            path.unlink()
        gc.collect()
        check = check_rows(model, videos, work, sizes)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\n| reader | file | first step (s) | peak RSS, all processes (MB) | peak PSS (MB) | PSS / one parsed copy |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print(f"| {row['reader']} | {row['file']} | {row['seconds']:.1f} | {row['peak_rss_mb']:,} | "
              f"{row['peak_pss_mb']:,} | {row['pss_vs_parsed_copy']} |")
    _print_check(check)
    _print_ddp(ddp)


def _print_ddp(rows: list[dict]) -> None:
    if not rows:
        return
    print("\n| run (gloo, CPU, 1 thread a process) | processes | batch a process | step (s) | vs 1 process | "
          "final loss | peak RSS a process (MB) | peak PSS a process (MB) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    one = None
    for row in rows:
        one = row["step_s"] if row["processes"] == 1 else one  # each engine against its own 1-process run
        print(f"| {row['engine']} | {row['processes']} | {row['batch_per_process']} | {row['step_s']:.3f} | "
              f"{row['step_s'] / one:.2f}x | {row['final_loss']} | {row['peak_rss_mb_per_process']:,} | "
              f"{row.get('peak_pss_mb_per_process', '-')} |")


if __name__ == "__main__":
    main()
