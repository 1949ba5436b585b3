"""The Results tab's reading of eval folders (no model, no browser): the same wins and losses as `vidlab eval
compare`, sorting and filtering, missing files, and the media helpers the page uses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from web_support import scored_run, write_clip

from vidlab.errors import EvaluationError, MediaError
from vidlab.evaluation.report import compare_runs
from vidlab.web.media import check_size, frame_marks, frames_at, inside, media_choice_parts
from vidlab.web.results import find_results, open_results

ANSWERS = {  # id: (reference, base prediction, tuned prediction, task)
    "s1": ("left", "a red circle moves left", "left", "direction"),
    "s2": ("up", "up", "up", "direction"),
    "s3": ("down", "down", "left", "direction"),
    "s4": ("a blue square moves right", "a blue square moves right", "right", "caption"),
    "s5": ("right", "a shape", "right", "direction"),
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("web-results")
    data = root / "data"
    write_clip(data / "clips" / "s1.mp4")
    base = scored_run(root / "eval" / "base", data, [
        {"id": i, "prediction": b, "references": [ref], "task": task, "media": [f"clips/{i}.mp4"]}
        for i, (ref, b, _, task) in ANSWERS.items()])
    tuned = scored_run(root / "eval" / "tuned", data, [
        {"id": i, "prediction": t, "references": [ref], "task": task, "media": [f"clips/{i}.mp4"]}
        for i, (ref, _, t, task) in ANSWERS.items()])
    compared = compare_runs([base, tuned], root / "eval" / "nested" / "compare")
    return root, base, tuned, compared


def test_runs_line_up_as_eval_compare_counts_them(runs):
    root, base, tuned, compared = runs
    found = {f.path.name: f.kind for f in find_results(root / "eval")}
    assert found == {"base": "run", "tuned": "run", "compare": "comparison"}

    together = open_results([base, tuned])
    from_folder = open_results([root / "eval" / "nested" / "compare"])
    expected = compared["versus_baseline"][0]
    for results in (together, from_folder):
        assert results.names == ["base", "tuned"]
        versus = results.versus()[0]
        assert (versus["wins"], versus["losses"], versus["ties"], versus["common"]) == \
            (expected["wins"], expected["losses"], expected["ties"], expected["common"])
    header, rows = together.metric_table()
    metrics = json.loads((tuned / "metrics.json").read_text())
    exact = next(row for row in rows if row[0] == "Exact match")
    assert header[:3] == ["metric", "base", "tuned"]
    assert exact[2] == round(metrics["exact_match"], 2)


def test_sorted_and_filtered_samples(runs):
    _, base, tuned, compared = runs
    results = open_results([base, tuned])
    gains = results.samples(sort="-delta:tuned")
    assert gains[0].id == compared["versus_baseline"][0]["biggest_gains"][0]["id"]
    deltas = [r.deltas[0] for r in gains]
    assert deltas == sorted(deltas, reverse=True)
    assert [r.id for r in results.samples(sort="delta:tuned")][0] == "s3"  # the one tuned got wrong
    wins = {r.id for r in results.samples(outcome="win:tuned")}
    assert wins == {"s1", "s5"}
    assert {r.id for r in results.samples(outcome="loss:tuned")} == {"s3", "s4"}
    assert [r.id for r in results.samples(task="caption")] == ["s4"]
    assert [r.id for r in results.samples(search="A SHAPE")] == ["s5"]
    assert results.tasks() == ["caption", "direction"]
    scores = [r.scores[1] for r in results.samples(sort="-score:tuned")]
    assert scores == sorted(scores, reverse=True)


def test_sample_detail_finds_its_video_and_every_run(runs):
    root, base, tuned, _ = runs
    sample = open_results([base, tuned]).sample("s1")
    assert sample["media"] == [root / "data" / "clips" / "s1.mp4"]
    assert [run["row"]["prediction"] for run in sample["runs"]] == ["a red circle moves left", "left"]
    assert sample["runs"][1]["score"] == pytest.approx(100.0) and sample["references"] == ["left"]
    frames, stamps = frames_at(sample["media"][0], sample["settings"], sample["frames"])
    assert stamps == [0.0, 1.0, 2.0, 3.0] and frames[0].shape[2] == 3
    marks = frame_marks(stamps, 4.0)
    assert [m["timestamp"][0] for m in marks] == stamps and "Time 2.0s" in marks[2]["text"]
    with pytest.raises(EvaluationError, match="none of the open runs"):
        open_results([base]).sample("nope")


def test_missing_and_broken_files_are_reported_not_raised(runs, tmp_path):
    root, base, tuned, _ = runs
    no_predictions = shutil.copytree(tuned, tmp_path / "no-predictions")
    (no_predictions / "predictions.jsonl").unlink()
    results = open_results([base, no_predictions])
    assert any("predictions.jsonl: missing" in p for p in results.problems)
    assert results.metric_table()[1] and results.samples()[0].scores[1] is None

    torn = shutil.copytree(base, tmp_path / "torn")
    with open(torn / "predictions.jsonl", "a") as out:
        out.write('{"id": "s9", "predic')  # a writer killed mid-line
    assert len(open_results([torn]).samples()) == len(ANSWERS)
    broken = shutil.copytree(base, tmp_path / "broken")
    (broken / "metrics.json").write_text("{not json")
    assert any("not readable JSON" in p for p in open_results([broken]).problems)

    moved, gone = tmp_path / "compare-moved", shutil.copytree(tuned, tmp_path / "gone")
    compare_runs([base, gone], moved)
    shutil.rmtree(gone)
    results = open_results([moved])
    assert results.names == ["base"] and any("not found" in p and "gone" in p for p in results.problems)
    with pytest.raises(EvaluationError, match="neither an eval run"):
        open_results([tmp_path])
    with pytest.raises(EvaluationError, match="opens alone"):
        open_results([moved, base])


def test_media_choices_and_limits(tmp_path):
    video, images = media_choice_parts([tmp_path / "a.MP4"])
    assert video == tmp_path / "a.MP4" and images == ()
    assert media_choice_parts([tmp_path / "a.png", tmp_path / "b.jpg"])[1] == (tmp_path / "a.png", tmp_path / "b.jpg")
    with pytest.raises(MediaError, match="notes.txt: not a video"):
        media_choice_parts([tmp_path / "notes.txt"])
    with pytest.raises(MediaError, match="one video, or one or more images"):
        media_choice_parts([tmp_path / "a.mp4", tmp_path / "b.png"])
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * 3 * 2**20)
    with pytest.raises(MediaError, match="3.0 MiB is over the page's upload limit of 2 MiB"):
        check_size(big, 2 * 2**20)
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "in.mp4").write_bytes(b"x")
    assert inside(tmp_path / "root", "in.mp4") == (tmp_path / "root" / "in.mp4").resolve()
    with pytest.raises(MediaError, match="not a file under the media root"):
        inside(tmp_path / "root", "../big.mp4")


def test_command_line_errors_are_one_line(tmp_path):
    import subprocess
    import sys

    from vidlab.errors import VidlabError
    from vidlab.web.app import make_backend
    from vidlab.web.cli import parse_adapters
    from vidlab.web.options import quickstart_paths

    assert parse_adapters(["tuned=runs/lora", "runs/other"]) == {"tuned": Path("runs/lora"),
                                                                 "other": Path("runs/other")}
    with pytest.raises(VidlabError, match="given twice"):
        parse_adapters(["a=x", "a=y"])
    with pytest.raises(VidlabError, match="not a quickstart folder"):
        quickstart_paths(tmp_path)
    with pytest.raises(VidlabError, match="not both"):
        make_backend(model="m", api="http://127.0.0.1:9")
    with pytest.raises(VidlabError, match="--adapter needs --model"):
        make_backend(adapters={"a": tmp_path})
    done = subprocess.run([sys.executable, "-m", "vidlab.cli", "web", "--runs", str(tmp_path / "missing")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == f"error: --runs {tmp_path / 'missing'}: no such folder. Give an " \
        "existing folder."


def test_chart_gives_each_metric_its_axis_and_the_prediction_column_says_whose(runs, tmp_path):
    from PIL import Image

    from vidlab.web.results_tab import chart_file, sample_table

    _, base, tuned, _ = runs
    results = open_results([base, tuned])
    chart = chart_file(results, tmp_path)
    header, rows = results.metric_table()
    assert Image.open(chart).format == "PNG" and chart.startswith(str(tmp_path))
    assert chart_file(results, tmp_path) == chart, "drawn once per set of values"
    table = sample_table(results, "all", "", "", "file")
    assert table.columns[-1] == "prediction of tuned"
    assert list(table["prediction of tuned"]) == [ANSWERS[i][2] for i in ANSWERS]


def test_a_relative_data_root_of_an_older_run_is_found_from_the_run_folder(runs, tmp_path, monkeypatch):
    root, base, _, _ = runs
    old = shutil.copytree(base, tmp_path / "eval" / "old")
    info = json.loads((old / "run.json").read_text())
    (old / "run.json").write_text(json.dumps({**info, "data_root": "data"}))  # relative, as older vidlab wrote
    shutil.copytree(root / "data", tmp_path / "data")
    monkeypatch.chdir(root.parent)  # a folder with no data/ in it
    sample = open_results([old]).sample("s1")
    assert sample["media"] == [tmp_path / "data" / "clips" / "s1.mp4"] and sample["media"][0].is_file()
