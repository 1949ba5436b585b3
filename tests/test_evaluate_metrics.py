"""Metrics: the libraries' own numbers, the 0-100 scale, multiple references, Java missing."""

import json

import pytest
import sacrebleu
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from vidlab.errors import EvaluationError
from vidlab.evaluation.metrics import (
    DEFINITIONS,
    METRICS,
    compute_scores,
    java_available,
    parse_metric_names,
    score_file,
    tokenize,
)

# Predictions and references with what tokenisers disagree on: case, contractions, brackets,
# several sentences, punctuation, and samples with one or two references.
CAPTIONS = [
    ("a red circle moves to the left", ["a red circle moves left", "the red ball slides to the left side"]),
    ("A man doesn't run; he walks (slowly) home.", ["A man walks home slowly."]),
    ("two dogs play in the snow", ["two dogs are playing in snow", "dogs play outside in the snow"]),
    ("a blue square moves up. then it stops.", ["a blue square moves upward and then stops"]),
    ("the cat sleeps", ["a cat is sleeping on a sofa"]),
]
NO_METEOR = ["bleu1", "bleu2", "bleu3", "bleu4", "sacrebleu", "rouge_l", "cider", "exact_match"]

needs_java = pytest.mark.skipif(not java_available(), reason="the PTB tokenizer and METEOR need Java")


def rows(pairs):
    return [{"id": str(i), "prediction": p, "references": refs} for i, (p, refs) in enumerate(pairs)]


def library_scores(pairs):
    """What pycocoevalcap and sacrebleu give when called directly, as their documentation shows."""
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, (_, refs) in enumerate(pairs)})
    res = tokenizer.tokenize({i: [{"caption": p}] for i, (p, _) in enumerate(pairs)})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    meteor = Meteor()
    meteor_score, _ = meteor.compute_score(gts, res)
    del meteor
    rouge, rouge_each = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    streams = [[refs[k] if k < len(refs) else None for _, refs in pairs] for k in range(2)]
    sacre = sacrebleu.corpus_bleu([p for p, _ in pairs], streams)
    return {
        **{f"bleu{n + 1}": 100 * bleu[n] for n in range(4)}, "meteor": 100 * meteor_score,
        "rouge_l": 100 * rouge, "cider": 100 * cider, "sacrebleu": sacre.score, "rouge_each": rouge_each,
    }


@needs_java
def test_values_equal_what_the_libraries_give_directly():
    ours = compute_scores(rows(CAPTIONS))
    theirs = library_scores(CAPTIONS)
    for name in ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider", "sacrebleu"):
        assert ours.values[name] == pytest.approx(theirs[name], abs=1e-9), name
    assert 0 < ours.values["bleu4"] < ours.values["bleu1"] < 100  # a real spread, not a degenerate case
    assert ours.values["exact_match"] == 0.0
    assert ours.sacrebleu_signature.startswith("nrefs:var|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert "PTBTokenizer" in ours.tokenization
    # Per-sample scores: sacrebleu's sentence BLEU and COCO's ROUGE-L of that sample.
    for i, (prediction, refs) in enumerate(CAPTIONS):
        sample = ours.per_sample[str(i)]
        assert sample["sentence_bleu4"] == pytest.approx(sacrebleu.sentence_bleu(prediction, refs).score)
        assert sample["sentence_rouge_l"] == pytest.approx(100 * theirs["rouge_each"][i])


@needs_java
def test_identical_scores_100_and_disjoint_scores_0():
    same = compute_scores(rows([(refs[0], refs) for _, refs in CAPTIONS]), NO_METEOR)
    for name in ("bleu1", "bleu2", "bleu3", "bleu4", "sacrebleu", "rouge_l", "exact_match"):
        assert same.values[name] == pytest.approx(100.0, abs=1e-6), name
    assert same.values["cider"] > 0
    disjoint = [("zebra quantum xylophone jumps " * 2, refs) for _, refs in CAPTIONS]
    none = compute_scores(rows(disjoint), NO_METEOR)
    for name in NO_METEOR:
        assert none.values[name] == pytest.approx(0.0, abs=1e-6), name
    assert all(s["sentence_bleu4"] == 0 and s["sentence_rouge_l"] == 0 for s in none.per_sample.values())


@needs_java
def test_multiple_references_count_as_they_should():
    prediction = "a small green triangle moves down slowly"
    wrong_only = ["a big red circle goes up quickly"]
    with_match = [*wrong_only, prediction]
    one = compute_scores(rows([(prediction, wrong_only)]), NO_METEOR)
    both = compute_scores(rows([(prediction, with_match)]), NO_METEOR)
    # A second reference that matches makes the prediction perfect; the first one alone does not.
    for name in ("bleu4", "sacrebleu", "rouge_l", "exact_match"):
        assert both.values[name] == pytest.approx(100.0, abs=1e-6)
        assert one.values[name] < 50.0
    assert both.per_sample["0"]["sentence_bleu4"] == pytest.approx(100.0)
    # An extra unrelated reference does not lower BLEU: n-gram counts are clipped by the best reference.
    close = ["a small green triangle moves down"]
    plain = compute_scores(rows([(prediction, close)]), ["bleu4", "sacrebleu"])
    extra = compute_scores(rows([(prediction, [*close, "zebra quantum"])]), ["bleu4", "sacrebleu"])
    assert extra.values["bleu4"] == pytest.approx(plain.values["bleu4"])
    assert extra.values["sacrebleu"] == pytest.approx(plain.values["sacrebleu"])


@needs_java
def test_without_java_meteor_is_left_out_and_said_why(monkeypatch, tmp_path):
    ptb, _ = tokenize({i: [p, *refs] for i, (p, refs) in enumerate(CAPTIONS)}, use_java=True)
    with_java = compute_scores(rows(CAPTIONS), NO_METEOR)
    monkeypatch.setenv("PATH", str(tmp_path))  # a PATH with no java on it
    assert not java_available()
    fallback, name = tokenize({i: [p, *refs] for i, (p, refs) in enumerate(CAPTIONS)})
    assert "Treebank" in name and "Java not found" in name
    assert fallback == ptb  # the fallback tokenises these sentences exactly as PTB does
    scores = compute_scores(rows(CAPTIONS))
    assert "meteor" not in scores.values
    assert "Java" in scores.notes["meteor"] and "install" in scores.notes["meteor"].lower()
    for metric in NO_METEOR:
        assert scores.values[metric] == pytest.approx(with_java.values[metric]), metric


def test_exact_match_normalises_case_punctuation_and_articles():
    pairs = [("The dog runs!", ["a dog  runs"]), ("dog", ["cat", "Dog."]), ("dogs run", ["dog runs"])]
    scores = compute_scores(rows(pairs), ["exact_match"])
    assert scores.values["exact_match"] == pytest.approx(200 / 3)


def test_metric_names_are_checked():
    assert parse_metric_names(["bleu4,cider", "METEOR"]) == ["bleu4", "meteor", "cider"]
    assert parse_metric_names(None) == list(METRICS)
    with pytest.raises(EvaluationError, match="unknown metric.*blue.*Use some of: bleu1"):
        parse_metric_names(["blue"])
    assert set(DEFINITIONS) >= set(METRICS) | {"sentence_bleu4", "sentence_rouge_l"}


@needs_java
def test_score_file_writes_metrics_json_and_per_sample_scores(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows(CAPTIONS)))
    (tmp_path / "skipped.jsonl").write_text('{"source": "d.jsonl:9", "id": "x", "reason": "missing"}\n')
    result = score_file(path, ["bleu4", "rouge_l", "sacrebleu"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert [k for k in saved if k in METRICS] == ["bleu4", "sacrebleu", "rouge_l"]
    assert saved["counts"] == {"evaluated": 5, "open": 5, "choice": 0, "skipped": 1}
    assert saved["definitions"]["bleu4"] == DEFINITIONS["bleu4"] and "sentence_bleu4" in saved["definitions"]
    assert saved["sacrebleu_signature"].startswith("nrefs:var")
    scored = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in scored] == ["0", "1", "2", "3", "4"]
    assert all(set(r["scores"]) == {"sentence_bleu4", "sentence_rouge_l"} for r in scored)


def test_score_file_names_what_is_missing(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": "a", "prediction": "x", "references": ["x"]}\n{"id": "b", "prediction": "y"}\n')
    with pytest.raises(EvaluationError, match=r"record 2 \(id 'b'\) lacks references"):
        score_file(path)
    with pytest.raises(EvaluationError, match="no such predictions file"):
        score_file(tmp_path / "nope.jsonl")


# Every character str.splitlines() breaks on (Unicode line boundaries).
LINE_BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@needs_java
def test_a_line_break_inside_a_caption_moves_no_tokens_onto_another_record():
    # Each record: a caption with one kind of line break in its prediction and in a reference, against
    # the same record with a space there. Records differ, so tokens landing on a neighbour would show.
    words = ["a red circle moves", "two dogs play", "the cat sleeps", "a man walks home", "birds fly south",
             "a blue square stops", "the car turns left", "rain falls down", "a girl reads", "the sun sets",
             "a boat sails"]
    broken = [{"id": str(i), "prediction": f"{w}{br}slowly", "references": [f"{w}{br}slowly", f"{w} fast"]}
              for i, (w, br) in enumerate(zip(words, LINE_BREAKS))]
    spaced = [{**r, "prediction": f"{w} slowly", "references": [f"{w} slowly", f"{w} fast"]}
              for r, w in zip(broken, words)]
    with_breaks = compute_scores(broken, NO_METEOR)
    with_spaces = compute_scores(spaced, NO_METEOR)
    for name in ("bleu4", "rouge_l", "cider"):
        assert with_breaks.values[name] == pytest.approx(with_spaces.values[name]), name
    assert with_breaks.values["bleu4"] == pytest.approx(100.0)
    assert [s["sentence_rouge_l"] for s in with_breaks.per_sample.values()] == [100.0] * len(words)


@needs_java
def test_an_empty_prediction_scores_0_and_is_listed():
    scores = compute_scores([{"id": "said", "prediction": "a dog runs", "references": ["a dog runs"]},
                             {"id": "empty", "prediction": "", "references": ["a cat sleeps"]},
                             {"id": "blank", "prediction": " \u2028", "references": ["a cat sleeps"]}], NO_METEOR)
    assert scores.per_sample["empty"] == scores.per_sample["blank"] == {"sentence_bleu4": 0.0, "sentence_rouge_l": 0.0}
    assert scores.per_sample["said"]["sentence_rouge_l"] == 100.0
    assert scores.unreadable == ["empty", "blank"] and "empty predictions" in scores.notes
