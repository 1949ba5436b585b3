"""vidlab data check: every kind of bad record with its file:line, the sizes of the usable ones, the budget,
duplicates, the cache, cleaned copies, a hanging and a crashing decode, the config's settings, the command."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import gradient_frames
from PIL import Image
from typer.testing import CliRunner

from vidlab.data.check import check_data
from vidlab.errors import VidlabError
from vidlab.media.writer import write_video
from vidlab.training.config import load_config

ASK = {"from": "human", "value": "<video>\nWhat happens?"}
ANSWER = {"from": "gpt", "value": "A pattern slides left."}

# (id, record or raw line, the kind the check must report or None for a usable record)
CASES = [
    ("short", {"video": ["short.mp4"], "conversations": [ASK, ANSWER]}, None),
    ("long", {"video": ["long.mp4"], "conversations": [ASK, ANSWER]}, None),
    ("picture", {"image": ["picture.png"], "conversations": [
        {"from": "human", "value": "<image>\nWhat is this?"}, {"from": "gpt", "value": "Noise."}]}, None),
    ("text", {"conversations": [{"from": "human", "value": "Say yes."}, {"from": "gpt", "value": "yes"}]}, None),
    ("missing", {"video": ["gone.mp4"], "conversations": [ASK, ANSWER]}, "missing"),
    ("broken", {"video": ["broken.mp4"], "conversations": [ASK, ANSWER]}, "undecodable"),
    ("cut", {"video": ["cut.mp4"], "conversations": [ASK, ANSWER]}, "truncated"),
    ("no-placeholder", {"video": ["short.mp4"], "conversations": [
        {"from": "human", "value": "What happens?"}, ANSWER]}, "wrong placeholders"),
    ("empty", {"video": ["short.mp4"], "conversations": [ASK, {"from": "gpt", "value": "  "}]}, "empty turns"),
    ("types", {"video": [7], "conversations": [ASK, ANSWER]}, "wrong field types"),
    ("order", {"video": ["short.mp4"], "conversations": [ASK, {"from": "human", "value": "And?"}]}, "bad turns"),
    ("question-only", {"video": ["short.mp4"], "conversations": [ASK]}, "no answer"),
    ("backwards", {"video": ["short.mp4"], "start": 5.0, "end": 1.0, "conversations": [ASK, ANSWER]}, "clip window"),
    ("late", {"video": ["short.mp4"], "start": 5.0, "conversations": [ASK, ANSWER]}, "clip window"),
    ("thin", {"image": ["thin.png"], "conversations": [
        {"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A line."}]}, "unusable media"),
    ("wordy", {"conversations": [{"from": "human", "value": "word " * 150}, {"from": "gpt", "value": "yes"}]},
     "over budget"),
    ("short", {"video": ["short.mp4"], "conversations": [ASK, ANSWER]}, "duplicate"),
    ("torn", '{"video": ["short.mp4"], "conversations": [', "not json"),
    ("no-turns", {"video": ["short.mp4"], "conversations": []}, "empty conversation"),
]
MAX_LENGTH = 100  # fits "short" (44 tokens) as it is; "long" (116) only with smaller frames; never "wordy"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Videos, images and one annotation file holding every case (line n = CASES[n - 1])."""
    root = tmp_path_factory.mktemp("check")
    write_video(root / "short.mp4", gradient_frames(20), fps=10)  # 2 s
    write_video(root / "long.mp4", gradient_frames(80), fps=10, faststart=True)  # 8 s, index first
    whole = (root / "long.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(whole[: int(len(whole) * 0.6)])  # a download that stopped
    (root / "broken.mp4").write_bytes(b"this is not a video" * 64)
    Image.fromarray(gradient_frames(1, 56, 56)[0]).save(root / "picture.png")
    Image.new("RGB", (600, 2)).save(root / "thin.png")  # an aspect ratio the processor refuses
    lines = [case if isinstance(case, str) else json.dumps({"id": name, **case}) for name, case, _ in CASES]
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def checked(data, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("check_out")
    return check_data([data / "train.jsonl"], model=tiny_model_dir, out_dir=out, max_length=MAX_LENGTH,
                      cleaned=True, progress=False)


def test_every_kind_of_bad_record_is_named_with_its_line(checked, data):
    expected = [(line, name, kind) for line, (name, _, kind) in enumerate(CASES, start=1) if kind is not None]
    found = [(row["line"], row["id"], row["kind"]) for row in checked.bad]
    assert found == [(line, None if kind == "not json" else name, kind) for line, name, kind in expected]
    assert all(row["file"] == str(data / "train.jsonl") for row in checked.bad)
    reasons = {row["kind"]: row["reason"] for row in checked.bad}
    assert reasons["missing"].startswith(f"video not found: {data / 'gone.mp4'}")
    assert "start 5.0s is at or after the end of the video (the video runs 0-2.00s)" in reasons["clip window"]
    assert "the video's frames end at" in reasons["truncated"] and "cut short" in reasons["truncated"]
    assert reasons["duplicate"] == f"the same conversation and media as {data / 'train.jsonl'}:1; drop one"
    assert reasons["over budget"].startswith("over budget: ")
    on_disk = [json.loads(line) for line in (checked.out_dir / "bad.jsonl").read_text().splitlines()]
    assert on_disk == checked.bad


def test_the_sizes_of_the_usable_samples(checked):
    by_id = {s["id"]: s for s in checked.samples}
    assert list(by_id) == ["short", "long", "picture", "text"]
    # 1 fps from 2 s and 8 s of video; 64x64 frames are 2x2 blocks of 28 px (4 tokens), every block changes.
    assert (by_id["short"]["duration"], by_id["short"]["frames"], by_id["short"]["visual_tokens"]) == (2.0, 2, 8)
    assert by_id["short"]["shrunk"] is None
    # 8 frames x 4 tokens + its text do not fit 100 tokens: the frames got smaller (the budget never cuts).
    assert by_id["long"]["duration"] == 8.0 and by_id["long"]["visual_tokens_before_pruning"] < 32
    assert by_id["long"]["shrunk"] and by_id["long"]["total_tokens"] <= MAX_LENGTH
    assert by_id["picture"]["frames"] is None and by_id["picture"]["visual_tokens"] == 16  # 56x56 in 14 px patches
    assert by_id["text"]["visual_tokens"] == 0 and by_id["text"]["duration"] is None
    for sample in checked.samples:
        assert sample["total_tokens"] == sample["visual_tokens"] + sample["text_tokens"]

    report = checked.report
    assert (report["records"], report["ok"], report["bad"]) == (len(CASES), 4, len(CASES) - 4)
    assert report["budget"] == {"model_max_length": MAX_LENGTH, "shrunk": 1, "skipped": 1}
    assert report["stats"]["duration"] == {"count": 2, "min": 2.0, "mean": 5.0, "p50": 5.0, "p90": 7.4, "p95": 7.7,
                                           "p99": 7.94, "max": 8.0}
    assert report["longest"]["total_tokens"] == max(s["total_tokens"] for s in checked.samples)
    assert report["duplicates"]["records"] == 1 and report["duplicates"]["shared_ids"] == 1
    assert json.loads((checked.out_dir / "check.json").read_text()) == report
    assert checked.histograms.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_cleaned_copy_keeps_the_usable_records_as_they_were(checked, data):
    assert checked.cleaned == [data / "train.clean.jsonl"]
    kept = [json.loads(line) for line in checked.cleaned[0].read_text().splitlines()]
    assert [r["id"] for r in kept] == ["short", "long", "picture", "text"]
    assert kept[2] == {"id": "picture", **CASES[2][1]}


def test_a_rerun_reads_the_cache_and_rechecks_what_changed(checked, data, tiny_model_dir):
    again = check_data([data / "train.jsonl"], model=tiny_model_dir, out_dir=checked.out_dir,
                       max_length=MAX_LENGTH, progress=False)
    # Read and decoded (so cached): the usable four, broken, cut, late, thin, wordy; the rest fail when read.
    decoded = 9
    assert again.report["cached"] == decoded
    assert again.bad == checked.bad and again.samples == checked.samples

    os.utime(data / "short.mp4", ns=(time.time_ns(), time.time_ns()))  # the same bytes, a new modification time
    changed = check_data([data / "train.jsonl"], model=tiny_model_dir, out_dir=checked.out_dir,
                         max_length=MAX_LENGTH, progress=False)
    assert changed.report["cached"] == decoded - 2  # "short" and "late" use that file
    other_budget = check_data([data / "train.jsonl"], model=tiny_model_dir, out_dir=checked.out_dir,
                              max_length=4096, progress=False)
    assert other_budget.report["cached"] == 0 and other_budget.report["budget"]["skipped"] == 0


def test_the_config_decides_files_settings_and_budget(data, tiny_model_dir, tmp_path):
    config = load_config(None, [f"model.path={tiny_model_dir}", f"data.train=[{data / 'train.jsonl'}]",
                                "data.max_frames=1", "data.model_max_length=4096", f"output.dir={tmp_path}",
                                "learning_rates.llm=1e-4"], check_paths=False)
    result = check_data(config=config, out_dir=tmp_path / "out", progress=False)
    assert {s["id"]: s["frames"] for s in result.samples if s["frames"] is not None} == {"short": 1, "long": 1}
    assert result.report["model_max_length"] == 4096 and result.report["settings"]["max_frames"] == 1
    with pytest.raises(VidlabError, match="needs the model's processor"):
        check_data([data / "train.jsonl"], out_dir=tmp_path / "none")


def fifo_record(root: Path) -> Path:
    """A "video" whose read blocks forever (a named pipe nobody writes to), as on a stalled network mount."""
    os.mkfifo(root / "stalled.mp4")
    rows = [{"id": "stalled", "video": ["stalled.mp4"], "conversations": [ASK, ANSWER]},
            {"id": "fine", "video": ["short.mp4"], "conversations": [ASK, ANSWER]}]
    write_video(root / "short.mp4", gradient_frames(20), fps=10)
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_hanging_decode_is_one_bad_record_not_a_hung_check(tmp_path, tiny_model_dir):
    path = fifo_record(tmp_path)
    result = check_data([path], model=tiny_model_dir, out_dir=tmp_path / "out", workers=1, timeout=2,
                        progress=False)
    assert [(row["id"], row["kind"]) for row in result.bad] == [("stalled", "timeout")]
    assert "still running after 2 s" in result.bad[0]["reason"]
    assert [s["id"] for s in result.samples] == ["fine"]  # the worker was replaced and went on
    cached = [json.loads(line) for line in (tmp_path / "out" / "cache.jsonl").read_text().splitlines()]
    assert len(cached) == 1  # a timeout is tried again next time, not remembered


def test_a_crashing_decoder_is_one_bad_record(tmp_path, tiny_model_dir):
    path = fifo_record(tmp_path)
    import multiprocessing

    def crash_the_worker() -> None:  # what a decoder's segfault does to the process decoding the file
        # Opening a pipe's write end without blocking fails (ENXIO) until a reader has it open: then the worker is
        # at the stalled file. The write end stays open, unwritten, so that its read goes on waiting.
        deadline, writer = time.monotonic() + 60, None
        while writer is None and time.monotonic() < deadline:
            try:
                writer = os.open(tmp_path / "stalled.mp4", os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.05)
        for child in multiprocessing.active_children():
            os.kill(child.pid, signal.SIGSEGV)
        if writer is not None:
            os.close(writer)

    killer = threading.Thread(target=crash_the_worker)
    killer.start()
    result = check_data([path], model=tiny_model_dir, out_dir=tmp_path / "out", workers=1, timeout=60,
                        progress=False)
    killer.join()
    assert [(row["id"], row["kind"]) for row in result.bad] == [("stalled", "crashed")]
    assert "killed by signal SIGSEGV" in result.bad[0]["reason"]
    assert [s["id"] for s in result.samples] == ["fine"]


def test_the_command_prints_the_summary_and_fails_when_strict(data, tiny_model_dir, tmp_path):
    from vidlab.cli import app

    args = ["data", "check", str(data / "train.jsonl"), "--model", str(tiny_model_dir), "--out", str(tmp_path),
            "--max-length", str(MAX_LENGTH), "--no-progress"]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 0, done.output
    assert f"checked {len(CASES)} records in" in done.output and f"4 usable, {len(CASES) - 4} bad" in done.output
    assert f"{data / 'train.jsonl'}:5  missing: video not found" in done.output  # the path as given
    assert f"... {len(CASES) - 4 - 10} more in" in done.output
    assert f"model_max_length {MAX_LENGTH}: 1 sample(s) would be shrunk (smaller or fewer frames), 1 skipped" in \
        done.output
    assert CliRunner().invoke(app, [*args, "--strict"]).exit_code == 1


def test_a_json_list_on_one_line_keeps_each_record_apart(data, tiny_model_dir, tmp_path, monkeypatch):
    # As json.dump writes it (Video-ChatGPT's training json): every record on line 1.
    listed = tmp_path / "conv" / "train.json"
    listed.parent.mkdir()
    rows = [{"id": "one", "video": ["short.mp4"], "conversations": [ASK, ANSWER]},
            {"id": "bad", "video": ["gone.mp4"], "conversations": [ASK, ANSWER]},
            {"id": "two", "image": ["picture.png"], "conversations": CASES[2][1]["conversations"]}]
    listed.write_text(json.dumps(rows))
    result = check_data([listed], model=tiny_model_dir, data_root=data, out_dir=tmp_path / "out",
                        max_length=MAX_LENGTH, cleaned=True, workers=0, progress=False)
    assert [(row["id"], row["line"], row["index"], row["kind"]) for row in result.bad] == [("bad", 1, 1, "missing")]
    assert [(s["id"], s["index"]) for s in result.samples] == [("one", 0), ("two", 2)]
    kept = [json.loads(line) for line in result.cleaned[0].read_text().splitlines()]
    assert kept == [rows[0], rows[2]]  # only the bad record is gone, though all three share line 1

    from vidlab.cli import app

    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(app, ["data", "check", "conv/train.json", "--model", str(tiny_model_dir),
                                    "--data-root", str(data), "--out", str(tmp_path / "out"),
                                    "--max-length", str(MAX_LENGTH), "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "  conv/train.json:1 (record 2)  missing: video not found" in done.output
