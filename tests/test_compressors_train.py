"""Video compressors through vidlab train, merge, eval and data tokens: LoRA with a new compressor, the
alignment stage (LLM frozen), the errors a config can make, and the token planner's arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_train import caption_data, make_config, model_logits  # noqa: F401  (the fixture, re-used)

import vidlab
from vidlab import train
from vidlab.data.flashes import COLOURS, FlashSettings, draw_video, render, write_flashes
from vidlab.data.plan_tokens import VideoBudget, video_token_cost
from vidlab.media.sampling import Timeline, pick_frames
from vidlab.models.load import ADAPTER_COMPRESSOR_FILE, load_model
from vidlab.settings import MediaSettings, Sampling, VideoCompressor
from vidlab.training.config import ConfigError
from vidlab.training.model import TrainSetupError

LLAMAVID = ["model.video_compressor={kind: llamavid, heads: 4}", "learning_rates.compressor=0.01"]


def test_lora_with_a_new_compressor_trains_saves_loads_and_merges(tiny_model_dir, caption_data, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    result = train(make_config(tiny_model_dir, caption_data, run, *LLAMAVID, "train.max_steps=3"))
    assert result.steps == 3
    assert VideoCompressor.model_validate_json((run / ADAPTER_COMPRESSOR_FILE).read_text()).kind == "llamavid"
    adapter = json.loads((run / "adapter_config.json").read_text())
    assert "video_compressor" in adapter["modules_to_save"]
    saved = load_file(run / "adapter_model.safetensors")
    assert any(".video_compressor." in name for name in saved)
    assert (run / "checkpoints" / "step-000003" / "adapter" / ADAPTER_COMPRESSOR_FILE).is_file()

    video = caption_data / "v0.mp4"
    model, processor = load_model(tiny_model_dir, adapter=run, device="cpu")
    assert processor.video_compressor.kind == "llamavid"
    with_adapter = model_logits(model, processor, video)
    merged_dir = vidlab.merge(tiny_model_dir, run, tmp_path / "merged").folder
    merged, merged_processor = load_model(merged_dir, device="cpu")
    torch.testing.assert_close(model_logits(merged, merged_processor, video), with_adapter, rtol=1e-4, atol=1e-4)
    # the compressor learnt: the same base with an untrained one answers differently
    fresh, fresh_processor = load_model(tiny_model_dir, device="cpu")
    assert fresh_processor.video_compressor is None


def test_alignment_stage_trains_compressor_and_projector_only(tiny_model_dir, caption_data, tmp_path):  # noqa: F811
    run = tmp_path / "align"
    config = make_config(tiny_model_dir, caption_data, run, "method=full",
                         "model.video_compressor={kind: group_resampler, heads: 4, groups: 2, latents: 2, layers: 1}",
                         "learning_rates={compressor: 0.01, projector: 0.001}", "train.max_steps=2")
    train(config)
    before = load_file(tiny_model_dir / "model.safetensors")
    after = load_file(run / "model.safetensors")
    assert json.loads((run / "config.json").read_text())["model_type"] == "vidlab_video_llama_3"
    assert (run / "vidlab_compressor.py").is_file()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("model.projector.") for name in changed)
    assert any(name.startswith("model.video_compressor.") for name in after)
    model, processor = load_model(run, device="cpu")
    assert processor.video_compressor.kind == "group_resampler"
    # stage B starts from this folder: its compressor comes with it and keeps training under LoRA
    lora = train(make_config(run, caption_data, tmp_path / "lora", "learning_rates.compressor=0.001",
                             "train.max_steps=1"))
    assert lora.steps == 1 and not (tmp_path / "lora" / ADAPTER_COMPRESSOR_FILE).read_text() == ""


def test_eval_run_answers_with_a_compressed_model(tiny_model_dir, caption_data, tmp_path):  # noqa: F811
    run = tmp_path / "align"
    train(make_config(tiny_model_dir, caption_data, run, "method=full", "model.video_compressor={kind: pool}",
                      "learning_rates={projector: 0.001}", "train.max_steps=1"))
    result = vidlab.evaluate(run, caption_data / "val.jsonl", tmp_path / "eval",
                             options=vidlab.RunOptions(settings=MediaSettings(max_frames=4), progress=False,
                                                       generation=vidlab.GenerationOptions(max_new_tokens=4)))
    rows = [json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and result.metrics is not None
    assert all(row["visual_tokens"] == 4 * len(row["frames"][0]) for row in rows)  # pool 2x2 a frame


@pytest.mark.parametrize(("overrides", "error", "message"), [
    (["model.video_compressor={kind: llamavid, heads: 4}"], TrainSetupError,
     "a new llamavid compressor starts untrained, and learning_rates has no rate for it"),
    (["learning_rates.compressor=0.01"], TrainSetupError, "the model has no video compressor"),
    (["model.video_compressor={kind: pool}", "learning_rates.compressor=0.01"], ConfigError,
     "video compressor pool has no weights to train"),
    (["model.video_compressor={kind: llamavid, content_tokens: 2}"], ConfigError, "is not a square number"),
    (["model.video_compressor={kind: llamavid, depth: 2}"], ConfigError,
     "model.video_compressor.depth: unknown key"),
])
def test_compressor_config_errors_say_what_to_change(tiny_model_dir, caption_data, tmp_path, overrides, error,  # noqa: F811
                                                     message):
    with pytest.raises(error, match=message):
        train(make_config(tiny_model_dir, caption_data, tmp_path / "run", *overrides))


# ---------------------------------------------------------------- frames and tokens of long videos


def test_an_hour_at_one_frame_a_second_keeps_every_tick():
    hour = Timeline(times=[i / 25 for i in range(25 * 3600)], end=3600.0)
    picks = pick_frames(hour, Sampling(fps=1, max_frames=3600))
    assert len(picks) == 3600 and picks.stamps[:3] == [0.0, 1.0, 2.0] and picks.stamps[-1] == 3599.0
    assert len(pick_frames(hour, Sampling(fps=1))) == 180  # the released cap thins it


def test_token_planner_counts_frames_visual_and_stamp_tokens():
    from vidlab.models.tiny import train_tokenizer

    tokenizer = train_tokenizer(512)
    options = {"none": VideoCompressor(), "llamavid": VideoCompressor(kind="llamavid"),
               "resampler": VideoCompressor(kind="group_resampler", groups=4, latents=8)}
    budget = VideoBudget(factor=28, min_tokens=16, max_tokens=16384)
    costs = {c.option: c for c in video_token_cost(3600, tokenizer, options, MediaSettings(max_frames=3600), budget,
                                                   width=448, height=448)}
    assert costs["llamavid"].frames == costs["resampler"].frames == 3600 and costs["llamavid"].fps_kept == 1
    assert costs["llamavid"].visual_tokens == 7200 and costs["resampler"].visual_tokens == 32
    # none: 16,384 tokens shared by 3600 frames are 4.55 a frame, below the 16-token floor: smart_resize
    # goes below the floor rather than over the budget, to 4 tokens (56 x 56 px) a frame
    assert costs["none"].visual_tokens == 3600 * 4
    stamps = ",".join(f"Time {float(i):.1f}s:" for i in range(3600))
    assert costs["llamavid"].stamp_tokens == len(tokenizer(stamps, add_special_tokens=False)["input_ids"])
    spans = ",".join(f"Time {a:.1f}-{b:.1f}s:" for a, b in ((0, 899), (900, 1799), (1800, 2699), (2700, 3599)))
    assert costs["resampler"].stamp_tokens == len(tokenizer(spans, add_special_tokens=False)["input_ids"])
    capped = video_token_cost(3600, tokenizer, options, MediaSettings(max_frames=3600, max_visual_tokens=1000),
                              budget, width=448, height=448)
    assert {c.option: c.frames for c in capped} == {"none": 62, "llamavid": 500, "resampler": 3600}


def test_data_tokens_command_prints_each_option(tmp_path):
    from test_train import run_cli

    done = run_cli("data", "tokens", "3600", "--max-frames", "3600", "--json")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout.splitlines()[0])
    assert [o["option"] for o in row["options"]] == ["none", "llamavid", "group_resampler", "pool"]
    assert row["options"][1]["visual_tokens"] == 7200 and row["options"][2]["visual_tokens"] == 512


# ---------------------------------------------------------------- the synthetic long-video task


def _shows(frame: np.ndarray, colour: str, tolerance: int = 10) -> bool:
    return bool((np.abs(frame.astype(int) - np.asarray(COLOURS[colour])).sum(-1) < tolerance).any())


def test_a_flash_is_on_screen_for_its_seconds_only():
    rng = np.random.default_rng(3)
    for _ in range(20):
        video = draw_video(rng, (10, 30), lengths=(1, 2))
        frames = render(video, 56)
        (flash,) = video.flashes
        assert len(frames) == video.seconds and flash.side == ""
        assert [second for second, frame in enumerate(frames) if _shows(frame, flash.colour)] == list(
            range(flash.second, flash.second + flash.length))


def test_two_sided_flashes_show_each_flash_on_its_side():
    rng = np.random.default_rng(4)
    for _ in range(20):
        video = draw_video(rng, (10, 30), two_sides=True)
        frames = render(video, 56, marker=True)
        left, right = video.flashes
        assert left.side == "left" and right.side == "right" and left.colour != right.colour
        assert left.second != right.second
        for flash, half in ((left, slice(0, 28)), (right, slice(28, 56))):
            shown = [s for s, frame in enumerate(frames) if _shows(frame[:, half], flash.colour)]
            assert shown == [flash.second]


def test_flash_data_set_records(tmp_path):
    folder = write_flashes(tmp_path / "flashes", FlashSettings(train=3, test=1, seconds=(12, 14)))
    rows = [json.loads(line) for line in (folder / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and rows[0]["conversations"][0]["value"] == "<video>\nWhat colour was the disc?"
    clip = vidlab.load_video(folder / rows[0]["video"][0], Sampling(fps=1, max_frames=300))
    assert len(clip) == rows[0]["seconds"]
    assert _shows(clip.frames[rows[0]["flash_second"]], rows[0]["conversations"][1]["value"], tolerance=60)
    again = write_flashes(tmp_path / "again", FlashSettings(train=3, test=1, seconds=(12, 14)))
    assert (again / "train.jsonl").read_text() == (folder / "train.jsonl").read_text()
    assert Path(again / rows[0]["video"][0]).read_bytes() == Path(folder / rows[0]["video"][0]).read_bytes()
    sides = write_flashes(tmp_path / "sides", FlashSettings(train=2, test=0, seconds=(12, 14), two_sides=True))
    asked = [json.loads(line) for line in (sides / "train.jsonl").read_text().splitlines()]
    assert [r["side"] for r in asked] == ["left", "right"] * 2
    assert asked[0]["conversations"][0]["value"] == "<video>\nWhat colour was the disc on the left?"
