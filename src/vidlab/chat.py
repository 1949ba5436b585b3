"""Multi-turn chat about videos and images, for Python users and for `vidlab chat`.

    chat = vidlab.Chat("path/to/model")
    print(chat.ask("What happens?", video="clip.mp4"))
    print(chat.ask("And then?"))            # follow-up about the same video
    for piece in chat.stream("Describe it in detail."):
        print(piece, end="")
    chat.reset()                            # a new conversation about the same video

A follow-up question runs neither the video decoder nor the vision encoder again: the decoded clip
and its vision-encoder outputs are kept (`MediaCache`, `VisionCache`, which a caller may share
between chats), and so is the conversation's key/value cache (kept after each answer in a `PrefixCache`,
the store the server uses too), so only the new question's tokens go through the model.

`prepare` decodes and encodes a question without answering it, so a caller can look at what the model
will get (its frames, its tokens: the web page checks them against the context) and then answer
exactly that with `ask` or `stream`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from PIL import Image

from vidlab.conversation import Conversation, MediaPart, TextPart, Turn, validate_turns
from vidlab.generate import Generated, GenerationOptions, generate, stream
from vidlab.inputs import Batch, LoadedMedia, MediaLoad, Sample, collate, encode
from vidlab.media import VideoClip
from vidlab.media.cache import MediaCache
from vidlab.media.subtitles import read_subtitles
from vidlab.models import load_model
from vidlab.models.adapters import active_adapter
from vidlab.models.frame_rules import family_media_settings
from vidlab.prefix_cache import PrefixCache
from vidlab.settings import MediaSettings
from vidlab.vision_cache import VisionCache

ImageInput = str | Path | Image.Image
# A person waiting on an answer (chat, the web page) gets one from a cut file, with a warning in the reply;
# evaluation, training and the server refuse a cut file unless asked (--allow-partial). Decided here only.
INTERACTIVE_ALLOW_PARTIAL = True


@dataclass
class PreparedQuestion:
    """A question with its media decoded and the whole conversation encoded: what the model will get.

    Attributes:
        question: the question's text.
        conversation: the conversation so far with the question.
        media: every media part of the conversation with its decoded clip or image, in order.
        sample: the tensors the answer is generated from (`sample.stats`: frames and token counts).
    """

    question: str
    conversation: Conversation
    media: list[tuple[MediaPart, LoadedMedia]]
    sample: Sample

    @property
    def prompt_tokens(self) -> int:
        return self.sample.stats.total_tokens


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
        settings: frame sampling, visual-token budget, image merge size and DiffFP (default: the library's, with the
            model folder's family frame rule: `vidlab.models.frame_rules`).
        generation: decoding settings (greedy by default).
        dtype, device, quantize: as in `vidlab.load_model`.
        cache, vision_cache: where decoded media and vision-encoder outputs are kept (default: this
            chat's own); pass shared ones to reuse work across chats.
        prefix_cache: where the conversation's key/value cache is kept between turns (default: this chat's
            own, `PrefixCache()`; `PrefixCache(max_bytes=...)` bounds it); a shared one lets chats about
            the same video reuse each other's prefill.
        answer_as: on a model loaded with several adapters, the one that answers (`BASE`: none of them);
            None: the model as it is.
    """

    def __init__(
        self,
        model,
        adapter: str | Path | None = None,
        *,
        system: str | None = None,
        settings: MediaSettings | None = None,
        generation: GenerationOptions = GenerationOptions(),
        dtype: str = "auto",
        device: str = "auto",
        quantize: str | None = None,
        cache: MediaCache | None = None,
        vision_cache: VisionCache | None = None,
        answer_as: str | None = None,
        prefix_cache: PrefixCache | None = None,
    ):
        if isinstance(model, (str, Path)):
            self.model, self.processor = load_model(model, adapter=adapter, dtype=dtype, device=device,
                                                    quantize=quantize)
        else:
            self.model, self.processor = model
        self.system = system
        if settings is None:  # the model folder's family frame rule (VideoLLaMA3's: the library defaults)
            settings = family_media_settings(model if isinstance(model, (str, Path)) else None)
        self.settings = settings
        self.generation = generation
        self.answer_as = answer_as
        self.cache = cache if cache is not None else MediaCache()
        self.vision_cache = vision_cache if vision_cache is not None else VisionCache()
        self.prefix_cache = prefix_cache if prefix_cache is not None else PrefixCache()
        self.last_reply: Reply | None = None
        self._turns: list[Turn] = []
        self._media: list[tuple[MediaPart, LoadedMedia]] = []  # in the conversation so far, in order
        self._carried: list[tuple[MediaPart, LoadedMedia]] = []  # kept by reset for the next question
        self._before_last: tuple | None = None  # (turns, media, carried) before the last answer, for forget_last
        self.reset(keep_media=False)

    def reset(self, keep_media: bool = True) -> None:
        """Forget the history (the system message stays). By default the next question is about the
        same video and images, without decoding them again; `keep_media=False` forgets them too."""
        self._carried = (self._media or self._carried) if keep_media else []
        self._media = []
        self._before_last = None
        self._turns = [Turn(role="system", parts=[TextPart(text=self.system)])] if self.system else []

    def forget_last(self) -> None:
        """Forget the last question and its answer, as if they had not been asked (to ask again, e.g. to
        regenerate the answer). The conversation's cache stays in the prefix cache: the next answer reuses its
        shared start."""
        if self._before_last is not None:
            self._turns, self._media, self._carried = self._before_last
            self._before_last = None

    @property
    def history(self) -> list[Turn]:
        return list(self._turns)

    def _load(
        self, video: str | Path | VideoClip | None, images, start: float | None, end: float | None,
        subtitles: str | Path | None = None,
    ) -> list[tuple[MediaPart, LoadedMedia]]:
        """The new media parts, decoded by the one loader (clips and images given decoded are used as they are)."""
        given: list[tuple[MediaPart, LoadedMedia | None]] = []
        if subtitles is not None and video is None:
            raise ValueError("subtitles come with a video: pass video too")
        subtitles = None if subtitles is None else str(subtitles)
        if isinstance(video, VideoClip):
            part = MediaPart(type="video", path=video.path, start=video.start, end=video.end, subtitles=subtitles)
            given.append((part, video if subtitles is None else replace(video, subtitles=read_subtitles(subtitles))))
        elif video is not None:
            given.append((MediaPart(type="video", path=str(video), start=start, end=end, subtitles=subtitles), None))
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        for image in images or []:
            if isinstance(image, Image.Image):
                given.append((MediaPart(type="image", path=getattr(image, "filename", "") or "<image>"), image))
            else:
                given.append((MediaPart(type="image", path=str(image)), None))
        if any(loaded is None for _, loaded in given):
            load = MediaLoad(self.processor, self.settings, cache=self.cache, allow_partial=INTERACTIVE_ALLOW_PARTIAL)
            given = [(part, load(part) if loaded is None else loaded) for part, loaded in given]
        return given

    def prepare(
        self,
        question: str,
        video: str | Path | VideoClip | None = None,
        image: ImageInput | Sequence[ImageInput] | None = None,
        *,
        start: float | None = None,
        end: float | None = None,
        subtitles: str | Path | None = None,
    ) -> PreparedQuestion:
        """The question (about `video` / `image` if given, else about what came before) decoded and encoded,
        not yet answered: pass it to `ask` or `stream`. The chat is unchanged until it is answered.
        `subtitles` (an .srt / .vtt file) come with `video`: a LLaMA-VID model puts each line by its frame."""
        new = self._load(video, image, start, end, subtitles) or self._carried
        user = Turn(role="user", parts=[*(part for part, _ in new), TextPart(text=question)])
        turns = [*self._turns, user]
        validate_turns(turns, "chat")
        media = [*self._media, *new]
        conversation = Conversation(turns=turns, source="chat")
        sample = encode(conversation, [m for _, m in media], self.processor, self.settings)
        return PreparedQuestion(question, conversation, media, sample)

    def _finish(self, prepared: PreparedQuestion, generated: Generated, started: float) -> Reply:
        new_media = prepared.media[len(self._media):]  # what this question brought
        self._before_last = (self._turns, self._media, self._carried)
        warnings = [w for _, m in new_media for w in getattr(m, "warnings", [])]
        self._turns = [*prepared.conversation.turns, Turn(role="assistant", parts=[TextPart(text=generated.text)])]
        self._media, self._carried = prepared.media, []
        stats = prepared.sample.stats
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

    def _prepared(self, question: str | PreparedQuestion, video, image, start, end, subtitles=None) -> PreparedQuestion:
        if not isinstance(question, PreparedQuestion):
            return self.prepare(question, video, image, start=start, end=end, subtitles=subtitles)
        if any(x is not None for x in (video, image, start, end, subtitles)):
            raise ValueError("a prepared question brings its media: pass video, image, start and end to `prepare`")
        return question

    def _batch(self, prepared: PreparedQuestion) -> Batch:
        return collate([prepared.sample], self.processor.tokenizer.pad_token_id, "left")

    def ask(
        self,
        question: str | PreparedQuestion,
        video: str | Path | VideoClip | None = None,
        image: ImageInput | Sequence[ImageInput] | None = None,
        *,
        start: float | None = None,
        end: float | None = None,
        subtitles: str | Path | None = None,
    ) -> Reply:
        """Answer `question`, about `video` / `image` if given, else about what came before.

        `start` / `end` (seconds) use only that part of `video`; `subtitles` (.srt / .vtt) come with it (a LLaMA-VID
        model puts each line by its frame). `question` may be what `prepare` returned.
        """
        started = time.perf_counter()
        prepared = self._prepared(question, video, image, start, end, subtitles)
        with active_adapter(self.model, self.answer_as):
            generated = generate(self.model, self.processor, self._batch(prepared), self.generation,
                                 **self._caches())
        return self._finish(prepared, generated, started)

    def stream(
        self,
        question: str | PreparedQuestion,
        video: str | Path | VideoClip | None = None,
        image: ImageInput | Sequence[ImageInput] | None = None,
        *,
        start: float | None = None,
        end: float | None = None,
        subtitles: str | Path | None = None,
    ) -> Iterator[str]:
        """Like `ask`, but yields the answer in pieces; `last_reply` holds the whole reply after."""
        started = time.perf_counter()
        prepared = self._prepared(question, video, image, start, end, subtitles)
        with active_adapter(self.model, self.answer_as):
            generated = yield from stream(self.model, self.processor, self._batch(prepared), self.generation,
                                          **self._caches())
        self._finish(prepared, generated, started)

    def _caches(self) -> dict:
        """The caches for the next generation: the conversation so far is continued from the prefix cache,
        and the conversation with its answer kept there for the next turn."""
        return {"vision_cache": self.vision_cache, "prefix_cache": self.prefix_cache, "keep": "conversation"}
