"""data.feature_cache: frozen vision features extracted once to disk and trained from, equal to decoding each time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidlab import train
from vidlab.data.synthetic import Scene, write_scene
from vidlab.training import data as training_data
from vidlab.training import feature_cache
from vidlab.training.config import ConfigError, load_config

SCENES = [Scene(shape=shape, colour=colour, direction=direction, size=56, seconds=2, fps=4)
          for shape, colour, direction in [("circle", "red", "left"), ("square", "blue", "right"),
                                           ("triangle", "green", "up"), ("circle", "yellow", "down"),
                                           ("square", "red", "up"), ("triangle", "blue", "left")]]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("clips")
    lines = []
    for i, scene in enumerate(SCENES):
        write_scene(root / f"v{i}.mp4", scene)
        lines.append({"id": f"v{i}", "video": [f"v{i}.mp4"], "conversations": [
            {"from": "human", "value": "<video>\nDescribe the video."}, {"from": "gpt", "value": scene.caption}]})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return root


def config(model_dir: Path, data: Path, out: Path, *extra: str):
    return load_config(None, [
        f"model.path={model_dir}", f"data.train=[{data / 'train.jsonl'}]", f"output.dir={out}", "data.workers=0",
        "data.max_frames=4", "learning_rates.llm=0.01", "lora.r=8", "train.batch_size=2", "train.max_steps=2",
        "optim.warmup_ratio=0", "optim.scheduler=constant", "output.log_steps=1", "output.tensorboard=false",
        "output.progress=false", "output.save_steps=100", "train.seed=3", *extra])


@pytest.fixture
def decodes(monkeypatch) -> dict:
    """Counts the media loads of training samples (each decodes the record's videos)."""
    calls = {"load_media": 0}
    real = training_data.load_media

    def counting(*args, **kwargs):
        calls["load_media"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(training_data, "load_media", counting)
    return calls


def losses(result) -> list[float]:
    return [row["loss"] for row in result.log if "loss" in row]


def test_lora_steps_from_cached_features_equal_decoding_and_a_second_run_decodes_nothing(
        tiny_model_dir, clips, tmp_path, decodes):
    decoded = train(config(tiny_model_dir, clips, tmp_path / "decoded"))
    assert decodes["load_media"] == 4
    assert "feature_cache" not in (tmp_path / "decoded" / "config.yaml").read_text()  # the default run as it was
    cache = tmp_path / "cache"
    first = train(config(tiny_model_dir, clips, tmp_path / "first", f"data.feature_cache={cache}"))
    assert decodes["load_media"] == 4 + len(SCENES)  # every sample once, at extraction
    assert len(list(cache.glob("shard-*.safetensors"))) == 1
    assert losses(first) == pytest.approx(losses(decoded), abs=1e-6) and len(losses(first)) == 2
    second = train(config(tiny_model_dir, clips, tmp_path / "second", f"data.feature_cache={cache}"))
    assert decodes["load_media"] == 4 + len(SCENES)  # the shards are reused: nothing decoded
    assert losses(second) == pytest.approx(losses(decoded), abs=1e-6)


def test_an_interrupted_extraction_resumes_with_the_shards_it_finished(tiny_model_dir, clips, tmp_path, decodes,
                                                                       monkeypatch):
    monkeypatch.setattr(feature_cache, "SHARD_SIZE", 2)
    real = feature_cache._write_shard
    written = []

    def interrupted(path, *args, **kwargs):
        if len(written) == 2:
            raise KeyboardInterrupt
        real(path, *args, **kwargs)
        written.append(path)

    monkeypatch.setattr(feature_cache, "_write_shard", interrupted)
    cache = tmp_path / "cache"
    with pytest.raises(KeyboardInterrupt):
        train(config(tiny_model_dir, clips, tmp_path / "cut", f"data.feature_cache={cache}"))
    assert sorted(cache.iterdir()) == sorted(written)  # whole shards only, no partial file
    monkeypatch.setattr(feature_cache, "_write_shard", real)
    decodes["load_media"] = 0
    resumed = train(config(tiny_model_dir, clips, tmp_path / "resumed", f"data.feature_cache={cache}"))
    assert decodes["load_media"] == len(SCENES) - 4  # only the shard not written before
    assert len(list(cache.glob("shard-*.safetensors"))) == 3 and len(losses(resumed)) == 2


def test_a_trainable_vision_tower_is_refused_with_the_fix(tiny_model_dir, clips, tmp_path):
    with pytest.raises(ConfigError) as err:
        config(tiny_model_dir, clips, tmp_path / "run", f"data.feature_cache={tmp_path / 'cache'}",
               "learning_rates.vision=1e-5")
    message = str(err.value)
    assert "\n" not in message and "data.feature_cache" in message and "Remove learning_rates.vision" in message


def test_a_trained_video_compressor_learns_from_cached_features_as_from_decoding(tiny_model_dir, clips, tmp_path):
    llamavid = ["model.video_compressor={kind: llamavid, heads: 4}", "learning_rates.compressor=0.01"]
    decoded = train(config(tiny_model_dir, clips, tmp_path / "decoded", *llamavid))
    cached = train(config(tiny_model_dir, clips, tmp_path / "cached", *llamavid,
                          f"data.feature_cache={tmp_path / 'cache'}"))
    assert losses(cached) == pytest.approx(losses(decoded), abs=1e-6) and len(losses(cached)) == 2


def test_a_run_may_resume_with_the_cache_switched_on_or_off(tiny_model_dir, clips, tmp_path):
    from vidlab.training.checkpoint import config_changes

    plain = config(tiny_model_dir, clips, tmp_path / "run").to_yaml()
    cached = config(tiny_model_dir, clips, tmp_path / "run", f"data.feature_cache={tmp_path / 'cache'}").to_yaml()
    assert "feature_cache" in cached and config_changes(plain, cached) == [] and config_changes(cached, plain) == []
    other = config(tiny_model_dir, clips, tmp_path / "run", "data.max_frames=2").to_yaml()
    assert config_changes(plain, other)  # a setting that changes the samples still may not


def test_an_undecodable_video_is_replaced_and_listed_as_without_the_cache(tiny_model_dir, clips, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(clips, data)
    (data / "broken.mp4").write_bytes(b"not a video at all")
    lines = (data / "train.jsonl").read_text().splitlines(keepends=True)
    lines.insert(1, '{"id": "bad-video", "video": ["broken.mp4"], "conversations": [{"from": "human", "value": '
                    '"<video>\\nx"}, {"from": "gpt", "value": "y"}]}\n')
    (data / "train.jsonl").write_text("".join(lines))
    every = ["train.max_steps=3", "train.epochs=1"]  # 3 batches of 2 of the 7 records (this seed reads the bad one)
    decoded = train(config(tiny_model_dir, data, tmp_path / "decoded", *every))
    cached = train(config(tiny_model_dir, data, tmp_path / "cached", *every, f"data.feature_cache={tmp_path / 'c'}"))
    skipped = [(tmp_path / run / "skipped.jsonl").read_text() for run in ("decoded", "cached")]
    assert "bad-video" in skipped[0] and skipped[1] == skipped[0]
    assert losses(cached) == pytest.approx(losses(decoded), abs=1e-6)
