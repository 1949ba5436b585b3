"""Moving-shape videos drawn from scratch: sample clips now, the offline data set later."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vidlab.media.writer import write_video

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 190),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle")
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


@dataclass(frozen=True)
class Scene:
    """One shape crossing a plain background."""

    shape: str = "circle"
    colour: str = "red"
    direction: str = "left"
    background: tuple[int, int, int] = (90, 90, 90)
    size: int = 112
    seconds: float = 4.0
    fps: float = 8.0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown shape {self.shape!r}; use one of {', '.join(SHAPES)}")
        if self.colour not in COLOURS:
            raise ValueError(f"unknown colour {self.colour!r}; use one of {', '.join(COLOURS)}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"unknown direction {self.direction!r}; use one of {', '.join(DIRECTIONS)}")

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} moves {self.direction}"


def _draw(draw: ImageDraw.ImageDraw, shape: str, centre: tuple[float, float], radius: float, fill) -> None:
    x, y = centre
    box = (x - radius, y - radius, x + radius, y + radius)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], fill=fill)


def render(scene: Scene) -> list[np.ndarray]:
    """The scene's frames: the shape travels across the middle of the picture."""
    count = max(int(round(scene.seconds * scene.fps)), 2)
    radius = scene.size / 8
    dx, dy = DIRECTIONS[scene.direction]
    travel = scene.size - 4 * radius
    frames = []
    for i in range(count):
        progress = i / (count - 1) - 0.5  # -0.5 .. 0.5
        centre = (scene.size / 2 + dx * progress * travel, scene.size / 2 + dy * progress * travel)
        image = Image.new("RGB", (scene.size, scene.size), scene.background)
        _draw(ImageDraw.Draw(image), scene.shape, centre, radius, COLOURS[scene.colour])
        frames.append(np.asarray(image))
    return frames


def write_scene(path: str | Path, scene: Scene = Scene()) -> Path:
    """Render `scene` and encode it to `path` (the suffix picks the container)."""
    return write_video(path, render(scene), fps=scene.fps)
