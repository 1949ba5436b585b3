"""vidlab data check at scale: records that share their media are decoded once and measured exactly as
`encode_record` measures each on its own; a video that hangs fails every record using it at once; the
check's memory per record stays small (digests and arrays, not the records)."""

from __future__ import annotations

import json
import os
import tracemalloc
from pathlib import Path

import pytest
from conftest import gradient_frames
from PIL import Image

import vidlab.inputs
import vidlab.record_index
from vidlab.data import check_sample
from vidlab.data.check import check_data
from vidlab.media.writer import write_video
from vidlab.settings import MediaSettings
from vidlab.training.data import load_records

MAX_LENGTH = 120


def ask(text: str, media: str = "<video>\n") -> list[dict]:
    return [{"from": "human", "value": f"{media}{text}"}, {"from": "gpt", "value": f"An answer to {text}"}]


def shared_records() -> list[dict]:
    """Records over a few media files: several questions a video (some windows, some long enough to shrink
    the frames or to be over budget), images, text only, bad media used by several records, a duplicate."""
    rows = []
    for i in range(6):
        rows.append({"video": ["short.mp4"], "conversations": ask(f"What happens, question {i}?")})
        rows.append({"video": ["long.mp4"], "conversations": ask("Describe it. " + "More detail. " * i)})
        rows.append({"image": ["picture.png"], "conversations": ask(f"What is in picture {i}?", "<image>\n")})
        rows.append({"conversations": ask("Say something " * (i + 1), "")})
    rows += [{"video": ["short.mp4"], "start": 0.5, "end": 1.5, "conversations": ask(f"In the window, {i}?")}
             for i in range(3)]
    rows += [{"video": ["long.mp4"], "start": 2.0, "conversations": ask(f"From 2 s on, {i}?")} for i in range(2)]
    rows += [{"video": ["long.mp4"], "conversations": ask("word " * 90)}]  # over budget even at 1 frame
    rows += [{"conversations": ask("word " * 150, "")}]  # text only, over budget
    rows += [{"video": ["broken.mp4"], "conversations": ask(f"Broken {i}?")} for i in range(3)]
    rows += [{"video": ["cut.mp4"], "conversations": ask(f"Cut {i}?")} for i in range(2)]
    rows += [{"video": ["short.mp4"], "start": 5.0, "conversations": ask(f"Too late {i}?")} for i in range(2)]
    rows += [{"video": ["gone.mp4"], "conversations": ask("Missing?")}]
    rows += [dict(rows[0])]  # a duplicate of the first
    return [{"id": f"r{i}", **row} if i < len(rows) - 1 else {"id": "again", **row} for i, row in enumerate(rows)]


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("shared")
    write_video(root / "short.mp4", gradient_frames(20), fps=10)  # 2 s
    write_video(root / "long.mp4", gradient_frames(80), fps=10, faststart=True)  # 8 s
    whole = (root / "long.mp4").read_bytes()
    (root / "cut.mp4").write_bytes(whole[: int(len(whole) * 0.6)])
    (root / "broken.mp4").write_bytes(b"this is not a video" * 64)
    Image.fromarray(gradient_frames(1, 56, 56)[0]).save(root / "picture.png")
    path = root / "train.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in shared_records()))
    return path


def one_by_one(path: Path, model: Path) -> dict[int, dict]:
    """Each usable record measured on its own (`check_sample.measure`: `encode_record`), by index in the file."""
    records, _ = load_records([path])
    check_sample.prepare(str(model), MediaSettings().model_dump_json(), MAX_LENGTH)
    return {record.position.index: check_sample.measure(record) for record in records}


@pytest.mark.parametrize("workers", [0, 1])
def test_records_sharing_media_get_exactly_their_own_sizes(shared, tiny_model_dir, tmp_path, monkeypatch, workers):
    decoded, encoded = [], []
    real_load, real_encode = vidlab.inputs.load_media, vidlab.inputs.encode

    def counting_load(conversation, *args, **kwargs):  # counts decodes in this process (workers=0)
        decoded.append(tuple((p.path, p.start, p.end) for p in conversation.media))
        return real_load(conversation, *args, **kwargs)

    def counting_encode(conversation, *args, **kwargs):  # counts records encoded in full (workers=0)
        encoded.append(conversation.source)
        return real_encode(conversation, *args, **kwargs)

    monkeypatch.setattr(vidlab.inputs, "load_media", counting_load)
    monkeypatch.setattr(vidlab.inputs, "encode", counting_encode)
    result = check_data([shared], model=tiny_model_dir, out_dir=tmp_path / "out", max_length=MAX_LENGTH,
                        workers=workers, progress=False)
    monkeypatch.undo()
    expected = one_by_one(shared, tiny_model_dir)

    bad = {row["index"]: (row["kind"], row["reason"]) for row in result.bad}
    duplicate = len(shared_records()) - 1
    assert bad.pop(duplicate)[0] == "duplicate"
    expected.pop(duplicate)
    found = {row["index"]: {k: v for k, v in row.items() if k not in ("file", "index", "line", "id")}
             for row in result.samples}
    assert found == {i: {k: v for k, v in r.items() if k != "ok"} for i, r in expected.items() if r["ok"]}
    assert {i: bad[i] for i, r in expected.items() if not r["ok"]} == \
        {i: (r["kind"], r["reason"]) for i, r in expected.items() if not r["ok"]}
    kinds = {row["id"]: row["kind"] for row in result.bad}
    assert kinds[f"r{len(shared_records()) - 2}"] == "missing"
    broken = [row["id"] for row in shared_records() if row.get("video") == ["broken.mp4"]]
    assert len(broken) == 3 and {kinds[i] for i in broken} == {"undecodable"}
    # Every kind of outcome is in the set: shrunk frames, over budget (with and without video), bad media.
    assert sum(1 for s in result.samples if s["shrunk"]) >= 2 and result.report["budget"]["skipped"] >= 2
    assert {"undecodable", "truncated", "clip window", "over budget"} <= set(result.report["bad_by_kind"])
    if workers == 0:
        # One decode per distinct (media, clip window), not one per record.
        assert len(decoded) == len(set(decoded)) == 9
        # Records whose sizes came from their text alone (after one of their group matched in full): most.
        assert len(encoded) < result.report["ok"] - 10


def test_a_rerun_from_the_cache_gives_the_same_files(shared, tiny_model_dir, tmp_path):
    first = check_data([shared], model=tiny_model_dir, out_dir=tmp_path, max_length=MAX_LENGTH, workers=2,
                       progress=False)
    files = {name: (tmp_path / name).read_bytes() for name in ("bad.jsonl", "samples.jsonl")}
    again = check_data([shared], model=tiny_model_dir, out_dir=tmp_path, max_length=MAX_LENGTH, workers=2,
                       progress=False)
    assert again.report["cached"] == first.report["ok"] + first.report["bad"] - 2  # not: the duplicate, missing
    assert {name: (tmp_path / name).read_bytes() for name in files} == files
    same = {k: v for k, v in again.report.items() if k not in ("cached", "seconds")}
    assert same == {k: v for k, v in first.report.items() if k not in ("cached", "seconds")}


def test_a_video_that_hangs_fails_every_record_using_it_at_once(tmp_path, tiny_model_dir):
    os.mkfifo(tmp_path / "stalled.mp4")  # a read that blocks forever, as on a stalled network disk
    write_video(tmp_path / "short.mp4", gradient_frames(20), fps=10)
    rows = [{"id": f"stalled-{i}", "video": ["stalled.mp4"], "conversations": ask(f"Stalled {i}?")} for i in range(3)]
    rows.append({"id": "fine", "video": ["short.mp4"], "conversations": ask("Fine?")})
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = check_data([path], model=tiny_model_dir, out_dir=tmp_path / "out", workers=1, timeout=2,
                        progress=False)
    assert [(row["id"], row["kind"]) for row in result.bad] == [(f"stalled-{i}", "timeout") for i in range(3)]
    assert [s["id"] for s in result.samples] == ["fine"]
    assert len((tmp_path / "out" / "cache.jsonl").read_text().splitlines()) == 1  # timeouts are tried again


SIZES = (2_000, 8_000)


def text_record(i: int) -> dict:
    return {"id": f"t{i:06d}", "source": "synthetic",
            "conversations": [{"from": "human", "value": f"Question {i}: what is {i} plus one? Answer in words."},
                              {"from": "gpt", "value": f"It is {i + 1}, one more than {i}."}]}


def test_memory_per_record_stays_small(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDLAB_CACHE_DIR", str(tmp_path / "index-cache"))
    # The record reader reads 4 MiB of text at a time: a fixed cost larger than these files, which would hide
    # what grows with the records. Smaller reads change nothing else.
    monkeypatch.setattr(vidlab.record_index, "_CHUNK", 64 << 10)
    lines = [json.dumps(text_record(i)) for i in range(max(SIZES))]
    for count in (50, *SIZES):
        (tmp_path / f"text-{count}.jsonl").write_text("\n".join(lines[:count]) + "\n")
    # What any check costs once (the processor, matplotlib), paid before memory is traced.
    check_data([tmp_path / "text-50.jsonl"], model=tiny_model_dir, out_dir=tmp_path / "warm", max_length=512,
               workers=0, progress=False)
    os.register_at_fork(after_in_child=tracemalloc.stop)  # the check's own process is measured; workers run untraced
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = [json.loads(line) for line in lines[:2_000]]
    parsed_per_record = (tracemalloc.get_traced_memory()[0] - before) / len(held)
    del held, lines
    peaks: dict[tuple[str, int], int] = {}
    for count in SIZES:
        for run in ("first", "cached"):
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            result = check_data([tmp_path / f"text-{count}.jsonl"], model=tiny_model_dir, out_dir=tmp_path / str(count),
                                max_length=512, workers=2, progress=False)
            peaks[run, count] = tracemalloc.get_traced_memory()[1] - before
            assert result.report["ok"] == count and result.report["cached"] == (count if run == "cached" else 0)
    tracemalloc.stop()
    small, large = SIZES
    for run in ("first", "cached"):
        per_record = (peaks[run, large] - peaks[run, small]) / (large - small)
        print(f"{run}: peak {peaks[run, small] / 2**20:.1f} MiB at {small} records, {peaks[run, large] / 2**20:.1f} "
              f"MiB at {large}: {per_record:.0f} B a record more (one parsed copy: {parsed_per_record:.0f} B a record)")
        # The check holds the file's index, 16-byte digests and result arrays: a few hundred bytes a record at its
        # peak, well below a parsed copy of even these short records (it held a dict a sample, a hex key a record
        # and the parsed cache before).
        assert per_record < 400
        assert per_record < parsed_per_record / 3
