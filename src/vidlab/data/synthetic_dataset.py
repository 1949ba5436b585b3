"""The synthetic video data set (`vidlab data synth`): moving shapes with captions and questions.

Each video shows one shape (6 colours, 3 shapes) moving left, right, up or down over a plain or
mildly textured background. Every video gets four annotation records, one per task:

    caption    "<video>\\nDescribe the video."                   -> "a red circle moves left"
    colour     "<video>\\nWhat colour is the shape?"             -> "red"
    shape      "<video>\\nWhich shape is shown?"                 -> "circle"
    direction  "<video>\\nWhich direction does the shape move?"  -> "left"

Layout of the output folder (paths in the records are relative to it):

    dataset.json                 settings, vocabulary, prompts, counts, the command that remakes it
    scenes.jsonl                 every video's scene parameters
    train.jsonl                  all records of a split (also val.jsonl, test.jsonl)
    train.caption.jsonl          one task's records of a split (also .colour, .shape, .direction)
    videos/train/00000.mp4 ...   H.264 videos

Colour, shape and direction combinations are dealt out in balanced blocks, so every prefix of
12 videos of a split holds each direction 3 times, each shape 4 times and each colour twice, and
every 72 videos hold all 72 combinations once. Position, speed, size, background and texture are
drawn at random for each video, from one random stream per split; no two videos of the whole
set (in any split) share all their scene parameters, so test videos are new renders, never
copies of training ones. The same settings give byte-identical files.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vidlab.data.synthetic import COLOURS, DIRECTIONS, SHAPES, TEXTURES, Scene, render
from vidlab.errors import VidlabError
from vidlab.folders import staged_folder

SPLITS = ("train", "val", "test")
# One fixed prompt per task: a tiny model cannot learn paraphrases quickly.
TASKS = {
    "caption": "Describe the video.",
    "colour": "What colour is the shape?",
    "shape": "Which shape is shown?",
    "direction": "Which direction does the shape move?",
}
FORMAT_VERSION = 1

# Ranges the per-video parameters are drawn from, as fractions of the picture size.
# Half the shape's width: 54-63 pixels wide at 112, more than two 28-pixel video patches, so that
# the outline (circle, square or triangle) survives patching. Held-out captions of the tiny
# quickstart model naming the right shape: 62% at radius 0.13-0.16, 75-87% at 0.19-0.23 (by
# seed), 88-94% at this size.
RADIUS_RANGE = (0.24, 0.28)
TRAVEL_RANGE = (0.26, 0.38)  # distance moved from the first frame to the last (what fits beside the shape)
EDGE_MARGIN = 0.02  # the shape stays this far inside the picture
BACKGROUND_GREY = (30, 110)  # dark to middle grey, so that every shape colour stands out
BACKGROUND_TINT = 12  # each channel of the grey moves by at most this much


@dataclass(frozen=True)
class SynthSettings:
    """What `write_synthetic_dataset` makes.

    Attributes:
        train: number of training videos (each gives 4 records).
        val: number of validation videos.
        test: number of test videos.
        seed: random seed; the same settings give the same files.
        frames: frames per video.
        fps: frame rate of the videos; a clip lasts frames / fps seconds.
        size: width and height of the videos in pixels; even (H.264), a multiple of 28 suits
            VideoLLaMA3's 28-pixel video patches best.
    """

    train: int = 600
    val: int = 48
    test: int = 120
    seed: int = 0
    frames: int = 16
    fps: float = 4.0
    size: int = 112

    def __post_init__(self) -> None:
        problems = []
        if self.train < 1:
            problems.append(f"train must be at least 1 video (got {self.train})")
        for name in ("val", "test"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be 0 or more videos (got {getattr(self, name)})")
        if self.seed < 0:
            problems.append(f"seed must be 0 or more (got {self.seed})")
        if self.frames < 2:
            problems.append(f"frames must be at least 2, or nothing moves (got {self.frames})")
        if not self.fps > 0:
            problems.append(f"fps must be above 0 (got {self.fps})")
        if self.size < 32 or self.size % 2:
            problems.append(f"size must be an even number of pixels, at least 32 (got {self.size}); e.g. 56 or 112")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def counts(self) -> dict[str, int]:
        return {split: getattr(self, split) for split in SPLITS}

    @property
    def seconds(self) -> float:
        return self.frames / self.fps

    def command(self, out_dir: str | Path = "OUT_DIR") -> str:
        """The `vidlab data synth` command line that makes this data set."""
        return (
            f"vidlab data synth {out_dir} --train {self.train} --val {self.val} --test {self.test} "
            f"--seed {self.seed} --frames {self.frames} --fps {self.fps:g} --size {self.size}"
        )


def balanced_combinations(count: int, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    """`count` (colour, shape, direction) triples dealt out in balanced blocks of 12.

    Block b holds, for j in 0..11, colour (j + b) mod 6, shape j // 4 and direction j mod 4: each
    direction 3 times, each shape 4 times, each colour twice. The 6 blocks of a cycle together
    hold all 72 combinations once. Blocks come in random order, and their videos are shuffled.
    """
    colours, directions = list(COLOURS), list(DIRECTIONS)
    if (len(colours), len(SHAPES), len(directions)) != (6, 3, 4):
        raise AssertionError("balanced_combinations assumes 6 colours, 3 shapes and 4 directions")
    triples: list[tuple[str, str, str]] = []
    while len(triples) < count:
        for b in rng.permutation(6):
            block = [(colours[(j % 6 + b) % 6], SHAPES[j // 4], directions[j % 4]) for j in range(12)]
            triples.extend(block[k] for k in rng.permutation(12))
    return triples[:count]


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return round(float(rng.uniform(low, high)), 4)


def draw_scene(
    rng: np.random.Generator, colour: str, shape: str, direction: str, settings: SynthSettings
) -> Scene:
    """One video's scene: the given shape with a random size, path, speed and background."""
    radius = _uniform(rng, *RADIUS_RANGE)
    travel = _uniform(rng, *TRAVEL_RANGE)
    low, high = radius + EDGE_MARGIN, 1 - radius - EDGE_MARGIN
    dx, dy = DIRECTIONS[direction]
    # Along the motion the whole path stays inside the picture; across it, anywhere.
    along = _uniform(rng, low, high - travel) if dx + dy > 0 else _uniform(rng, low + travel, high)
    across = _uniform(rng, low, high)
    start = (along, across) if dx else (across, along)
    grey = int(rng.integers(BACKGROUND_GREY[0], BACKGROUND_GREY[1] + 1))
    tint = rng.integers(-BACKGROUND_TINT, BACKGROUND_TINT + 1, size=3)
    background = tuple(int(v) for v in np.clip(grey + tint, 0, 255))
    texture = str(rng.choice(TEXTURES))
    texture_seed = int(rng.integers(0, 2**31))
    return Scene(
        shape=shape,
        colour=colour,
        direction=direction,
        background=background,
        size=settings.size,
        seconds=settings.seconds,
        fps=settings.fps,
        radius=radius,
        speed=round(travel * settings.fps / (settings.frames - 1), 6),
        start=start,
        texture=texture,
        texture_seed=texture_seed if texture != "plain" else 0,  # a plain background has no seed
    )


def plan_dataset(settings: SynthSettings = SynthSettings()) -> dict[str, list[Scene]]:
    """Every split's scenes, in order. Deterministic for the settings; nothing is rendered.

    Each split draws from its own random stream (seed, split), so the test scenes do not change
    when only the number of training videos does. A scene equal to an earlier one of any split is
    drawn again (with continuous parameters this practically never happens).
    """
    seen: set[Scene] = set()
    plan: dict[str, list[Scene]] = {}
    for code, split in enumerate(SPLITS):
        rng = np.random.default_rng([settings.seed, code])
        scenes = []
        for colour, shape, direction in balanced_combinations(settings.counts[split], rng):
            scene = draw_scene(rng, colour, shape, direction, settings)
            while scene in seen:
                scene = draw_scene(rng, colour, shape, direction, settings)
            seen.add(scene)
            scenes.append(scene)
        plan[split] = scenes
    return plan


def video_name(split: str, index: int, width: int = 5) -> str:
    """Path of a video relative to the data set folder, e.g. videos/train/00012.mp4."""
    return f"videos/{split}/{index:0{width}d}.mp4"


def scene_records(scene: Scene, split: str, index: int, video: str, width: int = 5) -> list[dict]:
    """The four annotation records of one video: caption, colour, shape, direction."""
    answers = {
        "caption": scene.caption,
        "colour": scene.colour,
        "shape": scene.shape,
        "direction": scene.direction,
    }
    return [
        {
            "id": f"{split}-{index:0{width}d}-{task}",
            "video": [video],
            "conversations": [
                {"from": "human", "value": f"<video>\n{prompt}"},
                {"from": "gpt", "value": answers[task]},
            ],
            "task": task,
            "colour": scene.colour,
            "shape": scene.shape,
            "direction": scene.direction,
        }
        for task, prompt in TASKS.items()
    ]


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def _description(settings: SynthSettings) -> dict:
    return {
        "generator": "vidlab data synth",
        "format_version": FORMAT_VERSION,
        "command": settings.command(),
        **asdict(settings),
        "seconds": settings.seconds,
        "videos": settings.counts,
        "records": {split: count * len(TASKS) for split, count in settings.counts.items()},
        "colours": list(COLOURS),
        "shapes": list(SHAPES),
        "directions": list(DIRECTIONS),
        "textures": list(TEXTURES),
        "tasks": TASKS,
        "caption_format": "a {colour} {shape} moves {direction}",
        "files": {
            split: {"all": f"{split}.jsonl", **{task: f"{split}.{task}.jsonl" for task in TASKS}}
            for split in SPLITS
        },
    }


def write_synthetic_dataset(
    out_dir: str | Path,
    settings: SynthSettings = SynthSettings(),
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Render and write the data set to `out_dir` (layout in the module docstring).

    The folder appears complete or not at all: everything is written to a hidden sibling folder
    that is renamed into place at the end.

    Args:
        out_dir: folder to create; it may exist only if empty, unless `overwrite` is set.
        settings: counts, seed, frames, fps and size.
        overwrite: replace `out_dir` if it already holds files.
        progress: show a progress bar over the videos (on stderr).

    Raises:
        VidlabError: `out_dir` is a file, or a non-empty folder and `overwrite` is not set.
    """
    from tqdm.auto import tqdm

    from vidlab.media.writer import write_video

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise VidlabError(f"{out_dir}: is a file, not a folder. Choose a folder for the data set.")
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise VidlabError(f"{out_dir}: folder exists and is not empty. Choose a new folder or pass --overwrite.")
    plan = plan_dataset(settings)
    width = max(5, len(str(max(settings.counts.values()) - 1)))
    scenes_rows = []
    with staged_folder(out_dir, label="partial", replace=overwrite) as staging:
        with tqdm(total=sum(settings.counts.values()), desc="synth", unit="video", disable=not progress) as bar:
            for split, scenes in plan.items():
                records: list[dict] = []
                for index, scene in enumerate(scenes):
                    video = video_name(split, index, width)
                    write_video(staging / video, render(scene), fps=scene.fps)
                    records.extend(scene_records(scene, split, index, video, width))
                    scenes_rows.append({"split": split, "video": video, "caption": scene.caption, **asdict(scene)})
                    bar.update()
                (staging / f"{split}.jsonl").write_text(_jsonl(records), encoding="utf-8")
                for task in TASKS:
                    rows = [r for r in records if r["task"] == task]
                    (staging / f"{split}.{task}.jsonl").write_text(_jsonl(rows), encoding="utf-8")
        (staging / "scenes.jsonl").write_text(_jsonl(scenes_rows), encoding="utf-8")
        (staging / "dataset.json").write_text(json.dumps(_description(settings), indent=2) + "\n", encoding="utf-8")
    return out_dir
