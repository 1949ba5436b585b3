"""The model side of a server: one model and its adapters, the caches, the queue, and chat requests in and
OpenAI response bodies out. HTTP knows nothing of it but `complete`, `stream`, `models` and `health`.

A request takes the one road every vidlab workload takes: its messages become a `Conversation`
(`parse_messages`), its media are decoded by `MediaLoad` through the shared cache, `encode` turns both into a
`Sample` with the request's settings; with continuous batching it joins the `RunningBatch` (prepared by
`vidlab.generate`'s own functions), with static batching `collate` left-pads a batch and `generate_batch` (or
`stream_batch`) answers it; both reuse vision-encoder outputs from the `VisionCache`. A request continues the
longest stored start of its prompt from the `PrefixCache`, and one prefilled alone (continuous: a prompt
prefilled on its own; static: a batch of one) keeps its own start through its media there.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from prometheus_client import CollectorRegistry

from vidlab.conversation import parse_messages
from vidlab.errors import VidlabError
from vidlab.generate import Generated, generate, generate_batch, stream, stream_batch
from vidlab.inputs import Sample, collate, encode
from vidlab.media.cache import DEFAULT_MAX_BYTES as CLIP_CACHE_BYTES
from vidlab.media.cache import MediaCache
from vidlab.models.adapters import BASE, active_adapter
from vidlab.models.load import context_length
from vidlab.prefix_cache import DEFAULT_MAX_BYTES as PREFIX_CACHE_BYTES
from vidlab.prefix_cache import PrefixCache
from vidlab.running_batch import Request, RunningBatch
from vidlab.serve import sources
from vidlab.serve.batching import Job, Scheduler
from vidlab.serve.continuous import ContinuousScheduler
from vidlab.serve.errors import ServeError, from_user_error
from vidlab.serve.loading import check_adapter_names, load_served_model
from vidlab.serve.media import MediaResolver, RequestTally
from vidlab.serve.messages import read_messages
from vidlab.serve.metrics import CacheCollector, EngineMetrics
from vidlab.serve.options import MIB, ServeOptions
from vidlab.serve.protocol import ChatRequest, chunk, completion, model_list, new_id, usage
from vidlab.serve.request_settings import generation_options, media_settings
from vidlab.serve.stops import StopScanner, cut_at_stop
from vidlab.settings import GenerationOptions
from vidlab.vision_cache import DEFAULT_MAX_BYTES as VISION_CACHE_BYTES
from vidlab.vision_cache import VisionCache


class _Stopped(Exception):
    """Raised inside generation once every request of the running batch is cancelled."""


@dataclass
class Prepared:
    """A request ready for the model."""

    sample: Sample
    adapter: str | None
    options: GenerationOptions
    seed: int | None
    stops: list[str]
    media: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _as_row(pieces: Iterator[str]) -> Iterator[tuple[int, str]]:
    """`stream`'s pieces as those of row 0 of a batch (as `stream_batch` yields them); returns [its result]."""
    while True:
        try:
            piece = next(pieces)
        except StopIteration as done:
            return [done.value]
        yield 0, piece


def _fingerprint() -> str:
    """Names the process that answered (`system_fingerprint`), so replicas can be told apart."""
    host = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]
    return f"vidlab-{host}-{os.getpid()}"


class Engine:
    """A loaded model served to chat requests.

    Args:
        model: a checkpoint folder or hub id, or a loaded (model, processor) pair.
        adapters: name -> LoRA adapter folder; a request picks one with `"model": name`.
        name: the base model's name in requests and /v1/models (default: `model` as given).
        options: limits, queue, batching and the request defaults.
        dtype, device: as in `vidlab.load_model`; quantize: 8bit, 4bit or None.
        registry: where the metrics go.
    """

    def __init__(self, model, *, adapters: Mapping[str, str | Path] | None = None, name: str | None = None,
                 options: ServeOptions = ServeOptions(), dtype: str = "auto", device: str = "auto",
                 quantize: str | None = None, registry: CollectorRegistry | None = None):
        adapters = dict(adapters or {})
        self.name = name or (str(model) if not isinstance(model, tuple) else "vidlab")
        check_adapter_names(self.name, adapters)
        self.adapters = list(adapters)
        self.options = options
        self.model, self.processor = load_served_model(model, adapters, dtype=dtype, device=device,
                                                       quantize=quantize)
        self.max_model_len = options.max_model_len or context_length(self.model)
        self.fingerprint = _fingerprint()
        clip_bytes = CLIP_CACHE_BYTES if options.clip_cache_mb is None else int(options.clip_cache_mb * MIB)
        vision_bytes = VISION_CACHE_BYTES if options.vision_cache_mb is None else int(options.vision_cache_mb * MIB)
        self.media_cache = MediaCache(clip_bytes)
        share = vision_bytes // (1 + len(adapters))
        self.vision_caches = {key: VisionCache(share) for key in [None, *adapters]}
        prefix_bytes = PREFIX_CACHE_BYTES if options.prefix_cache_mb is None else int(options.prefix_cache_mb * MIB)
        # One store for the base model and its adapters: entries are keyed by the adapter that made them.
        self.prefix_cache = PrefixCache(prefix_bytes) if prefix_bytes > 0 else None
        self._temp = Path(tempfile.mkdtemp(prefix="vidlab-serve-"))
        self.resolver = MediaResolver(options, self._temp, self.processor, self.media_cache)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = EngineMetrics(self.registry)
        self.registry.register(CacheCollector(self._caches))
        if options.batching == "continuous":
            batch = RunningBatch(self.model, self.processor, max_rows=options.max_batch,
                                 prefill_tokens=options.prefill_tokens)
            self.scheduler = ContinuousScheduler(batch, self._request, max_queue=options.max_queue,
                                                 metrics=self.metrics)
        else:
            self.scheduler = Scheduler(self._run_batch, self._run_stream, max_batch=options.max_batch,
                                       max_queue=options.max_queue, batch_wait=options.batch_wait_ms / 1000,
                                       metrics=self.metrics)
        self._decode_pool = ThreadPoolExecutor(options.decode_workers, thread_name_prefix="vidlab-decode")
        # Requests without media never wait behind others' decoding: they are prepared on a thread of their own.
        self._text_pool = ThreadPoolExecutor(1, thread_name_prefix="vidlab-text")
        # A fast tokenizer is not safe to call from several threads at once: each thread tokenizes with its own copy
        # (the rest of the processor is shared, so vision-cache keys stay the same), and none waits for another.
        self._local = threading.local()
        self._running: list[Job] = []
        core = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self._hook = core.register_forward_pre_hook(self._each_step)

    @property
    def temp_dir(self) -> Path:
        """Where uploads lie while they are decoded (removed by `close`)."""
        return self._temp

    def _caches(self) -> dict[str, object]:
        caches: dict[str, object] = {"clip": self.media_cache.clips, "image": self.media_cache.images}
        for adapter, cache in self.vision_caches.items():
            caches["vision" if adapter is None else f"vision:{adapter}"] = cache
        if self.prefix_cache is not None:
            caches["prefix"] = self.prefix_cache
        return caches

    async def start(self) -> None:
        self.scheduler.start()

    async def close(self) -> None:
        """Answer what is still waiting with a 503, stop the threads, remove the temporary folder."""
        try:
            await self.scheduler.close()
        finally:  # uploads never outlive the server, whatever happened to the queue
            self._decode_pool.shutdown(wait=False, cancel_futures=True)
            self._text_pool.shutdown(wait=False, cancel_futures=True)
            self._hook.remove()
            shutil.rmtree(self._temp, ignore_errors=True)

    def models(self) -> dict:
        return model_list(self.name, self.adapters)

    def health(self) -> dict:
        return {"status": "ok", "model": self.name, "adapters": self.adapters, "waiting": self.scheduler.waiting,
                "fingerprint": self.fingerprint}

    def adapter_for(self, model: str | None) -> str | None:
        """The adapter a request's `model` names (None: the base model).

        Raises:
            ServeError: 404 for a name this server does not serve.
        """
        if model is None or model == self.name:
            return None
        if model in self.adapters:
            return model
        served = ", ".join([self.name, *self.adapters])
        raise ServeError(404, f"model: {model!r} is not served here. Use one of: {served} (GET /v1/models lists "
                         "them).", code="model_not_found", param="model")

    # ---- requests -------------------------------------------------------------------------------

    async def complete(self, request: ChatRequest) -> dict:
        """The `chat.completion` body for a request that does not stream."""
        job = await self._enter(request, stream=False)
        try:
            result: Generated | None = await job.future
        finally:
            self.scheduler.cancel(job)  # no-op once answered; a client that left frees its place
        prepared: Prepared = job.payload
        text, ids = result.text, result.token_ids
        finish = "length" if len(ids) >= prepared.options.max_new_tokens else "stop"
        text, stopped = cut_at_stop(text, prepared.stops)
        finish = "stop" if stopped else finish
        stats = prepared.sample.stats
        return completion(new_id(), request.model or self.name, self.fingerprint, text, finish,
                          usage(stats.total_tokens, len(ids)), self._extra(job))

    async def stream(self, request: ChatRequest) -> AsyncIterator[dict]:
        """`chat.completion.chunk` bodies: the role, the text in pieces, the finish, then usage when asked.

        Everything that can fail because of the request fails before the first chunk.
        """
        job = await self._enter(request, stream=True)
        return self._chunks(request, job)

    async def _chunks(self, request: ChatRequest, job: Job) -> AsyncIterator[dict]:
        prepared: Prepared = job.payload
        rid, model, created = new_id(), request.model or self.name, int(time.time())
        scanner = StopScanner(prepared.stops)
        finished = False
        try:
            yield chunk(rid, model, self.fingerprint, created, {"role": "assistant", "content": ""})
            stopped = False
            while (piece := await job.pieces.get()) is not None:
                text, stopped = scanner.feed(piece)
                if text:
                    yield chunk(rid, model, self.fingerprint, created, {"content": text})
                if stopped:
                    job.cancelled = True  # the model thread stops at its next step
                    break
            if not stopped and (tail := scanner.flush()):
                yield chunk(rid, model, self.fingerprint, created, {"content": tail})
            result: Generated | None = await job.future
            generated = len(result.token_ids) if result is not None else job.steps
            finish = "stop" if stopped or generated < prepared.options.max_new_tokens else "length"
            yield chunk(rid, model, self.fingerprint, created, finish_reason=finish, extra=self._extra(job))
            finished = True
            include = request.stream_options is not None and request.stream_options.include_usage
            if include:
                used = usage(prepared.sample.stats.total_tokens, generated)
                yield chunk(rid, model, self.fingerprint, created, used=used)
        finally:
            if not finished:
                self.scheduler.cancel(job)

    def _extra(self, job: Job) -> dict:
        prepared: Prepared = job.payload
        stats = prepared.sample.stats
        extra = {"batch_size": job.batch_size, "frames": [[round(t, 3) for t in times] for times in stats.frames],
                 "visual_tokens": stats.visual_tokens,
                 "visual_tokens_before_pruning": stats.visual_tokens_before_pruning, "media": prepared.media}
        if prepared.warnings:
            extra["warnings"] = prepared.warnings
        return extra

    async def _enter(self, request: ChatRequest, stream: bool) -> Job:
        """Admit, fetch remote media (on the event loop), prepare (off it) and queue a request.

        Raises:
            ServeError: 404 unknown model, 429 queue full, 4xx for the request's own problems.
        """
        adapter = self.adapter_for(request.model)
        settings = media_settings(request, self.options.media, self.options)
        options = generation_options(request, self.options.generation)
        messages, refs = read_messages(request.messages, self.options.max_media_parts,
                                       self.options.max_request_text_chars)
        budget = self.max_model_len - options.max_new_tokens
        if budget < 1:
            raise ServeError(400, f"max_tokens: {options.max_new_tokens} leaves no room for the prompt in the "
                             f"context of {self.max_model_len} tokens. Ask for fewer tokens.",
                             code="context_length_exceeded", param="max_tokens")
        job = self.scheduler.admit(stream)
        loop = asyncio.get_running_loop()
        try:
            fetched = await self._download(refs, settings)
            pool = self._decode_pool if refs else self._text_pool
            job.payload = await loop.run_in_executor(
                pool, self._prepare, messages, refs, settings, budget, adapter, options, request, fetched
            )
        except BaseException:
            self.scheduler.abandon(job)
            raise
        sampled = options.temperature > 0
        job.key = None if sampled and request.seed is not None else (adapter, options)
        self.scheduler.submit(job)
        return job

    async def _download(self, refs, settings) -> dict[int, tuple[bytes, str]]:
        """The remote parts' bytes, by part index: downloaded together on the event loop (no thread waits on a slow
        host), each within the server's time and size limits."""
        wanted = {i: ref for i, ref in enumerate(refs) if self.resolver.needs_download(ref, settings)}
        if not wanted:
            return {}
        tasks = [asyncio.ensure_future(sources.download(ref.url, self.options, ref.param)) for ref in wanted.values()]
        try:
            got = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:  # one failed (or the client left): the others stop now, not at their deadline
                task.cancel()
            raise
        return dict(zip(wanted, got))

    def _processor(self):
        """This thread's processor: the shared one with a tokenizer of its own."""
        own = getattr(self._local, "processor", None)
        if own is None:
            own = copy.copy(self.processor)
            own.tokenizer = copy.deepcopy(self.processor.tokenizer)
            self._local.processor = own
        return own

    def _prepare(self, messages, refs, settings, budget, adapter, options, request: ChatRequest,
                 fetched: dict[int, tuple[bytes, str]] | None = None) -> Prepared:
        """On a worker thread: conversation, media and tensors of one request."""
        try:
            conversation = parse_messages(messages, where="messages")
        except VidlabError as err:
            raise from_user_error(err, "messages", "messages") from None
        tally = RequestTally(self.options)
        fetched = fetched or {}
        loaded = [self.resolver.load(ref, settings, tally, fetched.get(i)) for i, ref in enumerate(refs)]
        shrink = self.options.shrink_to_fit
        try:
            sample = encode(conversation, [item.media for item in loaded], self._processor(), settings,
                            max_length=budget if shrink else None)
        except VidlabError as err:
            error = from_user_error(err, "messages", "messages")
            if error.code == "context_length_exceeded":
                error = ServeError(
                    400, f"messages: the prompt does not fit the context even with fewer, smaller video frames "
                    f"({self.max_model_len} tokens, {options.max_new_tokens} of them kept for the answer by "
                    f"max_tokens). Shorten the messages, send fewer or shorter media, or ask for fewer tokens. "
                    f"Detail: {error.message.removeprefix('messages: ')}", code="context_length_exceeded",
                    param="messages")
            raise error from None
        if not shrink and len(sample) > budget:  # as vLLM: the prompt keeps its media whole, or is refused
            prompt = len(sample)
            raise ServeError(
                400, f"messages: this model's context is {self.max_model_len} tokens, but the request needs "
                f"{prompt + options.max_new_tokens} ({prompt} in the messages, {sample.stats.visual_tokens} of them "
                f"visual, and {options.max_new_tokens} for the answer by max_tokens). Ask "
                "for fewer max_tokens, shorten the messages, or send fewer or shorter media (fewer frames).",
                code="context_length_exceeded", param="max_tokens" if prompt < self.max_model_len else "messages")
        visual = sample.stats.visual_tokens_before_pruning
        if visual > self.options.max_request_visual_tokens:
            raise ServeError(400, f"messages: the request's media make {visual} visual tokens, over the server's "
                             f"limit of {self.options.max_request_visual_tokens} per request "
                             "(max_request_visual_tokens). Send fewer or smaller media, or fewer frames.",
                             code="too_many_visual_tokens", param="messages")
        warnings = [w for item in loaded for w in item.warnings]
        if sample.shrunk:
            warnings.append(f"the prompt was made to fit the context of {self.max_model_len} tokens "
                            f"({sample.shrunk}).")
        return Prepared(sample, adapter, options, request.seed, request.stop_strings,
                        [item.info() for item in loaded], warnings)

    # ---- the model thread -----------------------------------------------------------------------

    def _each_step(self, module, args) -> None:
        """Before each forward pass: count it, and stop a batch whose every request was cancelled."""
        running = self._running
        for job in running:
            job.steps += 1
        if running and all(job.cancelled for job in running):
            raise _Stopped()

    def _request(self, job: Job) -> Request:
        """A prepared job as a request of the continuous batch."""
        prepared: Prepared = job.payload
        inputs = collate([prepared.sample], self.processor.tokenizer.pad_token_id, "left")
        return Request(inputs, prepared.options, adapter=prepared.adapter, seed=prepared.seed, stops=prepared.stops,
                       vision_cache=self.vision_caches[prepared.adapter], prefix_cache=self.prefix_cache)

    def _record(self, jobs: list[Job], results: list[Generated], seconds: float) -> None:
        tokens = sum(len(result.token_ids) for result in results)
        self.metrics.generated_tokens.inc(tokens)
        self.metrics.generation_seconds.inc(seconds)
        self.metrics.prompt_tokens.inc(sum(job.payload.sample.stats.total_tokens for job in jobs))
        if seconds > 0:
            self.metrics.tokens_per_second.set(tokens / seconds)

    def _run_batch(self, jobs: list[Job]) -> list[Generated | None]:
        def run(batch, options, cache) -> list[Generated]:
            if len(jobs) == 1 and self.prefix_cache is not None:
                return [generate(self.model, self.processor, batch, options, vision_cache=cache,
                                 prefix_cache=self.prefix_cache)]
            return generate_batch(self.model, self.processor, batch, options, vision_cache=cache)

        return self._generate(jobs, run)

    def _run_stream(self, jobs: list[Job], push) -> list[Generated | None]:
        def run(batch, options, cache) -> list[Generated]:
            if len(jobs) == 1 and self.prefix_cache is not None:
                pieces = _as_row(stream(self.model, self.processor, batch, options, vision_cache=cache,
                                        prefix_cache=self.prefix_cache))
            else:
                pieces = stream_batch(self.model, self.processor, batch, options, vision_cache=cache)
            while True:
                try:
                    push(*next(pieces))
                except StopIteration as done:
                    return done.value

        return self._generate(jobs, run)

    def _generate(self, jobs: list[Job], run) -> list[Generated | None]:
        """One batch of jobs (they share adapter and options) through `run(batch, options, vision_cache)`;
        None for each job when a disconnect stopped it."""
        first: Prepared = jobs[0].payload
        started = time.perf_counter()
        with active_adapter(self.model, first.adapter or BASE):
            self._running = jobs
            try:
                if first.seed is not None and first.options.temperature > 0:  # a seeded sampled request runs alone
                    torch.manual_seed(first.seed)
                batch = collate([job.payload.sample for job in jobs], self.processor.tokenizer.pad_token_id, "left")
                results = run(batch, first.options, self.vision_caches[first.adapter])
            except _Stopped:
                self.metrics.stopped.inc()
                return [None] * len(jobs)
            finally:
                self._running = []
        self._record(jobs, results, time.perf_counter() - started)
        return results

