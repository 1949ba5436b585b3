"""The record index: the same records, positions and ids as reading the file whole; cached by size and
modification time; and data-loader workers that hold the index, not a parsed copy of the records."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from vidlab import record_index
from vidlab.annotations import read_records
from vidlab.record_index import RecordIndex
from vidlab.training.data import TrainRecords, load_records


def make_records(count: int) -> list[dict]:
    """Records with and without ids, non-ASCII text and newlines inside strings."""
    return [{**({"id": f"r{i}"} if i % 3 == 0 else {}), "video": [f"v{i % 4}.mp4"], "conversations": [
        {"from": "human", "value": f"<video>\nWhat happens in clip {i}? é✓"},
        {"from": "gpt", "value": "Ünïcode answer\nover two lines " * (1 + i % 5)}]} for i in range(count)]


def expected_lines(text: str, records: list[dict], layout: str) -> list[int]:
    if layout == "jsonl":
        return [n for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if layout == "one line":
        return [1] * len(records)
    return [n for n, line in enumerate(text.split("\n"), start=1) if line == "  {"]  # json.dumps(indent=2)


LAYOUTS = {
    "one line": lambda rows: json.dumps(rows, ensure_ascii=False),
    "pretty": lambda rows: json.dumps(rows, ensure_ascii=False, indent=2) + "\n",
    "jsonl": lambda rows: "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
}


def as_rows(records) -> list[tuple]:
    return [(str(r.position), r.position.index, r.position.line, r.position.shared_line, r.id, r.item)
            for r in records]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_index_gives_the_same_records_positions_and_ids_as_the_file(layout, tmp_path, monkeypatch):
    monkeypatch.setattr(record_index, "_CHUNK", 97)  # windows much smaller than a record: every boundary case
    rows = make_records(40)
    text = LAYOUTS[layout](rows)
    path = tmp_path / ("data.jsonl" if layout == "jsonl" else "data.json")
    path.write_text(text, encoding="utf-8")

    read = list(read_records(path))
    assert [r.item for r in read] == rows
    assert [r.position.line for r in read] == expected_lines(text, rows, layout)
    shared = layout == "one line"
    assert all(r.position.shared_line is shared for r in read)
    ids = [r.id for r in read]
    assert ids[0] == "r0" and ids[1] == ("data.json:1#2" if shared else f"{path.name}:{read[1].position.line}")

    index = RecordIndex.of(path)
    assert len(index) == len(rows)
    assert as_rows(index) == as_rows(read)
    assert as_rows([index[7], index[-1]]) == as_rows([read[7], read[-1]])  # any record, in any order
    assert json.loads(index.text(5)) == rows[5]


def test_a_large_file_index_is_cached_by_size_and_modification_time(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(record_index, "CACHE_MIN_BYTES", 0)
    path = tmp_path / "data.json"
    path.write_text(json.dumps(make_records(10)))
    first = RecordIndex.of(path)
    assert first.saved is not None and first.saved.parent == tmp_path / "cache" / "record-index"
    again = RecordIndex.cached(path)
    assert again is not None and isinstance(again.table, np.memmap)  # read back mapped, shared by processes
    assert as_rows(again) == as_rows(read_records(path))

    changed = make_records(12)[2:]
    path.write_text(json.dumps(changed, indent=1))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert RecordIndex.cached(path) is None  # a changed file is never read through its old index
    assert [r.item for r in RecordIndex.of(path)] == changed


class _Probe(torch.utils.data.Dataset):
    """What a data-loader worker holds: its records object, and each record as it reads it."""

    def __init__(self, records: TrainRecords):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        record = self.records[i]
        worker = torch.utils.data.get_worker_info()
        return {"id": record.id, "where": record.source, "index": record.index, "pid": os.getpid(),
                "worker": worker.id if worker else None,
                "pickled": len(pickle.dumps(self.records)),
                "holds": {name: [type(v).__name__, len(v)] for name, v in vars(self.records).items()},
                "mapped": all(isinstance(ix.table, np.memmap) for ix in self.records.indexes)}


def test_data_loader_workers_share_the_index_not_a_parsed_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("VIDLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(record_index, "CACHE_MIN_BYTES", 0)
    rows = make_records(300)
    rows[5]["conversations"] = rows[5]["conversations"][:1]  # no answer: skipped
    rows[8]["video"] = ["missing.mp4"]  # skipped
    for i in range(4):
        (tmp_path / f"v{i}.mp4").write_bytes(b"")  # loading records only checks that media exist
    path = tmp_path / "train.json"
    path.write_text(json.dumps(rows, indent=2))
    records, skipped = load_records([path])
    assert [(note.index, note.kind) for note in skipped] == [(5, "no answer"), (8, "missing")]
    assert len(records) == 298 and isinstance(records, TrainRecords)

    # What goes to a worker: the file's path, the index's cache path and 16 bytes per record.
    size = len(pickle.dumps(records))
    assert size < 16 * len(records) + 2000
    assert size < path.stat().st_size / 20

    plain = [r for r in read_records(path) if r.position.index not in (5, 8)]
    # Forked workers (DataLoader's default here) inherit the object; under spawn they get the pickle above.
    loader = torch.utils.data.DataLoader(_Probe(records), batch_size=None, num_workers=2)
    got = list(loader)
    assert {g["worker"] for g in got} == {0, 1} and len({g["pid"] for g in got}) == 2
    assert [(g["id"], g["where"]) for g in got] == [(r.id, str(r.position)) for r in plain]
    assert [g["index"] for g in got] == list(range(len(records)))
    for g in got:
        assert g["mapped"] and g["pickled"] == size
        # No parsed records: one index and one data root per file, and the (file, index) pairs as an array.
        assert g["holds"] == {"indexes": ["list", 1], "roots": ["list", 1], "picks": ["ndarray", 298]}


def test_a_large_files_record_check_is_reused_until_a_media_file_changes(tmp_path, monkeypatch):
    from vidlab.training import data

    monkeypatch.setenv("VIDLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(record_index, "CACHE_MIN_BYTES", 0)
    rows = make_records(20)
    rows[3]["video"] = ["later.mp4"]
    for i in range(4):
        (tmp_path / f"v{i}.mp4").write_bytes(b"")
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, notes = load_records([path])
    assert len(first) == 19 and [(n.index, n.kind) for n in notes] == [(3, "missing")]

    def no_parsing(*args, **kwargs):
        raise AssertionError("the records were parsed again")

    with monkeypatch.context() as patch:
        patch.setattr(data, "_usable_conversation", no_parsing)
        again, notes_again = load_records([path])
    assert [r.id for r in again] == [r.id for r in first] and notes_again == notes

    (tmp_path / "later.mp4").write_bytes(b"")  # the record's video appeared: the saved check no longer holds
    now, notes_now = load_records([path])
    assert len(now) == 20 and notes_now == []
    assert load_records([path], strict=True)[0] == now
