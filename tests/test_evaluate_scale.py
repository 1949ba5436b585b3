"""Evaluation of a large annotation file: read through the record index, never held parsed, resumed
with memory far below one parsed copy of the records; bad records still named file:line."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from vidlab.evaluation.records import EvalRecords, annotation_record
from vidlab.evaluation.run import RunOptions, merge_predictions, run_predictions
from vidlab.evaluation.sets import load_eval_set
from vidlab.generate import GenerationOptions
from vidlab.record_index import RecordIndex

COUNT = 100_000
BROKEN_LINE, DUPLICATE_AT, NO_CONVERSATION_AT = 7, 100, 75_000  # the broken line is record 6


def question(i: int) -> dict:
    return {"id": f"q{i:06d}", "task": f"t{i % 7}",
            "conversations": [{"from": "human", "value": f"Question {i}: say one word."}], "references": ["word"]}


@pytest.fixture(scope="module")
def large_file(tmp_path_factory):
    """100,000 text-only questions as JSONL (~13 MB), with a broken line, a repeated id and a record
    without a conversation."""
    path = tmp_path_factory.mktemp("large") / "questions.jsonl"
    with path.open("w") as handle:
        for i in range(COUNT):
            if i + 1 == BROKEN_LINE:
                handle.write('{"id": "torn", "conversations": [\n')
            elif i == DUPLICATE_AT:
                handle.write(json.dumps({**question(i), "id": "q000001"}) + "\n")
            elif i == NO_CONVERSATION_AT:
                handle.write(json.dumps({"id": f"q{i:06d}", "references": ["word"]}) + "\n")
            else:
                handle.write(json.dumps(question(i)) + "\n")
    return path


def usable_ids() -> list[str]:
    return [f"q{i:06d}" for i in range(COUNT) if i not in (BROKEN_LINE - 1, DUPLICATE_AT, NO_CONVERSATION_AT)]


@pytest.fixture(scope="module")
def parsed_copy_bytes(large_file) -> float:
    """What holding every record parsed (the list evaluation used to build) costs, from a sample of 2,000."""
    with large_file.open() as handle:
        lines = [line for _, line in zip(range(BROKEN_LINE + 2_000), handle)][BROKEN_LINE:]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    held = [annotation_record(json.loads(line), f"x:{n}", n, f"x:{n}") for n, line in enumerate(lines)]
    per_record = (tracemalloc.get_traced_memory()[0] - before) / len(held)
    tracemalloc.stop()
    return per_record * len(usable_ids())


def test_a_large_file_is_read_through_its_index_and_never_held_parsed(large_file, parsed_copy_bytes, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("VIDLAB_CACHE_DIR", str(tmp_path / "cache"))
    parsed = parsed_copy_bytes

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    data = load_eval_set(large_file)
    held, peak = (m - before for m in tracemalloc.get_traced_memory())
    tracemalloc.stop()

    records = data.records
    assert isinstance(records, EvalRecords) and len(records) == len(usable_ids())
    index_bytes = records.index.table.nbytes  # memory-mapped from the index cache: counted all the same
    print(f"parsed copy {parsed / 2**20:.0f} MiB; index {index_bytes / 2**20:.1f} MiB + held "
          f"{held / 2**20:.1f} MiB; peak while reading {peak / 2**20:.1f} MiB")
    assert held + index_bytes < parsed / 20
    assert peak < parsed / 8

    # Records come back parsed from the file, with their place; bad ones skipped as before (file:line).
    assert records[0].id == "q000000" and records[-1].id == f"q{COUNT - 1:06d}"
    assert records[BROKEN_LINE - 1].source == f"{large_file}:{BROKEN_LINE + 1}"
    assert records[BROKEN_LINE - 1].meta == {"task": f"t{BROKEN_LINE % 7}"}
    skipped = [(s.source, s.id, s.reason.split(" (")[0].split(":")[0]) for s in data.skipped]
    assert skipped == [
        (f"{large_file}:{BROKEN_LINE}", None, "not valid JSON"),
        (f"{large_file}:{DUPLICATE_AT + 1}", "q000001", "duplicate id 'q000001'"),
        (f"{large_file}:{NO_CONVERSATION_AT + 1}", f"q{NO_CONVERSATION_AT:06d}",
         'the record has no "conversations" list. Add one'),
    ]
    assert f"first at {large_file}:2" in data.skipped[1].reason
    limited = data.limited(10)
    assert [r.id for r in limited.records] == [f"q{i:06d}" for i in range(10) if i != BROKEN_LINE - 1]
    order = data.order()
    assert order["q000000"] == 0 and order[f"q{COUNT - 1:06d}"] == COUNT - 1 and "torn" not in order


def test_a_large_file_resumes_with_memory_far_below_a_parsed_copy(large_file, parsed_copy_bytes, tiny_model, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("VIDLAB_CACHE_DIR", str(tmp_path / "cache"))
    ids = usable_ids()
    left = {ids[0], ids[len(ids) // 2], ids[-1]}  # as if killed: three questions never answered
    out = tmp_path / "run"
    out.mkdir()
    with (out / "predictions.jsonl").open("w") as handle:
        for record_id in ids:
            if record_id not in left:
                handle.write(json.dumps({"id": record_id, "prediction": "word", "references": ["word"]}) + "\n")
        handle.write('{"id": "q1999')  # a line cut off by the kill
    parsed = parsed_copy_bytes
    RecordIndex.of(large_file)  # the index built once before, as by an earlier run

    options = RunOptions(generation=GenerationOptions(max_new_tokens=2), progress=False, workers=0)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    result = run_predictions(tiny_model, large_file, out, options=options)
    peak = tracemalloc.get_traced_memory()[1] - before
    tracemalloc.stop()

    print(f"parsed copy {parsed / 2**20:.0f} MiB; peak while resuming {peak / 2**20:.1f} MiB")
    assert peak < parsed / 5
    assert result.answered == 3 and result.predictions == result.records == len(ids)
    written = [json.loads(line)["id"] for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert written == ids  # each record once, in data-set order, the three new ones in their places
    skipped = [json.loads(line)["source"] for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert skipped == [f"{large_file}:{n}" for n in (BROKEN_LINE, DUPLICATE_AT + 1, NO_CONVERSATION_AT + 1)]


def test_predictions_already_in_order_are_not_rewritten_and_parts_fold_in(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    main = out / "predictions.jsonl"
    main.write_text('{"id": "a", "n": 1}\n{"id": "c", "n": 1}\n')
    stamp = main.stat().st_mtime_ns, main.stat().st_ino
    order = {"a": 0, "b": 1, "c": 2}
    assert merge_predictions(out, order) == 2
    assert (main.stat().st_mtime_ns, main.stat().st_ino) == stamp  # nothing moved: not rewritten

    (out / "predictions.part-0.jsonl").write_text('{"id": "b", "n": 2}\n{"id": "a", "n": 2}\n')
    (out / "predictions.part-1.jsonl").write_text('{"id": "z", "n": 2}\n{"id": "c", "n": 3')  # torn tail
    assert merge_predictions(out, order) == 4
    rows = [json.loads(line) for line in main.read_text().splitlines()]
    assert [(r["id"], r["n"]) for r in rows] == [("a", 1), ("b", 2), ("c", 1), ("z", 2)]
    assert sorted(p.name for p in out.iterdir()) == ["predictions.jsonl"]


def test_records_held_as_digests_split_between_processes_like_a_list(tmp_path):
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps(question(i)) + "\n" for i in range(5)))
    records = load_eval_set(path).records
    assert isinstance(records, EvalRecords)
    halves = [records[0:3], records[3:5]]
    assert [[r.id for r in half] for half in halves] == [["q000000", "q000001", "q000002"], ["q000003", "q000004"]]
    done = np.concatenate([halves[1].digests])
    assert [r.id for r in records.not_in(done)] == ["q000000", "q000001", "q000002"]
