"""What the page needs from a model, in one small interface: in-process (`LocalBackend`) or a client of
`vidlab serve` (`RemoteBackend`). The tabs only ever talk to a `Backend`.

    backend.model_names()                      base model first, then its adapters
    backend.preview(media, settings)           the frames the model will get, and (in-process) their tokens
    talk = backend.conversation(name, ...)     one browser tab's conversation with one model
    for piece in talk.stream(question, media): ...    talk.last: the answer's counts
    for row, piece in backend.compare(...): ...       several models, one question, streamed together
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from vidlab.settings import GenerationOptions, MediaSettings


@dataclass(frozen=True)
class MediaChoice:
    """The video or images a question is about, as the page chose them."""

    video: Path | None = None
    images: tuple[Path, ...] = ()
    start: float | None = None
    end: float | None = None

    @property
    def empty(self) -> bool:
        return self.video is None and not self.images


@dataclass
class Preview:
    """What the page shows before a question: the frames (thumbnails) with their stamps, and the cost."""

    frames: list[np.ndarray]  # (height, width, 3) uint8, at most the size the model sees them at
    stamps: list[float]  # the time each frame is announced with (`Time X.Xs:`)
    visual_tokens: int | None = None  # after DiffFP; None when only the server knows (client mode)
    visual_tokens_before_pruning: int | None = None
    prompt_tokens: int | None = None  # with a one-word question and no history
    duration: float | None = None  # of the video
    warnings: list[str] = field(default_factory=list)


@dataclass
class AnswerInfo:
    """What an answer cost, as `vidlab.chat.Reply` reports it (None: the server did not say)."""

    frames: list[float] = field(default_factory=list)
    visual_tokens: int | None = None
    visual_tokens_before_pruning: int | None = None
    prompt_tokens: int | None = None
    generated_tokens: int | None = None
    seconds: float | None = None
    warnings: list[str] = field(default_factory=list)


class Conversation(Protocol):
    last: AnswerInfo | None

    def stream(self, question: str, media: MediaChoice | None) -> Iterator[str]:
        """Answer `question` in pieces; `media` starts the conversation (None: a follow-up about the
        media already in it, which is not decoded or uploaded again)."""

    def set_generation(self, generation: GenerationOptions) -> None:
        """Decoding settings for the next answers."""

    def forget_last(self) -> None:
        """Forget the last finished question and answer (to ask it again). An answer stopped before its end
        is never part of the conversation."""


class Backend(Protocol):
    mode: str  # "in-process" or "client of URL", for the page's header

    def model_names(self) -> list[str]:
        """The base model's name first, then each adapter's."""

    def preview(self, media: MediaChoice, settings: MediaSettings) -> Preview:
        """Decode the frames a question about `media` would use (and count their tokens when it can)."""

    def conversation(
        self, name: str, system: str | None, settings: MediaSettings, generation: GenerationOptions
    ) -> Conversation:
        """A new conversation with model `name` (one of `model_names()`)."""

    def compare(
        self, names: list[str], question: str, media: MediaChoice, system: str | None, settings: MediaSettings,
        generation: GenerationOptions,
    ) -> Iterator[tuple[int, str]]:
        """Ask every model in `names` the same question; yield (index in names, piece) as they answer
        together; return one AnswerInfo per name."""

    def close(self) -> None:
        """Free what the backend holds."""
