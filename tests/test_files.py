"""Reading the JSON / JSONL files users bring: byte-order marks, broken lines, messages that read well."""

import json

import pytest

from vidlab.errors import RecordError
from vidlab.evaluation.sets import load_eval_set
from vidlab.files import iter_json_items, read_jsonl
from vidlab.training.data import load_records

RECORD = {"id": "a", "conversations": [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]}
BOM = "\ufeff"


@pytest.mark.parametrize("layout", ["jsonl", "json"])
def test_a_file_that_starts_with_a_byte_order_mark_is_read(tmp_path, layout):
    path = tmp_path / f"data.{layout}"
    text = json.dumps(RECORD) + "\n" if layout == "jsonl" else json.dumps([RECORD], indent=1)
    path.write_text(BOM + text, encoding="utf-8")
    assert [item for _, item in iter_json_items(path)] == [RECORD]
    records, skipped = load_records([path])
    assert [r.id for r in records] == ["a"] and skipped == []
    data = load_eval_set(path)
    assert [r.id for r in data.records] == ["a"] and data.skipped == []
    if layout == "jsonl":
        assert read_jsonl(path) == [RECORD]


def test_a_broken_line_reads_as_one_clear_message(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps(RECORD) + '\n{"id": "b", "conversations": "unterminated\n')
    items = list(iter_json_items(path))
    assert items[0] == (1, RECORD)
    line, error = items[1]
    assert line == 2 and isinstance(error, RecordError) and error.kind == "not json"
    assert str(error) == (f"{path}:2: not valid JSON (Unterminated string starting at: column 30). "
                          "Fix the line or remove it.")
    assert "at at" not in str(error)
