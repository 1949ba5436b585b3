"""Multi-turn chat about videos and images, for Python users and for `vidlab chat`.

    chat = vidlab.Chat("path/to/model")
    print(chat.ask("What happens?", video="clip.mp4"))
    print(chat.ask("And then?"))            # follow-up about the same video
    for piece in chat.stream("Describe it in detail."):
        print(piece, end="")
    chat.reset()                            # a new conversation about the same video

A follow-up question runs neither the video decoder nor the vision encoder again: the decoded clip
and its vision-encoder outputs are kept (`ClipCache`, `VisionCache`, which a caller may share
between chats), and so is the conversation's key/value cache, so only the new question's tokens go
through the model.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from vidlab.conversation import Conversation, MediaPart, TextPart, Turn, validate_turns
from vidlab.generate import Generated, GenerationOptions, PromptCache, generate, stream
from vidlab.inputs import Batch, LoadedMedia, build_inputs, video_frame_size
from vidlab.media import VideoClip, load_image
from vidlab.media.cache import ClipCache
from vidlab.models import load_model
from vidlab.settings import MediaSettings
from vidlab.vision_cache import VisionCache

ImageInput = str | Path | Image.Image


@dataclass
class Reply:
    """An answer and what it cost. `str(reply)` is the answer text."""

    answer: str
    frames: list[float]  # times (s) of the video frames the model saw, from the clip start
    visual_tokens: int
    visual_tokens_before_pruning: int
    prompt_tokens: int
    generated_tokens: int
    seconds: float
    warnings: list[str] = field(default_factory=list)  # about the media: a cut file, frames lost to damage

    def __str__(self) -> str:
        return self.answer

    def to_dict(self) -> dict:
        return {
            "answer": self.answer,
            "frames": [round(t, 3) for t in self.frames],
            "visual_tokens": self.visual_tokens,
            "visual_tokens_before_pruning": self.visual_tokens_before_pruning,
            "prompt_tokens": self.prompt_tokens,
            "generated_tokens": self.generated_tokens,
            "seconds": round(self.seconds, 3),
            "warnings": self.warnings,
        }


class Chat:
    """A conversation with a VideoLLaMA3 model that keeps its history and its media between questions.

    Args:
        model: a checkpoint folder or hub id, or an already loaded `(model, processor)` pair.
        adapter: a PEFT adapter folder to apply (when `model` is a path).
        system: an optional system message that starts the conversation.
        settings: frame sampling, visual-token budget, image merge size and DiffFP.
        generation: decoding settings (greedy by default).
        dtype, device, quantize: as in `vidlab.load_model`.
        clip_cache, vision_cache: where decoded clips and vision-encoder outputs are kept (default:
            this chat's own); pass shared ones to reuse work across chats.
    """

    def __init__(
        self,
        model,
        adapter: str | Path | None = None,
        *,
        system: str | None = None,
        settings: MediaSettings = MediaSettings(),
        generation: GenerationOptions = GenerationOptions(),
        dtype: str = "auto",
        device: str = "auto",
        quantize: str | None = None,
        clip_cache: ClipCache | None = None,
        vision_cache: VisionCache | None = None,
    ):
        if isinstance(model, (str, Path)):
            self.model, self.processor = load_model(model, adapter=adapter, dtype=dtype, device=device,
                                                    quantize=quantize)
        else:
            self.model, self.processor = model
        self.system = system
        self.settings = settings
        self.generation = generation
        self.clip_cache = clip_cache if clip_cache is not None else ClipCache()
        self.vision_cache = vision_cache if vision_cache is not None else VisionCache()
        self._prompt_cache: PromptCache | None = None
        self.last_reply: Reply | None = None
        self._turns: list[Turn] = []
        self._media: list[tuple[MediaPart, LoadedMedia]] = []  # in the conversation so far, in order
        self._carried: list[tuple[MediaPart, LoadedMedia]] = []  # kept by reset for the next question
        self.reset(keep_media=False)

    def reset(self, keep_media: bool = True) -> None:
        """Forget the history (the system message stays). By default the next question is about the
        same video and images, without decoding them again; `keep_media=False` forgets them too."""
        self._carried = (self._media or self._carried) if keep_media else []
        self._media = []
        self._prompt_cache = None
        self._turns = [Turn(role="system", parts=[TextPart(text=self.system)])] if self.system else []

    @property
    def history(self) -> list[Turn]:
        return list(self._turns)

    def _load(
        self, video: str | Path | VideoClip | None, images, start: float | None, end: float | None
    ) -> list[tuple[MediaPart, LoadedMedia]]:
        loaded: list[tuple[MediaPart, LoadedMedia]] = []
        if video is not None:
            # A cut file is used with a warning in the reply (evaluation and training refuse it).
            sampling = self.settings.sampling().model_copy(update={"allow_partial": True})
            frame_size = video_frame_size(self.processor, self.settings)
            clip = video if isinstance(video, VideoClip) else self.clip_cache.load(video, sampling, start, end,
                                                                                    frame_size)
            loaded.append((MediaPart(type="video", path=clip.path, start=clip.start, end=clip.end), clip))
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        for image in images or []:
            if isinstance(image, Image.Image):
                loaded.append((MediaPart(type="image", path=getattr(image, "filename", "") or "<image>"), image))
            else:
                loaded.append((MediaPart(type="image", path=str(image)), load_image(image)))
        return loaded

    def _prepare(self, question: str, video, image, start, end) -> tuple[Conversation, list, Batch]:
        new = self._load(video, image, start, end) or self._carried
        user = Turn(role="user", parts=[*(part for part, _ in new), TextPart(text=question)])
        turns = [*self._turns, user]
        validate_turns(turns, "chat")
        media = [*self._media, *new]
        conversation = Conversation(turns=turns, source="chat")
        inputs = build_inputs(conversation, [m for _, m in media], self.processor, self.settings)
        return conversation, media, inputs

    def _finish(self, conversation: Conversation, media, inputs: Batch, generated: Generated, started: float) -> Reply:
        new_media = media[len(self._media):]  # what this question brought
        warnings = [w for _, m in new_media for w in getattr(m, "warnings", [])]
        self._turns = [*conversation.turns, Turn(role="assistant", parts=[TextPart(text=generated.text)])]
        self._media, self._carried = media, []
        self._prompt_cache = generated.prompt_cache
        stats = inputs.stats[0]
        self.last_reply = Reply(
            answer=generated.text,
            frames=[t for times in stats.frames for t in times],
            visual_tokens=stats.visual_tokens,
            visual_tokens_before_pruning=stats.visual_tokens_before_pruning,
            prompt_tokens=stats.total_tokens,
            generated_tokens=len(generated.token_ids),
            seconds=time.perf_counter() - started,
            warnings=warnings,
        )
        return self.last_reply

    def ask(
        self,
        question: str,
        video: str | Path | VideoClip | None = None,
        image: ImageInput | Sequence[ImageInput] | None = None,
        *,
        start: float | None = None,
        end: float | None = None,
    ) -> Reply:
        """Answer `question`, about `video` / `image` if given, else about what came before.

        `start` / `end` (seconds) use only that part of `video`.
        """
        started = time.perf_counter()
        conversation, media, inputs = self._prepare(question, video, image, start, end)
        generated = generate(self.model, self.processor, inputs, self.generation, **self._caches())
        return self._finish(conversation, media, inputs, generated, started)

    def stream(
        self,
        question: str,
        video: str | Path | VideoClip | None = None,
        image: ImageInput | Sequence[ImageInput] | None = None,
        *,
        start: float | None = None,
        end: float | None = None,
    ) -> Iterator[str]:
        """Like `ask`, but yields the answer in pieces; `last_reply` holds the whole reply after."""
        started = time.perf_counter()
        conversation, media, inputs = self._prepare(question, video, image, start, end)
        generated = yield from stream(self.model, self.processor, inputs, self.generation, **self._caches())
        self._finish(conversation, media, inputs, generated, started)

    def _caches(self) -> dict:
        """The caches for the next generation; the conversation's cache is handed over (generation
        crops and extends it), so a failed answer leaves none behind."""
        past, self._prompt_cache = self._prompt_cache, None
        return {"vision_cache": self.vision_cache, "past": past, "keep_cache": True}
