"""Evaluation folders for the Results tab: find them, read them, line their samples up. No model, no gradio.

An `eval run` folder holds metrics.json and predictions.jsonl (run.json, skipped.jsonl beside them);
an `eval compare` folder holds comparison.json, which names the run folders it compared. Several run
folders opened together are compared here the way `vidlab eval compare` compares them: the first is
the baseline, a sample is won or lost by `sample_score` (correct / IoU / sentence BLEU-4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vidlab.errors import DataFileError, EvaluationError
from vidlab.evaluation.metrics import METRICS, METRICS_FILE
from vidlab.evaluation.report import LABELS, sample_score
from vidlab.files import read_jsonl

PREDICTIONS = "predictions.jsonl"
COMPARISON = "comparison.json"
MAX_DEPTH = 4  # how deep under --runs folders are looked for
MAX_FOUND = 500

Outcome = Literal["win", "loss", "tie"]


@dataclass(frozen=True)
class Found:
    """A results folder under the runs folder."""

    path: Path
    kind: Literal["run", "comparison"]
    label: str  # the path relative to the runs folder, and what it is


def find_results(root: str | Path) -> list[Found]:
    """Every eval run and eval compare folder under `root` (itself included), sorted by path."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    found: list[Found] = []
    queue = [(root, 0)]
    while queue and len(found) < MAX_FOUND:
        folder, depth = queue.pop()
        kind = "comparison" if (folder / COMPARISON).is_file() else \
            "run" if (folder / METRICS_FILE).is_file() or (folder / PREDICTIONS).is_file() else None
        if kind:
            name = str(folder.relative_to(root)) if folder != root else folder.name
            found.append(Found(folder, kind, f"{name} ({'eval compare' if kind == 'comparison' else 'eval run'})"))
        if depth < MAX_DEPTH:
            try:
                children = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
            except OSError:
                continue  # unreadable folder: nothing to show from it
            queue.extend((child, depth + 1) for child in children)
    return sorted(found, key=lambda f: str(f.path))


@dataclass
class RunData:
    """One eval run folder as read: what it holds, and what was missing or broken."""

    name: str
    folder: Path
    info: dict[str, Any]  # run.json
    metrics: dict[str, float]  # the metric values of metrics.json
    rows: dict[str, dict]  # predictions by id
    order: list[str]  # ids in predictions.jsonl order
    skipped: int
    problems: list[str] = field(default_factory=list)

    @property
    def data_root(self) -> Path | None:
        """run.json's data root. Older runs wrote it relative to where the run was made: such a root is looked
        for beside the run folder's ancestors, then in the current folder."""
        root = self.info.get("data_root")
        if not root:
            return None
        root = Path(root).expanduser()
        if root.is_absolute():
            return root
        for base in (self.folder.resolve(), *self.folder.resolve().parents):
            if (base / root).is_dir():
                return base / root
        return root.resolve()


def _read_json(path: Path, problems: list[str], what: str) -> dict:
    if not path.is_file():
        problems.append(f"{path}: missing, so {what} cannot be shown. Run `vidlab eval score` on the run again.")
        return {}
    try:
        value = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        problems.append(f"{path}: not readable JSON ({err}), so {what} cannot be shown.")
        return {}
    return value if isinstance(value, dict) else {}


def read_run(folder: str | Path, name: str | None = None) -> RunData:
    """Read an eval run folder; missing or broken files become `problems`, not errors."""
    folder = Path(folder).expanduser()
    problems: list[str] = []
    if not folder.is_dir():
        raise EvaluationError(f"{folder}: no such folder. Pick a folder that `vidlab eval run` wrote.")
    metrics = _read_json(folder / METRICS_FILE, problems, "the metrics")
    info = _read_json(folder / "run.json", [], "the settings") if (folder / "run.json").is_file() else {}
    rows: list[dict] = []
    predictions = folder / PREDICTIONS
    if not predictions.is_file():
        problems.append(f"{predictions}: missing, so no samples can be shown. Run `vidlab eval run` again into "
                        f"{folder} (it answers only what is missing).")
    else:
        try:
            rows = read_jsonl(predictions, torn_tail_ok=True)
        except DataFileError as err:
            problems.append(f"{err} No samples are shown from this run.")
    skipped = 0
    if (folder / "skipped.jsonl").is_file():
        try:
            skipped = len(read_jsonl(folder / "skipped.jsonl", torn_tail_ok=True))
        except DataFileError:
            pass  # the count is only informative
    by_id: dict[str, dict] = {}
    for row in rows:
        if "id" in row:
            by_id.setdefault(str(row["id"]), row)
    values = {m: float(metrics[m]) for m in METRICS if isinstance(metrics.get(m), (int, float))}
    return RunData(name or folder.name, folder, info, values, by_id, list(by_id), skipped, problems)


def _names(folders: list[Path]) -> list[str]:
    names = [f.name or str(f) for f in folders]
    return [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]


def _compared_folder(entry: dict, comparison: Path) -> Path | None:
    """A run folder named in comparison.json: as written (absolute, or relative to where compare ran),
    else relative to the comparison folder or beside it."""
    written = Path(entry.get("folder", ""))
    for candidate in (written, comparison / written, comparison.parent / written, comparison.parent / written.name):
        if str(candidate) and candidate.is_dir():
            return candidate
    return None


@dataclass
class SampleRow:
    id: str
    task: str
    scores: list[float | None]  # per run
    deltas: list[float | None]  # per run after the baseline
    outcomes: list[Outcome | None]  # per run after the baseline
    prediction: str  # of the last run ("" where it lacks the sample)


@dataclass
class Results:
    """What the Results tab shows: one run, or several lined up against the first (the baseline)."""

    runs: list[RunData]
    problems: list[str] = field(default_factory=list)
    title: str = ""

    @property
    def names(self) -> list[str]:
        return [run.name for run in self.runs]

    @property
    def ids(self) -> list[str]:
        seen = dict.fromkeys(i for run in self.runs for i in run.order)
        return list(seen)

    def metric_table(self) -> tuple[list[str], list[list[Any]]]:
        """Header and rows: metric, one value per run, and the change from the baseline per later run."""
        present = [m for m in METRICS if any(m in run.metrics for run in self.runs)]
        header = ["metric", *self.names, *[f"Δ {n}" for n in self.names[1:]]]
        rows = []
        for m in present:
            values = [run.metrics.get(m) for run in self.runs]
            deltas = [None if v is None or values[0] is None else round(v - values[0], 2) for v in values[1:]]
            rows.append([LABELS.get(m, m), *[None if v is None else round(v, 2) for v in values], *deltas])
        return header, rows

    def tasks(self) -> list[str]:
        found: dict[str, None] = {}
        for run in self.runs:
            for row in run.rows.values():
                for task in _tasks(row):
                    found[task] = None
        return sorted(found)

    def versus(self) -> list[dict[str, Any]]:
        """Per run after the baseline: samples scored in both, wins, losses, ties (as `vidlab eval compare`)."""
        table = []
        for k, run in enumerate(self.runs[1:], start=1):
            outcomes = [s.outcomes[k - 1] for s in self.samples()]
            table.append({"run": run.name, "baseline": self.runs[0].name,
                          "common": sum(o is not None for o in outcomes), "wins": outcomes.count("win"),
                          "losses": outcomes.count("loss"), "ties": outcomes.count("tie")})
        return table

    def samples(
        self, task: str | None = None, outcome: str | None = None, search: str | None = None, sort: str | None = None
    ) -> list[SampleRow]:
        """The samples, filtered and sorted.

        Args:
            task: keep samples with this task / category label.
            outcome: "win:RUN", "loss:RUN" or "tie:RUN": keep samples RUN won, lost or tied against the baseline.
            search: keep samples whose id, prompt, references or a prediction contain this text (any case).
            sort: "id", "score:RUN", "-score:RUN" (highest first), "delta:RUN", "-delta:RUN"; None keeps file order.
        """
        rows = [self._sample_row(i) for i in self.ids]
        if task:
            rows = [r for r in rows if task in r.task.split(", ")]
        if outcome:
            kind, _, name = outcome.partition(":")
            k = self._index(name) - 1
            rows = [r for r in rows if k >= 0 and r.outcomes[k] == kind]
        if search:
            needle = search.lower()
            rows = [r for r in rows if needle in self._haystack(r.id)]
        if sort and sort != "file":
            descending = sort.startswith("-")
            kind, _, name = sort.lstrip("-").partition(":")
            if kind == "id":
                rows.sort(key=lambda r: r.id, reverse=descending)
            else:
                k = self._index(name)
                column = (lambda r: r.scores[k]) if kind == "score" else (lambda r: r.deltas[k - 1])
                known = [r for r in rows if column(r) is not None]
                known.sort(key=column, reverse=descending)
                rows = known + [r for r in rows if column(r) is None]  # unscored samples last either way
        return rows

    def sample(self, sample_id: str) -> dict[str, Any]:
        """Everything about one sample: prompt, references, media, and per run its row."""
        present = [(run, run.rows[sample_id]) for run in self.runs if sample_id in run.rows]
        if not present:
            raise EvaluationError(f"sample {sample_id!r} is in none of the open runs.")
        run, row = present[0]
        media = []
        for path in row.get("media") or []:
            full = Path(path).expanduser()
            if not full.is_absolute() and run.data_root is not None:
                full = run.data_root / full
            media.append(full)
        return {"id": sample_id, "prompt": row.get("prompt", ""), "references": row.get("references") or [],
                "options": row.get("options"), "answer": row.get("answer"), "task": ", ".join(_tasks(row)),
                "media": media, "frames": (row.get("frames") or [[]])[0] if row.get("frames") else [],
                "settings": run.info.get("settings") or {},
                "runs": [{"name": r.name, "row": rr, "score": sample_score(rr)} for r, rr in present]}

    def _index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            return -1

    def _sample_row(self, sample_id: str) -> SampleRow:
        rows = [run.rows.get(sample_id) for run in self.runs]
        scores = [None if row is None else sample_score(row) for row in rows]
        base = scores[0]
        deltas, outcomes = [], []
        for score in scores[1:]:
            if base is None or score is None:
                deltas.append(None)
                outcomes.append(None)
            else:
                deltas.append(round(score - base, 2))
                outcomes.append("win" if score > base else "loss" if score < base else "tie")
        first = next(row for row in rows if row is not None)
        last = rows[-1] or {}
        return SampleRow(sample_id, ", ".join(_tasks(first)), scores, deltas, outcomes, str(last.get("prediction", "")))

    def _haystack(self, sample_id: str) -> str:
        parts = [sample_id]
        for run in self.runs:
            row = run.rows.get(sample_id)
            if row:
                parts += [str(row.get("prompt", "")), str(row.get("prediction", "")),
                          *map(str, row.get("references") or [])]
        return "\n".join(parts).lower()


def _tasks(row: dict) -> list[str]:
    meta = row.get("meta") or {}
    for key in ("task", "category"):
        value = meta.get(key)
        if value:
            return [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return []


def open_results(folders: list[str | Path]) -> Results:
    """One eval compare folder, or one or more eval run folders (the first is the baseline).

    Raises:
        EvaluationError: nothing to open (no folder, a folder that is neither, a comparison none of whose
            runs can be found).
    """
    paths = [Path(f).expanduser() for f in folders]
    if not paths:
        raise EvaluationError("no results folder chosen. Pick an eval run or eval compare folder.")
    comparisons = [p for p in paths if (p / COMPARISON).is_file()]
    if comparisons:
        if len(paths) > 1:
            raise EvaluationError(f"{comparisons[0]}: an eval compare folder opens alone. Pick only it, or pick the "
                                  "eval run folders to compare them here.")
        return _open_comparison(comparisons[0])
    for path in paths:
        if not path.is_dir():
            raise EvaluationError(f"{path}: no such folder. Pick a folder that `vidlab eval run` wrote.")
        if not (path / METRICS_FILE).is_file() and not (path / PREDICTIONS).is_file():
            raise EvaluationError(f"{path}: neither an eval run folder (metrics.json, predictions.jsonl) nor an eval "
                                  "compare folder (comparison.json).")
    names = _names(paths)
    runs = [read_run(path, name) for path, name in zip(paths, names)]
    title = " vs ".join(names)
    return Results(runs, [p for run in runs for p in run.problems], title)


def _open_comparison(folder: Path) -> Results:
    problems: list[str] = []
    data = _read_json(folder / COMPARISON, problems, "the comparison")
    if problems:
        raise EvaluationError(problems[0])
    runs, missing = [], []
    for entry in data.get("runs") or []:
        found = _compared_folder(entry, folder)
        if found is None:
            missing.append(entry.get("folder"))
            continue
        runs.append(read_run(found, entry.get("name") or found.name))
    if missing:
        problems.append(f"{folder / COMPARISON}: run folder(s) not found: {', '.join(map(str, missing))}; "
                        "shown without them. Run the page from where `vidlab eval compare` ran, or compare again.")
    if not runs:
        raise EvaluationError(f"{folder}: none of the compared run folders can be found "
                              f"({', '.join(map(str, missing))}). Compare them again with `vidlab eval compare`.")
    problems += [p for run in runs for p in run.problems]
    return Results(runs, problems, f"{folder.name}: " + " vs ".join(run.name for run in runs))
