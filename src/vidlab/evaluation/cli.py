"""`vidlab eval run | score | compare`. Thin: parse, call the library, print.

Also runnable alone, e.g. under accelerate: `accelerate launch -m vidlab.evaluation.cli run ...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vidlab.cli_common import (
    MaxNewTokensOption,
    MediaOptions,
    QuantizeOption,
    generation_options,
    media_options,
    quiet_transformers,
    run_app,
)
from vidlab.settings import DECODE_WORKERS

eval_app = typer.Typer(
    help="Evaluate a model: predictions, caption metrics (BLEU, METEOR, ROUGE-L, CIDEr), video benchmarks, reports.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

MetricsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--metrics",
        help="Metrics to compute, comma-separated or repeated: bleu1, bleu2, bleu3, bleu4, sacrebleu, meteor, "
        "rouge_l, cider, exact_match, strict_match, accuracy, miou, r1@0.3, r1@0.5, r1@0.7, judge_accuracy, "
        "judge_score, judge_correctness, judge_detail, judge_context, judge_temporal, judge_consistency "
        "(default: all that apply).",
    ),
]
JudgeUrlOption = Annotated[str | None, typer.Option(
    help="Base URL of an OpenAI-compatible endpoint (e.g. http://localhost:8000/v1, a `vidlab serve`) whose model "
         "judges open-ended benchmark answers (ActivityNet-QA, TempCompass captioning, MSVD-QA, MSRVTT-QA, "
         "MMVU, Video-ChatGPT). Judgements are cached in "
         "judgements.jsonl and reused.")]
JudgeModelOption = Annotated[str | None, typer.Option(help="The model the judge endpoint serves (with --judge-url).")]
JudgeKeyOption = Annotated[str | None, typer.Option(help="API key of the judge endpoint (default: none).",
                                                    envvar="VIDLAB_JUDGE_KEY")]
JudgeWorkersOption = Annotated[int, typer.Option(help="Judge requests in flight at once.")]


def _judge(url: str | None, model: str | None, key: str | None, workers: int):
    if url is None and model is None:
        return None
    if not url or not model:
        raise typer.BadParameter("give both --judge-url and --judge-model.")
    from vidlab.evaluation.judge import JudgeOptions

    return JudgeOptions(url=url, model=model, key=key, workers=workers)


def _summary(metrics: dict) -> str:
    from vidlab.evaluation.metrics import METRICS

    shown = ", ".join(f"{m} {metrics[m]:.2f}" for m in METRICS if isinstance(metrics.get(m), (int, float)))
    notes = "".join(f"\nnote: {k}: {v}" for k, v in (metrics.get("notes") or {}).items())
    section = metrics.get("benchmark") or {}
    if section.get("headline"):
        shown = f"{section['title']}: " + ", ".join(f"{k} {v:.2f}" for k, v in section["headline"].items())
    if section.get("unreadable"):
        notes += f"\nnote: {len(section['unreadable'])} answers could not be read and count as wrong (see report.md)"
    return (shown or "no metric applies") + notes


@eval_app.command("run")
@media_options()
def run_command(
    model: Annotated[str | None, typer.Option(help="Checkpoint folder or hub id of a native VideoLLaMA3 (or use "
                                              "--api).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for predictions.jsonl, skipped.jsonl, metrics.json, report.md "
                                      "(--benchmark all: a folder per benchmark and summary.md). Rerunning into the "
                                      "same folder resumes.")] = ...,
    data: Annotated[
        Path | None, typer.Option(help="Records to answer: annotation JSON/JSONL, multiple-choice JSON/JSONL, "
                                  "Video-MME (parquet/JSON/JSONL), MVBench or MLVU (its json/ folder or one task "
                                  "file). Or use --benchmark and --root.")
    ] = None,
    benchmark: Annotated[str | None, typer.Option(
        help="Read --root as this benchmark as released (`vidlab eval benchmarks` lists them), with its prompts, "
             "answer rules and scores; `all`: every benchmark found under --root, with one summary table.")] = None,
    root: Annotated[Path | None, typer.Option(help="The benchmark's folder (with --benchmark all: the folder "
                                              "holding one folder per benchmark, as VideoLLaMA3's README lays "
                                              "out benchmarks/video/).")] = None,
    split: Annotated[str | None, typer.Option(help="The benchmark's split (default: the one VideoLLaMA3 reports; "
                                              "`vidlab eval benchmarks NAME` lists them).")] = None,
    adapter: Annotated[Path | None, typer.Option(help="PEFT adapter folder to apply (e.g. from vidlab train).")] = None,
    data_root: Annotated[
        Path | None, typer.Option(help="Folder media paths are relative to (default: the data file's folder; "
                                  "for MVBench the folder above json/).")
    ] = None,
    format: Annotated[str, typer.Option(help="auto, records, choice, videomme, mvbench, mlvu.")] = "auto",
    subtitles: Annotated[bool, typer.Option(help="Video-MME, LongVideoBench: put the subtitles shown at the sampled "
                                            "frames before the question.")] = False,
    batch_size: Annotated[int, typer.Option(help="Records generated together (left-padded).")] = 1,
    limit: Annotated[int | None, typer.Option(help="Only the first N records of the data file.")] = None,
    media_options: MediaOptions = MediaOptions(),
    max_new_tokens: MaxNewTokensOption = None,
    workers: Annotated[
        int, typer.Option(help="Threads decoding the next records' media ahead (0: none; default: one per core, "
                          "at most 8).")
    ] = DECODE_WORKERS,
    metrics: MetricsOption = None,
    judge_url: JudgeUrlOption = None,
    judge_model: JudgeModelOption = None,
    judge_key: JudgeKeyOption = None,
    judge_workers: JudgeWorkersOption = 4,
    no_score: Annotated[bool, typer.Option(help="Only write predictions; score later with `eval score`.")] = False,
    no_progress: Annotated[bool, typer.Option(help="Hide the progress bar.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N (auto: each process's own under "
                                        "accelerate).")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, bf16, fp16 or fp32.")] = "auto",
    quantize: QuantizeOption = None,
    api: Annotated[str | None, typer.Option(
        help="Base URL of an OpenAI-compatible endpoint (e.g. http://localhost:8000/v1: a `vidlab serve`, vLLM, a "
             "hosted model) that answers instead of a local --model: the same records, frames, prompts and "
             "scoring.")] = None,
    api_model: Annotated[str | None, typer.Option(help="The model the --api endpoint serves (vidlab serve: its "
                                                  "--name, or an adapter's name).")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key of the --api endpoint (never written to the run "
                                                "folder).", envvar="VIDLAB_API_KEY")] = None,
    concurrency: Annotated[int, typer.Option(help="--api: requests in flight at once.")] = 4,
    api_media: Annotated[str, typer.Option(
        help="--api: video (each video a video_url part; the server picks the frames from these settings, sent "
             "in mm_processor_kwargs) or frames (vidlab's frames as image_url parts, each after its `Time X.Xs:`, "
             "for image-only models).")] = "video",
    api_video_source: Annotated[str, typer.Option(
        help="--api-media video: upload (the file as a data: URL) or path (a file:// URL, for a server on this "
             "machine: vidlab serve --media-root, vLLM --allowed-local-media-path).")] = "upload",
    api_image_format: Annotated[str, typer.Option(help="--api-media frames: jpeg or png.")] = "jpeg",
    api_frame_side: Annotated[int, typer.Option(help="--api-media frames: longest side of a sent frame in pixels "
                                                "(0: as decoded).")] = 768,
    api_timeout: Annotated[float, typer.Option(help="--api: seconds one request may take.")] = 600.0,
    api_retries: Annotated[int, typer.Option(help="--api: tries again after a connection error, timeout, 429 or "
                                             "5xx, with backoff (following Retry-After).")] = 3,
) -> None:
    """Answer every record of --data (or of --benchmark NAME --root DIR) into OUT/predictions.jsonl (resumable,
    shardable), then score and report. With --api, an OpenAI-compatible endpoint answers."""
    if (data is None) == (benchmark is None) or (benchmark is not None and root is None):
        raise typer.BadParameter("give --data FILE, or --benchmark NAME (or all) with --root DIR.")
    if (model is None) == (api is None):
        raise typer.BadParameter("give --model (a local checkpoint) or --api URL with --api-model NAME.")
    if api is not None:
        from vidlab.evaluation.endpoint import ApiOptions

        if not api_model:
            raise typer.BadParameter("--api needs --api-model: the model name the endpoint serves.")
        if adapter is not None or quantize is not None:
            raise typer.BadParameter("--adapter and --quantize apply to a local --model; through --api, name the "
                                     "adapter with --api-model.")
        try:
            model = ApiOptions(api, api_model, api_key, concurrency, api_media, api_video_source, api_image_format,
                               api_frame_side or None, api_timeout, api_retries)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from err
    # a local model's family frame rule unless an option says otherwise (an --api endpoint: the library defaults)
    settings = media_options.settings(model=model if isinstance(model, (str, Path)) else None)
    generation = generation_options(max_new_tokens=max_new_tokens)
    from vidlab.evaluation.run import PREDICTIONS, SKIPPED, RunOptions

    try:
        options = RunOptions(batch_size=batch_size, limit=limit, settings=settings, generation=generation,
                             workers=workers, progress=not no_progress)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    judge = _judge(judge_url, judge_model, judge_key, judge_workers)
    quiet_transformers()
    if benchmark is not None and benchmark.lower() == "all":
        from vidlab.evaluation.suite import evaluate_benchmarks

        suite = evaluate_benchmarks(model, root, out, adapter=adapter, options=options, metrics=metrics, judge=judge,
                                    device=device, dtype=dtype, quantize=quantize)
        if suite.summary.exists():
            typer.echo(suite.summary.read_text())
            typer.echo(f"wrote {suite.summary} and {out / 'summary.json'}")
        return
    from vidlab.evaluation.api import evaluate

    result = evaluate(
        model, root if benchmark else data, out, adapter=adapter, data_root=data_root, format=format,
        subtitles=subtitles, benchmark=benchmark, split=split, options=options, metrics=metrics, judge=judge,
        score_predictions=not no_score, device=device, dtype=dtype, quantize=quantize,
    )
    if not result.is_main:
        return
    typer.echo(f"{out / PREDICTIONS}: {result.predictions} predictions ({result.answered} new), "
               f"{len(result.skipped)} records skipped (see {out / SKIPPED})")
    if api is not None:
        from vidlab.evaluation.api_usage import REQUESTS_LOG, endpoint_usage

        usage = endpoint_usage(out)
        if usage is not None:
            typer.echo(f"{api}: {usage.requests} requests ({usage.retries} retries, {usage.failed} failed), "
                       f"{usage.prompt_tokens} prompt and {usage.completion_tokens} completion tokens in all "
                       f"(see {out / REQUESTS_LOG})")
    if result.metrics is not None:
        typer.echo(_summary(result.metrics))
        typer.echo(f"wrote {out / 'metrics.json'} and {result.report}")
        for path in (result.metrics.get("benchmark") or {}).get("submission") or []:
            typer.echo(f"wrote {path} (the benchmark's submission file)")


@eval_app.command("score")
def score_command(
    predictions: Annotated[Path, typer.Argument(help="predictions.jsonl written by `vidlab eval run`.")],
    metrics: MetricsOption = None,
    report: Annotated[bool, typer.Option(help="Also write report.md and report.png beside the predictions.")] = True,
    judge_url: JudgeUrlOption = None,
    judge_model: JudgeModelOption = None,
    judge_key: JudgeKeyOption = None,
    judge_workers: JudgeWorkersOption = 4,
) -> None:
    """Score a predictions file: metrics.json beside it, per-sample scores into it, and report.md."""
    from vidlab.evaluation.api import score

    result = score(predictions, metrics, report=report, judge=_judge(judge_url, judge_model, judge_key, judge_workers))
    typer.echo(_summary(result.metrics))
    if result.report is not None:
        typer.echo(f"wrote {result.report}")


@eval_app.command("compare")
def compare_command(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (with metrics.json); the first is the baseline.")],
    out: Annotated[Path, typer.Option(help="Folder for comparison.md, comparison.json and comparison.png.")] = Path(),
) -> None:
    """Side-by-side metrics of several runs (base vs fine-tuned) with per-sample wins and losses."""
    from vidlab.evaluation.report import compare_runs

    result = compare_runs(runs, out)
    typer.echo(result["markdown"])
    typer.echo(f"wrote {out / 'comparison.md'}")


@eval_app.command("benchmarks")
def benchmarks_command(
    names: Annotated[list[str] | None, typer.Argument(help="Benchmarks to show (default: all).")] = None,
    root: Annotated[Path | None, typer.Option(help="Check a folder laid out as VideoLLaMA3's README shows "
                                              "(benchmarks/video/<name>/): which benchmarks are there and ready, "
                                              "how many questions, which videos are missing.")] = None,
) -> None:
    """List the benchmarks vidlab reads: where to download each and the layout --root must have."""
    from vidlab.evaluation.benchmarks import BENCHMARKS, get_benchmark

    if root is not None:
        from vidlab.evaluation.suite import check_benchmarks

        for check in check_benchmarks(root, names):
            if check.error:
                typer.echo(f"{check.name:16} not ready: {check.error}")
            else:
                missing = (f", {check.missing_media} videos missing (first: {check.first_missing})"
                           if check.missing_media else "")
                typer.echo(f"{check.name:16} ready: {check.records} questions in {check.folder}"
                           f"{f', {check.skipped} unreadable records' if check.skipped else ''}{missing}")
        return
    for benchmark in [get_benchmark(n) for n in names] if names else BENCHMARKS.values():
        typer.echo(f"{benchmark.name} - {benchmark.title} ({benchmark.task}); splits: {', '.join(benchmark.splits)}"
                   f"{'; --subtitles' if benchmark.subtitles else ''}")
        typer.echo(f"  download: {benchmark.download}")
        typer.echo("  layout:\n" + "\n".join(f"    {line}" for line in benchmark.layout.splitlines()))
        for note in benchmark.notes:
            typer.echo(f"  note: {note}")
        typer.echo("")


def main() -> None:
    """Entry point when run alone (e.g. under accelerate launch), behaving as `vidlab eval`."""
    run_app(eval_app)


if __name__ == "__main__":
    main()
