"""Multi-turn chat about videos and images, for Python users and for `vidlab chat`.

    chat = vidlab.Chat("path/to/model")
    print(chat.ask("What happens?", video="clip.mp4"))
    print(chat.ask("And then?"))            # follow-up about the same video
    for piece in chat.stream("Describe it in detail."):
        print(piece, end="")
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vidlab.conversation import Conversation, MediaPart, TextPart, Turn, validate_turns
from vidlab.generate import Generated, GenerationOptions, generate, stream
from vidlab.inputs import LoadedMedia, build_inputs
from vidlab.media import DEFAULT_FOLDER_FPS, Sampling, VideoClip, load_image, load_video
from vidlab.models import load_model


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
        }


class Chat:
    """A conversation with a VideoLLaMA3 model that keeps its history between questions.

    Args:
        model: a checkpoint folder or hub id, or an already loaded `(model, processor)` pair.
        adapter: a PEFT adapter folder to apply (when `model` is a path).
        system: an optional system message that starts the conversation.
        sampling: which frames to take from videos (fps, max_frames, num_frames, start, end).
        compression: DiffFP pruning of unchanged video tokens (on, as in VideoLLaMA3).
        generation: decoding settings (greedy by default).
        dtype, device: as in `vidlab.load_model`.
    """

    def __init__(
        self,
        model,
        adapter: str | Path | None = None,
        *,
        system: str | None = None,
        sampling: Sampling = Sampling(),
        compression: bool = True,
        generation: GenerationOptions = GenerationOptions(),
        dtype: str = "auto",
        device: str = "auto",
        folder_fps: float = DEFAULT_FOLDER_FPS,
    ):
        if isinstance(model, (str, Path)):
            self.model, self.processor = load_model(model, adapter=adapter, dtype=dtype, device=device)
        else:
            self.model, self.processor = model
        self.system = system
        self.sampling = sampling
        self.compression = compression
        self.generation = generation
        self.folder_fps = folder_fps
        self.last_reply: Reply | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the history and the media (the system message stays)."""
        self._turns: list[Turn] = []
        if self.system:
            self._turns.append(Turn(role="system", parts=[TextPart(text=self.system)]))
        self._media: list[LoadedMedia] = []

    @property
    def history(self) -> list[Turn]:
        return list(self._turns)

    def _load(self, video, images) -> tuple[list[MediaPart], list[LoadedMedia]]:
        parts, loaded = [], []
        if video is not None:
            clip = video if isinstance(video, VideoClip) else load_video(video, self.sampling, self.folder_fps)
            parts.append(MediaPart(type="video", path=clip.path, start=clip.start, end=clip.end))
            loaded.append(clip)
        if isinstance(images, (str, Path, Image.Image)):
            images = [images]
        for image in images or []:
            if isinstance(image, Image.Image):
                parts.append(MediaPart(type="image", path=getattr(image, "filename", "") or "<image>"))
                loaded.append(image)
            else:
                parts.append(MediaPart(type="image", path=str(image)))
                loaded.append(load_image(image))
        return parts, loaded

    def _prepare(self, question: str, video, image) -> tuple[Conversation, list[LoadedMedia]]:
        parts, loaded = self._load(video, image)
        user = Turn(role="user", parts=[*parts, TextPart(text=question)])
        turns = [*self._turns, user]
        validate_turns(turns, "chat")
        return Conversation(turns=turns, source="chat"), [*self._media, *loaded]

    def _finish(self, conversation: Conversation, media, inputs, generated: Generated, started: float) -> Reply:
        self._turns = [*conversation.turns, Turn(role="assistant", parts=[TextPart(text=generated.text)])]
        self._media = media
        stats = inputs.stats
        self.last_reply = Reply(
            answer=generated.text,
            frames=[t for times in stats.frames for t in times],
            visual_tokens=stats.visual_tokens,
            visual_tokens_before_pruning=stats.visual_tokens_before_pruning,
            prompt_tokens=stats.total_tokens,
            generated_tokens=len(generated.token_ids),
            seconds=time.perf_counter() - started,
        )
        return self.last_reply

    def ask(
        self,
        question: str,
        video: str | Path | VideoClip | None = None,
        image: str | Path | Image.Image | Sequence[str | Path | Image.Image] | None = None,
    ) -> Reply:
        """Answer `question`, about `video` / `image` if given, else about what came before."""
        started = time.perf_counter()
        conversation, media = self._prepare(question, video, image)
        inputs = build_inputs(conversation, media, self.processor, compression=self.compression)
        generated = generate(self.model, self.processor, inputs, self.generation)
        return self._finish(conversation, media, inputs, generated, started)

    def stream(
        self,
        question: str,
        video: str | Path | VideoClip | None = None,
        image: str | Path | Image.Image | Sequence[str | Path | Image.Image] | None = None,
    ) -> Iterator[str]:
        """Like `ask`, but yields the answer in pieces; `last_reply` holds the whole reply after."""
        started = time.perf_counter()
        conversation, media = self._prepare(question, video, image)
        inputs = build_inputs(conversation, media, self.processor, compression=self.compression)
        generated = yield from stream(self.model, self.processor, inputs, self.generation)
        self._finish(conversation, media, inputs, generated, started)
