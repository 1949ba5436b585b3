"""`vidlab eval run | score | compare`. Thin: parse, call the library, print.

Also runnable alone, e.g. under accelerate: `accelerate launch -m vidlab.evaluation.cli run ...`.
"""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from vidlab.cli_common import (
    AllowPartialOption,
    FolderFpsOption,
    FpsOption,
    FrameRuleOption,
    ImageMergeSizeOption,
    KeyframesOption,
    MaxFramesOption,
    MaxNewTokensOption,
    MaxVisualTokensOption,
    NoCompressionOption,
    NumFramesOption,
    generation_options,
    media_settings,
    quiet_transformers,
    run_app,
)

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


def run_command_line(model, data, out, *, adapter=None, options=None, metrics=None) -> str:
    """The `vidlab eval run` command that does what `vidlab.evaluate(model, data, out, ...)` does with
    these arguments: each setting that differs from its default becomes its flag."""
    from vidlab.evaluation.run import RunOptions
    from vidlab.settings import GenerationOptions, MediaSettings

    options = options or RunOptions()
    args = ["vidlab", "eval", "run", "--model", str(model), *(["--adapter", str(adapter)] if adapter else []),
            "--data", str(data), "--out", str(out)]
    defaults = RunOptions()
    for name in ("batch_size", "limit", "workers"):
        if getattr(options, name) != getattr(defaults, name):
            args += [f"--{name.replace('_', '-')}", str(getattr(options, name))]
    for name, default in MediaSettings().model_dump().items():
        value = getattr(options.settings, name)
        if value == default:
            continue
        if name == "compression":
            args.append("--no-compression")
        elif isinstance(value, bool):
            args.append(f"--{name.replace('_', '-')}")
        else:
            args += [f"--{name.replace('_', '-')}", f"{value:g}" if isinstance(value, float) else str(value)]
    if options.generation.max_new_tokens != GenerationOptions().max_new_tokens:
        args += ["--max-new-tokens", str(options.generation.max_new_tokens)]
    if metrics:
        args += ["--metrics", ",".join(metrics)]
    if not options.progress:
        args.append("--no-progress")
    return " ".join(shlex.quote(a) for a in args)


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
    fps: FpsOption = None,
    max_frames: MaxFramesOption = None,
    num_frames: NumFramesOption = None,
    folder_fps: FolderFpsOption = None,
    max_visual_tokens: MaxVisualTokensOption = None,
    image_merge_size: ImageMergeSizeOption = None,
    no_compression: NoCompressionOption = False,
    frame_rule: FrameRuleOption = None,
    keyframes: KeyframesOption = False,
    allow_partial: AllowPartialOption = False,
    max_new_tokens: MaxNewTokensOption = None,
    workers: Annotated[int, typer.Option(help="Threads decoding the next records' media ahead (0: none).")] = 2,
    metrics: MetricsOption = None,
    no_score: Annotated[bool, typer.Option(help="Only write predictions; score later with `eval score`.")] = False,
    no_progress: Annotated[bool, typer.Option(help="Hide the progress bar.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N (auto: each process's own under "
                                        "accelerate).")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, bf16, fp16 or fp32.")] = "auto",
) -> None:
    """Answer every record of --data into OUT/predictions.jsonl (resumable, shardable), then score and report."""
    settings = media_settings(
        fps=fps, max_frames=max_frames, num_frames=num_frames, folder_fps=folder_fps,
        max_visual_tokens=max_visual_tokens, image_merge_size=image_merge_size, no_compression=no_compression,
        frame_rule=frame_rule, keyframes=keyframes, allow_partial=allow_partial,
    )
    generation = generation_options(max_new_tokens=max_new_tokens)
    from vidlab.evaluation.run import PREDICTIONS, SKIPPED, RunOptions

    try:
        options = RunOptions(batch_size=batch_size, limit=limit, settings=settings, generation=generation,
                             workers=workers, progress=not no_progress)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    quiet_transformers()
    from vidlab.evaluation.api import evaluate

    result = evaluate(
        model, data, out, adapter=adapter, data_root=data_root, format=format, subtitles=subtitles, options=options,
        metrics=metrics, score_predictions=not no_score, device=device, dtype=dtype,
    )
    if not result.is_main:
        return
    typer.echo(f"{out / PREDICTIONS}: {result.predictions} predictions ({result.answered} new), "
               f"{len(result.skipped)} records skipped (see {out / SKIPPED})")
    if result.metrics is not None:
        typer.echo(_summary(result.metrics))
        typer.echo(f"wrote {out / 'metrics.json'} and {result.report}")


@eval_app.command("score")
def score_command(
    predictions: Annotated[Path, typer.Argument(help="predictions.jsonl written by `vidlab eval run`.")],
    metrics: MetricsOption = None,
    report: Annotated[bool, typer.Option(help="Also write report.md and report.png beside the predictions.")] = True,
) -> None:
    """Score a predictions file: metrics.json beside it, per-sample scores into it, and report.md."""
    from vidlab.evaluation.api import score

    result = score(predictions, metrics, report=report)
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


def main() -> None:
    """Entry point when run alone (e.g. under accelerate launch), behaving as `vidlab eval`."""
    run_app(eval_app)


if __name__ == "__main__":
    main()
