"""Benchmarks answered by the tiny model: one benchmark through `vidlab.evaluate(..., benchmark=...)`, every
benchmark under a root with one summary (`--benchmark all`), compare across runs; and the CLI's own parts."""

import json
import shutil
from pathlib import Path

import pytest
from conftest import gradient_frames
from typer.testing import CliRunner

import vidlab
from vidlab.errors import EvaluationError
from vidlab.evaluation.cli import eval_app
from vidlab.evaluation.report import compare_runs
from vidlab.evaluation.run import RunOptions
from vidlab.evaluation.suite import check_benchmarks, evaluate_benchmarks
from vidlab.media.writer import write_video
from vidlab.settings import GenerationOptions

FAST = RunOptions(generation=GenerationOptions(max_new_tokens=4), progress=False, workers=0)


def put(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, Path):
        shutil.copy(data, path)
    else:
        path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """benchmarks/video/ as VideoLLaMA3's README lays it out: MVBench and Charades-STA ready, EgoSchema without
    its videos."""
    base = tmp_path_factory.mktemp("benchmarks") / "video"
    clip = write_video(base.parent / "clip.mp4", gradient_frames(6, 32, 32), fps=2)
    put(base / "mvbench/json/action_antonym.json", [
        {"video": "1.webm", "question": "What is the action?", "candidates": ["pushing", "pulling"],
         "answer": "pulling"},
        {"video": "1.webm", "question": "Which way?", "candidates": ["left", "right", "up"], "answer": "left"}])
    put(base / "mvbench/video/ssv2_video/1.webm", clip)
    put(base / "charades/charades_sta_test.txt", "3MSZA 0.5 2.0##a square moves.\n")
    put(base / "charades/Charades_v1_480/3MSZA.mp4", clip)
    put(base / "egoschema/questions.json", [{"q_uid": "q0", "question": "?", **{f"option {i}": "x" for i in range(5)}}])
    return base


def test_one_benchmark_end_to_end_and_resume(tiny_model, root, tmp_path):
    out = tmp_path / "mvbench"
    result = vidlab.evaluate(tiny_model, root / "mvbench", out, benchmark="mvbench", options=FAST)
    assert (result.records, result.predictions, result.answered) == (2, 2, 2)
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["scoring"] for r in rows] == [{"benchmark": "mvbench", "reader": "mvbench"}] * 2
    assert rows[0]["media"] == ["video/ssv2_video/1.webm"] and rows[0]["meta"] == {"task": "Action Antonym"}
    section = result.metrics["benchmark"]
    assert section["name"] == "mvbench" and set(section["tables"]["task"]) == {"Action Antonym"}
    # The accuracy is what VideoLLaMA3's reader makes of the tiny model's answers, each listed when unreadable.
    expected = [r["scores"]["choice"] == r["answer"] for r in rows]
    assert result.metrics["accuracy"] == pytest.approx(100 * sum(expected) / 2)
    assert section["unreadable"] == [r["id"] for r in rows if r["scores"]["choice"] is None]
    info = json.loads((out / "run.json").read_text())
    assert (info["format"], info["split"]) == ("mvbench", "test")
    assert "## MVBench" in result.report.read_text()
    again = vidlab.evaluate(tiny_model, root / "mvbench", out, benchmark="mvbench", options=FAST)
    assert again.answered == 0 and again.predictions == 2
    with pytest.raises(EvaluationError, match="has no split 'val'"):
        vidlab.evaluate(tiny_model, root / "mvbench", out, benchmark="mvbench", split="val", options=FAST)


def test_all_benchmarks_under_a_root_with_one_summary(tiny_model, root, tmp_path):
    out = tmp_path / "all"
    suite = evaluate_benchmarks(tiny_model, root.parent, out, options=FAST)  # finds benchmarks/video/<name>
    runs = {r["name"]: r for r in suite.runs}
    assert list(runs) == ["charades_sta", "egoschema", "mvbench"]
    assert runs["charades_sta"]["records"] == 1 and set(runs["charades_sta"]["headline"]) == {
        "miou", "r1@0.3", "r1@0.5", "r1@0.7"}
    assert "good_clips_git/ or" in runs["egoschema"]["error"]  # the others still ran
    summary = (out / "summary.md").read_text()
    assert "| [mvbench](mvbench/report.md) | MVBench | test | 2 |" in summary
    assert json.loads((out / "summary.json").read_text())["runs"] == json.loads(json.dumps(suite.runs))
    compared = compare_runs([out / "mvbench", out / "charades_sta"], tmp_path / "compare")
    assert set(compared["metrics"]) >= {"accuracy", "miou"}
    assert compared["metrics"]["miou"][0] is None  # MVBench has no mIoU: shown as "-"


def test_check_benchmarks_reports_ready_missing_and_broken(root, tmp_path):
    checks = {c.name: c for c in check_benchmarks(root, ["mvbench", "egoschema", "lvbench"])}
    assert checks["mvbench"].ready and checks["mvbench"].records == 2 and checks["mvbench"].missing_media == 0
    assert not checks["egoschema"].ready and "good_clips_git" in checks["egoschema"].error
    assert checks["lvbench"].folder is None and "no folder" in checks["lvbench"].error
    put(tmp_path / "mvbench/json/action_antonym.json", [{"video": "gone.webm", "question": "?",
                                                          "candidates": ["a", "b"], "answer": "a"}])
    (tmp_path / "mvbench/video").mkdir()
    (missing,) = check_benchmarks(tmp_path, ["mvbench"])
    assert missing.missing_media == 1 and missing.first_missing.endswith("video/ssv2_video/gone.webm")


def test_cli_benchmarks_listing_and_root_check(root):
    runner = CliRunner()
    listed = runner.invoke(eval_app, ["benchmarks", "youcook2"])
    assert listed.exit_code == 0 and "youcook2 - YouCook2 (captioning (by segment)); splits: val" in listed.output
    assert "raw_videos/validation/<recipe_type>/<id>.mp4" in listed.output
    assert "lmms-eval's youcook2_val" in listed.output
    checked = runner.invoke(eval_app, ["benchmarks", "mvbench", "egoschema", "--root", str(root)])
    assert checked.exit_code == 0
    assert f"mvbench          ready: 2 questions in {root / 'mvbench'}" in checked.output
    assert "egoschema        not ready:" in checked.output


def flat(output: str) -> str:
    """CLI output without the error box's borders and line breaks."""
    return " ".join(output.replace("│", " ").split())


def test_cli_run_needs_data_or_a_benchmark_with_its_root(root, tmp_path):
    runner = CliRunner()
    both = runner.invoke(eval_app, ["run", "--model", "m", "--out", str(tmp_path), "--data", "x.jsonl",
                                    "--benchmark", "mvbench", "--root", str(root)])
    assert both.exit_code == 2 and "give --data FILE, or --benchmark NAME (or all) with --root DIR" in flat(both.output)
    no_root = runner.invoke(eval_app, ["run", "--model", "m", "--out", str(tmp_path), "--benchmark", "mvbench"])
    assert no_root.exit_code == 2
    half_judge = runner.invoke(eval_app, ["score", str(tmp_path / "p.jsonl"), "--judge-url", "http://x/v1"])
    assert half_judge.exit_code == 2 and "give both --judge-url and --judge-model" in flat(half_judge.output)
