"""What a benchmark reports from its scored predictions: its headline numbers, its tables, its submission file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidlab.evaluation.accuracy import accuracy_table, mean_of_groups
from vidlab.evaluation.answers import normalize_answer
from vidlab.evaluation.benchmarks import BENCHMARKS
from vidlab.evaluation.scores import Scores


def _benchmark_of(rows: list[dict]) -> str | None:
    names = {(r.get("scoring") or {}).get("benchmark") for r in rows}
    return names.pop() if len(names) == 1 else None


def _per_type(rows: list[dict], scores: Scores, key: str) -> dict[str, dict[str, Any]]:
    """Open-ended QA per question type: strict and normalised match, and the judge's figures when judged."""
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        group = (row.get("meta") or {}).get(key)
        if group is None:
            continue
        entry = table.setdefault(str(group), {"total": 0, "strict": 0, "exact": 0, "yes": 0, "score": 0.0, "judged": 0})
        entry["total"] += 1
        refs = row["references"]
        entry["strict"] += str(row["prediction"]).strip() in refs
        entry["exact"] += normalize_answer(str(row["prediction"])) in {normalize_answer(r) for r in refs}
        sample = scores.per_sample.get(str(row["id"]), {})
        if "judge" in sample:
            entry["judged"] += 1
            entry["yes"] += sample["judge"] == "yes"
            entry["score"] += sample["judge_score"]
    result = {}
    for group, e in sorted(table.items()):
        result[group] = {"strict_match": 100.0 * e["strict"] / e["total"],
                         "exact_match": 100.0 * e["exact"] / e["total"], "total": e["total"]}
        if e["judged"]:
            result[group].update(judge_accuracy=100.0 * e["yes"] / e["judged"], judge_score=e["score"] / e["judged"])
    return result


def _judged_per_group(rows: list[dict], scores: Scores, key: str) -> dict[str, dict[str, Any]]:
    """The judge's yes share (and mean score, where it gives one) per group, for benchmarks scored by rule and
    by a judge (MMVU)."""
    table: dict[str, dict[str, Any]] = {}
    for row in rows:
        sample = scores.per_sample.get(str(row["id"]), {})
        group = (row.get("meta") or {}).get(key)
        if group is None or "judge" not in sample:
            continue
        entry = table.setdefault(str(group), {"yes": 0, "scores": [], "total": 0})
        entry["total"] += 1
        entry["yes"] += sample["judge"] == "yes"
        if sample.get("judge_score") is not None:
            entry["scores"].append(sample["judge_score"])
    result = {}
    for group, e in sorted(table.items()):
        result[group] = {"judge_accuracy": 100.0 * e["yes"] / e["total"], "total": e["total"]}
        if e["scores"]:
            result[group]["judge_score"] = sum(e["scores"]) / len(e["scores"])
    return result


def benchmark_section(rows: list[dict], scores: Scores, out_dir: Path) -> dict[str, Any] | None:
    """The "benchmark" part of metrics.json for rows that all come from one benchmark (None otherwise):
    its name, the numbers it reports first, its tables, the unreadable answers, and the submission
    file it takes (written into out_dir) where its answers are private."""
    name = _benchmark_of(rows)
    if name not in BENCHMARKS:
        return None
    benchmark = BENCHMARKS[name]
    graded = [{**r, "correct": scores.per_sample[str(r["id"])]["correct"]} for r in rows
              if scores.per_sample.get(str(r["id"]), {}).get("correct") is not None]
    tables: dict[str, Any] = {}
    extra: dict[str, float] = {}
    if graded and benchmark.groups:
        table = accuracy_table(graded, benchmark.groups)
        tables.update({k: v for k, v in table.items() if k != "overall"})
        if "task" in table:
            extra["task_mean"] = mean_of_groups(table["task"])
    if benchmark.task == "open-ended QA":  # match and judge figures per question type
        tables.update({f"by {key}": _per_type(rows, scores, key) for key in benchmark.groups})
    elif any("judge" in scores.per_sample.get(str(r["id"]), {}) for r in rows):
        tables.update({f"by {key} (judge)": _judged_per_group(rows, scores, key) for key in benchmark.groups})
    values = {**scores.values, **extra}
    section: dict[str, Any] = {
        "name": benchmark.name,
        "title": benchmark.title,
        "headline": {m: values[m] for m in benchmark.headline if values.get(m) is not None},
        "tables": tables,
        "unreadable": list(scores.unreadable),
        "notes": list(benchmark.notes),
    }
    if benchmark.submission is not None:
        scored = [{**r, "scores": scores.per_sample.get(str(r["id"]), {})} for r in rows]
        section["submission"] = [str(p) for p in benchmark.submission(scored, out_dir)]
    return section
