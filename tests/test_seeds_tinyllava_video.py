"""TinyLLaVA-Video in vidlab against the original's own code (recorded by tools/seeds/record_tinyllava_video.py).

tests/data/seeds/tinyllava_video/ holds two tiny checkpoints saved by the original's classes (group
and naive resampler) and what the original computed on fixed inputs: template prompts, token ids and
labels, SigLIP pixels, logits, a greedy answer, image pixels and frame choice.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from vidlab.conversation import parse_record
from vidlab.errors import CheckpointConversionError, ModelLoadError
from vidlab.inputs import build_inputs, encode
from vidlab.media import VideoClip
from vidlab.models.load import load_model
from vidlab.models.tinyllava_video.convert import convert_tinyllava_video
from vidlab.models.tinyllava_video.template import render, tokenize

DATA = Path(__file__).parent / "data" / "seeds" / "tinyllava_video"
RECORD = json.loads((DATA / "recorded.json").read_text())
TENSORS = load_file(DATA / "recorded.safetensors")
CONNECTORS = ("groupresampler", "naiveresampler")
PICTURE = -200  # the original's IMAGE_TOKEN_INDEX


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tinyllava_video")
    return {name: convert_tinyllava_video(DATA / name, root / name) for name in CONNECTORS}


def _clip(frames: np.ndarray) -> VideoClip:
    times = [i / 2 for i in range(len(frames))]
    return VideoClip(path="fixed.mp4", frames=frames, timestamps=times, stamps=times,
                     frame_indices=list(range(len(frames))), source_fps=2.0, duration=len(frames) / 2)


def _record(turns: list[tuple[str, str]], media: str | None = "video") -> dict:
    record = {"conversations": [{"from": who, "value": text} for who, text in turns]}
    if media:
        record[media] = ["fixed.mp4"]
    return record


def _collapsed(ids: list[int], token: int) -> list[int]:
    """vidlab's ids with each run of picture placeholders as the original's single -200."""
    out: list[int] = []
    for i in ids:
        if i == token:
            if not out or out[-1] != PICTURE:
                out.append(PICTURE)
        else:
            out.append(i)
    return out


@pytest.mark.parametrize("connector", CONNECTORS)
def test_logits_ids_and_pixels_match_the_original(converted, connector):
    model, processor = load_model(converted[connector], dtype="fp32", device="cpu")
    conversation = parse_record(_record([("human", "<video>\n" + RECORD["question"])]))
    batch = build_inputs(conversation, [_clip(TENSORS["frames"].numpy())], processor)
    ids = batch.tensors["input_ids"][0].tolist()
    assert _collapsed(ids, processor.image_token_id) == RECORD[connector]["input_ids"]
    assert ids.count(processor.image_token_id) == 8
    assert torch.equal(batch.tensors["pixel_values_frames"], TENSORS[f"{connector}/pixel_values"])
    with torch.no_grad():
        logits = model(**batch.tensors).logits[0]
    expected = TENSORS[f"{connector}/logits"]
    assert logits.shape == expected.shape
    assert float((logits - expected).abs().max() / expected.abs().max()) < 1e-4


def test_greedy_answer_matches_the_original(converted):
    from vidlab.generate import generate
    from vidlab.settings import GenerationOptions

    model, processor = load_model(converted["groupresampler"], dtype="fp32", device="cpu")
    conversation = parse_record(_record([("human", "<video>\n" + RECORD["question"])]))
    batch = build_inputs(conversation, [_clip(TENSORS["frames"].numpy())], processor)
    answer = generate(model, processor, batch, GenerationOptions(max_new_tokens=6))
    expected = RECORD["groupresampler"]["answer"]  # the original generates from embeddings: new tokens only
    stop = processor.tokenizer.eos_token_id
    assert answer.token_ids == (expected[: expected.index(stop)] if stop in expected else expected)


@pytest.mark.parametrize("template", ["qwen2_base", "phi"])
def test_template_prompts_ids_and_labels_match_the_original(converted, template):
    from vidlab.models.tinyllava_video.processor import TinyLlavaVideoProcessor

    processor = TinyLlavaVideoProcessor.from_pretrained(converted["groupresampler"])
    question, answers = RECORD["question"], RECORD["answers"]
    cases = {
        "picture_prompt": (_record([("human", "<video>\n" + question)]), False),
        "text_prompt": (_record([("human", question)], media=None), False),
        "two_turns": (_record([("human", "<video>\n" + question), ("gpt", answers[0]), ("human", "How fast?"),
                               ("gpt", answers[1])]), True),
    }
    for case, (record, train) in cases.items():
        expected = RECORD["templates"][f"{template}/{case}"]
        pieces = render(parse_record(record))
        assert "".join(p.text for p in pieces) == expected["prompt"], case
        ids, learned = tokenize(pieces, processor.tokenizer, processor.image_token_id, 1)
        assert _collapsed(ids, processor.image_token_id) == expected["input_ids"], case
        if train:
            labels = [i if keep else -100 for i, keep in zip(_collapsed(ids, processor.image_token_id), learned)]
            assert labels == expected["labels"]


def test_training_labels_through_encode(converted):
    _, processor = load_model(converted["groupresampler"], dtype="fp32", device="cpu")
    record = _record([("human", "<video>\n" + RECORD["question"]), ("gpt", RECORD["answers"][0]),
                      ("human", "How fast?"), ("gpt", RECORD["answers"][1])])
    sample = encode(parse_record(record), [_clip(TENSORS["frames"].numpy())], processor, labels=True)
    ids, labels = sample.tensors["input_ids"].tolist(), sample.tensors["labels"].tolist()
    token = processor.image_token_id
    assert all(label == -100 for i, label in zip(ids, labels) if i == token)  # the picture is never learned
    kept = [k for k, i in enumerate(ids) if i != token or k == ids.index(token)]  # one place for the picture
    expected = RECORD["templates"]["qwen2_base/two_turns"]
    assert [PICTURE if ids[k] == token else ids[k] for k in kept] == expected["input_ids"]
    assert [labels[k] for k in kept] == expected["labels"]
    assert sample.stats.visual_tokens == 8


@pytest.mark.parametrize("ratio", ["square", "pad"])
def test_image_pixels_match_the_original(converted, ratio):
    _, processor = load_model(converted["groupresampler"], dtype="fp32", device="cpu")
    processor.image_aspect_ratio = ratio
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, size=(30, 50, 3), dtype=np.uint8))
    assert torch.equal(processor.pixels(image)[0], TENSORS[f"image_{ratio}"])


def test_the_original_has_no_image_branch_but_vidlab_answers_an_image(converted):
    assert RECORD["image"]["image_forward"].startswith("UnboundLocalError")
    model, processor = load_model(converted["groupresampler"], dtype="fp32", device="cpu")
    image = Image.fromarray(np.full((20, 30, 3), 90, dtype=np.uint8))
    batch = build_inputs(parse_record(_record([("human", "<image>\nWhat is it?")], media="image")), [image], processor)
    assert batch.tensors["frame_counts"].tolist() == [1]
    with torch.no_grad():
        assert torch.isfinite(model(**batch.tensors).logits).all()


def test_convert_names_every_problem(tmp_path, converted):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(DATA / "groupresampler", broken)
    config = json.loads((broken / "config.json").read_text())
    config["num_queries"] = 12  # 3 latents a group instead of 2: every latents shape is wrong
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointConversionError, match=r"latents: shape \[2, 32\], the config makes \[3, 32\]"):
        convert_tinyllava_video(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    config["connector_type"] = "mlp2x_gelu"
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointConversionError, match="not one of TinyLLaVA-Video's resamplers"):
        convert_tinyllava_video(broken, tmp_path / "out")


def test_load_model_points_at_convert_for_the_original_layout():
    with pytest.raises(ModelLoadError, match="vidlab model convert"):
        load_model(DATA / "groupresampler", device="cpu")


def _index_of(frame: np.ndarray) -> int:
    """The frame's own index, written in ten black / white bars (tools/fidelity/frames_corpus.py)."""
    bar = frame.shape[1] // 10
    return sum(1 << bit for bit in range(10) if frame[:, bit * bar:(bit + 1) * bar].mean() > 127)


@pytest.mark.parametrize("case", sorted(RECORD["frame_choice"]))
def test_uniform_frame_rule_picks_the_original_frames(case):
    from vidlab.media import load_video
    from vidlab.settings import Sampling

    name, num_frames, max_frames = case.split("/")
    sampling = Sampling(frame_rule="uniform", num_frames=int(num_frames) or None, max_frames=int(max_frames))
    clip = load_video(Path(__file__).parent / "data" / "fidelity" / "media" / name, sampling)
    assert [_index_of(frame) for frame in clip.frames] == RECORD["frame_choice"][case]
    assert clip.frame_indices == RECORD["frame_choice"][case]


def test_lora_training_through_the_common_road(converted, tmp_path):
    from vidlab import train
    from vidlab.data.synthetic import Scene, write_scene
    from vidlab.training.config import load_config

    lines = []
    for i, (colour, motion) in enumerate([("red", "left"), ("blue", "right"), ("green", "up"), ("white", "down")]):
        write_scene(tmp_path / f"v{i}.mp4", Scene(shape="circle", colour=colour, direction=motion, seconds=2))
        lines.append({"video": [f"v{i}.mp4"], "conversations": [
            {"from": "human", "value": "<video>\nDescribe the video."},
            {"from": "gpt", "value": f"A {colour} circle moves {motion}."}]})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "lora"
    config = load_config(None, [
        f"model.path={converted['groupresampler']}", f"data.train=[{tmp_path / 'train.jsonl'}]", f"output.dir={out}",
        "data.workers=0", "data.frame_rule=uniform", "data.num_frames=4", "learning_rates.llm=0.01", "lora.r=8",
        "lora.alpha=16", "train.batch_size=4", "train.max_steps=10", "optim.warmup_ratio=0", "optim.scheduler=constant",
        "output.log_steps=1", "output.tensorboard=false", "output.progress=false", "output.save_steps=100",
        "train.seed=3"])
    losses = [row["loss"] for row in train(config).log if "loss" in row]
    assert losses[-1] < losses[0] - 0.5
    base, processor = load_model(converted["groupresampler"], dtype="fp32", device="cpu")
    tuned, _ = load_model(converted["groupresampler"], adapter=out, dtype="fp32", device="cpu")
    batch = build_inputs(parse_record(_record([("human", "<video>\nDescribe the video.")])),
                         [_clip(TENSORS["frames"].numpy())], processor)
    with torch.no_grad():
        assert not torch.allclose(base(**batch.tensors).logits, tuned(**batch.tensors).logits)


def test_tiny_builder_and_chat_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from vidlab.cli import app
    from vidlab.data.synthetic import Scene, write_scene

    runner = CliRunner()
    built = runner.invoke(app, ["model", "tiny", str(tmp_path / "tiny"), "--family", "tinyllava-video"])
    assert built.exit_code == 0, built.output
    write_scene(tmp_path / "clip.mp4", Scene(shape="square", colour="red", direction="left", seconds=3))
    answer = runner.invoke(app, ["chat", "--model", str(tmp_path / "tiny"), "--video", str(tmp_path / "clip.mp4"),
                                 "--frame-rule", "uniform", "--num-frames", "16", "--max-new-tokens", "4",
                                 "--device", "cpu", "--json", "What happens?"])
    assert answer.exit_code == 0, answer.output
    result = json.loads(answer.output.strip().splitlines()[-1])
    assert result["visual_tokens"] == 32 and len(result["frames"]) == 16 and result["generated_tokens"] >= 1


def test_evaluation_in_batches_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from vidlab.cli import app
    from vidlab.data.synthetic import Scene, write_scene
    from vidlab.models.tinyllava_video.tiny import build_tiny_tinyllava_video

    build_tiny_tinyllava_video(tmp_path / "tiny")
    rows = []
    for i, (colour, direction) in enumerate([("red", "left"), ("blue", "right"), ("green", "up")]):
        write_scene(tmp_path / f"v{i}.mp4", Scene(shape="circle", colour=colour, direction=direction, seconds=2))
        rows.append({"id": f"q{i}", "video": [f"v{i}.mp4"], "conversations": [
            {"from": "human", "value": "<video>\nWhat colour is the shape?"}, {"from": "gpt", "value": colour}]})
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    result = CliRunner().invoke(app, [
        "eval", "run", "--model", str(tmp_path / "tiny"), "--out", str(tmp_path / "out"), "--data",
        str(tmp_path / "data.jsonl"), "--device", "cpu", "--frame-rule", "uniform", "--num-frames", "4",
        "--batch-size", "2", "--max-new-tokens", "4"])
    assert result.exit_code == 0, result.output
    predictions = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in predictions) == ["q0", "q1", "q2"]
    assert (tmp_path / "out" / "metrics.json").is_file()
