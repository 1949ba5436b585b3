"""Subtitles for benchmark prompts: SRT/WebVTT cues and the lines shown at the sampled frames.

SRT and WebVTT are a few lines of text per cue; reading them needs no library. Two rules choose the
lines, as VideoLLaMA3's evaluation does: Video-MME takes, for each sampled frame, the cue on screen at
its time; LongVideoBench keeps, in order, each cue whose span (widened to at least a second around its
middle) holds a sampled frame.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vidlab.errors import EvaluationError

# VideoLLaMA3's Video-MME prompt puts this before the question when subtitles are used.
SUBTITLE_INTRO = "This video's subtitles are listed below:\n"

_TIME_RE = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})")
_TAG_RE = re.compile(r"<[^>]+>|\{[^}]*\}")


@dataclass(frozen=True)
class Cue:
    start: float  # seconds
    end: float
    text: str


def _seconds(match: re.Match) -> float:
    hours, minutes, seconds, fraction = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(fraction.ljust(3, "0")) / 1000


def read_subtitles(path: str | Path) -> list[Cue]:
    """The cues of an .srt or .vtt file, in file order; markup tags removed, lines joined by spaces."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig", errors="replace")
    except OSError as err:
        raise EvaluationError(f"{path}: cannot read the subtitle file ({err}). Check the path.") from err
    cues = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = [line.strip() for line in block.strip().split("\n")]
        for i, line in enumerate(lines):
            if "-->" not in line:
                continue
            left, right = line.split("-->", 1)
            start, end = _TIME_RE.search(left), _TIME_RE.search(right)
            if start and end:
                words = " ".join(_TAG_RE.sub("", t).replace("\\N", " ") for t in lines[i + 1 :] if t)
                cues.append(Cue(_seconds(start), _seconds(end), words.strip()))
            break
    return cues


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
