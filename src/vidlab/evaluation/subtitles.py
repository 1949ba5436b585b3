"""Subtitles for benchmark prompts: SRT/WebVTT cues and the lines shown at the sampled frames.

The files are read by `vidlab.media.subtitles` (shared with LLaMA-VID's movie prompt). Two rules choose the
lines, as VideoLLaMA3's evaluation does: Video-MME takes, for each sampled frame, the cue on screen at
its time; LongVideoBench keeps, in order, each cue whose span (widened to at least a second around its
middle) holds a sampled frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from vidlab.errors import EvaluationError
from vidlab.media.subtitles import Cue, SubtitleError, read_subtitles  # the one SRT/WebVTT reader

__all__ = ["SUBTITLE_INTRO", "Cue", "TimedSubtitles", "benchmark_subtitles", "lines_at", "lines_covering",
           "read_subtitles", "subtitle_block"]

# VideoLLaMA3's Video-MME prompt puts this before the question when subtitles are used.
SUBTITLE_INTRO = "This video's subtitles are listed below:\n"


def benchmark_subtitles(path) -> list[Cue]:
    """A benchmark's subtitle file read by the shared reader; its errors become the evaluation's (so that a suite
    run reports the benchmark and goes on)."""
    try:
        return read_subtitles(path)
    except SubtitleError as err:
        raise EvaluationError(str(err)) from err


def lines_at(cues: Sequence[Cue], times: Sequence[float]) -> list[str]:
    """For each frame time, the cue on screen then (as VideoLLaMA3 picks them); blank ones left out."""
    lines = []
    for t in times:
        text = next((cue.text for cue in cues if cue.start < t < cue.end), "")
        if text.strip():
            lines.append(text)
    return lines


def lines_covering(cues: Sequence[Cue], times: Sequence[float]) -> list[str]:
    """The cues, in order, that a sampled frame falls inside (LongVideoBench's rule): a cue shorter than a
    second is widened to one second around its middle; a frame counts when strictly inside the span."""
    lines = []
    for cue in cues:
        start, end = cue.start, cue.end
        if end - start < 1:
            middle = (start + end) / 2
            start, end = middle - 0.5, middle + 0.5
        if any(start < t < end for t in times) and cue.text.strip():
            lines.append(cue.text)
    return lines


@dataclass(frozen=True)
class TimedSubtitles:
    """Cues to show before the question, chosen by the sampled frames' times.

    Attributes:
        cues: the subtitle cues (times in seconds on the video's clock).
        rule: "on_frame" (one line per frame: the cue on screen then; Video-MME) or "covering" (each cue
            holding a frame, once; LongVideoBench).
        intro: the text put before the lines.
    """

    cues: list[Cue] = field(default_factory=list)
    rule: Literal["on_frame", "covering"] = "on_frame"
    intro: str = SUBTITLE_INTRO

    def block(self, times: Sequence[float]) -> str:
        lines = lines_at(self.cues, times) if self.rule == "on_frame" else lines_covering(self.cues, times)
        return subtitle_block("\n".join(lines), self.intro)


def subtitle_block(text: str, intro: str = SUBTITLE_INTRO) -> str:
    return f"{intro}{text}\n" if intro or text else ""
