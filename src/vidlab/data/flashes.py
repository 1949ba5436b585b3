"""A synthetic long-video task that needs every frame: one-second flashes.

Each video (minutes long, 1 frame per second, small frames, a plain grey picture) shows a coloured
disc for one second at a random moment and nothing else:

    "<video>\nWhat colour was the disc?"   -> "green"

A video thinned below 1 fps loses the flash with the frame that held it (at 180 of 300 frames, two
flashes in five), so the answer needs every frame.

With `two_sides` the video shows a disc on the left for one second and a disc of another colour on
the right at another moment, with a thin light bar along the left edge of every frame, and asks
about one side ("What colour was the disc on the left?"): an average over the frame cannot say
which side a colour was on (the bar is the same in every frame, so it adds nothing to what
changes in an average).

Layout of the output folder (paths in the records are relative to it):

    dataset.json               the settings
    train.jsonl, test.jsonl    the records (`seconds`: the video's length; `side` with two_sides)
    videos/train/00000.mp4 ... H.264 at 1 fps
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vidlab.folders import staged_folder
from vidlab.media.writer import write_video

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40)}
SIDES = ("left", "right")
BACKGROUND = (90, 90, 90)
RADIUS = 0.16  # of the frame's size: a disc about 18 pixels wide at 56
MARKER = (235, 235, 235)  # a thin static bar along the left edge: which side is which, in every frame
MARKER_WIDTH = 0.06


@dataclass(frozen=True)
class Flash:
    side: str
    second: int  # the first frame (second) it is on screen
    colour: str
    centre: tuple[float, float]  # as fractions of the frame's size
    length: int = 1  # seconds on screen


@dataclass(frozen=True)
class FlashVideo:
    seconds: int
    flashes: tuple[Flash, ...]
    radius: float = RADIUS


def draw_video(rng: np.random.Generator, seconds_range: tuple[int, int], radius: float = RADIUS,
               lengths: tuple[int, int] = (1, 1), two_sides: bool = False) -> FlashVideo:
    """A video of whole seconds in `seconds_range` with one flash on screen for `lengths` seconds (anywhere in
    the frame), or with `two_sides` one per side, not at the same time, in different colours; discs of
    `radius` (a fraction of the frame's size)."""
    seconds = int(rng.integers(seconds_range[0], seconds_range[1] + 1))
    if not two_sides:
        length = int(rng.integers(lengths[0], lengths[1] + 1))
        centre = (float(rng.uniform(radius + 0.02, 1 - radius - 0.02)), float(rng.uniform(radius + 0.02,
                                                                                           1 - radius - 0.02)))
        flash = Flash("", int(rng.integers(0, seconds - length + 1)), str(rng.choice(list(COLOURS))), centre, length)
        return FlashVideo(seconds, (flash,), radius)
    length = [int(rng.integers(lengths[0], lengths[1] + 1)) for _ in SIDES]
    first = int(rng.integers(0, seconds - length[0] + 1))
    free = [t for t in range(seconds - length[1] + 1) if t + length[1] <= first or t >= first + length[0]]
    moments = [first, int(rng.choice(free))]
    if rng.random() < 0.5:  # either side may come first
        moments, length = moments[::-1], length[::-1]
    colours = rng.choice(list(COLOURS), size=2, replace=False)
    flashes = []
    for side, second, colour, seconds_on in zip(SIDES, moments, colours, length):
        low, high = (MARKER_WIDTH if side == "left" else 0.0) + radius + 0.01, 0.5 - radius - 0.01
        x = rng.uniform(min(low, high), high) + (0.5 if side == "right" else 0.0)
        y = rng.uniform(radius + 0.02, 1 - radius - 0.02)
        flashes.append(Flash(side, int(second), str(colour), (float(x), float(y)), seconds_on))
    return FlashVideo(seconds, tuple(flashes), radius)


def render(video: FlashVideo, size: int, marker: bool = False) -> list[np.ndarray]:
    """One (size, size, 3) frame per second: grey (with the left-edge marker when asked), a disc in the seconds
    that hold a flash."""
    empty = np.full((size, size, 3), BACKGROUND, np.uint8)
    if marker:
        empty[:, : max(1, round(MARKER_WIDTH * size))] = MARKER
    frames = [empty] * video.seconds
    for flash in video.flashes:
        for second in range(flash.second, flash.second + flash.length):
            image = Image.fromarray(frames[second].copy())
            x, y, r = flash.centre[0] * size, flash.centre[1] * size, video.radius * size
            ImageDraw.Draw(image).ellipse((x - r, y - r, x + r, y + r), fill=COLOURS[flash.colour])
            frames[second] = np.asarray(image)
    return frames


def records(video: FlashVideo, name: str, prefix: str) -> list[dict]:
    """The questions about one video (one per flash), as annotation records."""
    rows = []
    for flash in video.flashes:
        row = {"id": prefix, "video": [name], "seconds": video.seconds, "flash_second": flash.second}
        where = ""
        if flash.side:
            row.update(id=f"{prefix}-{flash.side}", side=flash.side)
            where = f" on the {flash.side}"
        row["conversations"] = [{"from": "human", "value": f"<video>\nWhat colour was the disc{where}?"},
                                {"from": "gpt", "value": flash.colour}]
        rows.append(row)
    return rows


@dataclass(frozen=True)
class FlashSettings:
    """How `write_flashes` makes the data set."""

    train: int = 600
    test: int = 100
    seconds: tuple[int, int] = (120, 300)
    size: int = 56
    radius: float = RADIUS
    flash_seconds: tuple[int, int] = (1, 1)
    two_sides: bool = False
    seed: int = 0


def write_flashes(out_dir: str | Path, settings: FlashSettings = FlashSettings(), progress: bool = False) -> Path:
    """Write the videos and records (see the module docstring); the folder appears complete or not at all.
    The same settings give the same files."""
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    counts = {"train": settings.train, "test": settings.test}
    with staged_folder(out_dir) as staging:
        bar = tqdm(total=sum(counts.values()), desc="videos", unit="video", disable=not progress)
        for split_index, (split, count) in enumerate(counts.items()):
            rng = np.random.default_rng([settings.seed, split_index])
            rows = []
            for index in range(count):
                video = draw_video(rng, settings.seconds, settings.radius, settings.flash_seconds, settings.two_sides)
                name = f"videos/{split}/{index:05d}.mp4"
                write_video(staging / name, render(video, settings.size, settings.two_sides), fps=1.0)
                rows += records(video, name, f"{split}-{index:05d}")
                bar.update(1)
            (staging / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        bar.close()
        (staging / "dataset.json").write_text(json.dumps({"settings": asdict(settings), "colours": list(COLOURS)},
                                                         indent=2) + "\n", encoding="utf-8")
    return out_dir
