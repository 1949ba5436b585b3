"""Reading evaluation records: references, prompts, file:line in every message, bad records skipped."""

import json

import pytest

from vidlab.errors import DataFileError, EvaluationError
from vidlab.evaluation.sets import load_eval_set
from vidlab.files import read_jsonl


def record(rid, answer="A dog runs.", **extra):
    turns = [{"from": "human", "value": "<video>\nWhat happens?"}]
    if answer is not None:
        turns.append({"from": "gpt", "value": answer})
    return {"id": rid, "video": ["a.mp4"], "conversations": turns, **extra}


def test_json_list_records_know_their_line(tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps([record("a"), record("b", ["One.", "Two."])], indent=2))
    data = load_eval_set(path)
    assert data.format == "records" and data.data_root == tmp_path
    openings = [n for n, line in enumerate(path.read_text().splitlines(), start=1) if line == "  {"]
    assert openings[0] == 2 and len(openings) == 2  # where each record's "{" is
    assert [r.source for r in data.records] == [f"{path}:{n}" for n in openings]
    assert data.records[1].references == ["One.", "Two."]


def test_prompt_is_every_turn_before_the_reference(tmp_path):
    multi = {"id": "m", "conversations": [
        {"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
        {"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "Red."},
    ]}
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps(multi) + "\n" + json.dumps(
        {"conversations": [{"from": "human", "value": "Say hi"}], "references": "hi"}) + "\n")
    first, second = load_eval_set(path).records
    assert [t.role for t in first.conversation.turns] == ["system", "user", "assistant", "user"]
    assert first.references == ["Red."] and first.question == "Name a colour."
    assert second.references == ["hi"] and second.id == "eval.jsonl:2"  # no id: file name and line


def test_bad_records_are_skipped_with_file_line_and_fix(tmp_path):
    path = tmp_path / "eval.jsonl"
    lines = [
        json.dumps(record("ok")),
        "",
        "{not json",
        json.dumps(record("no-ref", answer=None)),
        json.dumps(record("both", references=["x"])),
        json.dumps(record("empty", answer=["", "x"])),
        json.dumps({"id": "turns", "conversations": [{"from": "robot", "value": "hi"}, {"from": "gpt", "value": "x"}]}),
        json.dumps(record("ok", answer="again")),
        "[1, 2]",
    ]
    path.write_text("\n".join(lines) + "\n")
    data = load_eval_set(path)
    assert [r.id for r in data.records] == ["ok"]
    reasons = {(s.source.rsplit(":", 1)[1], s.id): s.reason for s in data.skipped}
    assert list(reasons) == [("3", None), ("4", "no-ref"), ("5", "both"), ("6", "empty"), ("7", "turns"),
                             ("8", "ok"), ("9", None)]
    assert reasons[("3", None)].startswith("not valid JSON")
    assert "Add a final gpt turn" in reasons[("4", "no-ref")]
    assert 'both a final "gpt" turn and "references"' in reasons[("5", "both")]
    assert "non-empty string" in reasons[("6", "empty")]
    assert "unknown role 'robot'" in reasons[("7", "turns")]
    assert reasons[("8", "ok")] == f"duplicate id 'ok' (first at {path}:1). Give each record a unique id."
    assert "must be a JSON object" in reasons[("9", None)]
    assert all(not s.reason.startswith(str(path)) for s in data.skipped)  # the place is in `source`
    assert [r.id for r in data.limited(1).records] == ["ok"] and data.limited(3).skipped[0].source.endswith(":3")


def test_unreadable_files_raise_one_clear_error(tmp_path):
    with pytest.raises(EvaluationError, match="no such data file"):
        load_eval_set(tmp_path / "missing.jsonl")
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"id": "a", "conversations": []},\n  {"id": oops}\n]')
    with pytest.raises(DataFileError, match=r"broken.json:3: not valid JSON.*use JSONL"):
        load_eval_set(broken, format="records")
    single = tmp_path / "single.json"
    single.write_text(json.dumps(record("a"), indent=2))
    with pytest.raises(DataFileError, match="one JSON object, not a list of records"):
        load_eval_set(single)
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"text": "hello"}\n')
    with pytest.raises(EvaluationError, match=r"odd.jsonl:1: cannot tell the data format.*--format"):
        load_eval_set(odd)
    with pytest.raises(EvaluationError, match="unknown data format 'csv'"):
        load_eval_set(odd, format="csv")


def test_read_jsonl_drops_only_a_torn_last_line(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "predic')
    assert [r["id"] for r in read_jsonl(path, torn_tail_ok=True)] == ["a", "b"]
    with pytest.raises(DataFileError, match=r"p.jsonl:3: not a JSON object"):
        read_jsonl(path)
    path.write_text('{"id": "a"}\n{"id": \n{"id": "c"}\n')
    with pytest.raises(DataFileError, match=r"p.jsonl:2: .*Fix or delete that line"):
        read_jsonl(path, torn_tail_ok=True)
