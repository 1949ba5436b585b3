"""`vidlab ...` commands. Thin: parse the options, call the library, print the result."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from vidlab.cli_common import (
    MaxNewTokensOption,
    MediaOptions,
    QuantizeOption,
    TemperatureOption,
    TopPOption,
    generation_options,
    media_options,
    quiet_transformers,
    run_app,
)
from vidlab.data.cli import check_command, convert_command, plan_command, tokens_command
from vidlab.evaluation.cli import eval_app
from vidlab.serve.cli import serve_command
from vidlab.training.cli import help_epilog, train_command
from vidlab.web.cli import web_command

app = typer.Typer(
    help="vidlab: fine-tune, evaluate and serve VideoLLaMA3 video-language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="Build, inspect and convert model checkpoints.", no_args_is_help=True)
data_app = typer.Typer(help="Make videos and data sets; check, plan and convert training data.", no_args_is_help=True)
app.add_typer(model_app, name="model")
app.add_typer(data_app, name="data")
app.add_typer(eval_app, name="eval")
app.command("train", epilog=help_epilog())(train_command)
app.command("serve")(serve_command)
data_app.command("check")(check_command)
data_app.command("plan")(plan_command)
data_app.command("convert")(convert_command)
data_app.command("tokens")(tokens_command)
app.command("web")(web_command)


@model_app.command("tiny")
def model_tiny(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the model to.")],
    seed: Annotated[int, typer.Option(help="Random seed of the weights; the same seed gives the same files.")] = 0,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT_DIR if it already holds files.")] = False,
    family: Annotated[str, typer.Option(help="videollama3, tinyllava-video or llama-vid (docs/models.md).")]
    = "videollama3",
    shape: Annotated[str, typer.Option(help="tiny, or 2b / 7b: the released model's sizes with fewer layers, "
                                            "random weights, to measure memory and speed (not to answer).")] = "tiny",
    layers: Annotated[int | None, typer.Option(help="LLM and vision layers (default: 2 for 2b/7b, tiny's own).")]
    = None,
) -> None:
    """Build a tiny random VideoLLaMA3 (or TinyLLaVA-Video) offline (tokenizer trained on the spot, real
    processor), or a VideoLLaMA3 at the released 2B/7B widths with few layers (--shape)."""
    quiet_transformers()
    if family == "tinyllava-video":
        if shape != "tiny" or layers is not None:
            raise typer.BadParameter("--shape and --layers are for videollama3", param_hint="--family")
        from vidlab.models.tinyllava_video.tiny import build_tiny_tinyllava_video

        typer.echo(f"wrote tiny TinyLLaVA-Video to {build_tiny_tinyllava_video(out_dir, seed, overwrite=overwrite)}")
        return
    if family == "llama-vid":
        if shape != "tiny" or layers is not None:
            raise typer.BadParameter("--shape and --layers are for videollama3", param_hint="--family")
        from vidlab.models.llama_vid.tiny import build_tiny_llama_vid

        typer.echo(f"wrote tiny LLaMA-VID to {build_tiny_llama_vid(out_dir, seed, overwrite=overwrite)}")
        return
    if family != "videollama3":
        raise typer.BadParameter(f"{family!r}: use videollama3, tinyllava-video or llama-vid", param_hint="--family")
    from vidlab.models.shapes import shape_spec
    from vidlab.models.tiny import build_tiny_model

    folder = build_tiny_model(out_dir, seed=seed, spec=shape_spec(shape, layers), overwrite=overwrite)
    typer.echo(f"wrote {shape} VideoLLaMA3 to {folder}")


@model_app.command("convert")
def model_convert(
    src: Annotated[
        str,
        typer.Argument(
            help="Original VideoLLaMA3 checkpoint: a released one (folder or hub id, e.g. DAMO-NLP-SG/VideoLLaMA3-2B), "
            "one saved by the original training code, or the output folder of its LoRA run."
        ),
    ],
    out_dir: Annotated[Path, typer.Argument(help="New folder for the native checkpoint; must not exist yet.")],
    dtype: Annotated[
        str | None, typer.Option(help="bf16, fp16 or fp32; leave out to keep the checkpoint's dtype.")
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(help="LoRA runs only: the checkpoint the run started from (default: the adapter's base path)."),
    ] = None,
    max_shard_size: Annotated[str, typer.Option(help="Largest weight file to write, e.g. 4GB or 500MB.")] = "4GB",
    llm_only: Annotated[
        bool, typer.Option(help="LoRA runs without non_lora_trainables.bin: the run trained only the LLM's adapters.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar over the source shards.")] = True,
    tokenizer: Annotated[
        str | None, typer.Option(help="TinyLLaVA-Video checkpoints without a tokenizer: the LLM's tokenizer folder.")
    ] = None,
    vision_tower: Annotated[
        str | None, typer.Option(help="LLaMA-VID: LAVIS's eva_vit_g.pth (default: the path its config.json names).")
    ] = None,
    bert: Annotated[
        str | None, typer.Option(help="LLaMA-VID: a bert-base-uncased folder for its Q-Former (default: the Hub's).")
    ] = None,
) -> None:
    """Convert an original VideoLLaMA3 checkpoint (or LoRA run, merged), or a TinyLLaVA-Video or LLaMA-VID one,
    for vidlab."""
    quiet_transformers()
    from vidlab.models.convert.checkpoint import convert_checkpoint
    from vidlab.models.info import render_model_info

    result = convert_checkpoint(src, out_dir, dtype=dtype, base=base, max_shard_size=max_shard_size,
                                llm_only=llm_only, progress=progress, tokenizer=tokenizer,
                                vision_tower=vision_tower, bert=bert)
    typer.echo(f"wrote {result.info.get('family', 'native VideoLLaMA3')} to {result.folder}")
    typer.echo(render_model_info(result.info))


@model_app.command("merge")
def model_merge(
    out_dir: Annotated[Path, typer.Argument(help="New folder for the merged model.")],
    base: Annotated[str, typer.Option(help="The checkpoint the adapter was trained on (folder or hub id).")] = ...,
    adapter: Annotated[Path, typer.Option(help="LoRA adapter folder, e.g. the output.dir of vidlab train.")] = ...,
    dtype: Annotated[str, typer.Option(help="Weights of the merged model: fp32, bf16 or fp16.")] = "fp32",
    overwrite: Annotated[bool, typer.Option(help="Replace OUT_DIR if it already holds files.")] = False,
) -> None:
    """Merge a LoRA adapter into its base model and write a full native checkpoint."""
    quiet_transformers()
    from vidlab.models.merge import merge

    result = merge(base, adapter, out_dir, dtype=dtype, overwrite=overwrite)
    typer.echo(f"wrote merged model to {result.folder}")


@model_app.command("info")
def model_info_command(
    path: Annotated[Path, typer.Argument(help="Checkpoint folder: native, original, or a LoRA run of the original.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Show a checkpoint's format, parameters per part, dtype, token ids and processor settings."""
    from vidlab.models.info import model_info, render_model_info

    info = model_info(path)
    typer.echo(json.dumps(info, indent=2) if as_json else render_model_info(info))


@data_app.command("sample-video")
def data_sample_video(
    out: Annotated[Path, typer.Argument(help="Video file to write (.mp4, .mkv, .webm, .avi, .mov, .gif).")],
    shape: Annotated[str, typer.Option(help="circle, square or triangle.")] = "circle",
    colour: Annotated[str, typer.Option(help="red, green, blue, yellow, purple or white.")] = "red",
    direction: Annotated[str, typer.Option(help="left, right, up or down.")] = "left",
    seconds: Annotated[float, typer.Option(help="Length of the clip.")] = 4.0,
    fps: Annotated[float, typer.Option(help="Frame rate of the clip.")] = 8.0,
    size: Annotated[int, typer.Option(help="Width and height in pixels.")] = 112,
) -> None:
    """Write a short clip of a coloured shape moving across the picture."""
    from vidlab.data.synthetic import Scene, write_scene

    try:
        scene = Scene(shape=shape, colour=colour, direction=direction, size=size, seconds=seconds, fps=fps)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    write_scene(out, scene)
    typer.echo(f"wrote {out}: {scene.caption}, {seconds:g}s at {fps:g} fps, {size}x{size}")


@data_app.command("synth")
def data_synth(
    out_dir: Annotated[Path, typer.Argument(help="New folder for the videos and annotation files.")],
    train: Annotated[
        int, typer.Option(help="Training videos (4 records each: caption, colour, shape, direction).")
    ] = 600,
    val: Annotated[int, typer.Option(help="Validation videos.")] = 48,
    test: Annotated[int, typer.Option(help="Test videos (new renders, never copies of training videos).")] = 120,
    seed: Annotated[int, typer.Option(help="Random seed; the same options give the same files.")] = 0,
    frames: Annotated[int, typer.Option(help="Frames per video.")] = 16,
    fps: Annotated[float, typer.Option(help="Frame rate; a video lasts FRAMES / FPS seconds.")] = 4.0,
    size: Annotated[
        int, typer.Option(help="Width and height in pixels: even; a multiple of 28 suits VideoLLaMA3 best.")
    ] = 112,
    overwrite: Annotated[bool, typer.Option(help="Replace OUT_DIR if it already holds files.")] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar over the videos (on stderr).")] = True,
) -> None:
    """Write a synthetic video data set: moving shapes, captions and colour/shape/direction questions."""
    from vidlab.data.synthetic_dataset import SynthSettings, write_synthetic_dataset

    try:
        settings = SynthSettings(train=train, val=val, test=test, seed=seed, frames=frames, fps=fps, size=size)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    folder = write_synthetic_dataset(out_dir, settings, overwrite=overwrite, progress=progress)
    counts = ", ".join(f"{count} {split}" for split, count in settings.counts.items())
    typer.echo(f"wrote {folder}: {counts} videos ({frames} frames, {size}x{size}), 4 records per video")


def _print_reply(chat, question: str, media: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(chat.ask(question, **media).to_dict(), ensure_ascii=False))
        return
    for piece in chat.stream(question, **media):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    sys.stdout.flush()
    for warning in chat.last_reply.warnings:
        typer.secho(f"warning: {warning}", fg="yellow", err=True)


def _interactive(chat, media: dict, as_json: bool) -> None:
    """Read questions from stdin until /quit or end of input; /reset starts over about the same media."""
    tty = sys.stdin.isatty()
    if tty:
        typer.echo("Ask about the video. /reset clears the history, /quit leaves.", err=True)
    while True:
        try:
            line = input("you> " if tty else "")
        except EOFError:
            break
        question = line.strip()
        if not question:
            continue
        if question == "/quit":
            break
        if question == "/reset":
            chat.reset()  # the video and images stay, decoded
            typer.echo("(history cleared)")
            continue
        _print_reply(chat, question, media, as_json)
        media = {}  # follow-ups are about what the conversation already holds


@app.command("chat")
@media_options(exclude=("allow_partial",))  # a chat takes a cut video as far as it goes (vidlab.chat.Chat)
def chat_command(
    question: Annotated[str | None, typer.Argument(help="Ask this and exit; without it, chat interactively.")] = None,
    model: Annotated[str, typer.Option(help="Checkpoint folder or hub id of a native VideoLLaMA3.")] = ...,
    adapter: Annotated[Path | None, typer.Option(help="PEFT adapter folder (e.g. from vidlab train).")] = None,
    video: Annotated[Path | None, typer.Option(help="Video file or folder of frames.")] = None,
    image: Annotated[list[Path] | None, typer.Option(help="Image file; repeat for several.")] = None,
    start: Annotated[float | None, typer.Option(help="Use the video from this second.")] = None,
    end: Annotated[float | None, typer.Option(help="Use the video up to this second.")] = None,
    subtitles: Annotated[Path | None, typer.Option(
        help="The video's .srt / .vtt subtitles (LLaMA-VID models: each line by its frame, its movie prompt).")
    ] = None,
    media_options: MediaOptions = MediaOptions(),
    max_new_tokens: MaxNewTokensOption = None,
    temperature: TemperatureOption = None,
    top_p: TopPOption = None,
    system: Annotated[str | None, typer.Option(help="System message that starts the conversation.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per answer, with token counts.")
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, bf16, fp16 or fp32.")] = "auto",
    quantize: QuantizeOption = None,
) -> None:
    """Ask a VideoLLaMA3 model about a video or images, once or interactively."""
    if video is not None and image:
        raise typer.BadParameter("give --video or --image, not both")
    if video is None and (start is not None or end is not None or subtitles is not None):
        raise typer.BadParameter("--start, --end and --subtitles go with a --video; give one")
    settings = media_options.settings(model=model)  # the model family's frame rule unless an option says otherwise
    generation = generation_options(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    media = {"video": video, "image": image or None, "start": start, "end": end}
    if subtitles is not None:
        media["subtitles"] = subtitles
    from vidlab.media.clip import require_exists

    for path in [video, subtitles] if video is not None else image or []:
        if path is not None:
            require_exists(path)  # before the model loads, which may take minutes
    quiet_transformers()
    from vidlab.chat import Chat

    chat = Chat(model, adapter, system=system, settings=settings, generation=generation, dtype=dtype, device=device,
                quantize=quantize)
    if question is not None:
        _print_reply(chat, question, media, as_json)
    else:
        _interactive(chat, media, as_json)


@app.command("quickstart")
def quickstart_command(
    out: Annotated[Path, typer.Option(help="Folder for the data, models, runs, evaluations and the report.")] = Path(
        "runs/quickstart"
    ),
    seed: Annotated[int, typer.Option(help="Seed of the data set, the initial weights and training.")] = 0,
    fast: Annotated[
        bool, typer.Option(help="A shorter smoke run (fewer videos and steps): the pipeline, not the numbers.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option(help="Delete an earlier quickstart in OUT and start over (default: finish it).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show the progress bars of each step.")] = True,
) -> None:
    """Train a tiny VideoLLaMA3 on synthetic videos, LoRA-fine-tune it, evaluate every step, report (offline, CPU)."""
    quiet_transformers()
    from dataclasses import replace

    from vidlab.quickstart import FAST, QuickstartSettings, run_quickstart

    try:
        settings = replace(FAST if fast else QuickstartSettings(), seed=seed, progress=progress)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from err
    run_quickstart(out, settings, overwrite=overwrite)


def main() -> None:
    """Console entry point: user errors print one clear line, not a traceback."""
    run_app(app)


if __name__ == "__main__":
    main()
