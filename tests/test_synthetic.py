"""Synthetic scenes and `vidlab data synth`: files, records, what the videos show, determinism."""

import dataclasses
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import vidlab.data.synthetic_dataset as synthetic_dataset
from vidlab.cli import app
from vidlab.data.synthetic import COLOURS, DIRECTIONS, SHAPES, TEXTURES, Scene, background_frame, render
from vidlab.data.synthetic_dataset import (
    SPLITS,
    TASKS,
    SynthSettings,
    balanced_combinations,
    plan_dataset,
    write_synthetic_dataset,
)
from vidlab.errors import VidlabError
from vidlab.evaluation.sets import load_eval_set
from vidlab.media import Sampling, load_video

SMALL = SynthSettings(train=8, val=2, test=4, seed=3, frames=8, fps=4.0, size=56)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def shape_centre(frame: np.ndarray, colour: str) -> tuple[np.ndarray, int]:
    """Mean (x, y) of the pixels close to `colour`, and how many there are."""
    distance = np.linalg.norm(frame.astype(float) - np.array(COLOURS[colour]), axis=-1)
    ys, xs = np.nonzero(distance < 50)
    return np.array([xs.mean(), ys.mean()]) if len(xs) else np.full(2, np.nan), len(xs)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("synth") / "set", SMALL, progress=False)


def test_files_and_records(small_set):
    videos = sorted(p.relative_to(small_set).as_posix() for p in small_set.rglob("*.mp4"))
    in_order = [f"videos/{s}/{i:05d}.mp4" for s in SPLITS for i in range(SMALL.counts[s])]
    assert videos == sorted(in_order)
    assert not [p for p in small_set.parent.iterdir() if p.name.startswith(".")]  # no staging left
    for split, count in SMALL.counts.items():
        rows = read_jsonl(small_set / f"{split}.jsonl")
        assert len(rows) == 4 * count
        assert Counter(r["task"] for r in rows) == {task: count for task in TASKS}
        data = load_eval_set(small_set / f"{split}.jsonl")
        assert data.skipped == [] and len(data.records) == 4 * count
        assert data.data_root == small_set
        for row, record in zip(rows, data.records):
            assert row["video"][0] == f"videos/{split}/{row['id'].split('-')[1]}.mp4"
            assert (small_set / row["video"][0]).is_file()
            assert record.meta == {"task": row["task"]}
            answer = row["conversations"][1]["value"]
            assert row["conversations"][0]["value"] == f"<video>\n{TASKS[row['task']]}"
            expected = {
                "caption": f"a {row['colour']} {row['shape']} moves {row['direction']}",
                "colour": row["colour"], "shape": row["shape"], "direction": row["direction"],
            }[row["task"]]
            assert answer == expected == record.references[0]
        for task in TASKS:
            task_rows = read_jsonl(small_set / f"{split}.{task}.jsonl")
            assert task_rows == [r for r in rows if r["task"] == task]
            assert load_eval_set(small_set / f"{split}.{task}.jsonl").skipped == []
    info = json.loads((small_set / "dataset.json").read_text())
    assert info["seed"] == 3 and info["videos"] == SMALL.counts and info["records"]["train"] == 32
    assert (info["frames"], info["fps"], info["size"]) == (8, 4.0, 56)
    assert info["colours"] == list(COLOURS) and info["shapes"] == list(SHAPES)
    assert info["directions"] == list(DIRECTIONS) and info["tasks"] == TASKS
    assert info["command"] == SMALL.command()
    scenes = read_jsonl(small_set / "scenes.jsonl")
    assert [s["video"] for s in scenes] == in_order
    assert Scene(**{k: tuple(v) if isinstance(v, list) else v for k, v in scenes[0].items()
                    if k not in ("split", "video", "caption")}) == plan_dataset(SMALL)["train"][0]


def test_videos_show_what_the_captions_say(small_set):
    for split in SPLITS:
        for row in read_jsonl(small_set / f"{split}.caption.jsonl"):
            clip = load_video(small_set / row["video"][0], Sampling(fps=SMALL.fps))
            assert clip.frames.shape == (SMALL.frames, SMALL.size, SMALL.size, 3)
            (first, seen_first), (last, seen_last) = (shape_centre(f, row["colour"]) for f in clip.frames[[0, -1]])
            # The shape's radius is at least 0.24 of the size: a triangle covers 2 r^2 pixels, less blurred edges.
            assert min(seen_first, seen_last) > (0.24 * SMALL.size) ** 2
            for other in COLOURS:
                if other != row["colour"]:
                    assert shape_centre(clip.frames[0], other)[1] < seen_first / 4, (row["id"], other)
            dx, dy = DIRECTIONS[row["direction"]]
            moved = last - first
            assert moved @ np.array([dx, dy]) > 0.22 * SMALL.size, (row["id"], moved)  # >= 0.26 of size, less blur
            assert abs(moved @ np.array([dy, dx])) < 3, (row["id"], moved)  # nothing sideways


def test_same_seed_same_files_other_seed_other_files(small_set, tmp_path):
    again = write_synthetic_dataset(tmp_path / "again", SMALL, progress=False)
    for name in ["dataset.json", "scenes.jsonl", *(f"{s}.jsonl" for s in SPLITS)]:
        assert (again / name).read_bytes() == (small_set / name).read_bytes(), name
    for scene_a, scene_b in zip(*(sum(plan_dataset(SMALL).values(), []) for _ in range(2))):
        assert all(np.array_equal(a, b) for a, b in zip(render(scene_a), render(scene_b)))
    for video in sorted(small_set.rglob("*.mp4")):  # the writer turns off x264's run-to-run variation
        assert (again / video.relative_to(small_set)).read_bytes() == video.read_bytes(), video

    other = write_synthetic_dataset(tmp_path / "other", dataclasses.replace(SMALL, seed=4), progress=False)
    assert (other / "train.jsonl").read_bytes() != (small_set / "train.jsonl").read_bytes()
    assert plan_dataset(dataclasses.replace(SMALL, seed=4)) != plan_dataset(SMALL)


def test_test_videos_are_new_renders():
    plan = plan_dataset(SMALL)
    all_scenes = sum(plan.values(), [])
    assert len(set(all_scenes)) == len(all_scenes)  # no two videos share every scene parameter
    train_frames = [np.stack(render(s)) for s in plan["train"]]
    for scene in plan["test"] + plan["val"]:
        frames = np.stack(render(scene))
        assert not any(np.array_equal(frames, t) for t in train_frames)
        assert not any(np.array_equal(frames[0], t[0]) for t in train_frames)  # not even the first frame
    # The test scenes depend on the seed and the test count only.
    assert plan_dataset(dataclasses.replace(SMALL, train=20, val=0))["test"] == plan["test"]


def test_combinations_are_balanced():
    rng = np.random.default_rng(0)
    triples = balanced_combinations(72 + 24, rng)
    assert len(set(triples[:72])) == 72  # every colour, shape and direction together once
    for start in range(0, len(triples), 12):
        block = triples[start:start + 12]
        assert Counter(c for c, _, _ in block) == {c: 2 for c in COLOURS}
        assert Counter(s for _, s, _ in block) == {s: 4 for s in SHAPES}
        assert Counter(d for _, _, d in block) == {d: 3 for d in DIRECTIONS}
    plan = plan_dataset(SynthSettings(train=72, val=0, test=12, size=56))
    assert {(s.colour, s.shape, s.direction) for s in plan["train"]} == {
        (c, s, d) for c in COLOURS for s in SHAPES for d in DIRECTIONS
    }
    assert len({s.texture for s in plan["train"]}) == len(TEXTURES)


def test_scenes_stay_in_the_picture_and_move_enough():
    settings = SynthSettings(train=120, val=0, test=0, size=112)
    for scene in plan_dataset(settings)["train"]:
        radius = scene.radius * scene.size
        path = np.array(scene.path())
        assert len(path) == settings.frames
        assert path.min() >= radius and path.max() <= scene.size - radius
        travel = np.abs(path[-1] - path[0]).sum()
        assert 0.25 * scene.size < travel < 0.39 * scene.size
        assert 0.24 * scene.size <= radius <= 0.28 * scene.size  # over two 28-pixel patches wide at 112


def test_scene_extensions_and_sample_defaults():
    old = Scene()  # the sample clip: crosses the middle of the picture over the clip
    path = np.array(old.path())
    assert len(path) == 32 and path[0].tolist() == [84.0, 56.0] and path[-1].tolist() == [28.0, 56.0]
    moved = Scene(direction="down", size=100, fps=4, seconds=2.25, speed=0.2, start=(0.3, 0.1))
    path = np.array(moved.path())
    assert path[0].tolist() == pytest.approx([30, 10]) and path[-1].tolist() == pytest.approx([30, 10 + 0.2 * 100 * 2])
    for texture in TEXTURES:
        picture = background_frame(Scene(texture=texture, texture_seed=5, background=(60, 70, 80)))
        assert np.abs(picture.astype(int) - [60, 70, 80]).max() <= 12
        assert (picture.std(axis=(0, 1)) > 1).all() == (texture != "plain")
    frames = render(Scene(colour="blue", texture="noise", size=56, seconds=1, fps=4))
    assert len(frames) == 4 and frames[0].shape == (56, 56, 3)
    assert shape_centre(frames[0], "blue")[1] > 100


def test_bad_settings_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="size must be an even number") as err:
        SynthSettings(size=57, train=0, frames=1)
    assert "train must be at least 1" in str(err.value) and "frames must be at least 2" in str(err.value)
    with pytest.raises(ValueError, match="test must be 0 or more"):
        SynthSettings(test=-1)
    with pytest.raises(ValueError, match="unknown texture 'wood'.*speed must be 0 or more"):
        Scene(texture="wood", speed=-1)

    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(VidlabError, match="not empty. Choose a new folder or pass --overwrite"):
        write_synthetic_dataset(full, SMALL, progress=False)
    assert (full / "keep.txt").read_text() == "mine"
    write_synthetic_dataset(full, dataclasses.replace(SMALL, train=1, val=0, test=0), overwrite=True, progress=False)
    assert not (full / "keep.txt").exists() and len(read_jsonl(full / "train.jsonl")) == 4


def test_a_failed_run_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_render(scene):
        calls.append(scene)
        if len(calls) == 3:
            raise RuntimeError("disk full")
        return render(scene)

    monkeypatch.setattr(synthetic_dataset, "render", failing_render)
    with pytest.raises(RuntimeError, match="disk full"):
        write_synthetic_dataset(tmp_path / "set", SMALL, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cli_synth(tmp_path):
    runner = CliRunner()
    out = tmp_path / "set"
    result = runner.invoke(
        app, ["data", "synth", str(out), "--train", "2", "--val", "0", "--test", "1", "--size", "56",
              "--frames", "6", "--seed", "7", "--no-progress"],
    )
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 2 train, 0 val, 1 test videos" in result.output
    assert len(read_jsonl(out / "train.jsonl")) == 8 and read_jsonl(out / "val.jsonl") == []
    assert json.loads((out / "dataset.json").read_text())["seed"] == 7

    bad = runner.invoke(app, ["data", "synth", str(tmp_path / "bad"), "--size", "57", "--train", "0"])
    assert bad.exit_code == 2 and not (tmp_path / "bad").exists()
    message = " ".join(bad.output.replace("│", " ").split())  # unwrap the boxed error
    assert "size must be an even number" in message and "train must be at least 1" in message
