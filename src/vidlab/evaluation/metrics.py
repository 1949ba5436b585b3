"""Scores for predictions: COCO caption metrics, sacrebleu, exact match and multiple-choice accuracy.

Tools disagree on what "BLEU" means, so every number here has one exact definition (DEFINITIONS),
and the libraries that define them compute them: pycocoevalcap for BLEU-1..4, METEOR, ROUGE-L and
CIDEr (after the Stanford PTB tokenisation of the COCO evaluation), sacrebleu for its BLEU.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vidlab.errors import EvaluationError
from vidlab.evaluation.accuracy import accuracy_table
from vidlab.evaluation.answers import normalize_answer, read_intervals
from vidlab.evaluation.benchmarks import letter_reader, match_reader
from vidlab.evaluation.grounding import grounding_scores, interval_iou
from vidlab.evaluation.scores import Scores
from vidlab.evaluation.summary import benchmark_section
from vidlab.files import read_jsonl, write_json, write_jsonl

# The Video-ChatGPT generative benchmark's aspects, each a mean 0-5 judge score (judge.VIDEO_CHATGPT_PROMPTS).
ASPECTS = ("correctness", "detail", "context", "temporal", "consistency")
METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "sacrebleu", "meteor", "rouge_l", "cider", "exact_match", "strict_match",
           "accuracy", "miou", "r1@0.3", "r1@0.5", "r1@0.7", "judge_accuracy", "judge_score",
           *(f"judge_{aspect}" for aspect in ASPECTS))
CAPTION_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider")  # need tokenised text
METRICS_FILE = "metrics.json"
__all__ = ["CAPTION_METRICS", "DEFINITIONS", "METRICS", "METRICS_FILE", "Scores", "compute_scores", "java_available",
           "normalize_answer", "parse_metric_names", "score_file", "tokenize"]

_PTB = "Stanford PTBTokenizer (CoreNLP 3.4.1, run through Java by pycocoevalcap), lower-cased, punctuation removed"
_FALLBACK = ("nltk's Treebank word tokenizer (Java not found), lower-cased, punctuation removed as in the COCO "
             "evaluation; equal to the PTB tokens for plain sentences, may differ on rare constructions")

DEFINITIONS = {
    **{
        f"bleu{n}": (
            f"COCO caption BLEU-{n}: corpus-level BLEU with n-grams up to {n} and uniform weights, over all "
            "open-ended samples at once (clipped n-gram counts against all references of each sample, brevity "
            "penalty from the reference length closest to each prediction, no smoothing), as pycocoevalcap's Bleu "
            "computes it, on tokenised text (see tokenization); x100."
        )
        for n in range(1, 5)
    },
    "sacrebleu": (
        "sacrebleu corpus BLEU-4 on the raw text with sacrebleu's own tokenisation (13a, case-sensitive, "
        "exponential smoothing, all references of each sample); the exact settings are in sacrebleu_signature. "
        "Already 0-100."
    ),
    "meteor": (
        "METEOR 1.5 (pycocoevalcap, Java; English, -norm, exact/stem/synonym/paraphrase matching) on tokenised "
        "text against all references, the corpus score METEOR aggregates over all samples; x100."
    ),
    "rouge_l": (
        "ROUGE-L of the COCO evaluation (pycocoevalcap Rouge): per sample, longest-common-subsequence precision "
        "and recall against each reference on tokenised text, the best precision and best recall combined into "
        "an F-measure with beta 1.2; the mean over samples; x100."
    ),
    "cider": (
        "CIDEr-D of the COCO evaluation (pycocoevalcap Cider): TF-IDF weighted 1- to 4-gram cosine similarity "
        "with document frequencies from this set's references, Gaussian length penalty (sigma 6), clipped counts, "
        "times 10 inside the library; the mean over samples, then x100 as papers report it (so it can pass 100, "
        "and identical text does not give 100)."
    ),
    "exact_match": (
        "Share of open-ended samples whose prediction equals at least one reference after SQuAD normalisation "
        "(lower-case, punctuation and the articles a/an/the removed, whitespace collapsed); x100."
    ),
    "strict_match": (
        "Share of open-ended samples whose prediction, stripped of surrounding whitespace, is exactly one of its "
        "references (ActivityNet-QA's own eval.py); x100."
    ),
    "accuracy": (
        "Share of questions answered right, over all questions at once (a micro average); x100. Multiple choice: "
        "the option letter read from the prediction (by the benchmark's reader: VideoLLaMA3's rule for each "
        "benchmark, vidlab's for its own formats) equals the answer; a prediction naming no option counts as wrong "
        "and is listed. TempCompass yes/no and caption matching: the benchmark's rule. Questions whose answer is "
        "private are not counted."
    ),
    "miou": "Temporal grounding: mean over samples of the IoU of the predicted interval(s) with the true one; x100.",
    **{
        f"r1@{t}": f"Temporal grounding: share of samples whose IoU is {t} or more; x100."
        for t in (0.3, 0.5, 0.7)
    },
    "judge_accuracy": "LLM judge: share of open-ended answers the judge calls right ('yes'); x100.",
    "judge_score": "LLM judge: mean of the judge's 0-5 score over the judged answers (not x100).",
    **{
        f"judge_{aspect}": (
            f"Video-ChatGPT generative benchmark, {name}: mean over the judged answers of the integer part of the "
            "LLM judge's 0-5 score under Video-ChatGPT's prompt for that aspect (not x100)."
        )
        for aspect, name in zip(ASPECTS, ("correctness of information", "detail orientation",
                                          "contextual understanding", "temporal understanding",
                                          "consistency (two phrasings of one question, judged together)"))
    },
    "sentence_bleu4": (
        "Per sample (in predictions.jsonl): sacrebleu sentence BLEU-4 (13a, case-sensitive, exponential "
        "smoothing, effective order) against the sample's references, 0-100. For sorting samples; not an "
        "average that equals any corpus BLEU above."
    ),
    "sentence_rouge_l": "Per sample (in predictions.jsonl): the ROUGE-L above for that one sample, 0-100.",
}


def parse_metric_names(names: Sequence[str] | None) -> list[str]:
    """["bleu4,cider", "meteor"] -> ["bleu4", "cider", "meteor"], checked; None means all."""
    if not names:
        return list(METRICS)
    wanted = [n.strip().lower().replace("-", "_") for name in names for n in name.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in METRICS]
    if unknown:
        raise EvaluationError(f"unknown metric(s) {', '.join(unknown)}. Use some of: {', '.join(METRICS)}.")
    return [m for m in METRICS if m in wanted]


def java_available() -> bool:
    return shutil.which("java") is not None


# The COCO evaluation removes these tokens after PTB tokenisation (pycocoevalcap's PUNCTUATIONS).
_COCO_PUNCTUATION = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--",
                     "...", ";"}
# PTB escapes brackets; lower-cased they are no longer in the list above and stay, as in the COCO evaluation.
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}


def _fallback_tokenize(text: str) -> str:
    from nltk.tokenize import TreebankWordTokenizer

    tokenizer = TreebankWordTokenizer()
    tokens = []
    # Treebank splits only the text's last period; PTB every sentence's, so split into sentences first.
    for sentence in re.split(r"(?<=[.!?])\s+", text.replace("\n", " ").lower()):
        for token in tokenizer.tokenize(sentence):
            token = _BRACKETS.get(token, token)
            if token not in _COCO_PUNCTUATION:
                tokens.append(token)
    return " ".join(tokens)


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (where Java child processes write) for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def one_line(text: str) -> str:
    """The text with every Unicode line break (\\n, \\r, \\x0b, \\x0c, \\x1c-\\x1e, \\x85, U+2028, U+2029) made a
    space. pycocoevalcap's PTB tokenizer writes all texts into one file, a line each, and reads the tokens
    back by line: one break inside a text would move every later text's tokens onto the wrong record."""
    return " ".join(text.splitlines())


def tokenize(texts: dict[int, list[str]], use_java: bool | None = None) -> tuple[dict[int, list[str]], str]:
    """COCO tokenisation of {key: [sentences]}: PTB through Java, or the Treebank fallback without it; each
    sentence kept on its line (see one_line)."""
    texts = {k: [one_line(t) for t in v] for k, v in texts.items()}
    if use_java is None:
        use_java = java_available()
    if use_java:
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        try:
            with _quiet_stderr():  # the jar reports its token count and odd characters on stderr
                return PTBTokenizer().tokenize({k: [{"caption": t} for t in v] for k, v in texts.items()}), _PTB
        except (OSError, KeyError, ValueError):
            pass
    return {k: [_fallback_tokenize(t) for t in v] for k, v in texts.items()}, _FALLBACK


def _coco_scores(
    predictions: list[str], references: list[list[str]], wanted: list[str], scores: Scores
) -> list[float] | None:
    """COCO metrics into `scores`; returns the per-sample ROUGE-L (0-1) when computed."""
    keys = range(len(predictions))
    tokens, scores.tokenization = tokenize(
        {**{("p", k): [predictions[k]] for k in keys}, **{("r", k): references[k] for k in keys}}
    )
    res = {k: tokens[("p", k)] for k in keys}
    gts = {k: tokens[("r", k)] for k in keys}
    if any(f"bleu{n}" in wanted for n in range(1, 5)):
        from pycocoevalcap.bleu.bleu import Bleu

        corpus, _ = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(1, 5):
            if f"bleu{n}" in wanted:
                scores.values[f"bleu{n}"] = 100.0 * corpus[n - 1]
    if "cider" in wanted:
        from pycocoevalcap.cider.cider import Cider

        scores.values["cider"] = 100.0 * float(Cider().compute_score(gts, res)[0])
    if "meteor" in wanted:
        scores.values.update(_meteor(gts, res, scores.notes))
    from pycocoevalcap.rouge.rouge import Rouge

    mean, per_sample = Rouge().compute_score(gts, res)
    if "rouge_l" in wanted:
        scores.values["rouge_l"] = 100.0 * float(mean)
    return [float(v) for v in per_sample]


def _meteor(gts: dict, res: dict, notes: dict) -> dict[str, float]:
    if not java_available():
        notes["meteor"] = ("left out: METEOR runs on Java and no `java` was found on PATH. Install a Java runtime "
                           "(e.g. `apt install default-jre-headless`) and run `vidlab eval score` again.")
        return {}
    from pycocoevalcap.meteor.meteor import Meteor

    try:
        meteor = Meteor()
        try:
            value, _ = meteor.compute_score(gts, res)
        finally:
            del meteor
    except (OSError, ValueError) as err:
        notes["meteor"] = f"left out: the METEOR jar failed ({err}). Check the Java runtime (it needs 2 GB of heap)."
        return {}
    return {"meteor": 100.0 * float(value)}


def compute_scores(
    rows: Sequence[dict], metrics: Sequence[str] | None = None, verdicts: dict[str, dict] | None = None
) -> Scores:
    """Corpus and per-sample scores for prediction rows (`prediction`, `references`, `kind`, `scoring`, ...).

    Args:
        rows: prediction rows; `kind` open, choice, match, grounding or judged (see EvalRecord.kind).
        metrics: names from METRICS (None: every one that applies).
        verdicts: LLM-judge verdicts by row id, for rows whose scoring names a judge.
    """
    wanted = parse_metric_names(metrics)
    verdicts = verdicts or {}
    scores = Scores(values={}, per_sample={})
    kinds: dict[str, list[dict]] = {}
    for row in rows:
        kinds.setdefault(row.get("kind", "open"), []).append(row)
    scores.counts = {"evaluated": len(rows), "open": len(kinds.get("open", [])), "choice": len(kinds.get("choice", []))}
    scores.counts.update({k: len(v) for k, v in kinds.items() if k not in ("open", "choice")})
    if kinds.get("open"):
        _open_scores(kinds["open"], wanted, scores)
    elif any(m in wanted for m in (*CAPTION_METRICS, "sacrebleu", "exact_match")) and metrics:
        scores.notes["captions"] = "no open-ended records: BLEU, METEOR, ROUGE-L, CIDEr and exact match not computed."
    for row in kinds.get("choice", []):
        letter = letter_reader(row.get("scoring") or {})(str(row["prediction"]), row["options"])
        _right_or_wrong(scores, row, {"choice": letter}, None if row.get("answer") is None else letter == row["answer"],
                        letter is not None)
    for row in kinds.get("match", []):
        right, readable = match_reader(row.get("scoring") or {})(str(row["prediction"]), row)
        _right_or_wrong(scores, row, {}, right, readable)
    judged = kinds.get("judged", [])
    for row in judged:
        verdict = verdicts.get(str(row["id"]))
        if verdict is None:
            scores.per_sample[str(row["id"])] = {"correct": None}
            continue
        picked = verdict.get("answer", "none")
        _right_or_wrong(scores, row, {"judge_answer": picked}, picked.startswith(row["scoring"]["target"]),
                        verdict.get("readable", True))
    if judged and not any(str(r["id"]) in verdicts for r in judged):
        scores.notes["judged"] = (f"{len(judged)} answers need an LLM judge to be scored (e.g. TempCompass captioning) "
                                  "and are left out of the accuracy: give --judge-url and --judge-model.")
    _accuracy(rows, wanted, metrics, scores)
    _grounding(kinds.get("grounding", []), wanted, scores)
    _judge_scores([r for r in rows if r.get("kind") != "judged"], verdicts, wanted, scores)
    return scores


def _right_or_wrong(scores: Scores, row: dict, extra: dict, right: bool | None, readable: bool) -> None:
    """A right/wrong sample; an unreadable answer counts as wrong and is listed."""
    scores.per_sample[str(row["id"])] = {**extra, "correct": right}
    if not readable:
        scores.unreadable.append(str(row["id"]))


def _accuracy(rows: Sequence[dict], wanted: list[str], metrics, scores: Scores) -> None:
    graded = [{**r, "correct": scores.per_sample[str(r["id"])]["correct"]} for r in rows
              if r.get("kind") in ("choice", "match", "judged")
              and scores.per_sample.get(str(r["id"]), {}).get("correct") is not None]
    private = sum(1 for r in rows if r.get("kind") == "choice" and r.get("answer") is None)
    if private:
        scores.notes["private answers"] = (f"{private} questions have no public answer: they are in the submission "
                                           "file, not in the accuracy.")
    if graded:
        scores.accuracy = accuracy_table(graded)
        if "accuracy" in wanted:
            scores.values["accuracy"] = scores.accuracy["overall"]["accuracy"]
    elif "accuracy" in wanted and metrics:
        scores.notes["accuracy"] = "no multiple-choice records with an answer: accuracy not computed."


def _grounding(rows: list[dict], wanted: list[str], scores: Scores) -> None:
    ious = []
    for row in rows:
        intervals = read_intervals(str(row["prediction"]))
        iou = interval_iou(intervals, row["scoring"]["interval"])
        ious.append(iou)
        scores.per_sample[str(row["id"])] = {"intervals": intervals, "iou": iou}
        if not intervals:
            scores.unreadable.append(str(row["id"]))
    scores.values.update({k: v for k, v in grounding_scores(ious).items() if k in wanted})


def _judge_scores(rows: list[dict], verdicts: dict[str, dict], wanted: list[str], scores: Scores) -> None:
    """judge_accuracy / judge_score from yes-no verdicts (a verdict without a score, as MMVU's, counts in the
    accuracy only), and judge_<aspect> from the Video-ChatGPT aspect scores. The second answer of a pair is
    judged with the first, which carries the verdict."""
    needing = [r for r in rows if (r.get("scoring") or {}).get("judge") and (r.get("scoring") or {}).get("member") != 2]
    judged = [(r, verdicts[str(r["id"])]) for r in needing if str(r["id"]) in verdicts]
    if needing and not judged:
        scores.notes["judge"] = (f"{len(needing)} answers are scored by an LLM judge as the benchmark reports them: "
                                 "give --judge-url and --judge-model (judge_accuracy, judge_score).")
        return
    if len(judged) < len(needing):
        scores.notes["judge"] = (f"{len(needing) - len(judged)} of {len(needing)} answers have no verdict (a pair "
                                 "missing its second answer, or not judged yet) and are left out of the judge scores.")
    yes_no = [(r, v) for r, v in judged if "pred" in v]
    aspects: dict[str, list[float]] = {}
    for row, verdict in judged:
        sample = scores.per_sample.setdefault(str(row["id"]), {})
        if "pred" in verdict:
            sample["judge"] = verdict["pred"]
            if verdict.get("score") is not None:
                sample["judge_score"] = verdict["score"]
        for aspect, value in (verdict.get("aspects") or {}).items():
            sample[f"judge_{aspect}"] = value
            aspects.setdefault(aspect, []).append(value)
        if not verdict.get("readable", True) and str(row["id"]) not in scores.unreadable:
            scores.unreadable.append(str(row["id"]))
    if yes_no and "judge_accuracy" in wanted:
        scores.values["judge_accuracy"] = 100.0 * sum(v["pred"] == "yes" for _, v in yes_no) / len(yes_no)
    scored = [v["score"] for _, v in yes_no if v.get("score") is not None]
    if scored and "judge_score" in wanted:
        scores.values["judge_score"] = sum(scored) / len(scored)
    for aspect, values in aspects.items():
        if f"judge_{aspect}" in wanted:
            scores.values[f"judge_{aspect}"] = sum(values) / len(values)


def _open_scores(rows: list[dict], wanted: list[str], scores: Scores) -> None:
    import sacrebleu

    predictions = [str(r["prediction"]) for r in rows]
    references = []
    for r in rows:
        refs = r.get("references")
        if isinstance(refs, str):
            refs = [refs]
        if not refs:
            raise EvaluationError(f"{r.get('source', r.get('id'))}: the prediction has no references to score against.")
        references.append([str(x) for x in refs])
    rouge = _coco_scores(predictions, references, wanted, scores)
    if "sacrebleu" in wanted:
        most = max(len(refs) for refs in references)
        streams = [[refs[i] if i < len(refs) else None for refs in references] for i in range(most)]
        bleu = sacrebleu.metrics.BLEU()
        scores.values["sacrebleu"] = float(bleu.corpus_score(predictions, streams).score)
        scores.sacrebleu_signature = str(bleu.get_signature())
    if "exact_match" in wanted:
        hits = [normalize_answer(p) in {normalize_answer(x) for x in refs} for p, refs in zip(predictions, references)]
        scores.values["exact_match"] = 100.0 * sum(hits) / len(hits)
    if "strict_match" in wanted:
        hits = [p.strip() in refs for p, refs in zip(predictions, references)]
        scores.values["strict_match"] = 100.0 * sum(hits) / len(hits)
    for i, row in enumerate(rows):
        if not predictions[i].strip():  # nothing said: 0 whatever the metric would make of an empty line, and listed
            scores.per_sample[str(row["id"])] = {"sentence_bleu4": 0.0, "sentence_rouge_l": 0.0}
            scores.unreadable.append(str(row["id"]))
            continue
        sentence = sacrebleu.sentence_bleu(predictions[i], references[i]).score
        scores.per_sample[str(row["id"])] = {"sentence_bleu4": float(sentence), "sentence_rouge_l": 100.0 * rouge[i]}
    empty = sum(1 for p in predictions if not p.strip())
    if empty:
        scores.notes["empty predictions"] = (f"{empty} open-ended predictions are empty: they score 0 and are listed "
                                             "in unreadable.")


_NEEDS = {"choice": ("options", "answer"), "match": ("scoring",), "judged": ("scoring",), "grounding": ("scoring",)}


def _check_rows(path: Path, rows: list[dict]) -> None:
    for n, row in enumerate(rows, start=1):
        missing = [k for k in ("id", "prediction") if k not in row]
        kind = row.get("kind", "open")
        missing += [k for k in _NEEDS.get(kind, ("references",)) if k not in row]
        if kind == "grounding" and "scoring" in row and "interval" not in row["scoring"]:
            missing.append("scoring.interval")
        if missing:
            raise EvaluationError(
                f"{path}: record {n} (id {row.get('id')!r}) lacks {', '.join(missing)}. Score a predictions.jsonl "
                "written by `vidlab eval run`, or add those fields."
            )


def score_file(
    predictions: str | Path,
    metrics: Sequence[str] | None = None,
    out_dir: str | Path | None = None,
    judge=None,
) -> dict[str, Any]:
    """Score a predictions.jsonl: write metrics.json and add each sample's scores to the file.

    Args:
        predictions: the predictions.jsonl of `vidlab eval run` (or any JSONL with id, prediction,
            references; multiple-choice rows also kind "choice", options and answer).
        metrics: names from METRICS (None: all that apply).
        out_dir: where metrics.json (and a benchmark's submission file) go (default: beside the predictions).
        judge: `vidlab.evaluation.judge.JudgeOptions` to have an LLM judge the rows whose benchmark is
            judged (ActivityNet-QA, TempCompass captioning, MSVD-QA, MSRVTT-QA, MMVU, Video-ChatGPT);
            judgements are cached in judgements.jsonl
            beside the predictions. None: use the cached judgements of a previous run, if any.

    Returns:
        What metrics.json holds.
    """
    from vidlab.evaluation.judge import cached_verdicts, judge_rows

    path = Path(predictions).expanduser()
    if not path.is_file():
        raise EvaluationError(f"{path}: no such predictions file. Pass the predictions.jsonl of `vidlab eval run`.")
    rows = read_jsonl(path)
    _check_rows(path, rows)
    if not rows:
        raise EvaluationError(f"{path}: holds no predictions. Run `vidlab eval run` first.")
    target = Path(out_dir).expanduser() if out_dir is not None else path.parent
    to_judge = [r for r in rows if (r.get("scoring") or {}).get("judge")]
    judge_model = None
    if to_judge and judge is not None:
        verdicts, judge_model = judge_rows(to_judge, path.parent, judge), judge.model
    else:
        verdicts, judge_model = cached_verdicts(to_judge, path.parent) if to_judge else ({}, None)
    scores = compute_scores(rows, metrics, verdicts)
    for row in rows:
        row["scores"] = scores.per_sample.get(str(row["id"]), {})
    write_jsonl(path, rows)

    skipped_path = path.parent / "skipped.jsonl"
    skipped = len(read_jsonl(skipped_path, torn_tail_ok=True)) if skipped_path.exists() else 0
    from importlib.metadata import version

    result = {
        **{m: scores.values[m] for m in METRICS if m in scores.values},
        "sacrebleu_signature": scores.sacrebleu_signature,
        "tokenization": scores.tokenization,
        "counts": {**scores.counts, "skipped": skipped},
        "accuracy_breakdown": scores.accuracy,
        "unreadable": scores.unreadable,
        "notes": scores.notes,
        "definitions": {k: DEFINITIONS[k] for k in [*METRICS, "sentence_bleu4", "sentence_rouge_l"]
                        if k in scores.values or (k.startswith("sentence_") and scores.counts.get("open"))},
        "predictions": str(path),
        "versions": {name: version(name) for name in ("pycocoevalcap", "sacrebleu")},
    }
    if judge_model is not None:
        result["judge_model"] = judge_model
    section = benchmark_section(rows, scores, target)
    if section is not None:
        result["benchmark"] = section
    write_json(target / METRICS_FILE, result)
    return result
