"""Every benchmark under one root: what is there (`vidlab eval benchmarks`), and one run over all of them
(`vidlab eval run --benchmark all`) with a summary table.

The root is laid out as VideoLLaMA3's README shows (`benchmarks/video/<name>/...`, folder names as
there: activitynet_qa, charades, egoschema, longvideobench, lvbench, mlvu, mvbench, nextqa,
perception_test, tempcompass, videomme), plus msrvtt, msvd, vatex and youcook2 for captions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidlab.errors import EvaluationError
from vidlab.evaluation.benchmarks import BENCHMARKS, Benchmark, get_benchmark, load_benchmark
from vidlab.evaluation.judge import JudgeOptions
from vidlab.evaluation.run import RunOptions
from vidlab.files import write_atomic, write_json

SUMMARY = "summary"


def benchmark_folder(root: Path, benchmark: Benchmark) -> Path | None:
    """root/<folder> or root/video/<folder> (VideoLLaMA3's `benchmarks/video/`), when it exists."""
    for candidate in (root / benchmark.folder, root / "video" / benchmark.folder):
        if candidate.is_dir():
            return candidate
    return None


@dataclass
class BenchmarkCheck:
    """What `check_benchmarks` found for one benchmark under a root."""

    name: str
    title: str
    folder: Path | None
    records: int = 0
    skipped: int = 0
    missing_media: int = 0
    first_missing: str | None = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.folder is not None and self.error is None and self.records > 0


def check_benchmarks(root: str | Path, names: Sequence[str] | None = None) -> list[BenchmarkCheck]:
    """For each benchmark (or the named ones): its folder under `root`, whether its files read as released,
    how many questions, and how many of their videos are missing."""
    root = Path(root).expanduser()
    chosen = [get_benchmark(n) for n in names] if names else list(BENCHMARKS.values())
    checks = []
    for benchmark in chosen:
        folder = benchmark_folder(root, benchmark)
        check = BenchmarkCheck(benchmark.name, benchmark.title, folder)
        if folder is None:
            check.error = f"no folder {root / benchmark.folder}/ (or {root / 'video' / benchmark.folder}/)"
        else:
            try:
                data = load_benchmark(benchmark.name, folder)
            except EvaluationError as err:
                check.error = str(err)
            else:
                check.records, check.skipped = len(data.records), len(data.skipped)
                for record in data.records:
                    for part in record.conversation.media:
                        if not (data.data_root / part.path).exists():
                            check.missing_media += 1
                            check.first_missing = check.first_missing or str(data.data_root / part.path)
        checks.append(check)
    return checks


@dataclass
class SuiteResult:
    """What `evaluate_benchmarks` did: one entry per run (Video-MME twice: without and with subtitles).

    Attributes:
        out_dir: the folder holding one run folder per benchmark, summary.json and summary.md.
        runs: per run: name, benchmark, split, subtitles, folder, records, predictions, skipped,
            unreadable, headline (the benchmark's own numbers) or error.
    """

    out_dir: Path
    runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summary(self) -> Path:
        return self.out_dir / f"{SUMMARY}.md"


def _plan(root: Path, names: Sequence[str] | None) -> list[tuple[str, Benchmark, Path, bool]]:
    chosen = [get_benchmark(n) for n in names] if names else list(BENCHMARKS.values())
    plan = []
    for benchmark in chosen:
        folder = benchmark_folder(root, benchmark)
        if folder is None:
            continue
        plan.append((benchmark.name, benchmark, folder, False))
        if benchmark.name == "videomme":  # VideoLLaMA3 reports Video-MME without and with subtitles
            plan.append(("videomme_subtitles", benchmark, folder, True))
    if not plan:
        raise EvaluationError(
            f"{root}: no benchmark folder found (looked for {', '.join(b.folder for b in chosen)} under it and under "
            f"{root / 'video'}). Lay the benchmarks out as `vidlab eval benchmarks` shows."
        )
    return plan


def _markdown(result: SuiteResult) -> str:
    lines = ["# Benchmarks", "", "| run | benchmark | split | records | skipped | unreadable | result |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for run in result.runs:
        shown = run.get("error") or ", ".join(
            f"{k} {v:.2f}" for k, v in (run.get("headline") or {}).items()) or "see its report"
        shown = shown.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| [{run['name']}]({run['name']}/report.md) | {run['title']} | {run.get('split') or ''} | "
                     f"{run.get('records', '')} | {run.get('skipped', '')} | {run.get('unreadable', '')} | {shown} |")
    return "\n".join(lines) + "\n"


def evaluate_benchmarks(
    model,
    root: str | Path,
    out_dir: str | Path,
    *,
    names: Sequence[str] | None = None,
    adapter: str | Path | None = None,
    options: RunOptions = RunOptions(),
    metrics: Sequence[str] | None = None,
    judge: JudgeOptions | None = None,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str | None = None,
) -> SuiteResult:
    """Evaluate every benchmark found under `root` (or the named ones), each into out_dir/<name>/ as
    `vidlab.evaluate(..., benchmark=...)` does, then write out_dir/summary.json and summary.md.

    A benchmark that fails (a folder not laid out as released, every record skipped) is reported in the
    summary with its error, and the others still run. Rerunning resumes each run where it stopped.
    """
    from vidlab.evaluation.api import evaluate

    root, out_dir = Path(root).expanduser(), Path(out_dir).expanduser()
    plan = _plan(root, names)
    if isinstance(model, (str, Path)) and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        from vidlab.models import load_model

        model = load_model(model, adapter=adapter, dtype=dtype, device=device, quantize=quantize)  # once, not per run
        adapter = None
    result = SuiteResult(out_dir)
    is_main = int(os.environ.get("RANK", "0")) == 0
    for name, benchmark, folder, subtitles in plan:
        entry: dict[str, Any] = {"name": name, "benchmark": benchmark.name, "title": benchmark.title,
                                 "subtitles": subtitles, "folder": str(folder)}
        try:
            run = evaluate(model, folder, out_dir / name, adapter=adapter, benchmark=benchmark.name,
                           subtitles=subtitles, options=options, metrics=metrics, judge=judge, device=device,
                           dtype=dtype, quantize=quantize)
        except EvaluationError as err:
            entry["error"] = str(err)
            result.runs.append(entry)
            continue
        is_main = run.is_main
        if not is_main:
            continue
        section = (run.metrics or {}).get("benchmark") or {}
        entry.update(split=benchmark.default_split, records=run.records, predictions=run.predictions,
                     skipped=len(run.skipped), unreadable=len(section.get("unreadable", [])),
                     headline=section.get("headline", {}))
        result.runs.append(entry)
    if is_main:
        write_json(out_dir / f"{SUMMARY}.json", {"root": str(root), "runs": result.runs})
        write_atomic(out_dir / f"{SUMMARY}.md", _markdown(result))
    return result
