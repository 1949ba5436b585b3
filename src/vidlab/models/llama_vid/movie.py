"""LLaMA-VID's long-video (movie) prompt: each subtitle line put after the frame it belongs to.

The original (dvlab-research/LLaMA-VID: `load_video_input` in scripts/extra_tool/extract_movienet_features.py
and extract_video_features_subtitles.py, the prompt in llamavid/serve/run_llamavid_movie.py) writes a
movie as

    Below is a movie. Memorize the content and answer my question after watching this movie.
    <image>{lines of frame 1}<image>{lines of frame 2}...Now the movie end.\\n{question}

(no spaces or newlines added: the words as written), each `<image>` being the frame's tokens (context and
content). A cue goes to the last frame shown before it ends (frames at `index / average rate`, cues in
file order, a pointer that only moves forward, so an overlapping or out-of-order cue joins the frame of
the cue before it); the lines of one frame are joined by spaces. Each cue's text is cleaned as its SRT
reader does: NUL characters and every "..." removed from each line, blank lines dropped, lines joined by
spaces; a cue left without text is dropped.

Where vidlab differs, on purpose (tests/test_llama_vid_long.py holds both the agreement and these):
- a cue that starts at or after the end of the clip (a subtitle file for a longer cut, or a clip window)
  or ends at or before its start is dropped; the original puts both on the last frame (its index -1);
- a cue that ends before the first frame but inside the clip goes to the first frame (the original: the last);
- the file is read by vidlab's one subtitle reader (`vidlab.media.subtitles`): WebVTT too (the original's
  reader raises on it), markup such as `<i>` removed (the original keeps SRT's tags), a line of digits kept
  as text (the original takes it for a cue number and loses the cue), a UTF-8 byte-order mark read as one.
"""

from __future__ import annotations

from collections.abc import Sequence

from vidlab.media.subtitles import Cue

MOVIE_START = "Below is a movie. Memorize the content and answer my question after watching this movie."
MOVIE_END = "Now the movie end."


def cue_text(cue: Cue) -> str:
    """The cue's words as the original's SRT reader keeps them ("..." and NUL removed from each line)."""
    lines = cue.lines or (cue.text,)
    cleaned = (line.replace("\x00", "").strip().replace("...", "").strip() for line in lines)
    return " ".join(line for line in cleaned if line)


def frame_lines(cues: Sequence[Cue], frame_times: Sequence[float], start: float, end: float) -> list[list[str]]:
    """Per frame, the subtitle texts put after it (the original's `load_video_input`, with the changes above).

    Args:
        cues: the subtitle cues in file order (times on the video's clock).
        frame_times: each frame's time on the video's clock (the original: frame index / average frame rate).
        start, end: the clip's span on the video's clock (the whole video: 0 and its duration).
    """
    texts: list[list[str]] = [[] for _ in frame_times]
    if not texts:
        return texts
    point = 0
    for cue in cues:
        text = cue_text(cue)
        if not text or cue.start >= end or cue.end <= start:
            continue
        while point < len(frame_times) and frame_times[point] < cue.end:
            point += 1
        texts[max(point - 1, 0)].append(text)
    return texts


def movie_text(lines: Sequence[Sequence[str]], picture: str) -> str:
    """The movie block: the start sentence, each frame's `picture` and its lines, the end sentence."""
    return MOVIE_START + "".join(picture + " ".join(texts) for texts in lines) + MOVIE_END


def clip_frame_lines(clip) -> list[list[str]]:
    """`frame_lines` for a decoded `VideoClip` with subtitles: frame times as the original computes them."""
    times = [index / clip.source_fps for index in clip.frame_indices]
    end = clip.end if clip.end is not None else clip.duration
    return frame_lines(clip.subtitles or [], times, clip.start, end)
