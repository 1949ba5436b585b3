"""SubRip (.srt) and WebVTT (.vtt) subtitle files -> timed cues: the one subtitle reader in vidlab.

Benchmark prompts (Video-MME, LongVideoBench: `vidlab.evaluation.subtitles` picks the lines shown at the
sampled frames) and LLaMA-VID's movie prompt (`vidlab.models.llama_vid.movie`: each line beside its
frame) both read files here. A cue is a line `start --> end` (SRT `00:01:02,500`, VTT `01:02.500` or
`00:01:02.500`, cue settings after it ignored) and the text lines after it, up to a blank line;
markup (`<i>`, `<c.yellow>`, `<v Name>`, `{\\an8}`) is removed. Hand-written: the format is a few
lines, and a file that is wrong must be reported by line, which the libraries do not do.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vidlab.errors import MediaError

SUFFIXES = (".srt", ".vtt")
_TIME_RE = re.compile(r"^\s*(?:(\d+):)?(\d{1,2}):(\d{2})[,.](\d{1,3})\s*$")
_TAG_RE = re.compile(r"<[^>]+>|\{[^}]*\}")
_BROKEN_ARROW_RE = re.compile(r"^\s*(?:\d+:)?\d{1,2}:\d{2}[,.]\d{1,3}\s*(?:-+|=+|—|–)\s*>?\s*(?:\d+:)?\d{1,2}:\d{2}")


class SubtitleError(MediaError):
    """A subtitle file that cannot be read as SRT or WebVTT."""


@dataclass(frozen=True)
class Cue:
    """One subtitle: shown from `start` to `end` (seconds on the video's clock).

    Attributes:
        lines: the cue's text lines, markup removed, blank ones left out.
        text: the lines joined by spaces.
    """

    start: float
    end: float
    text: str
    lines: tuple[str, ...] = ()


def _seconds(text: str) -> float | None:
    match = _TIME_RE.match(text)
    if match is None:
        return None
    hours, minutes, seconds, fraction = match.groups()
    return int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds) + int(fraction.ljust(3, "0")) / 1000


def _decode(path: Path, data: bytes) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 with its byte-order mark (some Windows tools)
        return data.decode("utf-16")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise SubtitleError(
            f"{path}:{line}: not UTF-8 text (byte {data[err.start]:#04x}); a subtitle file must be UTF-8. "
            f"Convert it, e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed{path.suffix}`.") from None


def _cue_text(lines: list[str]) -> tuple[str, ...]:
    cleaned = (_TAG_RE.sub("", line).replace("\\N", " ").strip() for line in lines)
    return tuple(line for line in cleaned if line)


def read_subtitles(path: str | Path) -> list[Cue]:
    """The cues of an .srt or .vtt file, in file order.

    Raises:
        SubtitleError: the file is missing or unreadable, is not UTF-8 (or UTF-16 with a byte-order
            mark), has a `-->` line whose times are not `[HH:]MM:SS,mmm` / `[HH:]MM:SS.mmm`, or has
            text but no cue at all; the message names the file and line and the fix.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise SubtitleError(f"{path}: cannot read the subtitle file ({err.strerror or err}). "
                            "Check the path (a .srt or .vtt file).") from err
    lines = _decode(path, data).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cues: list[Cue] = []
    n = 0
    while n < len(lines):
        line = lines[n]
        if "-->" not in line:
            if _BROKEN_ARROW_RE.match(line):  # a cue whose arrow is mistyped would vanish without a word
                raise SubtitleError(f"{path}:{n + 1}: {line.strip()!r} looks like cue times without the `-->` "
                                    "between them. Write `00:01:02,500 --> 00:01:04,000`.")
            n += 1
            continue
        left, right = line.split("-->", 1)
        right = right.strip().split(maxsplit=1)[0] if right.strip() else ""  # VTT cue settings follow the end
        start, end = _seconds(left), _seconds(right)
        if start is None or end is None:
            raise SubtitleError(
                f"{path}:{n + 1}: cannot read the cue times in {line.strip()!r}. Write them as "
                "`00:01:02,500 --> 00:01:04,000` (SRT) or `00:01:02.500 --> 00:01:04.000` (VTT).")
        text_lines = []
        n += 1
        while n < len(lines) and lines[n].strip() and "-->" not in lines[n]:
            text_lines.append(lines[n])
            n += 1
        kept = _cue_text(text_lines)
        cues.append(Cue(start, end, " ".join(kept), kept))
    if not cues and any(line.strip() and not line.startswith(("WEBVTT", "NOTE")) for line in lines):
        raise SubtitleError(f"{path}: no subtitle cue in the file (a cue is a line `00:00:01,000 --> "
                            "00:00:02,500` and its text). Give an SRT or WebVTT file.")
    return cues
