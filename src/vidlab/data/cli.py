"""`vidlab data check | plan | convert`: parse the options, call `vidlab.data`, print what it found."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vidlab.cli_common import MediaOptions, media_options, quiet_transformers

_SHOWN = 10  # bad records / problems printed; the files list them all


def _shown(path: str) -> str:
    """A file as the user can find it: relative to the working folder when it is below it, else as given
    (several folders often hold a file of the same name)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return path


@media_options()
def check_command(
    files: Annotated[list[Path] | None, typer.Argument(help="Annotation files (JSON list or JSONL); default: the "
                                                           "config's data.train.")] = None,
    config: Annotated[Path | None, typer.Option(help="Training config: its model, data root, media settings and "
                                                     "model_max_length are used, as training will.")] = None,
    model: Annotated[str | None, typer.Option(help="Model whose processor counts tokens (default: the config's "
                                                   "model.path).")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Folder media paths are relative to (default: the "
                                                        "config's, else each file's folder).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for check.json, bad.jsonl, samples.jsonl, histograms.png and "
                                           "the cache.")] = Path("data-check"),
    workers: Annotated[int, typer.Option(help="Decoding processes (0: in this process, without a time limit).")] = 2,
    timeout: Annotated[float, typer.Option(help="Seconds one record may take to decode and encode.")] = 120.0,
    max_length: Annotated[int | None, typer.Option(help="Tokens per sample without a config (default 16384, as "
                                                        "training).")] = None,
    media_options: MediaOptions = MediaOptions(),
    cleaned: Annotated[bool, typer.Option(help="Also write <name>.clean.jsonl beside each file, without the bad "
                                               "records.")] = False,
    cache: Annotated[bool, typer.Option(help="Reuse what an earlier check in --out measured.")] = True,
    strict: Annotated[bool, typer.Option(help="Exit with status 1 when any record is bad (for CI).")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar (on stderr).")] = True,
    method: Annotated[str | None, typer.Option(help="The records' layout: sft, grpo (a checkable answer, optional "
                                                    "answer_type) or dpo (chosen / rejected); default: the "
                                                    "config's method, else sft.")] = None,
) -> None:
    """Read, decode and encode every record as training would; report bad records, token statistics, duplicates."""
    quiet_transformers()
    if config is not None and media_options.given:
        raise typer.BadParameter("with --config the media settings are its data section, as training uses them; "
                                 "change them there (or check without --config)")
    from vidlab.data.check import check_data
    from vidlab.record_index import RecordIndex

    result = check_data(files, config=config, model=model, data_root=data_root, out_dir=out, workers=workers,
                        timeout=timeout, max_length=max_length, settings=media_options.settings() if config is None
                        else None, cleaned=cleaned, cache=cache, progress=progress, method=method)
    report = result.report
    typer.echo(f"checked {report['records']} records in {report['seconds']:g} s ({report['cached']} from the cache): "
               f"{report['ok']} usable, {report['bad']} bad")
    if result.bad:
        typer.echo("bad records by kind: " + ", ".join(f"{kind} {n}" for kind, n in report["bad_by_kind"].items()))
        indexes: dict = {}  # a file's index says whether another record starts on a line (a JSON list's)
        for row in result.bad[:_SHOWN]:
            index = indexes.get(row["file"]) or indexes.setdefault(row["file"], RecordIndex.of(row["file"]))
            shared = f" (record {row['index'] + 1})" if index.position(row["index"]).shared_line else ""
            typer.echo(f"  {_shown(row['file'])}:{row['line']}{shared}  {row['kind']}: {row['reason']}")
        if len(result.bad) > _SHOWN:
            typer.echo(f"  ... {len(result.bad) - _SHOWN} more in {result.out_dir / 'bad.jsonl'}")
    stats = report["stats"]
    for key, label in (("total_tokens", "total tokens"), ("visual_tokens", "visual tokens"),
                       ("text_tokens", "text tokens"), ("frames", "frames"), ("duration", "seconds")):
        if stats.get(key):
            s = stats[key]
            typer.echo(f"{label:<14} p50 {s['p50']:g}  p95 {s['p95']:g}  max {s['max']:g}")
    budget = report["budget"]
    typer.echo(f"model_max_length {budget['model_max_length']}: {budget['shrunk']} sample(s) would be shrunk "
               f"(smaller or fewer frames), {budget['skipped']} skipped")
    duplicates = report["duplicates"]
    if duplicates["records"] or duplicates["shared_ids"]:
        typer.echo(f"duplicates: {duplicates['records']} record(s) repeat an earlier one; "
                   f"{duplicates['shared_ids']} id(s) are used by several records")
    typer.echo(f"wrote {result.out_dir}/check.json, bad.jsonl, samples.jsonl"
               + (", histograms.png" if result.histograms else ""))
    for path in result.cleaned:
        typer.echo(f"wrote {path}")
    if strict and result.bad:
        raise typer.Exit(1)


def plan_command(
    config: Annotated[Path, typer.Option(help="Training config (YAML).")],
    stats: Annotated[Path | None, typer.Option(help="check.json from `vidlab data check` (the longest sample and "
                                                    "the record count); without it, the worst case.")] = None,
    gpus: Annotated[int, typer.Option(help="GPUs (training processes).")] = 1,
    gpu_memory: Annotated[float | None, typer.Option(help="GiB per GPU; when the run does not fit, the plan says "
                                                          "what to change.")] = None,
    strategy: Annotated[str | None, typer.Option(help="none, ddp, zero2, zero3 or fsdp (default: ddp on several "
                                                      "GPUs).")] = None,
    model: Annotated[str | None, typer.Option(help="Plan for this model instead of model.path: a folder, hub id, "
                                                   "or videollama3-2b / videollama3-7b (published sizes).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key (repeatable).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Estimate peak GPU memory per device and steps per epoch of a training config, and what to change to fit."""
    quiet_transformers()
    from vidlab.data.plan import plan_run, render_plan

    result = plan_run(config, stats=stats, gpus=gpus, gpu_memory=gpu_memory, strategy=strategy, model=model,
                      overrides=set_ or [])
    typer.echo(json.dumps(result.to_dict(), indent=2) if as_json else render_plan(result))


def convert_command(
    source_format: Annotated[str, typer.Argument(metavar="FROM", help="llava, video-chatgpt, sharegpt4video, msrvtt, "
                                                                      "msvd, vatex, sharegpt, openai, video-r1, "
                                                                      "llava-hound-dpo or records.")],
    file: Annotated[Path, typer.Argument(help="The source annotation file.")],
    out: Annotated[Path, typer.Argument(help="File to write: annotation records (JSONL), or with --to sharegpt a "
                                             "JSON list (.json) or JSONL.")],
    data_root: Annotated[Path | None, typer.Option(help="Folder the source's media paths or video ids are relative "
                                                        "to; then videos are found by id and every file is "
                                                        "checked.")] = None,
    captions: Annotated[str, typer.Option(help="Caption sets: train (one record per caption) or eval (one per "
                                               "video, all captions as references).")] = "train",
    to: Annotated[str, typer.Option(help="records, or sharegpt (LLaMA-Factory).")] = "records",
    prompt: Annotated[str | None, typer.Option(help="The question caption records ask (default: per format).")] = None,
    split: Annotated[str | None, typer.Option(help="MSR-VTT: train, validate or test.")] = None,
    language: Annotated[str | None, typer.Option(help="MSVD corpus CSV: a Language value (default English); "
                                                      "VATEX: en or zh.")] = None,
    dataset_info: Annotated[Path | None, typer.Option(help="LLaMA-Factory's dataset_info.json (with --dataset), to "
                                                           "use the column and tag names it gives.")] = None,
    dataset: Annotated[str | None, typer.Option(help="The data set's name in dataset_info.json.")] = None,
) -> None:
    """Convert LLaVA-Video, Video-ChatGPT, ShareGPT4Video, MSR-VTT, MSVD, VATEX, LLaMA-Factory, Video-R1 (GRPO) or
    LLaVA-Hound DPO data to records."""
    from vidlab.data.convert import convert_annotations

    result = convert_annotations(source_format, file, out, data_root=data_root, captions=captions, to=to,
                                 prompt=prompt, split=split, language=language, dataset_info=dataset_info,
                                 dataset=dataset)
    typer.echo(f"wrote {result.records} {'sharegpt ' if result.target == 'sharegpt' else ''}record(s) to "
               f"{result.out} from {result.items} {source_format} item(s); {len(result.problems)} not converted")
    for problem in result.problems[:_SHOWN]:
        typer.echo(f"  {problem.source}: {problem.reason}")
    if result.skipped_file is not None:
        typer.echo(f"  (all listed in {result.skipped_file})")
    for note, count in result.notes.most_common():
        typer.echo(f"note: {note} ({count})")
    if result.dataset_info is not None:
        typer.echo("add to LLaMA-Factory's data/dataset_info.json:")
        typer.echo(json.dumps({result.out.stem: result.dataset_info}, indent=2))
    elif data_root is not None:
        typer.echo(f"media paths are relative to {data_root}: train with data.data_root: {data_root}")


# What the token arithmetic uses (no video is decoded and no image counted; the count is before DiffFP).
@media_options(only=("fps", "max_frames", "min_frames", "num_frames", "max_visual_tokens"))
def tokens_command(
    seconds: Annotated[list[float], typer.Argument(help="Video lengths in seconds (e.g. 3600 for an hour).")],
    model: Annotated[str | None, typer.Option(help="Count with this model's processor budgets and tokenizer (a "
                                                   "folder or hub id; one with a video compressor adds it as "
                                                   "'model'). Default: the released VideoLLaMA3 budgets.")] = None,
    media_options: MediaOptions = MediaOptions(),
    width: Annotated[int, typer.Option(help="Width of the video in pixels.")] = 640,
    height: Annotated[int, typer.Option(help="Height of the video in pixels.")] = 360,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per length.")] = False,
) -> None:
    """Tokens a video of a given length costs under each video compressor (none, llamavid, group_resampler, pool)."""
    quiet_transformers()
    from vidlab.data.plan_tokens import plan_video_tokens, render_token_costs

    settings = media_options.settings()
    for length in seconds:
        if not length > 0:
            raise typer.BadParameter(f"{length:g}: a video length must be above 0 seconds")
        costs, note = plan_video_tokens(length, model=model, settings=settings, width=width, height=height)
        if as_json:
            typer.echo(json.dumps({"seconds": length, "note": note, "options": [c.to_dict() for c in costs]}))
        else:
            typer.echo(render_token_costs(length, costs, note) + "\n")
