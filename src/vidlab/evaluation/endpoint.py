"""Evaluation through an OpenAI-compatible endpoint: the same records, prompts, answer reading and scores as
in-process evaluation, with the answers from `vidlab serve`, vLLM or a hosted model.

    vidlab.evaluate(ApiOptions("http://localhost:8000/v1", "videollama3"), "data/test.jsonl", "runs/api")
    vidlab.evaluate(ApiOptions(url, "gpt-4o", key=..., media="frames"), "benchmarks/mvbench", "runs/gpt4o",
                    benchmark="mvbench")

Media go one of two ways. `video`: each video as a `video_url` part (the file as a data: URL, or its path
for a server that reads this machine's files) with the clip window as the part's `start` / `end`, and
vidlab's frame and token settings in `mm_processor_kwargs` (what `vidlab serve` and vLLM take), so the
server picks the frames. `frames`: vidlab picks and decodes the frames here and sends each as an
`image_url` part after its `Time X.Xs:` stamp (for image-only hosted models). Requests go through the
`openai` client (its retries with backoff on connection errors, timeouts, 429 and 5xx), N at once;
each answer is one flushed line of predictions.jsonl, so a killed run resumes with one prediction per
record. Each record's requests and tokens go to api_requests.jsonl, which the report sums.
"""

from __future__ import annotations

import base64
import io
import mimetypes
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vidlab.conversation import Conversation, MediaPart, TextPart
from vidlab.errors import EvaluationError
from vidlab.evaluation.api_usage import REQUESTS_LOG
from vidlab.evaluation.records import EvalRecord, EvalSet, Skipped
from vidlab.evaluation.run import (
    PREDICTIONS,
    RECORD_ERRORS,
    RUN_INFO,
    RunOptions,
    RunResult,
    _check_same_run,
    _merge_skipped,
    _progress,
    _run_info,
    merge_predictions,
    record_row,
)
from vidlab.evaluation.sets import load_eval_set
from vidlab.files import LineAppender, read_jsonl, reason_of, write_json
from vidlab.inputs import MediaLoad
from vidlab.media import VideoClip
from vidlab.media.cache import MediaCache
from vidlab.media.clip import announced_stamps, require_exists
from vidlab.settings import MediaSettings, request_fields

# run.json's "api" keys that must match for a rerun to continue a folder (the URL may change: the same model
# served on another port or host answers the same).
SAME_ENDPOINT_KEYS = ("model", "media")
_VIDEO_MIME = {".mkv": "video/x-matroska", ".webm": "video/webm", ".avi": "video/x-msvideo",
               ".mov": "video/quicktime", ".mp4": "video/mp4", ".gif": "image/gif"}
# Status codes the openai client tries again (and so sent `retries + 1` requests before giving up).
_RETRIED_STATUS = (408, 409, 429)


@dataclass(frozen=True)
class ApiOptions:
    """Which endpoint answers, and how it is called. The key is never written anywhere.

    Attributes:
        url: the endpoint's base URL, as the openai client takes it (e.g. http://localhost:8000/v1).
        model: the model name the endpoint serves (`vidlab serve`: its --name or an adapter's name).
        key: the API key (None: none is sent).
        concurrency: requests in flight at once.
        media: video (a `video_url` part, the server picks frames from vidlab's settings in
            `mm_processor_kwargs`) or frames (vidlab's frames as `image_url` parts, each after its time).
        video_source: video mode: upload (the file as a base64 data: URL) or path (a file:// URL of the
            file on this machine, for a server on it: `vidlab serve --media-root`, vLLM
            --allowed-local-media-path).
        image_format: frames mode: jpeg (smaller) or png (lossless).
        frame_side: frames mode: longest side of a sent frame in pixels (None: as decoded, full size).
        timeout: seconds one request may take.
        retries: tries again after a connection error, timeout, 429 or 5xx (the openai client's backoff,
            which follows the server's Retry-After).
    """

    url: str
    model: str
    key: str | None = None
    concurrency: int = 4
    media: Literal["video", "frames"] = "video"
    video_source: Literal["upload", "path"] = "upload"
    image_format: Literal["jpeg", "png"] = "jpeg"
    frame_side: int | None = 768
    timeout: float = 600.0
    retries: int = 3

    def __post_init__(self) -> None:
        if not self.url or not self.model:
            raise ValueError("give the endpoint's URL and the model it serves")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be at least 1 (got {self.concurrency})")
        if self.media not in ("video", "frames"):
            raise ValueError(f"media must be video or frames (got {self.media!r})")
        if self.video_source not in ("upload", "path"):
            raise ValueError(f"video_source must be upload or path (got {self.video_source!r})")
        if self.image_format not in ("jpeg", "png"):
            raise ValueError(f"image_format must be jpeg or png (got {self.image_format!r})")
        if self.frame_side is not None and self.frame_side < 16:
            raise ValueError(f"frame_side must be at least 16 pixels (got {self.frame_side})")
        if self.timeout <= 0 or self.retries < 0:
            raise ValueError("timeout must be above 0 and retries 0 or more")

    def described(self) -> dict[str, Any]:
        """What run.json records of the endpoint (never the key)."""
        return {"url": self.url, "model": self.model, "media": self.media, "video_source": self.video_source,
                "image_format": self.image_format, "frame_side": self.frame_side}


@dataclass
class ApiRunResult(RunResult):
    """A `RunResult` with what this call cost at the endpoint."""

    requests: int = 0  # HTTP requests sent, retries included
    prompt_tokens: int = 0
    completion_tokens: int = 0
    failed: int = 0  # records whose request failed (in skipped.jsonl; a rerun tries them again)


@dataclass
class _Outcome:
    record: EvalRecord
    row: dict | None
    error: str | None
    requests: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    stop_run: bool = field(default=False)  # the endpoint refuses every request (key, model): stop


def eval_settings(settings: MediaSettings) -> MediaSettings:
    """The settings as in-process evaluation uses them (clip windows cut as VideoLLaMA3's evaluation does)."""
    if settings.precise_time is None:
        return settings.model_copy(update={"precise_time": True})
    return settings


def processor_kwargs(settings: MediaSettings) -> dict[str, Any]:
    """`mm_processor_kwargs` carrying every per-request media setting, so the server's own defaults cannot make
    its frames differ from in-process evaluation's."""
    return {name: getattr(settings, name) for name in request_fields(MediaSettings)}


def _file_url(path: Path, kind: str, api: ApiOptions) -> str:
    if kind == "video" and api.video_source == "path":
        return path.resolve().as_uri()
    mime = _VIDEO_MIME.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or \
        ("video/mp4" if kind == "video" else "image/png")
    return f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _frame_url(frame, image_format: str) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    if image_format == "png":
        Image.fromarray(frame).save(buffer, "PNG")
    else:
        Image.fromarray(frame).save(buffer, "JPEG", quality=90)
    return f"data:image/{image_format};base64,{base64.b64encode(buffer.getvalue()).decode()}"


def stamp_text(seconds: float) -> str:
    """The text before each frame in frames mode: VideoLLaMA3's own `Time 1.0s:`."""
    return f"Time {seconds:.1f}s:"


def _media_parts(part: MediaPart, loaded, load: MediaLoad, api: ApiOptions) -> list[dict]:
    path = require_exists(load.path(part))
    if part.type == "image":
        return [{"type": "image_url", "image_url": {"url": _file_url(path, "image", api)}}]
    if api.media == "frames":
        parts: list[dict] = []
        for stamp, frame in zip(announced_stamps(loaded), loaded.frames):
            parts.append({"type": "text", "text": stamp_text(stamp)})
            parts.append({"type": "image_url", "image_url": {"url": _frame_url(frame, api.image_format)}})
        return parts
    if path.is_dir():
        raise EvaluationError(f"{path}: a folder of frames cannot be sent as a video_url. Evaluate with "
                              "--api-media frames (vidlab sends its frames as images).")
    video: dict[str, Any] = {"type": "video_url", "video_url": {"url": _file_url(path, "video", api)}}
    video.update({k: v for k, v in (("start", part.start), ("end", part.end)) if v is not None})
    return [video]


def request_messages(sent: Conversation, media: list, load: MediaLoad, api: ApiOptions) -> list[dict]:
    """The record's prompt turns as OpenAI chat messages (`media`: its loaded media, in order; in video mode
    only what the prompt needed, the rest None)."""
    loaded = iter(media)
    messages = []
    for turn in sent.turns:
        if turn.role != "user" and not turn.media:
            messages.append({"role": turn.role, "content": turn.text})
            continue
        content: list[dict] = []
        for part in turn.parts:
            if isinstance(part, TextPart):
                content.append({"type": "text", "text": part.text})
            else:
                content += _media_parts(part, next(loaded, None), load, api)
        messages.append({"role": turn.role, "content": content})
    return messages


def _frame_cap(side: int | None):
    if side is None:
        return None

    def size(height: int, width: int, frames: int) -> tuple[int, int]:
        scale = min(1.0, side / max(height, width))
        return max(1, round(height * scale)), max(1, round(width * scale))

    return size


def _stamp_only_size(height: int, width: int, frames: int) -> tuple[int, int]:
    return 16, 16  # video mode needs only the frames' times (for subtitles); the server decodes the pixels


def _needs_local_media(record: EvalRecord, api: ApiOptions) -> bool:
    timed = record.subtitles is not None and not isinstance(record.subtitles, str)
    return api.media == "frames" or timed


def _load(record: EvalRecord, api: ApiOptions, settings: MediaSettings, data_root: Path,
          cache: MediaCache) -> list:
    """The media the prompt needs decoded here: frames mode every video (sized for sending), video mode only
    the frame times of a record with timed subtitles (they are put at the sampled frames)."""
    if not _needs_local_media(record, api):
        return [None] * len(record.conversation.media)
    load = MediaLoad(None, settings, data_root=data_root, cache=cache)
    load.frame_size = _frame_cap(api.frame_side) if api.media == "frames" else _stamp_only_size
    return [load(part) if part.type == "video" else None for part in record.conversation.media]


def _generation_fields(options: RunOptions, api: ApiOptions, settings: MediaSettings) -> dict[str, Any]:
    """The request's decoding fields; video mode adds vLLM's and vidlab's extras, frames mode sends only
    OpenAI's own fields (hosted endpoints refuse unknown ones)."""
    generation = options.generation
    fields: dict[str, Any] = {"max_tokens": generation.max_new_tokens, "temperature": generation.temperature}
    extra: dict[str, Any] = {}
    if generation.temperature > 0:
        fields["top_p"] = generation.top_p
        if generation.top_k:
            extra["top_k"] = generation.top_k
    if generation.min_new_tokens:
        extra["min_tokens"] = generation.min_new_tokens
    if generation.repetition_penalty != 1.0:
        extra["repetition_penalty"] = generation.repetition_penalty
    if generation.ignore_eos:
        extra["ignore_eos"] = True
    if api.media == "video":
        extra["mm_processor_kwargs"] = processor_kwargs(settings)
        fields["extra_body"] = extra
    return fields


def _attempts(err: Exception, api: ApiOptions) -> int:
    import openai

    status = getattr(err, "status_code", None)
    retried = isinstance(err, (openai.APIConnectionError, openai.APITimeoutError)) or \
        (status is not None and (status in _RETRIED_STATUS or status >= 500))
    return api.retries + 1 if retried else 1


def _describe(err: Exception, api: ApiOptions) -> str:
    import openai

    if isinstance(err, openai.APITimeoutError):
        return f"no answer from {api.url} within {api.timeout:g} s (tried {api.retries + 1} times)"
    if isinstance(err, openai.APIConnectionError):
        return f"cannot reach {api.url} (tried {api.retries + 1} times): {err.__cause__ or err}"
    if isinstance(err, openai.APIStatusError):
        body = err.body if isinstance(err.body, dict) else {}
        inner = body.get("error", body) if isinstance(body, dict) else {}
        message = inner.get("message") if isinstance(inner, dict) else None
        return f"{api.url} answered {err.status_code}: {message or err.message}"
    return f"the answer of {api.url} could not be read: {err}"


def _row(record: EvalRecord, sent: Conversation, text: str, extra: dict, media: list, usage,
         seconds: float, requests: int) -> dict:
    """A predictions.jsonl row with the keys in-process evaluation writes (token counts from the endpoint)."""
    row = record_row(record, sent, text)
    local = [[round(t, 3) for t in announced_stamps(m)] for m in media if isinstance(m, VideoClip)]
    row.update(
        frames=extra.get("frames") if extra.get("frames") is not None else local,
        visual_tokens=extra.get("visual_tokens"),
        visual_tokens_before_pruning=extra.get("visual_tokens_before_pruning"),
        prompt_tokens=getattr(usage, "prompt_tokens", None),
        generated_tokens=getattr(usage, "completion_tokens", None),
        seconds=round(seconds, 4),
        requests=requests,
    )
    return row


def _ask(client, record: EvalRecord, api: ApiOptions, options: RunOptions, settings: MediaSettings,
         data_root: Path, cache: MediaCache) -> _Outcome:
    """One record: its media (when needed here), the request, the answer; what fails costs this record only,
    except an endpoint that refuses the key or the model (`stop_run`)."""
    import openai

    try:
        media = _load(record, api, settings, data_root, cache)
        sent = record.conversation_for([m for m in media if m is not None])
        messages = request_messages(sent, media, MediaLoad(None, settings, data_root=data_root), api)
    except RECORD_ERRORS as err:
        return _Outcome(record, None, f"{type(err).__name__}: {reason_of(err, record.source)}", 0)
    started = time.perf_counter()
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=api.model, messages=messages, **_generation_fields(options, api, settings))
        answer = raw.parse()
    except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as err:
        return _Outcome(record, None, _describe(err, api), 1, stop_run=True)
    except openai.OpenAIError as err:
        return _Outcome(record, None, _describe(err, api), _attempts(err, api),
                        seconds=time.perf_counter() - started)
    seconds = time.perf_counter() - started
    requests = raw.retries_taken + 1
    if not answer.choices:
        return _Outcome(record, None, f"{api.url} answered without a choice", requests, seconds=seconds)
    text = answer.choices[0].message.content or ""
    extra = (answer.model_extra or {}).get("vidlab") or {}
    usage = answer.usage
    row = _row(record, sent, text, extra if isinstance(extra, dict) else {}, media, usage, seconds, requests)
    return _Outcome(record, row, None, requests, getattr(usage, "prompt_tokens", 0) or 0,
                    getattr(usage, "completion_tokens", 0) or 0, seconds)


def open_client(api: ApiOptions):
    """An openai client for the endpoint, checked: it answers, takes the key and serves the model.

    Raises:
        EvaluationError: naming the URL and what to fix.
    """
    import httpx2
    import openai

    limits = httpx2.Limits(max_connections=api.concurrency + 2, max_keepalive_connections=api.concurrency + 2)
    client = openai.OpenAI(base_url=api.url, api_key=api.key or "none", timeout=api.timeout, max_retries=api.retries,
                           http_client=httpx2.Client(limits=limits, timeout=api.timeout))
    try:
        listed = [m.id for m in client.models.list().data]
    except openai.AuthenticationError:
        client.close()
        raise EvaluationError(f"{api.url}: the endpoint refused the API key. Give the right one with --api-key "
                              "(or VIDLAB_API_KEY).") from None
    except openai.APIConnectionError as err:
        client.close()
        raise EvaluationError(f"{api.url}: cannot reach the endpoint ({err.__cause__ or err}). Start the server or "
                              "fix --api (the base URL, usually ending in /v1).") from None
    except openai.OpenAIError:
        return client  # an endpoint without a model list: the first answers tell
    if listed and api.model not in listed:
        client.close()
        raise EvaluationError(f"{api.url}: serves no model {api.model!r}. Use one of: {', '.join(listed)} "
                              "(--api-model).")
    return client


def run_api_predictions(
    api: ApiOptions,
    data: EvalSet | str | Path,
    out_dir: str | Path,
    *,
    data_root: str | Path | None = None,
    format: str = "auto",
    subtitles: bool = False,
    options: RunOptions = RunOptions(),
) -> ApiRunResult:
    """Answer every record of `data` that `out_dir/predictions.jsonl` does not hold yet, through the endpoint.

    Args:
        api: the endpoint, its model, how media are sent, concurrency, timeout and retries.
        data: an `EvalSet`, or a data file / folder (read with `format`, `data_root`, `subtitles`).
        out_dir: where predictions.jsonl, skipped.jsonl, api_requests.jsonl and run.json go.
        options: limit, media settings and decoding as in-process (batch_size and workers do not apply:
            `api.concurrency` requests are in flight).

    Raises:
        EvaluationError: the endpoint cannot be reached, refuses the key or does not serve the model (before
            any request; during the run, after the answers so far are kept), or the folder holds another run.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise EvaluationError("evaluation through an endpoint runs in one process (its --concurrency requests are "
                              "in flight at once): start it without accelerate launch or torchrun.")
    out_dir = Path(out_dir)
    if not isinstance(data, EvalSet):
        data = load_eval_set(data, data_root, format, subtitles)
    data = data.limited(options.limit)
    order = data.order()
    info = {**_run_info(api.model, None, data, options, subtitles, None), "api": api.described()}
    out_dir.mkdir(parents=True, exist_ok=True)
    _check_same_run(out_dir, info)
    _check_same_run(out_dir, info, SAME_ENDPOINT_KEYS, section="api")
    merge_predictions(out_dir, order)
    write_json(out_dir / RUN_INFO, info)

    done = {str(row["id"]) for row in read_jsonl(out_dir / PREDICTIONS)} if (out_dir / PREDICTIONS).exists() else set()
    missing = [record for record in data.records if record.id not in done]
    result = ApiRunResult(out_dir, len(data.records), len(done), 0)
    skipped: list[Skipped] = []
    stopped: str | None = None
    if missing:
        settings = eval_settings(options.settings)
        client = open_client(api)
        cache = MediaCache()  # several questions about one video (frames mode) decode it once
        bar = _progress(len(missing), options.progress)
        try:
            with LineAppender(out_dir / PREDICTIONS) as out, LineAppender(out_dir / REQUESTS_LOG) as log, \
                    ThreadPoolExecutor(api.concurrency, thread_name_prefix="vidlab-api") as pool:
                pending = iter(missing)
                running: set[Future] = set()

                def submit_next() -> None:
                    record = next(pending, None)
                    if record is not None:
                        running.add(pool.submit(_ask, client, record, api, options, settings, data.data_root, cache))

                for _ in range(2 * api.concurrency):  # a bounded window: media are prepared just ahead
                    submit_next()
                while running:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        running.discard(future)
                        outcome: _Outcome = future.result()
                        if outcome.row is not None:
                            out.write(outcome.row)  # one flushed line: a killed run keeps it
                            result.answered += 1
                        else:
                            record = outcome.record
                            skipped.append(Skipped(record.source, record.id, outcome.error, record.index))
                            result.failed += outcome.requests > 0
                        if outcome.requests:
                            log.write({"id": outcome.record.id, "requests": outcome.requests,
                                       "prompt_tokens": outcome.prompt_tokens,
                                       "completion_tokens": outcome.completion_tokens,
                                       "seconds": round(outcome.seconds, 4), "error": outcome.error})
                        result.requests += outcome.requests
                        result.prompt_tokens += outcome.prompt_tokens
                        result.completion_tokens += outcome.completion_tokens
                        bar.update(1)
                        if outcome.stop_run and stopped is None:
                            stopped = outcome.error
                            for other in running:
                                other.cancel()
                        if stopped is None:
                            submit_next()
                    bar.set_postfix(skipped=len(skipped), refresh=False)
                    if stopped is not None:
                        running = {f for f in running if not f.cancelled()}
        finally:
            bar.close()
            client.close()
    result.predictions = merge_predictions(out_dir, order)
    result.skipped = _merge_skipped(out_dir, data.skipped + skipped)
    if stopped is not None:
        raise EvaluationError(f"{out_dir}: stopped: {stopped}. The {result.predictions} answers so far are kept; fix "
                              "the key or --api-model and run again to answer the rest.")
    return result
