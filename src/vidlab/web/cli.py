"""`vidlab web`: parse the options, start the page (`vidlab.web.launch`), serve until Ctrl-C or SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vidlab.cli_common import MediaOptions, media_options, quiet_transformers
from vidlab.errors import VidlabError
from vidlab.settings import build, flag, option_help
from vidlab.web.options import WebOptions, quickstart_paths

INSTALL_HINT = "the web page needs gradio: pip install 'gradio>=6' (it comes with `pip install -e .` of vidlab)."


def _help(name: str) -> str:
    return option_help(WebOptions, name)


def parse_adapters(values: list[str] | None) -> dict[str, Path]:
    """NAME=DIR (or DIR, named after its folder) -> {name: folder}; names must differ."""
    adapters: dict[str, Path] = {}
    for value in values or []:
        name, sep, folder = value.partition("=")
        if not sep:
            name, folder = Path(value).name, value
        if not name or not folder:
            raise VidlabError(f"--adapter {value}: give NAME=DIR (e.g. tuned=runs/lora) or DIR.")
        if name in adapters:
            raise VidlabError(f"--adapter {value}: the name {name!r} is given twice. Name each adapter differently.")
        adapters[name] = Path(folder)
    return adapters


# The settings the page starts with (each tab can change them); the page takes a cut video as far as it goes.
@media_options(exclude=("allow_partial",))
def web_command(
    model: Annotated[str | None, typer.Option(help="Checkpoint folder or hub id of a native VideoLLaMA3, run in "
                                                   "this process.")] = None,
    adapter: Annotated[list[str] | None, typer.Option(help="PEFT adapter as NAME=DIR (or DIR, named after its "
                                                           "folder), on top of --model; repeat for several.")] = None,
    api: Annotated[str | None, typer.Option(help="URL of a running `vidlab serve` (or another OpenAI-compatible "
                                                 "server taking video parts) to use instead of --model.")] = None,
    api_key: Annotated[str | None, typer.Option(help="The --api server's key, if it has one.")] = None,
    runs: Annotated[Path | None, typer.Option(help=_help("runs"))] = None,
    media_root: Annotated[Path | None, typer.Option(help=_help("media_root"))] = None,
    quickstart: Annotated[Path | None, typer.Option(
        help="A `vidlab quickstart` folder: its base model, its LoRA adapter (as 'tuned'), its evaluations, its "
        "videos, and DiffFP off as its models were trained (--compression turns it on).")] = None,
    host: Annotated[str | None, typer.Option(help=_help("host"), show_default=False)] = None,
    port: Annotated[int | None, typer.Option(help=_help("port"), show_default=False)] = None,
    max_upload_mb: Annotated[float | None, typer.Option(help=_help("max_upload_mb"), show_default=False)] = None,
    max_video_seconds: Annotated[float | None, typer.Option(help=_help("max_video_seconds"),
                                                            show_default=False)] = None,
    media_options: MediaOptions = MediaOptions(),
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in the default browser.")] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N (with --model).")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, bf16, fp16 or fp32 (with --model).")] = "auto",
) -> None:
    """Open the web page: chat about a video, compare base and fine-tuned answers, browse evaluations."""
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise VidlabError(INSTALL_HINT) from None
    adapters = parse_adapters(adapter)
    base = None
    if quickstart is not None:
        given = quickstart_paths(quickstart)
        base = given["media"]
        model = model if model is not None or api is not None else str(given["model"])
        adapters = adapters or ({} if api is not None else given["adapters"])
        runs = runs or given["runs"]
        media_root = media_root or given["media_root"]
    options = build(WebOptions, {"host": host, "port": port, "runs": runs, "media_root": media_root,
                                 "max_upload_mb": max_upload_mb, "max_video_seconds": max_video_seconds,
                                 "media": media_options.settings(base, model=model)}, name=flag)
    if model is not None:
        quiet_transformers()
    from vidlab.web.app import launch, stop_on_sigterm

    stop_on_sigterm()  # from here on: a SIGTERM while the page starts stops it too

    if model is None and api is None:
        typer.echo("no --model or --api: the page shows evaluation results only.", err=True)
    typer.echo("starting the page (Ctrl-C stops it)...", err=True)
    server = launch(model, adapters, api, api_key, options, dtype=dtype, device=device, block=False,
                    open_browser=open_browser)
    try:  # a SIGTERM or Ctrl-C from here on, even before serving starts, closes the page
        typer.echo(f"vidlab web: {server.url}")
        server.serve_forever()
    finally:
        server.close()
