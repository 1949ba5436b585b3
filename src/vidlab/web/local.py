"""The page's model in this process: one base model with its adapters, shared by every browser tab.

Adapters are peft adapters loaded side by side on the one base model. A chat answer picks its
adapter under the model lock (answers take turns: on one model they would only slow each other
down; `vidlab serve` and `vidlab web --api` are for many users). A comparison answers one batch in
which each row has its own adapter (peft's mixed adapter batches), so base and tuned answers grow
together, token by token; adapters that also change the vision encoder or projector answer in turn.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from vidlab.chat import Chat
from vidlab.conversation import Conversation, MediaPart, TextPart, Turn
from vidlab.errors import ModelLoadError, VidlabError
from vidlab.generate import stream, stream_batch
from vidlab.inputs import LoadedMedia, collate, encode, video_frame_size
from vidlab.media import VideoClip, load_image
from vidlab.media.cache import ClipCache
from vidlab.models import load_model
from vidlab.models.load import peft_wrapping
from vidlab.settings import GenerationOptions, MediaSettings
from vidlab.vision_cache import VisionCache
from vidlab.web.backend import AnswerInfo, MediaChoice, Preview
from vidlab.web.media import check_video_length

BASE = "__base__"  # peft's name for "no adapter" in a mixed batch
_TEMPLATE_TOKENS = 16  # chat-template tokens around a new question (role markers), for the context estimate


class ContextError(VidlabError):
    """A question that would not fit the model's context."""


def _conversation(media: MediaChoice, question: str, system: str | None) -> Conversation:
    parts: list = []
    if media.video is not None:
        parts.append(MediaPart(type="video", path=str(media.video), start=media.start, end=media.end))
    parts += [MediaPart(type="image", path=str(path)) for path in media.images]
    turns = [Turn(role="system", parts=[TextPart(text=system)])] if system else []
    turns.append(Turn(role="user", parts=[*parts, TextPart(text=question)]))
    return Conversation(turns=turns, source="web page")


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
        self.model, self.processor = load_model(model, dtype=dtype, device=device)
        if adapters:
            self.model = _load_adapters(self.model, adapters)
        self.base_name = base_name
        self.adapters = list(adapters)
        self.max_video_seconds = max_video_seconds
        self.lock = threading.Lock()
        self.clip_cache = ClipCache()
        # Per model: an adapter that changes the vision encoder makes other embeddings of the same video.
        self.vision_caches = {name: VisionCache() for name in self.model_names()}
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        text_config = getattr(base.config, "text_config", base.config)
        self.context = getattr(text_config, "max_position_embeddings", None)
        self.mixed_batches = bool(adapters) and _on_llm_only(self.model)

    def model_names(self) -> list[str]:
        return [self.base_name, *self.adapters]

    def close(self) -> None:
        self.clip_cache = ClipCache(0)
        self.vision_caches.clear()

    @contextmanager
    def using(self, name: str) -> Iterator[None]:
        """Answer as model `name` inside this block (hold `lock`)."""
        if name not in self.model_names():
            raise VidlabError(f"model {name!r}: not loaded. Pick one of {', '.join(self.model_names())}.")
        if not self.adapters:
            yield
        elif name == self.base_name:
            with self.model.disable_adapter():
                yield
        else:
            self.model.set_adapter(name)
            yield

    def load(self, media: MediaChoice, settings: MediaSettings) -> list[LoadedMedia]:
        """Decode the media as a chat would (a cut file is used, with a warning), through the shared clip cache."""
        loaded: list[LoadedMedia] = []
        if media.video is not None:
            check_video_length(media.video, self.max_video_seconds)
            sampling = settings.sampling().model_copy(update={"allow_partial": True})
            loaded.append(self.clip_cache.load(media.video, sampling, media.start, media.end,
                                               video_frame_size(self.processor, settings)))
        loaded += [load_image(path) for path in media.images]
        return loaded

    def preview(self, media: MediaChoice, settings: MediaSettings) -> Preview:
        loaded = self.load(media, settings)
        sample = encode(_conversation(media, "?", None), loaded, self.processor, settings)
        stats = sample.stats
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

    def check_context(self, prompt_tokens: int, generation: GenerationOptions, what: str) -> None:
        if self.context is not None and prompt_tokens + generation.max_new_tokens > self.context:
            raise ContextError(
                f"over the model's context: {what} takes about {prompt_tokens} tokens and the answer up to "
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
        loaded = self.load(media, settings)
        sample = encode(_conversation(media, question, system), loaded, self.processor, settings)
        self.check_context(sample.stats.total_tokens, generation, "the question with its media")
        pad = self.processor.tokenizer.pad_token_id
        if self.mixed_batches or not self.adapters:
            batch = collate([sample] * len(names), pad, "left")
            adapter_names = [BASE if n == self.base_name else n for n in names] if self.adapters else None
            with self.lock:
                answers = yield from stream_batch(self.model, self.processor, batch, generation,
                                                  vision_cache=self.vision_caches[self.base_name],
                                                  adapter_names=adapter_names)
        else:
            answers = []
            batch = collate([sample], pad, "left")
            for i, name in enumerate(names):
                with self.lock, self.using(name):
                    pieces = stream(self.model, self.processor, batch, generation,
                                    vision_cache=self.vision_caches[name])
                    answers.append((yield from _tagged(i, pieces)))
        stats = sample.stats
        return [AnswerInfo(frames=[t for times in stats.frames for t in times], visual_tokens=stats.visual_tokens,
                           visual_tokens_before_pruning=stats.visual_tokens_before_pruning,
                           prompt_tokens=stats.total_tokens, generated_tokens=len(answer.token_ids),
                           warnings=[w for m in loaded for w in getattr(m, "warnings", [])])
                for answer in answers]


class LocalConversation:
    """One browser tab's conversation: a `vidlab.Chat` on the shared model, its adapter picked per answer."""

    def __init__(self, backend: LocalBackend, name: str, system: str | None, settings: MediaSettings,
                 generation: GenerationOptions):
        if name not in backend.model_names():
            raise VidlabError(f"model {name!r}: not loaded. Pick one of {', '.join(backend.model_names())}.")
        self.backend = backend
        self.name = name
        self.chat = Chat((backend.model, backend.processor), system=system, settings=settings, generation=generation,
                         clip_cache=backend.clip_cache, vision_cache=backend.vision_caches[name])
        self.last: AnswerInfo | None = None
        self._used = 0  # tokens of the conversation so far

    def set_generation(self, generation: GenerationOptions) -> None:
        self.chat.generation = generation

    def stream(self, question: str, media: MediaChoice | None) -> Iterator[str]:
        backend, kwargs = self.backend, {}
        question_tokens = len(backend.processor.tokenizer(question, add_special_tokens=False)["input_ids"])
        if media is not None and not media.empty:
            loaded = backend.load(media, self.chat.settings)
            clips = [m for m in loaded if isinstance(m, VideoClip)]
            kwargs = {"video": clips[0] if clips else None, "image": list(media.images) or None}
            sample = encode(_conversation(media, question, self.chat.system), loaded, backend.processor,
                            self.chat.settings)
            backend.check_context(sample.stats.total_tokens, self.chat.generation, "the question with its media")
        else:
            backend.check_context(self._used + question_tokens + _TEMPLATE_TOKENS, self.chat.generation,
                                  "the conversation so far with this question")
        with backend.lock, backend.using(self.name):
            yield from self.chat.stream(question, **kwargs)
        reply = self.chat.last_reply
        self._used = reply.prompt_tokens + reply.generated_tokens
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


def _load_adapters(model, adapters: dict[str, str | Path]):
    from peft import PeftModel

    for name, folder in adapters.items():
        folder = Path(folder).expanduser()
        if not (folder / "adapter_config.json").is_file():
            raise ModelLoadError(
                f"--adapter {name}={folder}: not a PEFT adapter folder (no adapter_config.json). Pass the output "
                "folder of `vidlab train` with method lora (or any peft save_pretrained folder)."
            )
    with peft_wrapping():
        first, *rest = adapters.items()
        model = PeftModel.from_pretrained(model, str(Path(first[1]).expanduser()), adapter_name=first[0])
        for name, folder in rest:
            model.load_adapter(str(Path(folder).expanduser()), adapter_name=name)
    model.eval()
    return model
