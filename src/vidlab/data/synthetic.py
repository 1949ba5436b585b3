"""Moving-shape videos drawn from scratch: sample clips and the offline data set's scenes.

A `Scene` is one shape of one colour moving in a straight line over a plain or mildly textured
background. `render` turns it into frames (numpy + PIL, no per-pixel Python loops) and
`write_scene` encodes them. The data set built from many scenes is in `vidlab.data.synthetic_dataset`.
"""

from __future__ import annotations

import math
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
TEXTURES = ("plain", "stripes", "checker", "noise")

# Textures add or subtract at most this much from each channel of the background: enough to
# see, too little to change what colour the shape looks.
TEXTURE_CONTRAST = 12


@dataclass(frozen=True)
class Scene:
    """One shape moving in a straight line over a plain or textured background.

    Attributes:
        shape: circle, square or triangle.
        colour: one of COLOURS.
        direction: left, right, up or down.
        background: RGB of the background.
        size: width and height in pixels (even for H.264).
        seconds: length of the clip; it has round(seconds * fps) frames, at least 2.
        fps: frame rate.
        radius: half the shape's width, as a fraction of `size`.
        speed: distance moved per second, as a fraction of `size`. None: the shape crosses the
            picture over the clip (from 2 radii inside one edge to 2 radii inside the other).
        start: centre of the shape in the first frame, (x, y) as fractions of `size`. None: the
            path is centred on the picture.
        texture: plain, stripes, checker or noise (low contrast, static).
        texture_seed: picks the texture's period, angle and phase (or its noise); unused when plain.
    """

    shape: str = "circle"
    colour: str = "red"
    direction: str = "left"
    background: tuple[int, int, int] = (90, 90, 90)
    size: int = 112
    seconds: float = 4.0
    fps: float = 8.0
    radius: float = 0.125
    speed: float | None = None
    start: tuple[float, float] | None = None
    texture: str = "plain"
    texture_seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.shape not in SHAPES:
            problems.append(f"unknown shape {self.shape!r}; use one of {', '.join(SHAPES)}")
        if self.colour not in COLOURS:
            problems.append(f"unknown colour {self.colour!r}; use one of {', '.join(COLOURS)}")
        if self.direction not in DIRECTIONS:
            problems.append(f"unknown direction {self.direction!r}; use one of {', '.join(DIRECTIONS)}")
        if self.texture not in TEXTURES:
            problems.append(f"unknown texture {self.texture!r}; use one of {', '.join(TEXTURES)}")
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            problems.append(f"background must be 3 values from 0 to 255 (got {self.background})")
        if self.size < 8:
            problems.append(f"size must be at least 8 pixels (got {self.size})")
        if not self.seconds > 0:
            problems.append(f"seconds must be above 0 (got {self.seconds})")
        if not self.fps > 0:
            problems.append(f"fps must be above 0 (got {self.fps})")
        if not 0 < self.radius <= 0.5:
            problems.append(f"radius is a fraction of the size and must be in (0, 0.5] (got {self.radius})")
        if self.speed is not None and not self.speed >= 0:
            problems.append(f"speed must be 0 or more (got {self.speed})")
        if self.start is not None and (len(self.start) != 2 or not all(0 <= v <= 1 for v in self.start)):
            problems.append(f"start is (x, y) as fractions of the size, each from 0 to 1 (got {self.start})")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} moves {self.direction}"

    @property
    def frame_count(self) -> int:
        return max(int(round(self.seconds * self.fps)), 2)

    def path(self) -> list[tuple[float, float]]:
        """Centre of the shape in each frame, in pixels."""
        count = self.frame_count
        dx, dy = DIRECTIONS[self.direction]
        if self.speed is None:
            travel = self.size - 4 * self.radius * self.size
        else:
            travel = self.speed * self.size * (count - 1) / self.fps
        if self.start is None:
            x0, y0 = self.size / 2 - dx * travel / 2, self.size / 2 - dy * travel / 2
        else:
            x0, y0 = self.start[0] * self.size, self.start[1] * self.size
        return [(x0 + dx * travel * i / (count - 1), y0 + dy * travel * i / (count - 1)) for i in range(count)]


def _draw(draw: ImageDraw.ImageDraw, shape: str, centre: tuple[float, float], radius: float, fill) -> None:
    x, y = centre
    box = (x - radius, y - radius, x + radius, y + radius)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x, y - radius), (x - radius, y + radius), (x + radius, y + radius)], fill=fill)


def texture_pattern(texture: str, size: int, seed: int) -> np.ndarray:
    """A (size, size) pattern with values in [-1, 1]; zeros for a plain background."""
    if texture == "plain":
        return np.zeros((size, size))
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    if texture == "stripes":
        period = rng.uniform(size / 10, size / 4)
        angle = rng.choice([0.0, 45.0, 90.0, 135.0]) * math.pi / 180
        phase = rng.uniform(0, 2 * math.pi)
        return np.sin(2 * math.pi * (xx * math.cos(angle) + yy * math.sin(angle)) / period + phase)
    if texture == "checker":
        cell = max(int(rng.integers(size // 12, size // 5 + 1)), 2)
        ox, oy = rng.integers(0, cell, size=2)
        return (((xx + ox) // cell + (yy + oy) // cell) % 2) * 2 - 1
    # noise: blocky (a few pixels per value) so that it stays mild after H.264 compression
    block = max(size // int(rng.integers(10, 20)), 2)
    cells = -(-size // block)
    coarse = rng.uniform(-1, 1, (cells, cells))
    return np.kron(coarse, np.ones((block, block)))[:size, :size]


def background_frame(scene: Scene) -> np.ndarray:
    """The scene's background as an RGB uint8 array (the same in every frame)."""
    pattern = texture_pattern(scene.texture, scene.size, scene.texture_seed)
    image = np.asarray(scene.background, dtype=float) + TEXTURE_CONTRAST * pattern[..., None]
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def render(scene: Scene) -> list[np.ndarray]:
    """The scene's frames, (size, size, 3) uint8 RGB each."""
    background = Image.fromarray(background_frame(scene))
    radius = scene.radius * scene.size
    fill = COLOURS[scene.colour]
    frames = []
    for centre in scene.path():
        image = background.copy()
        _draw(ImageDraw.Draw(image), scene.shape, centre, radius, fill)
        frames.append(np.asarray(image))
    return frames


def write_scene(path: str | Path, scene: Scene = Scene()) -> Path:
    """Render `scene` and encode it to `path` (the suffix picks the container)."""
    return write_video(path, render(scene), fps=scene.fps)
