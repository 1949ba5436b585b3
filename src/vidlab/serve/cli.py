"""`vidlab serve`: parse the options, call `vidlab.serve.serve` (or `serve_ray` with --ray). Help texts and defaults
come from `ServeOptions`, `RayOptions` and the media / generation settings: an option not given keeps the default.
"""

from __future__ import annotations

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
)
from vidlab.serve.options import ServeOptions
from vidlab.serve.ray_serve import RayOptions
from vidlab.settings import build, flag, option_help


def _serve(name: str) -> str:
    return option_help(ServeOptions, name)


def _ray(name: str) -> str:
    return option_help(RayOptions, name)


def parse_adapters(values: list[str] | None) -> dict[str, Path]:
    """`NAME=DIR` options -> {name: folder}."""
    adapters: dict[str, Path] = {}
    for value in values or []:
        name, sep, folder = value.partition("=")
        if not sep or not name or not folder:
            raise typer.BadParameter(f"--adapter {value}: give NAME=DIR, e.g. --adapter direction=runs/lora")
        if name in adapters:
            raise typer.BadParameter(f"--adapter {name}: given twice; each adapter needs its own name")
        adapters[name] = Path(folder)
    return adapters


@media_options()  # the server's settings; a request may change those `vidlab.settings.request_fields` lists
def serve_command(
    model: Annotated[str, typer.Option(help="Checkpoint folder or hub id of a native VideoLLaMA3.")] = ...,
    adapter: Annotated[
        list[str] | None,
        typer.Option(help="NAME=DIR: a LoRA adapter served as model NAME (repeat for several, as vLLM's "
                     "--lora-modules)."),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="The base model's name in requests (default: --model as given).")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; 0.0.0.0 opens the server to the network.")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    media_root: Annotated[Path | None, typer.Option(help=_serve("media_root"), show_default=False)] = None,
    allow_remote_media: Annotated[bool, typer.Option("--allow-remote-media", help=_serve("allow_remote_media"))] = (
        False
    ),
    max_media_mb: Annotated[float | None, typer.Option(help=_serve("max_media_mb"), show_default=False)] = None,
    max_video_seconds: Annotated[
        float | None, typer.Option(help=_serve("max_video_seconds"), show_default=False)
    ] = None,
    max_media_parts: Annotated[int | None, typer.Option(help=_serve("max_media_parts"), show_default=False)] = None,
    max_body_mb: Annotated[float | None, typer.Option(help=_serve("max_body_mb"), show_default=False)] = None,
    remote_timeout: Annotated[float | None, typer.Option(help=_serve("remote_timeout"), show_default=False)] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="VIDLAB_API_KEY", help=_serve("api_key") + " Or set VIDLAB_API_KEY.",
                                 show_default=False),
    ] = None,
    batching: Annotated[str | None, typer.Option(help=_serve("batching"), show_default=False)] = None,
    max_batch: Annotated[int | None, typer.Option(help=_serve("max_batch"), show_default=False)] = None,
    prefill_tokens: Annotated[int | None, typer.Option(help=_serve("prefill_tokens"), show_default=False)] = None,
    max_queue: Annotated[int | None, typer.Option(help=_serve("max_queue"), show_default=False)] = None,
    batch_wait_ms: Annotated[float | None, typer.Option(help=_serve("batch_wait_ms"), show_default=False)] = None,
    max_model_len: Annotated[int | None, typer.Option(help=_serve("max_model_len"), show_default=False)] = None,
    decode_workers: Annotated[int | None, typer.Option(help=_serve("decode_workers"), show_default=False)] = None,
    max_fps: Annotated[float | None, typer.Option(help=_serve("max_fps"), show_default=False)] = None,
    max_video_frames: Annotated[int | None, typer.Option(help=_serve("max_video_frames"), show_default=False)] = None,
    max_request_frames: Annotated[
        int | None, typer.Option(help=_serve("max_request_frames"), show_default=False)
    ] = None,
    max_request_video_seconds: Annotated[
        float | None, typer.Option(help=_serve("max_request_video_seconds"), show_default=False)
    ] = None,
    max_request_visual_tokens: Annotated[
        int | None, typer.Option(help=_serve("max_request_visual_tokens"), show_default=False)
    ] = None,
    max_request_text_chars: Annotated[
        int | None, typer.Option(help=_serve("max_request_text_chars"), show_default=False)
    ] = None,
    shrink_to_fit: Annotated[bool, typer.Option("--shrink-to-fit", help=_serve("shrink_to_fit"))] = False,
    allowed_media_domains: Annotated[
        list[str] | None,
        typer.Option("--allowed-media-domains", help=_serve("allowed_media_domains") + " Repeat for several.",
                     show_default=False),
    ] = None,
    allow_private_media_addresses: Annotated[
        bool, typer.Option("--allow-private-media-addresses", help=_serve("allow_private_media_addresses"))
    ] = False,
    trust_media_uuids: Annotated[
        bool, typer.Option("--trust-media-uuids", help=_serve("trust_media_uuids"))
    ] = False,
    prefix_cache_mb: Annotated[float | None, typer.Option(help=_serve("prefix_cache_mb"), show_default=False)] = None,
    media_options: MediaOptions = MediaOptions(),
    max_new_tokens: MaxNewTokensOption = None,
    temperature: TemperatureOption = None,
    top_p: TopPOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto, bf16, fp16 or fp32.")] = "auto",
    quantize: QuantizeOption = None,
    ray: Annotated[bool, typer.Option("--ray", help="Serve through Ray Serve (pip install 'vidlab[ray]').")] = False,
    replicas: Annotated[int | None, typer.Option(help=_ray("replicas"), show_default=False)] = None,
    gpus_per_replica: Annotated[float | None, typer.Option(help=_ray("gpus_per_replica"), show_default=False)] = None,
    cpus_per_replica: Annotated[float | None, typer.Option(help=_ray("cpus_per_replica"), show_default=False)] = None,
    min_replicas: Annotated[int | None, typer.Option(help=_ray("min_replicas"), show_default=False)] = None,
    max_replicas: Annotated[int | None, typer.Option(help=_ray("max_replicas"), show_default=False)] = None,
    ray_address: Annotated[str | None, typer.Option(help=_ray("address"), show_default=False)] = None,
    log_level: Annotated[str, typer.Option(help="Server log level: critical, error, warning, info, debug.")] = "info",
) -> None:
    """Serve a VideoLLaMA3 model and its LoRA adapters over an OpenAI-compatible API (chat completions with video)."""
    adapters = parse_adapters(adapter)
    media = media_options.settings(model=model)  # the model family's frame rule unless an option says otherwise
    generation = generation_options(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p)
    options = build(ServeOptions, {
        "media_root": media_root, "allow_remote_media": allow_remote_media or None, "max_media_mb": max_media_mb,
        "max_video_seconds": max_video_seconds, "max_media_parts": max_media_parts, "max_body_mb": max_body_mb,
        "remote_timeout": remote_timeout,
        "api_key": api_key, "batching": batching, "max_batch": max_batch, "prefill_tokens": prefill_tokens,
        "max_queue": max_queue, "batch_wait_ms": batch_wait_ms,
        "max_model_len": max_model_len, "decode_workers": decode_workers, "media": media, "generation": generation,
        "max_fps": max_fps, "max_video_frames": max_video_frames, "max_request_frames": max_request_frames,
        "max_request_video_seconds": max_request_video_seconds,
        "max_request_visual_tokens": max_request_visual_tokens, "max_request_text_chars": max_request_text_chars,
        "shrink_to_fit": shrink_to_fit or None,
        "allowed_media_domains": tuple(allowed_media_domains) if allowed_media_domains else None,
        "allow_private_media_addresses": allow_private_media_addresses or None,
        "trust_media_uuids": trust_media_uuids or None, "prefix_cache_mb": prefix_cache_mb,
    }, name=flag)
    if media_root is not None and not media_root.is_dir():
        raise typer.BadParameter(f"--media-root {media_root}: no such folder")
    ray_values = {"replicas": replicas, "gpus_per_replica": gpus_per_replica, "cpus_per_replica": cpus_per_replica,
                  "min_replicas": min_replicas, "max_replicas": max_replicas, "address": ray_address}
    if not ray and any(value is not None for value in ray_values.values()):
        raise typer.BadParameter("--replicas, --gpus-per-replica, --cpus-per-replica, --min-replicas, "
                                 "--max-replicas and --ray-address need --ray")
    quiet_transformers()
    common = {"adapters": adapters, "name": name, "options": options, "host": host, "port": port, "dtype": dtype,
              "device": device, "quantize": quantize}
    if ray:
        from vidlab.serve.ray_serve import serve_ray

        serve_ray(model, ray_options=build(RayOptions, ray_values, name=flag), **common)
    else:
        from vidlab.serve.run import serve

        serve(model, log_level=log_level, **common)
