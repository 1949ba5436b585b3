"""The page's model in this process: one base model with its adapters, shared by every browser tab.

Adapters are peft adapters loaded side by side on the one base model (`load_model(adapters=...)`). A
chat answer picks its adapter under the model lock (answers take turns: on one model they would only
slow each other down; `vidlab serve` and `vidlab web --api` are for many users). A comparison answers
one batch in which each row has its own adapter (peft's mixed adapter batches), so base and tuned
answers grow together, token by token; adapters that also change the vision encoder or projector
answer in turn.

Every question goes through `vidlab.Chat.prepare` (the one media loader, the one encoder): its tensors
are checked against the model's context, then answered as they are.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from vidlab.chat import Chat, PreparedQuestion
from vidlab.errors import ModelLoadError, VidlabError
from vidlab.generate import stream, stream_batch
from vidlab.inputs import collate
from vidlab.media import VideoClip
from vidlab.media.cache import MediaCache
from vidlab.models import load_model
from vidlab.models.adapters import BASE, active_adapter
from vidlab.models.load import context_length
from vidlab.settings import GenerationOptions, MediaSettings
from vidlab.vision_cache import VisionCache
from vidlab.web.backend import AnswerInfo, MediaChoice, Preview
from vidlab.web.media import check_video_length


class ContextError(VidlabError):
    """A question that would not fit the model's context."""


def _on_llm_only(model) -> bool:
    """Whether every adapted module is in the LLM, the condition for peft's mixed adapter batches (their
    rows must be the batch's rows, which the vision encoder's inputs are not)."""
    adapted = [name for name, module in model.named_modules()
               if hasattr(module, "lora_A") or type(module).__name__ == "ModulesToSaveWrapper"]
    return all(".language_model." in name or name.endswith("lm_head") for name in adapted)


class LocalBackend:
    """A VideoLLaMA3 model (and adapters) loaded here.

    Args:
        model: checkpoint folder or hub id.
        adapters: name -> peft adapter folder (e.g. {"tuned": "runs/lora"}).
        base_name: what the page calls the model without adapter.
        dtype, device: as in `vidlab.load_model`.
        max_video_seconds: longer videos are refused (None: no limit).
    """

    mode = "in-process"

    def __init__(
        self, model: str | Path, adapters: Mapping[str, str | Path] | None = None, *, base_name: str = "base",
        dtype: str = "auto", device: str = "auto", max_video_seconds: float | None = None,
    ):
        adapters = dict(adapters or {})
        if base_name in adapters:
            raise ModelLoadError(f"--adapter {base_name}=...: {base_name!r} names the base model. Name it otherwise.")
        self.model, self.processor = load_model(model, adapters=adapters, dtype=dtype, device=device)
        self.base_name = base_name
        self.adapters = list(adapters)
        self.max_video_seconds = max_video_seconds
        self.lock = threading.Lock()
        self.cache = MediaCache()
        # Per model: an adapter that changes the vision encoder makes other embeddings of the same video.
        self.vision_caches = {name: VisionCache() for name in self.model_names()}
        self.context = context_length(self.model)
        self.mixed_batches = bool(adapters) and _on_llm_only(self.model)

    def model_names(self) -> list[str]:
        return [self.base_name, *self.adapters]

    def close(self) -> None:
        self.cache = MediaCache(0, 0)
        self.vision_caches.clear()

    def adapter_of(self, name: str) -> str | None:
        """The adapter that answers as page model `name` (`BASE`: none; None: the model has no adapters)."""
        if name not in self.model_names():
            raise VidlabError(f"model {name!r}: not loaded. Pick one of {', '.join(self.model_names())}.")
        if not self.adapters:
            return None
        return BASE if name == self.base_name else name

    def chat(self, name: str, system: str | None, settings: MediaSettings, generation: GenerationOptions) -> Chat:
        """A `vidlab.Chat` on the shared model, caches and media cache, answering as page model `name`."""
        adapter = self.adapter_of(name)  # an unknown name is refused here
        return Chat((self.model, self.processor), system=system, settings=settings, generation=generation,
                    cache=self.cache, vision_cache=self.vision_caches[name], answer_as=adapter)

    def prepare(self, chat: Chat, question: str, media: MediaChoice | None) -> PreparedQuestion:
        """The question decoded and encoded by `chat` (a video over the page's length limit refused first)."""
        if media is None or media.empty:
            return chat.prepare(question)
        if media.video is not None:
            check_video_length(media.video, self.max_video_seconds)
        return chat.prepare(question, video=media.video, image=list(media.images) or None, start=media.start,
                            end=media.end)

    def preview(self, media: MediaChoice, settings: MediaSettings) -> Preview:
        prepared = self.prepare(self.chat(self.base_name, None, settings, GenerationOptions()), "?", media)
        stats = prepared.sample.stats
        loaded = [m for _, m in prepared.media]
        clips = [m for m in loaded if isinstance(m, VideoClip)]
        if clips:
            clip, used = clips[0], set(stats.frames[0])
            keep = [i for i, stamp in enumerate(clip.stamps) if stamp in used]
            frames, stamps = [clip.frames[i] for i in keep], [clip.stamps[i] for i in keep]
            duration, warnings = clip.duration, list(clip.warnings)
        else:
            import numpy as np

            frames, stamps, duration, warnings = [np.asarray(m.convert("RGB")) for m in loaded], [], None, []
        return Preview(frames, stamps, stats.visual_tokens, stats.visual_tokens_before_pruning, stats.total_tokens,
                       duration, warnings)

    def check_context(self, prepared: PreparedQuestion, generation: GenerationOptions, what: str) -> None:
        """Refuse a prepared question whose tokens and answer would not fit the model's context."""
        prompt_tokens = prepared.prompt_tokens
        if prompt_tokens + generation.max_new_tokens > self.context:
            raise ContextError(
                f"over the model's context: {what} takes {prompt_tokens} tokens and the answer up to "
                f"{generation.max_new_tokens} more, but the model holds {self.context}. Use fewer frames (lower fps or "
                "max frames), a shorter clip, DiffFP on, lower max tokens, or start a new conversation."
            )

    def conversation(
        self, name: str, system: str | None, settings: MediaSettings, generation: GenerationOptions
    ) -> LocalConversation:
        return LocalConversation(self, name, system, settings, generation)

    def compare(
        self, names: list[str], question: str, media: MediaChoice, system: str | None, settings: MediaSettings,
        generation: GenerationOptions,
    ) -> Iterator[tuple[int, str]]:
        prepared = self.prepare(self.chat(self.base_name, system, settings, generation), question, media)
        self.check_context(prepared, generation, "the question with its media")
        sample = prepared.sample
        pad = self.processor.tokenizer.pad_token_id
        if self.mixed_batches or not self.adapters:
            batch = collate([sample] * len(names), pad, "left")
            adapter_names = [self.adapter_of(n) for n in names] if self.adapters else None
            with self.lock:
                answers = yield from stream_batch(self.model, self.processor, batch, generation,
                                                  vision_cache=self.vision_caches[self.base_name],
                                                  adapter_names=adapter_names)
        else:
            answers = []
            batch = collate([sample], pad, "left")
            for i, name in enumerate(names):
                with self.lock, active_adapter(self.model, self.adapter_of(name)):
                    pieces = stream(self.model, self.processor, batch, generation,
                                    vision_cache=self.vision_caches[name])
                    answers.append((yield from _tagged(i, pieces)))
        stats = sample.stats
        return [AnswerInfo(frames=[t for times in stats.frames for t in times], visual_tokens=stats.visual_tokens,
                           visual_tokens_before_pruning=stats.visual_tokens_before_pruning,
                           prompt_tokens=stats.total_tokens, generated_tokens=len(answer.token_ids),
                           warnings=[w for _, m in prepared.media for w in getattr(m, "warnings", [])])
                for answer in answers]


class LocalConversation:
    """One browser tab's conversation: a `vidlab.Chat` on the shared model, answering as its adapter."""

    def __init__(self, backend: LocalBackend, name: str, system: str | None, settings: MediaSettings,
                 generation: GenerationOptions):
        self.backend = backend
        self.name = name
        self.chat = backend.chat(name, system, settings, generation)
        self.last: AnswerInfo | None = None

    def set_generation(self, generation: GenerationOptions) -> None:
        self.chat.generation = generation

    def forget_last(self) -> None:
        self.chat.forget_last()

    def stream(self, question: str, media: MediaChoice | None) -> Iterator[str]:
        backend = self.backend
        prepared = backend.prepare(self.chat, question, media)
        what = "the conversation so far with this question" if media is None or media.empty else \
            "the question with its media"
        backend.check_context(prepared, self.chat.generation, what)
        with backend.lock:
            yield from self.chat.stream(prepared)
        reply = self.chat.last_reply
        self.last = AnswerInfo(reply.frames, reply.visual_tokens, reply.visual_tokens_before_pruning,
                               reply.prompt_tokens, reply.generated_tokens, reply.seconds, list(reply.warnings))


def _tagged(index: int, pieces: Iterator[str]) -> Iterator[tuple[int, str]]:
    """(index, piece) for each piece; returns what `pieces` returned."""
    while True:
        try:
            piece = next(pieces)
        except StopIteration as stop:
            return stop.value
        yield index, piece
