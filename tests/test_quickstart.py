"""`vidlab quickstart`: the whole chain on a short setting, its files and claims, resuming, and its parts.

The real quickstart (1,800 training videos, base.yaml's and lora.yaml's step counts) takes minutes;
here the same steps run on 96 training and 24 test videos with fewer steps, and the claims of the
issue are checked in a weaker form calibrated on what this setting reaches.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from vidlab.errors import VidlabError
from vidlab.quickstart import FAST, SUMMARY_KEYS, QuickstartSettings, run_quickstart
from vidlab.quickstart.report import CHECKS, EVAL_LABELS, attribute_accuracy, render_table, run_checks
from vidlab.quickstart.run import STEP_TITLES

# The module's fixture runs a whole short quickstart (minutes on 2 cores; over 10 on a busy machine): a hang
# still fails, but later than the suite's 600 s.
pytestmark = pytest.mark.timeout(1800)

SHORT = replace(FAST, progress=False)  # what `vidlab quickstart --fast` runs
VOCABULARY = {"colour": ["red", "green", "blue"], "shape": ["circle", "square"], "direction": ["left", "right", "up"]}


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart") / "qs"
    lines: list[str] = []
    result = run_quickstart(out, SHORT, echo=lines.append)
    assert result.out_dir == out and result.report == out / "report.md" and result.passed == result.summary["passed"]
    return out, result.summary, lines


def test_quickstart_writes_every_file(quickstart):
    out, summary, lines = quickstart
    for path in ["summary.json", "report.md", "report.png", "quickstart.json", "configs/base.yaml",
                 "configs/lora.yaml", "data/dataset.json", "data/blank.mp4", "data/test.caption.blind.jsonl",
                 "models/init/config.json", "runs/base/train_result.json", "runs/base/model.safetensors",
                 "runs/lora/train_result.json", "runs/lora/adapter_config.json"]:
        assert (out / path).is_file(), path
    for name in EVAL_LABELS:
        for file in ("predictions.jsonl", "metrics.json", "report.md"):
            assert (out / "eval" / name / file).is_file(), f"eval/{name}/{file}"
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    report = (out / "report.md").read_text()
    assert "## Do the same with VideoLLaMA3-2B" in report
    assert "vidlab model convert DAMO-NLP-SG/VideoLLaMA3-2B" in report
    assert "![loss curves and metrics](report.png)" in report
    # One numbered header per step, then the table with a verdict per check.
    assert [line for line in lines if line.startswith("[")] == [
        f"[{n}/{len(STEP_TITLES)}] {title}" for n, title in enumerate(STEP_TITLES.values(), start=1)
    ]
    assert sum(line.startswith(("pass ", "FAIL ")) for line in "\n".join(lines).splitlines()) == len(CHECKS)


def test_summary_has_exactly_the_documented_keys(quickstart):
    _, summary, _ = quickstart
    assert list(summary) == list(SUMMARY_KEYS)
    assert [c["name"] for c in summary["checks"]] == list(CHECKS)
    assert summary["passed"] == all(c["passed"] for c in summary["checks"])
    assert set(summary["evals"]) == set(EVAL_LABELS)
    assert set(summary["commands"]) == set(STEP_TITLES) - {"report"}
    assert set(summary["seconds"]) == set(STEP_TITLES)
    assert summary["total_seconds"] == pytest.approx(sum(summary["seconds"].values()), abs=0.05)
    for run in ("base", "lora"):
        training = summary["training"][run]
        assert training["steps"] == {"base": SHORT.base_steps, "lora": SHORT.lora_steps}[run]
        assert training["final_loss"] < training["first_loss"]
        assert 0 < training["seconds_per_step"] < training["seconds"]


def test_short_quickstart_shows_the_claims_in_a_weaker_form(quickstart):
    _, summary, _ = quickstart
    evals = summary["evals"]
    init, base, blind = (evals[n] for n in ("init_caption", "base_caption", "blind_caption"))
    # The trained base model captions the held-out videos; the untrained one cannot.
    assert init["metrics"]["bleu4"] < 5
    assert base["metrics"]["bleu4"] >= 45  # the full quickstart: >= 60 (this setting gave 61.6)
    assert base["attributes"]["colour"] >= 90  # full: >= 95 (this setting: 100)
    # Without the pictures the same model does much worse: BLEU-4 and colour come from the video.
    assert blind["metrics"]["bleu4"] <= base["metrics"]["bleu4"] / 3  # the full claim as it is
    assert summary["blind_bleu4_ratio"] == pytest.approx(blind["metrics"]["bleu4"] / base["metrics"]["bleu4"])
    assert blind["attributes"]["colour"] < base["attributes"]["colour"] - 30
    # The LoRA step teaches the one-word answer the base model never gives (it answers with a caption).
    before, after = evals["base_direction"]["metrics"]["exact_match"], evals["lora_direction"]["metrics"]["exact_match"]
    assert summary["lora_gain"] == pytest.approx(after - before)
    assert after >= before + 15  # full: + 30 (this setting: + 20.8)


def test_a_printed_command_runs_as_printed_and_gives_the_same_numbers(quickstart, tmp_path):
    out, summary, _ = quickstart
    command = shlex.split(summary["commands"]["lora_direction"])
    assert command[:3] == ["vidlab", "eval", "run"]
    command[command.index("--out") + 1] = str(tmp_path / "again")
    result = subprocess.run([sys.executable, "-m", "vidlab.cli", *command[1:], "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["exact_match"] == summary["evals"]["lora_direction"]["metrics"]["exact_match"]
    # The training commands name the copied configs and parse as they are.
    train = shlex.split(summary["commands"]["base"])
    assert train[2] == str(out / "configs" / "base.yaml")
    result = subprocess.run([sys.executable, "-m", "vidlab.cli", *train[1:], "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"max_steps: {SHORT.base_steps}" in result.stdout


def test_rerun_skips_finished_steps_and_redoes_a_missing_one(quickstart):
    out, summary, _ = quickstart
    trained = (out / "runs" / "base" / "train_result.json").read_bytes()
    lost = out / "eval" / "lora_direction" / "metrics.json"
    lost.unlink()  # as if the run died while scoring the last evaluation
    lines: list[str] = []
    again = run_quickstart(out, SHORT, echo=lines.append).summary
    assert sum("already done: skipped" in line for line in lines) == len(STEP_TITLES) - 2  # all but eval and report
    assert (out / "runs" / "base" / "train_result.json").read_bytes() == trained
    assert lost.is_file()
    assert again["evals"] == summary["evals"]
    assert again["seconds"]["base"] == summary["seconds"]["base"]


def test_a_folder_with_other_settings_or_other_files_is_refused(quickstart, tmp_path):
    out, _, _ = quickstart
    with pytest.raises(VidlabError, match=r"other settings \(settings.seed differ\).*--overwrite"):
        run_quickstart(out, replace(SHORT, seed=1))
    (tmp_path / "mine.txt").write_text("not a quickstart")
    with pytest.raises(VidlabError, match="not a quickstart folder"):
        run_quickstart(tmp_path, SHORT, overwrite=True)
    assert (tmp_path / "mine.txt").is_file()


def test_cli_errors_are_one_line(tmp_path):
    (tmp_path / "mine.txt").write_text("not a quickstart")
    result = subprocess.run([sys.executable, "-m", "vidlab.cli", "quickstart", "--out", str(tmp_path), "--fast"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.startswith("error: ") and "Traceback" not in result.stderr


def test_attribute_accuracy_needs_the_right_word_and_no_other_of_its_kind():
    records = {str(i): {"colour": "red", "shape": "circle", "direction": "left"} for i in range(5)}
    rows = [
        {"id": "0", "prediction": "a red circle moves left"},  # all right
        {"id": "1", "prediction": "A RED circle moves left."},  # case and punctuation do not matter
        {"id": "2", "prediction": "a red or blue circle moves"},  # two colours, no direction
        {"id": "3", "prediction": "a reddish circles moves leftwards"},  # whole words only
        {"id": "4", "prediction": ""},
    ]
    scores = attribute_accuracy(rows, records, VOCABULARY)
    assert scores == {"colour": 40.0, "shape": 60.0, "direction": 40.0, "all": 40.0, "count": 5}
    assert attribute_accuracy([], records, VOCABULARY)["colour"] == 0.0


def test_checks_compare_each_value_with_its_threshold():
    def evals(bleu4, colour, shape, direction):
        return {"base_caption": {"metrics": {"bleu4": bleu4},
                                 "attributes": {"colour": colour, "shape": shape, "direction": direction}}}

    good = run_checks(evals(61, 96, 81, 61), blind_ratio=0.3, lora_gain=31)
    assert all(c["passed"] for c in good)
    bad = run_checks(evals(59, 94, 79, 59), blind_ratio=0.34, lora_gain=29)
    assert not any(c["passed"] for c in bad)
    assert [c["op"] for c in bad] == [">=", ">=", ">=", ">=", "<=", ">="]
    unknown = run_checks(evals(0, 96, 81, 61), blind_ratio=None, lora_gain=None)
    assert [c["name"] for c in unknown if not c["passed"]] == ["base_bleu4", "blind_ratio", "lora_gain"]


def test_table_shows_every_evaluation_and_check(quickstart):
    _, summary, _ = quickstart
    table = render_table(summary)
    for label in EVAL_LABELS.values():
        assert label in table
    assert table.count("\npass ") + table.count("\nFAIL ") == len(CHECKS)


def test_settings_are_checked():
    with pytest.raises(ValueError, match="base_steps"):
        QuickstartSettings(base_steps=0)
    with pytest.raises(ValueError, match="train_videos"):
        QuickstartSettings(train_videos=0)


def test_the_configs_are_found_in_the_checkout():
    from vidlab.quickstart import config_folder

    assert config_folder() == (Path(__file__).resolve().parents[1] / "configs" / "quickstart").resolve()


def test_readme_documents_every_summary_key_and_shows_the_table_layout():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for key, meaning in SUMMARY_KEYS.items():
        assert f"| `{key}` | {meaning} |" in readme, key
    # The table in "Try it" is a real printout: same header and rows as render_table prints.
    shown = readme[readme.index("## Try it"):readme.index("## Commands")]
    assert "evaluation (held-out test set)" in shown and "@@" not in shown
    for label in EVAL_LABELS.values():
        assert label in shown
    assert shown.count("\npass ") + shown.count("\nFAIL ") == len(CHECKS)
