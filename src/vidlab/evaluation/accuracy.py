"""Accuracy overall and per group (task, category, duration, or any label a benchmark gives its questions)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from vidlab.evaluation.records import BREAKDOWN_KEYS


def _summary(hits: list[int]) -> dict[str, float | int]:
    return {"accuracy": 100.0 * sum(hits) / len(hits), "correct": sum(hits), "total": len(hits)}


def accuracy_table(rows: Iterable[dict], keys: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy (0-100) overall and per value of each label in the rows' `meta`.

    Each row needs `correct` (bool). A label whose value is a list counts the row once in each of its
    values (as LVBench's question types and PerceptionTest's tags); the overall figure counts every row
    once (a micro average). `keys`: the labels to break down by, in order (default: task, category,
    duration, then every other label found, in order of appearance).
    """
    groups: dict[str, dict[str, list[int]]] = {}
    overall = []
    for row in rows:
        hit = int(bool(row["correct"]))
        overall.append(hit)
        for key, value in (row.get("meta") or {}).items():
            if keys is not None and key not in keys:
                continue
            values = value if isinstance(value, list) else [value]
            for one in values:
                if one is not None:
                    groups.setdefault(key, {}).setdefault(str(one), []).append(hit)
    order = list(keys) if keys is not None else [*BREAKDOWN_KEYS, *sorted(set(groups) - set(BREAKDOWN_KEYS))]
    table: dict[str, Any] = {"overall": _summary(overall) if overall else None}
    for key in order:
        if groups.get(key):
            table[key] = {name: _summary(hits) for name, hits in sorted(groups[key].items())}
    return table


def mean_of_groups(group: dict[str, dict]) -> float | None:
    """The unweighted mean of the groups' accuracies (MLVU's "M-Avg", MVBench's average over tasks)."""
    values = [v["accuracy"] for v in group.values()]
    return sum(values) / len(values) if values else None
