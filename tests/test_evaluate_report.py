"""report.md for a run and `eval compare` across runs, on predictions written by the test."""

import json
import os
import subprocess
import sys

import pytest

from vidlab.errors import EvaluationError
from vidlab.evaluation.metrics import DEFINITIONS, java_available, score_file
from vidlab.evaluation.report import compare_runs, write_report

METRICS = ["bleu4", "sacrebleu", "rouge_l", "exact_match", "accuracy"]
REFERENCES = {
    "s1": ["a red circle moves to the left"],
    "s2": ["a blue square moves up and stops"],
    "s3": ["two green triangles spin in place"],
}
CHOICE = {"kind": "choice", "options": ["left", "right"], "answer": "A", "references": ["A"]}

needs_java = pytest.mark.skipif(not java_available(), reason="the PTB tokenizer needs Java")


def write_run(folder, predictions: dict[str, str], choice: str, skipped: int = 0):
    folder.mkdir(parents=True)
    rows = [{"id": i, "kind": "open", "prediction": p, "references": REFERENCES[i]} for i, p in predictions.items()]
    rows.append({"id": "mc1", "prediction": choice, **CHOICE, "meta": {"task": "direction"}})
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "skipped.jsonl").write_text("".join(
        json.dumps({"source": f"eval.jsonl:{9 + n}", "id": f"bad{n}", "reason": "clip.mp4: no such file"}) + "\n"
        for n in range(skipped)))
    (folder / "run.json").write_text(json.dumps({"model": "runs/tiny", "data": "eval.jsonl", "format": "records",
                                                 "sampling": {"fps": 1.0, "max_frames": 180}, "max_new_tokens": 8}))
    return folder


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    base = write_run(root / "base", {"s1": "a red circle moves to the left", "s2": "a cat sleeps",
                                     "s3": "two green triangles spin"}, "(B)", skipped=2)
    tuned = write_run(root / "tuned", {"s1": "a red circle moves to the left", "s2": "a blue square moves up",
                                       "s3": "nothing at all"}, "The answer is A")
    for run in (base, tuned):
        score_file(run / "predictions.jsonl", METRICS)
    return base, tuned


@needs_java
def test_report_has_metrics_definitions_counts_samples_and_chart(runs):
    base, _ = runs
    report = write_report(base).read_text()
    metrics = json.loads((base / "metrics.json").read_text())
    assert f"| BLEU-4 | {metrics['bleu4']:.2f} |" in report
    assert f"| Accuracy | {metrics['accuracy']:.2f} |" in report and metrics["accuracy"] == 0.0
    assert "| 4 | 3 | 1 | 2 |" in report  # evaluated, open-ended, multiple choice, skipped
    assert DEFINITIONS["bleu4"] in report and DEFINITIONS["sentence_bleu4"] in report
    assert f"`{metrics['sacrebleu_signature']}`" in report and "PTBTokenizer" in report
    best = report.split("## Best samples")[1].split("## Worst samples")[0]
    worst = report.split("## Worst samples")[1].split("##")[0]
    assert best.index("| s1 | 100.0 |") < best.index("| s3 |")  # identical answer first
    assert "| s2 |" in worst and "| s1 |" not in worst
    assert "| mc1 | A | B | (B) |" in report  # the wrong multiple-choice answer and how it was read
    assert "## Accuracy by task" in report and "| direction | 0.00 | 0 | 1 |" in report
    assert "| eval.jsonl:9 | bad0 | clip.mp4: no such file |" in report
    assert "| model | runs/tiny |" in report and "![metrics](report.png)" in report
    png = (base / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000
    assert not [p for p in base.iterdir() if p.name.startswith(".")]  # no temporary files left


@needs_java
def test_compare_counts_per_sample_wins_and_losses(runs, tmp_path):
    base, tuned = runs
    result = compare_runs([base, tuned], tmp_path)
    versus = result["versus_baseline"][0]
    # s1 tie (identical both times), s2 won, s3 lost, mc1 won (wrong -> right).
    assert (versus["common"], versus["wins"], versus["losses"], versus["ties"]) == (4, 2, 1, 1)
    assert [g["id"] for g in versus["biggest_gains"]] == ["mc1", "s2"]
    assert [g["id"] for g in versus["biggest_losses"]] == ["s3"]
    base_metrics = json.loads((base / "metrics.json").read_text())
    tuned_metrics = json.loads((tuned / "metrics.json").read_text())
    assert result["metrics"]["accuracy"] == [0.0, 100.0]
    markdown = (tmp_path / "comparison.md").read_text()
    delta = tuned_metrics["bleu4"] - base_metrics["bleu4"]
    assert f"| BLEU-4 | {base_metrics['bleu4']:.2f} | {tuned_metrics['bleu4']:.2f} | {delta:+.2f} |" in markdown
    assert "| tuned | 4 | 2 | 1 | 1 |" in markdown
    assert json.loads((tmp_path / "comparison.json").read_text())["versus_baseline"][0]["wins"] == 2
    assert (tmp_path / "comparison.png").read_bytes().startswith(b"\x89PNG")

    cli = subprocess.run(
        [sys.executable, "-m", "vidlab.evaluation.cli", "compare", str(base), str(tuned), "--out", str(tmp_path / "c")],
        capture_output=True, text=True, timeout=120, env={**os.environ},
    )
    assert cli.returncode == 0, cli.stderr
    assert "| tuned | 4 | 2 | 1 | 1 |" in cli.stdout and (tmp_path / "c" / "comparison.md").is_file()


def test_compare_needs_scored_runs(tmp_path):
    (tmp_path / "a").mkdir()
    with pytest.raises(EvaluationError, match=r"a: no metrics.json\. Score it first: vidlab eval score"):
        compare_runs([tmp_path / "a", tmp_path / "a"], tmp_path)
    with pytest.raises(EvaluationError, match="at least two run folders"):
        compare_runs([tmp_path / "a"], tmp_path)


@needs_java
def test_report_says_when_java_is_missing(tmp_path, monkeypatch):
    run = write_run(tmp_path / "nojava", {"s1": "a red circle moves left", "s2": "a blue square", "s3": "x"}, "A")
    monkeypatch.setenv("PATH", str(tmp_path))
    scored = score_file(run / "predictions.jsonl")  # all metrics, METEOR included
    assert "meteor" not in scored and "bleu4" in scored and "cider" in scored
    report = write_report(run).read_text()
    assert "**Not computed:**" in report and "- METEOR: left out: METEOR runs on Java" in report
    assert "Treebank" in report and "| METEOR |" not in report
