"""GRPO and DPO data: `vidlab data convert` from Video-R1-260k and LLaVA-Hound's DPO pairs (files written in
their own field names), validation of vidlab's GRPO/DPO records, and `vidlab data check --method grpo|dpo`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vidlab.data.check import check_data
from vidlab.data.convert import convert_annotations
from vidlab.data.synthetic import Scene, write_scene
from vidlab.training.rewards import Reference
from vidlab.training.rl_records import load_prompt_records


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rl-data")
    (root / "LLaVA-Video-178K").mkdir()
    for name in ("LLaVA-Video-178K/a.mp4", "b.mp4"):
        write_scene(root / name, Scene(shape="circle", colour="red", direction="left", size=48, seconds=1, fps=4))
    return root


def _lines(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_video_r1_records_convert_to_grpo_records(videos, tmp_path):
    source = tmp_path / "Video-R1-260k.json"  # a JSON list, as released
    mc = {"problem_id": 2, "problem": "What appears on the screen?", "data_type": "video",
          "problem_type": "multiple choice", "options": ["A. A notification", "B. A command"],
          "process": "<think>...</think>", "solution": "<answer>A</answer>", "path": "./LLaVA-Video-178K/a.mp4",
          "data_source": "LLaVA-Video-178K/30_60_s_youtube_v0_1"}
    numerical = {**mc, "problem_id": 3, "problem_type": "numerical", "options": [], "problem": "How many cars?",
                 "solution": "<answer>3</answer>", "path": "./b.mp4"}
    ocr = {**numerical, "problem_id": 4, "problem_type": "OCR", "solution": "<answer>STOP</answer>"}
    unknown = {**numerical, "problem_id": 5, "problem_type": "essay"}
    no_options = {**mc, "problem_id": 6, "options": []}
    missing = {**numerical, "problem_id": 7, "path": "./gone.mp4"}
    source.write_text(json.dumps([mc, numerical, ocr, unknown, no_options, missing], indent=1))
    result = convert_annotations("video-r1", source, tmp_path / "rl.jsonl", data_root=videos)
    assert result.records == 3 and len(result.problems) == 3
    reasons = {p.reason for p in result.problems}
    assert any('"problem_type" \'essay\'' in r for r in reasons) and any('"options"' in r for r in reasons)
    assert any(p.kind == "missing media" for p in result.problems)
    assert all(p.source.startswith(f"{source}:") for p in result.problems)  # file:line of the source item
    assert any("OCR answers scored by exact match" in note for note in result.notes)
    rows = [json.loads(line) for line in (tmp_path / "rl.jsonl").read_text().splitlines()]
    assert rows[0]["conversations"][0]["value"] == ("<video>\nWhat appears on the screen?\nOptions:\n"
                                                   "A. A notification\nB. A command")
    assert [r["answer_type"] for r in rows] == ["choice", "number", "exact"]
    assert rows[0]["video"] == ["LLaVA-Video-178K/a.mp4"] and rows[0]["id"] == "2"
    records, skipped = load_prompt_records([tmp_path / "rl.jsonl"], videos, "grpo")  # GRPO reads them as written
    assert not skipped and [r.reference for r in records] == [Reference("A", "choice"), Reference("3", "number"),
                                                              Reference("STOP", "exact")]


def test_llava_hound_pairs_convert_to_dpo_records(videos, tmp_path):
    source = _lines(tmp_path / "sft_dpo_17k.jsonl", [
        {"id": "h1", "video": "b.mp4", "prompt": "What moves?", "chosen": "A red circle moves left.",
         "rejected": "Nothing moves.", "chosen_score": 5.0, "rejected_score": 1.0},
        {"id": "h2", "video": "b.mp4", "prompt": "What moves?", "chosen": "A red circle."},
    ])
    result = convert_annotations("llava-hound-dpo", source, tmp_path / "dpo.jsonl", data_root=videos)
    assert result.records == 1 and len(result.problems) == 1
    assert result.problems[0].source == f"{source}:2" and '"rejected"' in result.problems[0].reason
    row = json.loads((tmp_path / "dpo.jsonl").read_text())
    assert row["conversations"] == [{"from": "human", "value": "<video>\nWhat moves?"}]
    assert (row["chosen"], row["rejected"], row["chosen_score"]) == ("A red circle moves left.", "Nothing moves.", 5.0)
    records, skipped = load_prompt_records([tmp_path / "dpo.jsonl"], videos, "dpo")
    assert not skipped and records[0].chosen == "A red circle moves left."


def test_records_of_both_layouts_are_validated_on_convert(videos, tmp_path):
    question = {"from": "human", "value": "<video>\nWhich way?"}
    source = _lines(tmp_path / "mine.jsonl", [
        {"id": "g1", "video": ["b.mp4"], "answer_type": "choice", "conversations": [question, {"from": "gpt",
                                                                                             "value": "B"}]},
        {"id": "g2", "video": ["b.mp4"], "answer_type": "number", "conversations": [question, {"from": "gpt",
                                                                                             "value": "left"}]},
        {"id": "p1", "video": ["b.mp4"], "conversations": [question], "chosen": "left", "rejected": "left"},
        {"id": "p2", "video": ["b.mp4"], "conversations": [question], "chosen": "left", "rejected": "up"},
    ])
    result = convert_annotations("records", source, tmp_path / "out.jsonl", data_root=videos)
    assert result.records == 2
    problems = {p.source: p.reason for p in result.problems}
    assert "holds no number" in problems[f"{source}:2"] and 'answer_type "number"' in problems[f"{source}:2"]
    assert "the same answer" in problems[f"{source}:3"]


@pytest.mark.parametrize("method", ["grpo", "dpo"])
def test_data_check_names_bad_rl_records(method, videos, tiny_model_dir, tmp_path):
    question = {"from": "human", "value": "<video>\nWhich way?"}
    if method == "grpo":
        rows = [{"id": "ok", "video": ["b.mp4"], "conversations": [question, {"from": "gpt", "value": "left"}]},
                {"id": "bad", "video": ["b.mp4"], "answer_type": "choice",
                 "conversations": [question, {"from": "gpt", "value": "left"}]},
                {"id": "open", "video": ["b.mp4"], "conversations": [question]}]
        wanted = {2: ['answer_type "choice"', "no option letter", "Fix the answer or the answer_type"],
                  3: ["no reference answer", "End the conversation with the expected answer"]}
    else:
        rows = [{"id": "ok", "video": ["b.mp4"], "conversations": [question], "chosen": "left", "rejected": "up"},
                {"id": "bad", "video": ["b.mp4"], "conversations": [question], "chosen": "left", "rejected": 3},
                {"id": "gone", "video": ["nope.mp4"], "conversations": [question], "chosen": "a", "rejected": "b"}]
        wanted = {2: ['"rejected" is a int', "Add it"], 3: ["not found", "fix the path"]}
    data = _lines(tmp_path / f"{method}.jsonl", rows)
    result = check_data([data], model=tiny_model_dir, data_root=videos, out_dir=tmp_path / "check", workers=0,
                        max_length=4096, progress=False, method=method)
    assert result.report["method"] == method and result.ok == 1 and result.samples[0]["id"] == "ok"
    assert result.samples[0]["visual_tokens"] > 0 and result.samples[0]["frames"] > 0
    bad = {row["line"]: row for row in result.bad}
    assert sorted(bad) == [2, 3] and all(row["file"] == str(data) for row in bad.values())
    for line, words in wanted.items():
        assert all(word in bad[line]["reason"] for word in words), bad[line]["reason"]


# --- data plan for grpo and dpo ------------------------------------------------------------------


def test_plan_memory_of_grpo_and_dpo_by_hand():
    from vidlab.data.plan_memory import GIB, Setup, estimate
    from vidlab.data.plan_model import Architecture

    arch = Architecture(source="hand", hidden=100, intermediate=300, layers=2, heads=4, kv_heads=2, vocab=1000,
                        vision_hidden=10, vision_intermediate=20, vision_layers=1,
                        parameters={"vision": 1000, "projector": 100, "llm": 10000}, llm_linear=8000,
                        largest_layer=4000, lora=500, modules_to_save=0)
    sft = Setup(method="lora", tokens=10, label_tokens=4, vision_tokens=6, grad_accum=3)
    grpo = sft.but(rl="grpo", batch_size=8)
    a, b = estimate(arch, sft, 8), estimate(arch, grpo, 8)
    # 8 rows: 8 x the answer positions' logits and the hidden states (the head runs at the answers only).
    assert b.logits == 8 * (4 * 1000 * 14 + 10 * 100 * 6)
    assert b.activations == 8 * a.activations  # LLM activations grow with the rows...
    assert b.vision == a.vision  # ...the video is encoded once for all of them
    # Sampling: the KV cache of 8 rows x 10 tokens (2 x layers x kv_heads x head 25 x bf16), a step's logits, and
    # the gradients accumulated from the step's earlier prompts.
    assert b.generation_phase == 2 * 2 * 2 * 25 * 80 * 2 + 8 * 1000 * 8 + b.gradients
    assert b.peak == b.weights + b.optimizer + max(b.forward_phase, b.generation_phase) + GIB
    copy = estimate(arch, grpo.but(reference_copy=True), 8)
    assert copy.weights == b.weights + 11100 * 2  # a frozen reference copy in bf16
    dpo = estimate(arch, sft.but(rl="dpo", batch_size=2), 8)
    assert dpo.generation_phase == 0 and dpo.logits == 2 * (4 * 1000 * 14 + 10 * 100 * 6)


def test_plan_of_the_rl_recipes():
    from vidlab.data.plan import plan_run, render_plan

    root = Path(__file__).resolve().parents[1] / "configs"
    grpo = plan_run(root / "grpo_videollama3_2b.yaml", model="videollama3-2b", gpu_memory=80)
    setup = grpo.setup
    assert (setup.rl, setup.method, setup.batch_size, setup.grad_accum) == ("grpo", "lora", 8, 8)
    assert setup.label_tokens == 512 and setup.tokens == 3072 and not setup.reference_copy and grpo.fits
    assert "generation" in render_plan(grpo) and "8 rows per prompt" in render_plan(grpo)
    tight = plan_run(root / "grpo_videollama3_2b.yaml", model="videollama3-2b", gpu_memory=12,
                     overrides=["train.gradient_checkpointing=false"])
    overrides = [o for change in tight.changes for o in change.overrides]
    assert "grpo.num_generations=4" in overrides and "grpo.weights=qlora" in overrides
    assert "train.batch_size=1" not in overrides  # the rows are the group, not the batch
    full = plan_run(root / "dpo_videollama3_2b.yaml", model="videollama3-2b", overrides=["dpo.weights=full"])
    assert full.setup.rl == "dpo" and full.setup.batch_size == 2 and full.setup.reference_copy
