"""`vidlab eval run | score | compare`. Thin: parse, call the library, print.

Also runnable alone, e.g. under accelerate: `accelerate launch -m vidlab.evaluation.cli run ...`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vidlab.cli_common import quiet_transformers, run_app

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
        "rouge_l, cider, exact_match, accuracy (default: all that apply).",
    ),
]


def _summary(metrics: dict) -> str:
    from vidlab.evaluation.metrics import METRICS

    shown = ", ".join(f"{m} {metrics[m]:.2f}" for m in METRICS if isinstance(metrics.get(m), (int, float)))
    notes = "".join(f"\nnote: {k}: {v}" for k, v in (metrics.get("notes") or {}).items())
    return (shown or "no metric applies") + notes


@eval_app.command("run")
def run_command(
    model: Annotated[str, typer.Option(help="Checkpoint folder or hub id of a native VideoLLaMA3.")] = ...,
    data: Annotated[
        Path, typer.Option(help="Records to answer: annotation JSON/JSONL, multiple-choice JSON/JSONL, Video-MME "
                           "(parquet/JSON/JSONL) or MVBench (its json/ folder or one task file).")
    ] = ...,
    out: Annotated[Path, typer.Option(help="Folder for predictions.jsonl, skipped.jsonl, metrics.json, report.md. "
                                      "Rerunning into the same folder resumes.")] = ...,
    adapter: Annotated[Path | None, typer.Option(help="PEFT adapter folder to apply (e.g. from vidlab train).")] = None,
    data_root: Annotated[
        Path | None, typer.Option(help="Folder media paths are relative to (default: the data file's folder; "
                                  "for MVBench the folder above json/).")
    ] = None,
    format: Annotated[str, typer.Option(help="auto, records, choice, videomme or mvbench.")] = "auto",
    subtitles: Annotated[bool, typer.Option(help="Video-MME: put the subtitles shown at the sampled frames before "
                                            "the question (subtitles/<videoID>.srt).")] = False,
    batch_size: Annotated[int, typer.Option(help="Records generated together (left-padded).")] = 1,
    limit: Annotated[int | None, typer.Option(help="Only the first N records of the data file.")] = None,
    fps: Annotated[float, typer.Option(help="Frames per second of video to sample.")] = 1.0,
    max_frames: Annotated[int, typer.Option(help="At most this many frames per video.")] = 180,
    num_frames: Annotated[int | None, typer.Option(help="Exactly this many evenly spaced frames instead.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Longest answer, in tokens.")] = 512,
    no_compression: Annotated[bool, typer.Option(help="Keep every video token (turn DiffFP pruning off).")] = False,
    folder_fps: Annotated[float, typer.Option(help="Frame rate of videos stored as frame folders.")] = 3.0,
    workers: Annotated[int, typer.Option(help="Threads decoding the next records' media ahead (0: none).")] = 2,
    metrics: MetricsOption = None,
    no_score: Annotated[bool, typer.Option(help="Only write predictions; score later with `eval score`.")] = False,
    no_progress: Annotated[bool, typer.Option(help="Hide the progress bar.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N (auto: each process's own under "
                                        "accelerate).")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, bf16, fp16 or fp32.")] = "auto",
) -> None:
    """Answer every record of --data into OUT/predictions.jsonl (resumable, shardable), then score and report."""
    quiet_transformers()
    from vidlab.evaluation.metrics import parse_metric_names, score_file
    from vidlab.evaluation.report import write_report
    from vidlab.evaluation.run import PREDICTIONS, RunOptions, run_predictions
    from vidlab.generate import GenerationOptions
    from vidlab.media import Sampling

    try:
        options = RunOptions(
            batch_size=batch_size, limit=limit,
            sampling=Sampling(fps=fps, max_frames=max_frames, num_frames=num_frames),
            generation=GenerationOptions(max_new_tokens=max_new_tokens), compression=not no_compression,
            folder_fps=folder_fps, workers=workers, progress=not no_progress,
        )
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    parse_metric_names(metrics)  # a misspelt metric fails now, not after the whole run
    result = run_predictions(
        model, data, out, adapter=adapter, data_root=data_root, format=format, subtitles=subtitles, options=options,
        device=device, dtype=dtype,
    )
    if not result.is_main:
        return
    typer.echo(f"{out / PREDICTIONS}: {result.predictions} predictions ({result.answered} new), "
               f"{len(result.skipped)} records skipped (see {out / 'skipped.jsonl'})")
    if no_score:
        return
    scored = score_file(out / PREDICTIONS, metrics)
    report = write_report(out)
    typer.echo(_summary(scored))
    typer.echo(f"wrote {out / 'metrics.json'} and {report}")


@eval_app.command("score")
def score_command(
    predictions: Annotated[Path, typer.Argument(help="predictions.jsonl written by `vidlab eval run`.")],
    metrics: MetricsOption = None,
    report: Annotated[bool, typer.Option(help="Also write report.md and report.png beside the predictions.")] = True,
) -> None:
    """Score a predictions file: metrics.json beside it, per-sample scores into it, and report.md."""
    from vidlab.evaluation.metrics import score_file
    from vidlab.evaluation.report import write_report

    scored = score_file(predictions, metrics)
    typer.echo(_summary(scored))
    if report:
        typer.echo(f"wrote {write_report(predictions.parent)}")


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


def main() -> None:
    """Entry point when run alone (e.g. under accelerate launch), behaving as `vidlab eval`."""
    run_app(eval_app)


if __name__ == "__main__":
    main()
