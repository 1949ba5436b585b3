"""`vidlab.evaluate` and `vidlab.score`: what `vidlab eval run` and `vidlab eval score` do, as calls.

    result = vidlab.evaluate("runs/base", "data/test.jsonl", "runs/eval-base")
    result.metrics["bleu4"], result.skipped, result.report
    vidlab.evaluate("runs/base", "benchmarks/video/mvbench", "runs/mvbench", benchmark="mvbench")
    vidlab.evaluate(ApiOptions("http://localhost:8000/v1", "videollama3"), "data/test.jsonl", "runs/api")  # an endpoint
    vidlab.score("runs/eval-base/predictions.jsonl", metrics=["bleu4", "cider"])
    evaluate_benchmarks("runs/base", "benchmarks/video", "runs/all")     # vidlab eval run --benchmark all
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidlab.errors import EvaluationError
from vidlab.evaluation.judge import JudgeOptions
from vidlab.evaluation.records import EvalSet, Skipped
from vidlab.evaluation.run import PREDICTIONS, SKIPPED, RunOptions, run_predictions


@dataclass
class ScoreResult:
    """What `score` wrote: metrics.json (its content in `metrics`) and, when asked, report.md."""

    predictions: Path
    metrics: dict[str, Any]
    report: Path | None = None


@dataclass
class EvalResult:
    """What `evaluate` did and wrote.

    Attributes:
        out_dir: the run folder (predictions.jsonl, skipped.jsonl, run.json, metrics.json, report.md).
        records: readable records in the data set (after the limit).
        predictions: lines in predictions.jsonl after the run.
        answered: predictions this call added (a rerun answers only what is missing).
        skipped: records not evaluated, each with its file:line and reason (also in skipped.jsonl).
        metrics: metrics.json's content (None with score=False, and on every process but the first).
        report: report.md (None when not written).
        is_main: process 0 (or the only process), the one that merged, scored and reported.
    """

    out_dir: Path
    records: int
    predictions: int
    answered: int
    skipped: list[Skipped] = field(default_factory=list)
    metrics: dict[str, Any] | None = None
    report: Path | None = None
    is_main: bool = True


def score(
    predictions: str | Path, metrics: Sequence[str] | None = None, *, report: bool = True,
    judge: JudgeOptions | None = None,
) -> ScoreResult:
    """Score a predictions.jsonl: metrics.json beside it, per-sample scores into it, and report.md.

    Args:
        predictions: the predictions.jsonl of `vidlab eval run` / `vidlab.evaluate`.
        metrics: metric names (None: every metric that applies); see `vidlab.evaluation.metrics.METRICS`.
        report: also write report.md and report.png beside the predictions.
        judge: an OpenAI-compatible endpoint to judge open-ended benchmark answers (ActivityNet-QA,
            TempCompass captioning, MSVD-QA, MSRVTT-QA, MMVU, Video-ChatGPT); its verdicts are cached in
            judgements.jsonl and reused.
    """
    from vidlab.evaluation.metrics import score_file
    from vidlab.evaluation.report import write_report

    path = Path(predictions).expanduser()
    values = score_file(path, metrics, judge=judge)
    return ScoreResult(path, values, write_report(path.parent) if report else None)


def evaluate(
    model,
    data: EvalSet | str | Path,
    out_dir: str | Path,
    *,
    adapter: str | Path | None = None,
    data_root: str | Path | None = None,
    format: str = "auto",
    subtitles: bool = False,
    benchmark: str | None = None,
    split: str | None = None,
    options: RunOptions = RunOptions(),
    metrics: Sequence[str] | None = None,
    judge: JudgeOptions | None = None,
    score_predictions: bool = True,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str | None = None,
) -> EvalResult:
    """Answer every record of `data` (resuming a folder that has some answers), then score and report.

    Args:
        model: a checkpoint folder or hub id, a loaded `(model, processor)` pair, or an
            `vidlab.evaluation.endpoint.ApiOptions`: the answers come from that OpenAI-compatible endpoint
            (`vidlab serve`, vLLM, a hosted model) with the same records, prompts, frames and scoring.
        data: an `EvalSet`, a data file / folder (read with `format`, `data_root`, `subtitles`), or, with
            `benchmark`, the benchmark's folder as released.
        out_dir: the run folder; running again into it answers only the missing records.
        adapter: a PEFT adapter folder to apply (when `model` is a path).
        benchmark: read `data` as this benchmark's folder (see `vidlab eval benchmarks`), with its
            prompts, answer rules and scores.
        split: the benchmark's split (None: its default).
        subtitles: Video-MME, LongVideoBench: put the subtitles at the sampled frames before the question.
        options: batch size, limit, media settings, decoding, decoding workers, progress bar.
        metrics: metrics to compute (None: all that apply). A misspelt name fails before any work.
        judge: an OpenAI-compatible endpoint that judges open-ended benchmark answers (cached, resumable).
        score_predictions: score and write the report (False: only predictions, score later).
        device, dtype, quantize: as in `vidlab.load_model`; under accelerate, auto is each process's device.

    Raises:
        EvaluationError: a bad data file, a benchmark folder not laid out as released (the message says
            what was expected where), a folder holding another run's predictions, or every record skipped
            (the message names skipped.jsonl, where each reason is).
    """
    from vidlab.evaluation.metrics import parse_metric_names

    parse_metric_names(metrics)
    if benchmark is not None:
        from vidlab.evaluation.benchmarks import load_benchmark

        if isinstance(data, EvalSet):
            raise EvaluationError("benchmark= reads the benchmark's folder: pass its path as data, not an EvalSet.")
        data = load_benchmark(benchmark, data, split, subtitles)
    elif split is not None:
        raise EvaluationError("--split applies to a benchmark: give --benchmark NAME --root DIR.")
    out_dir = Path(out_dir).expanduser()
    from vidlab.evaluation.endpoint import ApiOptions, run_api_predictions

    if isinstance(model, ApiOptions):
        if adapter is not None or quantize is not None:
            raise EvaluationError("adapter and quantize apply to a local model; through an endpoint, name the "
                                  "adapter as the model (vidlab serve serves each adapter under its name).")
        run = run_api_predictions(model, data, out_dir, data_root=data_root, format=format, subtitles=subtitles,
                                  options=options)
    else:
        run = run_predictions(model, data, out_dir, adapter=adapter, data_root=data_root, format=format,
                              subtitles=subtitles, options=options, device=device, dtype=dtype, quantize=quantize)
    result = EvalResult(out_dir, run.records, run.predictions, run.answered, run.skipped, is_main=run.is_main)
    if not run.is_main or not score_predictions:
        return result
    if run.predictions == 0:
        first = f" The first: {run.skipped[0].source}: {run.skipped[0].reason}" if run.skipped else ""
        raise EvaluationError(
            f"{out_dir / PREDICTIONS}: no predictions, because every record of the data set "
            f"({len(run.skipped)}) was skipped. Each record and its reason are in {out_dir / SKIPPED}.{first}"
        )
    scored = score(out_dir / PREDICTIONS, metrics, judge=judge)
    result.metrics, result.report = scored.metrics, scored.report
    return result
