"""LLaMA-VID in vidlab against the original's own code (recorded by tools/seeds/record_llama_vid.py).

tests/data/seeds/llama_vid/ holds a tiny checkpoint saved by the original's classes in the released
layout (checkpoint/, eva_vit_g.pth, the CLIP processor folder and bert-base-uncased's tokenizer files
its config points at) and what the original computed on fixed inputs: vicuna_v1 prompts and ids,
the Q-Former's BERT ids, CLIP pixels, logits, a greedy answer and frame choice.
"""

from __future__ import annotations

import json
import shutil
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
from vidlab.models.llama_vid.convert import convert_llama_vid
from vidlab.models.llama_vid.template import render, tokenize
from vidlab.models.load import load_model

DATA = Path(__file__).parent / "data" / "seeds" / "llama_vid"
RECORD = json.loads((DATA / "recorded.json").read_text(encoding="utf-8"))
TENSORS = load_file(DATA / "recorded.safetensors")
PICTURE = -200  # the original's IMAGE_TOKEN_INDEX
TOLERANCE = 1e-5  # relative to the largest logit


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("llama_vid") / "model"
    return convert_llama_vid(DATA / "checkpoint", out, bert=DATA / "bert-base-uncased")


@pytest.fixture(scope="module")
def loaded(converted):
    return load_model(converted, dtype="fp32", device="cpu")


def _clip(frames: np.ndarray) -> VideoClip:
    times = [float(i) for i in range(len(frames))]
    return VideoClip(path="fixed.mp4", frames=frames, timestamps=times, stamps=times,
                     frame_indices=list(range(len(frames))), source_fps=1.0, duration=float(len(frames)))


def _record(turns: list[tuple[str, str]], media: str | None = "video") -> dict:
    record = {"conversations": [{"from": who, "value": text} for who, text in turns]}
    if media:
        record[media] = ["fixed.mp4" if media == "video" else "fixed.png"]
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


def _relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    assert got.shape == expected.shape
    return float((got - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("case", ["video", "long"])
def test_video_logits_ids_and_pixels_match_the_original(loaded, case):
    model, processor = loaded
    question = RECORD["question"] if case == "video" else RECORD["long"]  # long: the Q-Former cuts it on the left
    batch = build_inputs(parse_record(_record([("human", "<video>\n" + question)])),
                         [_clip(TENSORS["frames"].numpy())], processor)
    ids = batch.tensors["input_ids"][0].tolist()
    assert _collapsed(ids, processor.image_token_id) == RECORD["model"][case]["input_ids"]
    assert ids.count(processor.image_token_id) == 3 * 2  # a context and a content token per frame
    assert torch.equal(batch.tensors["pixel_values_frames"], TENSORS["video_pixels"])
    with torch.no_grad():
        logits = model(**batch.tensors).logits[0]
    expected = TENSORS[f"{case}/logits"]
    assert _relative(logits[-len(expected):], expected) < TOLERANCE


def test_the_other_qformer_kind_and_grid_content_tokens_match_the_original(tmp_path):
    """bert_type 'qformer' (no LayerNorm, the Q-Former reads the tower's width) with compress_type grid:2."""
    folder = convert_llama_vid(DATA / "checkpoint-grid", tmp_path / "grid", bert=DATA / "bert-base-uncased")
    model, processor = load_model(folder, dtype="fp32", device="cpu")
    assert model.model.projector.qformer_norm is None and model.model.projector.qformer_input is None
    batch = build_inputs(parse_record(_record([("human", "<video>\n" + RECORD["question"])])),
                         [_clip(TENSORS["frames"].numpy())], processor)
    ids = batch.tensors["input_ids"][0].tolist()
    assert _collapsed(ids, processor.image_token_id) == RECORD["grid"]["video"]["input_ids"]
    assert ids.count(processor.image_token_id) == 3 * (1 + 4)  # a context token and 2 x 2 pooled patches a frame
    with torch.no_grad():
        assert _relative(model(**batch.tensors).logits[0], TENSORS["grid/video/logits"]) < TOLERANCE


def test_image_logits_and_pixels_match_the_original(loaded):
    model, processor = loaded
    image = Image.fromarray(TENSORS["image"].numpy())
    batch = build_inputs(parse_record(_record([("human", "<image>\n" + RECORD["question"])], media="image")),
                         [image], processor)
    assert torch.equal(batch.tensors["pixel_values_frames"], TENSORS["image_pixels"])
    assert _collapsed(batch.tensors["input_ids"][0].tolist(), processor.image_token_id) == \
        RECORD["model"]["image"]["input_ids"]
    with torch.no_grad():
        assert _relative(model(**batch.tensors).logits[0], TENSORS["image/logits"]) < TOLERANCE


def test_greedy_answer_matches_the_original(loaded):
    from vidlab.generate import generate
    from vidlab.settings import GenerationOptions

    model, processor = loaded
    batch = build_inputs(parse_record(_record([("human", "<video>\n" + RECORD["question"])])),
                         [_clip(TENSORS["frames"].numpy())], processor)
    answer = generate(model, processor, batch, GenerationOptions(max_new_tokens=6))
    expected = RECORD["model"]["answer"]
    stop = processor.tokenizer.eos_token_id
    assert answer.token_ids == (expected[: expected.index(stop)] if stop in expected else expected)


def test_prompts_and_ids_match_the_original(loaded):
    _, processor = loaded
    question, awkward, answer = RECORD["question"], RECORD["awkward"], RECORD["answer"]
    cases = {
        "video_question": _record([("human", "<video>\n" + question)]),
        "awkward_question": _record([("human", "<video>\n" + awkward)]),
        "text_question": _record([("human", question)], media=None),
        "follow_up": _record([("human", "<video>\n" + question), ("gpt", answer), ("human", awkward)]),
    }
    for case, record in cases.items():
        expected = RECORD["templates"][case]
        rendered = render(parse_record(record))
        assert rendered.text == expected["prompt"], case
        ids, _ = tokenize(rendered, processor.tokenizer, processor.image_token_id, [1] * len(rendered.questions))
        assert _collapsed(ids, processor.image_token_id) == expected["input_ids"], case
    # the Q-Former reads the newest question, as the original's chat re-reads the video with it
    assert render(parse_record(cases["follow_up"])).questions == [awkward]


@pytest.mark.parametrize("case", ["question", "awkward", "long"])
def test_qformer_text_ids_match_the_original(loaded, case):
    _, processor = loaded
    expected = RECORD["templates"][f"qformer/{case}"]
    assert processor.qformer_ids(expected["text"]) == expected["input_ids"]


def test_training_labels_learn_the_answer_and_its_end(loaded):
    _, processor = loaded
    record = _record([("human", "<video>\n" + RECORD["question"]), ("gpt", RECORD["answer"]),
                      ("human", "How fast?"), ("gpt", "Quickly.")])
    sample = encode(parse_record(record), [_clip(TENSORS["frames"].numpy())], processor, labels=True)
    ids, labels = sample.tensors["input_ids"].tolist(), sample.tensors["labels"].tolist()
    learned = [i for i, label in zip(ids, labels) if label != -100]
    tokenizer = processor.tokenizer
    text = tokenizer.decode(learned, skip_special_tokens=True)
    assert text.replace(" ", "") == f"{RECORD['answer']}Quickly.".replace(" ", "")  # the answers, nothing else
    assert learned.count(tokenizer.eos_token_id) == 2  # each answer's </s>
    assert all(label == -100 for i, label in zip(ids, labels) if i == processor.image_token_id)
    assert sample.tensors["qformer_lengths"].tolist() == [len(processor.qformer_ids(RECORD["question"]))]


def _index_of(frame: np.ndarray) -> int:
    bar = frame.shape[1] // 10
    return sum(1 << bit for bit in range(10) if frame[:, bit * bar:(bit + 1) * bar].mean() > 127)


@pytest.mark.parametrize("name", sorted(RECORD["frame_choice"]))
def test_stride_frame_rule_picks_the_original_frames(name):
    from vidlab.media import load_video
    from vidlab.settings import Sampling

    sampling = Sampling(frame_rule="stride", max_frames=1000)
    clip = load_video(Path(__file__).parent / "data" / "fidelity" / "media" / name, sampling)
    assert clip.frame_indices == RECORD["frame_choice"][name]
    assert [_index_of(frame) for frame in clip.frames] == RECORD["frame_choice"][name]


def test_convert_needs_the_tower_file_and_names_every_problem(tmp_path):
    broken = tmp_path / "release" / "checkpoint"
    shutil.copytree(DATA / "checkpoint", broken)
    with pytest.raises(CheckpointConversionError, match="--vision-tower"):
        convert_llama_vid(broken, tmp_path / "out", bert=DATA / "bert-base-uncased")
    config = json.loads((broken / "config.json").read_text())
    config["num_query"] = 8
    (broken / "config.json").write_text(json.dumps(config))
    shapes = r"query_tokens: shape \[1, 4, 32\], the config makes \[1, 8, 32\]"
    with pytest.raises(CheckpointConversionError, match=shapes):
        convert_llama_vid(broken, tmp_path / "out", vision_tower=DATA / "eva_vit_g.pth",
                          bert=DATA / "bert-base-uncased")
    assert not (tmp_path / "out").exists()


def test_load_model_points_at_convert_for_the_original_layout():
    with pytest.raises(ModelLoadError, match="vidlab model convert"):
        load_model(DATA / "checkpoint", device="cpu")


def test_convert_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from vidlab.cli import app

    result = CliRunner().invoke(app, ["model", "convert", str(DATA / "checkpoint"), str(tmp_path / "out"),
                                      "--bert", str(DATA / "bert-base-uncased"), "--dtype", "fp32"])
    assert result.exit_code == 0, result.output
    assert "LLaMA-VID" in result.output
    conversion = json.loads((tmp_path / "out" / "vidlab_conversion.json").read_text())
    assert conversion["family"] == "llama_vid" and conversion["vision_blocks"] == 2


def test_tiny_builder_chat_and_eval_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from vidlab.cli import app
    from vidlab.data.synthetic import Scene, write_scene

    runner = CliRunner()
    built = runner.invoke(app, ["model", "tiny", str(tmp_path / "tiny"), "--family", "llama-vid"])
    assert built.exit_code == 0, built.output
    write_scene(tmp_path / "clip.mp4", Scene(shape="square", colour="red", direction="left", seconds=3))
    answer = runner.invoke(app, ["chat", "--model", str(tmp_path / "tiny"), "--video", str(tmp_path / "clip.mp4"),
                                 "--frame-rule", "stride", "--max-new-tokens", "4", "--device", "cpu", "--json",
                                 "What happens?"])
    assert answer.exit_code == 0, answer.output
    result = json.loads(answer.output.strip().splitlines()[-1])
    assert result["visual_tokens"] == 2 * len(result["frames"]) and result["generated_tokens"] >= 1
    rows = []
    for i, (colour, direction) in enumerate([("red", "left"), ("blue", "right"), ("green", "up")]):
        write_scene(tmp_path / f"v{i}.mp4", Scene(shape="circle", colour=colour, direction=direction, seconds=2))
        rows.append({"id": f"q{i}", "video": [f"v{i}.mp4"], "conversations": [
            {"from": "human", "value": "<video>\nWhat colour is the shape?"}, {"from": "gpt", "value": colour}]})
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    evaluated = runner.invoke(app, [
        "eval", "run", "--model", str(tmp_path / "tiny"), "--out", str(tmp_path / "out"), "--data",
        str(tmp_path / "data.jsonl"), "--device", "cpu", "--frame-rule", "stride", "--batch-size", "2",
        "--max-new-tokens", "4"])
    assert evaluated.exit_code == 0, evaluated.output
    predictions = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert sorted(p["id"] for p in predictions) == ["q0", "q1", "q2"]


def test_lora_training_through_the_common_road(tmp_path):
    from vidlab import train
    from vidlab.data.synthetic import Scene, write_scene
    from vidlab.models.llama_vid.tiny import build_tiny_llama_vid
    from vidlab.training.config import load_config

    tiny = build_tiny_llama_vid(tmp_path / "tiny")
    lines = []
    for i, (colour, motion) in enumerate([("red", "left"), ("blue", "right"), ("green", "up"), ("white", "down")]):
        write_scene(tmp_path / f"v{i}.mp4", Scene(shape="circle", colour=colour, direction=motion, seconds=2))
        lines.append({"video": [f"v{i}.mp4"], "conversations": [
            {"from": "human", "value": "<video>\nDescribe the video."},
            {"from": "gpt", "value": f"A {colour} circle moves {motion}."}]})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    out = tmp_path / "lora"
    config = load_config(None, [
        f"model.path={tiny}", f"data.train=[{tmp_path / 'train.jsonl'}]", f"output.dir={out}",
        "data.workers=0", "data.frame_rule=stride", "learning_rates.llm=0.01", "lora.r=8",
        "lora.alpha=16", "train.batch_size=4", "train.max_steps=10", "optim.warmup_ratio=0", "optim.scheduler=constant",
        "output.log_steps=1", "output.tensorboard=false", "output.progress=false", "output.save_steps=100",
        "train.seed=3"])
    losses = [row["loss"] for row in train(config).log if "loss" in row]
    assert losses[-1] < losses[0] - 0.5
    base, processor = load_model(tiny, dtype="fp32", device="cpu")
    tuned, _ = load_model(tiny, adapter=out, dtype="fp32", device="cpu")
    batch = build_inputs(parse_record(_record([("human", "<video>\nDescribe the video.")])),
                         [_clip(TENSORS["frames"].numpy())], processor)
    with torch.no_grad():
        tuned_logits = tuned(**batch.tensors).logits
        assert not torch.allclose(base(**batch.tensors).logits, tuned_logits)
    from vidlab.models.merge import merge

    merged, _ = load_model(merge(tiny, out, tmp_path / "merged").folder, dtype="fp32", device="cpu")
    with torch.no_grad():
        assert torch.allclose(merged(**batch.tensors).logits, tuned_logits, atol=1e-4)


def test_serve_answers_a_video_question(tmp_path):
    import base64

    from fastapi.testclient import TestClient

    from vidlab.data.synthetic import Scene, write_scene
    from vidlab.models.llama_vid.tiny import build_tiny_llama_vid
    from vidlab.serve.app import create_app
    from vidlab.serve.options import ServeOptions
    from vidlab.settings import GenerationOptions

    tiny = build_tiny_llama_vid(tmp_path / "tiny")
    write_scene(tmp_path / "clip.mp4", Scene(shape="square", colour="red", direction="left", seconds=3))
    data = base64.b64encode((tmp_path / "clip.mp4").read_bytes()).decode()
    app = create_app(str(tiny), name="tiny", device="cpu",
                     options=ServeOptions(generation=GenerationOptions(max_new_tokens=4)))
    with TestClient(app) as client:
        response = client.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": [
            {"type": "video_url", "video_url": {"url": f"data:video/mp4;base64,{data}"}},
            {"type": "text", "text": "What happens?"}]}]})
    assert response.status_code == 200, response.text
    body = response.json()
    frames = body["vidlab"]["frames"][0]
    assert body["vidlab"]["visual_tokens"] == 2 * len(frames)
    assert body["usage"]["prompt_tokens"] > body["vidlab"]["visual_tokens"]  # the template's text as well
