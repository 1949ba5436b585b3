"""report.md for one run, and side-by-side comparisons of several runs (base vs fine-tuned)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vidlab.errors import EvaluationError
from vidlab.evaluation.api_usage import endpoint_report_lines
from vidlab.evaluation.metrics import DEFINITIONS, METRICS, METRICS_FILE
from vidlab.files import read_jsonl, save_figure, write_atomic, write_json

REPORT = "report.md"
CHART = "report.png"
SAMPLES_SHOWN = 5
SKIPPED_SHOWN = 20
LABELS = {"bleu1": "BLEU-1", "bleu2": "BLEU-2", "bleu3": "BLEU-3", "bleu4": "BLEU-4", "sacrebleu": "sacreBLEU",
          "meteor": "METEOR", "rouge_l": "ROUGE-L", "cider": "CIDEr", "exact_match": "Exact match",
          "accuracy": "Accuracy", "strict_match": "Strict match", "miou": "mIoU", "r1@0.3": "R1@0.3",
          "r1@0.5": "R1@0.5", "r1@0.7": "R1@0.7", "judge_accuracy": "Judge accuracy", "judge_score": "Judge score",
          "judge_correctness": "Correctness", "judge_detail": "Detail", "judge_context": "Context",
          "judge_temporal": "Temporal", "judge_consistency": "Consistency",
          "task_mean": "Mean over tasks", "sentence_bleu4": "sentence BLEU-4 (per sample)",
          "sentence_rouge_l": "ROUGE-L (per sample)"}


def _cell(text: Any, limit: int = 120) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _load_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _metric_values(metrics: dict) -> dict[str, float]:
    return {m: metrics[m] for m in METRICS if isinstance(metrics.get(m), (int, float))}


def _reference_cell(refs: list[str]) -> str:
    more = f" (+{len(refs) - 1} more)" if len(refs) > 1 else ""
    return f"{refs[0]}{more}" if refs else ""


def sample_score(row: dict) -> float | None:
    """The per-sample number samples are sorted and compared by: correct (100/0), IoU x100 (grounding),
    or sentence BLEU-4; None when there is none (a private answer, an answer not judged)."""
    scores = row.get("scores") or {}
    if "correct" in scores:
        return None if scores["correct"] is None else (100.0 if scores["correct"] else 0.0)
    if "iou" in scores:
        return 100.0 * scores["iou"]
    return scores.get("sentence_bleu4")


def _benchmark_lines(section: dict) -> list[str]:
    lines = [f"## {section['title']}", ""]
    headline = section.get("headline") or {}
    if headline:
        lines += _table(["reported", "value"], [[LABELS.get(k, k), f"{v:.2f}"] for k, v in headline.items()]) + [""]
    for name, table in (section.get("tables") or {}).items():
        if not name.startswith("by "):
            continue  # accuracy tables are shown below, with the other breakdowns
        columns = sorted({c for row in table.values() for c in row if c != "total"})
        lines += [f"### {name.capitalize()}", ""]
        lines += _table([name[3:], *[LABELS.get(c, c) for c in columns], "total"], [
            [group, *[f"{row[c]:.2f}" if c in row else "-" for c in columns], row["total"]]
            for group, row in table.items()
        ]) + [""]
    unreadable = section.get("unreadable") or []
    if unreadable:
        shown = ", ".join(unreadable[:SKIPPED_SHOWN]) + (" ..." if len(unreadable) > SKIPPED_SHOWN else "")
        lines += [f"**Unreadable answers** ({len(unreadable)}, counted wrong): {shown}", ""]
    for path in section.get("submission") or []:
        lines += [f"**Submission file**: `{path}`", ""]
    lines += [f"- {note}" for note in section.get("notes") or []] + [""]
    return lines


def _chart(values: dict[str, float], accuracy: dict | None, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = {k: v for k, v in (accuracy or {}).items() if k != "overall" and isinstance(v, dict)}
    panels = 1 + len(groups)
    heights = [0.9 + 0.35 * max(len(values), 2)] + [0.8 + 0.3 * max(len(t), 2) for t in groups.values()]
    figure, axes = plt.subplots(panels, 1, figsize=(7, sum(heights)), squeeze=False,
                                gridspec_kw={"height_ratios": heights})
    names = list(values)
    ax = axes[0][0]
    ax.barh([LABELS.get(n, n) for n in names], [values[n] for n in names], color="#4C72B0")
    ax.invert_yaxis()
    ax.set_xlim(0, max(105.0, 1.12 * max(values.values())))
    ax.set_xlabel("score (0-100; CIDEr can pass 100)")
    ax.set_title(title)
    for i, n in enumerate(names):
        ax.text(values[n], i, f" {values[n]:.1f}", va="center", fontsize=8)
    for panel, (key, table) in enumerate(groups.items(), start=1):
        ax = axes[panel][0]
        labels = list(table)
        ax.barh(labels, [table[name]["accuracy"] for name in labels], color="#55A868")
        ax.invert_yaxis()
        ax.set_xlim(0, 100)
        ax.set_xlabel(f"accuracy by {key}")
    figure.tight_layout()
    try:
        return save_figure(figure, path)
    finally:
        plt.close(figure)


def write_report(run_dir: str | Path) -> Path:
    """Write `run_dir/report.md` (and report.png) from metrics.json, predictions.jsonl, skipped.jsonl."""
    run_dir = Path(run_dir)
    metrics = _load_json(run_dir / METRICS_FILE)
    if metrics is None:
        raise EvaluationError(f"{run_dir}: no {METRICS_FILE}. Run `vidlab eval score {run_dir}/predictions.jsonl`.")
    rows = read_jsonl(run_dir / "predictions.jsonl") if (run_dir / "predictions.jsonl").exists() else []
    skipped = read_jsonl(run_dir / "skipped.jsonl", torn_tail_ok=True) if (run_dir / "skipped.jsonl").exists() else []
    info = _load_json(run_dir / "run.json") or {}
    values = _metric_values(metrics)
    counts = metrics.get("counts", {})

    lines = [f"# Evaluation report: {run_dir.name}", ""]
    if info:
        sampling = info.get("sampling") or {}
        frames = (f"{sampling.get('num_frames')} evenly spaced" if sampling.get("num_frames")
                  else f"{sampling.get('fps')} fps, at most {sampling.get('max_frames')}")
        lines += _table(["setting", "value"], [
            ["model", info.get("model")], ["adapter", info.get("adapter") or "none"],
            ["data", f"{info.get('data')} ({info.get('format')})"], ["frames", frames],
            ["max new tokens", info.get("max_new_tokens")], ["DiffFP compression", info.get("compression")],
        ]) + [""]
    lines += endpoint_report_lines(run_dir, info)  # answers from an endpoint: which, and their requests and tokens
    lines += ["## Counts", ""]
    others = [k for k in ("match", "judged", "grounding") if counts.get(k)]
    lines += _table(["evaluated", "open-ended", "multiple choice", *others, "skipped"], [[
        counts.get("evaluated", len(rows)), counts.get("open", 0), counts.get("choice", 0),
        *[counts[k] for k in others], len(skipped),
    ]]) + [""]
    if metrics.get("benchmark"):
        lines += _benchmark_lines(metrics["benchmark"])
    lines += ["## Metrics", ""]
    lines += _table(["metric", "value"], [[LABELS[m], f"{v:.2f}"] for m, v in values.items()]) + [""]
    if values:
        lines += [f"![metrics]({CHART})", ""]
    notes = metrics.get("notes") or {}
    if notes:
        lines += ["**Not computed:**", ""] + [f"- {LABELS.get(k, k)}: {v}" for k, v in notes.items()] + [""]
    lines += ["## Definitions", ""]
    lines += [f"- **{LABELS.get(k, k)}** (`{k}`): {text}" for k, text in (metrics.get("definitions") or {}).items()]
    if metrics.get("tokenization"):
        lines += [f"- **Tokenisation** of BLEU-1..4, METEOR, ROUGE-L, CIDEr: {metrics['tokenization']}."]
    if metrics.get("sacrebleu_signature"):
        lines += [f"- **sacreBLEU signature**: `{metrics['sacrebleu_signature']}`"]
    lines.append("")

    breakdown = metrics.get("accuracy_breakdown") or {}
    for key in [k for k in breakdown if k != "overall"]:
        if breakdown.get(key):
            lines += [f"## Accuracy by {key}", ""]
            lines += _table([key, "accuracy", "correct", "total"], [
                [name, f"{v['accuracy']:.2f}", v["correct"], v["total"]] for name, v in breakdown[key].items()
            ]) + [""]

    open_rows = [r for r in rows if r.get("kind", "open") == "open" and sample_score(r) is not None]
    if open_rows:
        ranked = sorted(open_rows, key=lambda r: (sample_score(r), r["scores"].get("sentence_rouge_l", 0.0)))
        header = ["id", "sentence BLEU-4", "ROUGE-L", "prediction", "reference"]

        def sample_rows(chosen):
            return [[r["id"], f"{r['scores']['sentence_bleu4']:.1f}", f"{r['scores'].get('sentence_rouge_l', 0):.1f}",
                     r["prediction"], _reference_cell(r["references"])] for r in chosen]

        shown = min(SAMPLES_SHOWN, (len(ranked) + 1) // 2)  # few samples: split them, do not repeat them
        best = ranked[::-1][:shown]
        worst = ranked[: min(SAMPLES_SHOWN, len(ranked) - shown)]
        lines += ["## Best samples (by sentence BLEU-4)", ""] + _table(header, sample_rows(best)) + [""]
        if worst:
            lines += ["## Worst samples", ""] + _table(header, sample_rows(worst)) + [""]
    wrong = [r for r in rows if r.get("kind") in ("choice", "match", "judged")
             and (r.get("scores") or {}).get("correct") is False]
    if wrong:
        lines += ["## Wrong answers (first few)", ""]
        lines += _table(["id", "answer", "read as", "prediction"], [
            [r["id"], r.get("answer") or _reference_cell(r.get("references") or []),
             r["scores"].get("choice") or r["scores"].get("judge_answer") or "-", r["prediction"]]
            for r in wrong[:SAMPLES_SHOWN]
        ]) + [""]
    grounded = sorted((r for r in rows if "iou" in (r.get("scores") or {})), key=lambda r: r["scores"]["iou"])
    if grounded:
        lines += ["## Lowest IoU (first few)", ""]
        lines += _table(["id", "truth (s)", "read as (s)", "IoU", "prediction"], [
            [r["id"], r["references"][0], "; ".join(f"{a:g}-{b:g}" for a, b in r["scores"]["intervals"]) or "none",
             f"{r['scores']['iou']:.2f}", r["prediction"]] for r in grounded[:SAMPLES_SHOWN]
        ]) + [""]
    if skipped:
        lines += [f"## Skipped records ({len(skipped)}; all in skipped.jsonl)", ""]
        lines += _table(["record", "id", "reason"], [
            [s.get("source"), s.get("id") or "", s.get("reason")] for s in skipped[:SKIPPED_SHOWN]
        ]) + [""]

    if values:
        _chart(values, breakdown, run_dir / CHART, run_dir.name)
    return write_atomic(run_dir / REPORT, "\n".join(lines))


def _run_names(dirs: list[Path]) -> list[str]:
    names = [d.name or str(d) for d in dirs]
    return [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]


def compare_runs(dirs: list[str | Path], out_dir: str | Path = ".") -> dict[str, Any]:
    """Side-by-side metrics of several run folders and per-sample wins/losses against the first.

    Writes `comparison.md`, `comparison.json` and `comparison.png` into `out_dir`; returns what
    comparison.json holds plus "markdown" (the text of comparison.md).
    """
    if len(dirs) < 2:
        raise EvaluationError("compare needs at least two run folders (the first is the baseline).")
    folders = [Path(d).expanduser() for d in dirs]
    runs = []
    for folder in folders:
        metrics = _load_json(folder / METRICS_FILE)
        if metrics is None:
            raise EvaluationError(
                f"{folder}: no {METRICS_FILE}. Score it first: vidlab eval score {folder}/predictions.jsonl"
            )
        rows = read_jsonl(folder / "predictions.jsonl") if (folder / "predictions.jsonl").exists() else []
        runs.append((metrics, {str(r["id"]): r for r in rows}))
    names = _run_names(folders)
    present = [m for m in METRICS if any(m in _metric_values(metrics) for metrics, _ in runs)]
    table = {m: [_metric_values(metrics).get(m) for metrics, _ in runs] for m in present}

    base_rows = runs[0][1]
    versus = []
    for name, (_, rows) in zip(names[1:], runs[1:]):
        common = [i for i in base_rows if i in rows]
        pairs = [(i, sample_score(base_rows[i]), sample_score(rows[i])) for i in common]
        pairs = [(i, a, b) for i, a, b in pairs if a is not None and b is not None]
        changes = sorted(pairs, key=lambda p: p[2] - p[1])
        versus.append({
            "run": name, "baseline": names[0], "common": len(pairs),
            "wins": sum(b > a for _, a, b in pairs), "losses": sum(b < a for _, a, b in pairs),
            "ties": sum(b == a for _, a, b in pairs),
            "biggest_gains": [{"id": i, "baseline": a, "run": b} for i, a, b in changes[::-1][:3] if b > a],
            "biggest_losses": [{"id": i, "baseline": a, "run": b} for i, a, b in changes[:3] if b < a],
        })

    def shown(v):
        return "-" if v is None else f"{v:.2f}"

    header = ["metric", *names] + [f"Δ {n}" for n in names[1:]]
    rows_md = []
    for m in present:
        values = table[m]
        deltas = ["-" if v is None or values[0] is None else f"{v - values[0]:+.2f}" for v in values[1:]]
        rows_md.append([LABELS[m], *[shown(v) for v in values], *deltas])
    lines = [f"# Comparison: {' vs '.join(names)}", "", f"Baseline: {names[0]} ({folders[0]})", ""]
    lines += _table(header, rows_md) + [""]
    lines += ["## Per-sample wins and losses against the baseline", "",
              "A sample is won when its per-sample score is higher than the baseline's: correct vs wrong for "
              "multiple choice, sentence BLEU-4 for open-ended answers.", ""]
    lines += _table(["run", "samples in both", "wins", "losses", "ties"], [
        [v["run"], v["common"], v["wins"], v["losses"], v["ties"]] for v in versus
    ]) + [""]
    for v in versus:
        for kind in ("biggest_gains", "biggest_losses"):
            if v[kind]:
                listed = ", ".join(f"{c['id']} ({c['baseline']:.1f} → {c['run']:.1f})" for c in v[kind])
                lines.append(f"- {v['run']}, {kind.replace('_', ' ')}: {listed}")
    lines += ["", "![comparison](comparison.png)", ""]
    markdown = "\n".join(lines)

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    result = {"runs": [{"name": n, "folder": str(f)} for n, f in zip(names, folders)], "metrics": table,
              "versus_baseline": versus, "definitions": {m: DEFINITIONS[m] for m in present}}
    write_json(out / "comparison.json", result)
    write_atomic(out / "comparison.md", markdown)
    _comparison_chart(table, names, out / "comparison.png")
    return {**result, "markdown": markdown}


def _comparison_chart(table: dict[str, list], names: list[str], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = list(table)
    figure, ax = plt.subplots(figsize=(max(6, 1.1 * len(metrics) * len(names) / 2 + 3), 4))
    width = 0.8 / len(names)
    positions = np.arange(len(metrics))
    for i, name in enumerate(names):
        heights = [table[m][i] or 0.0 for m in metrics]
        ax.bar(positions + i * width - 0.4 + width / 2, heights, width, label=name)
    ax.set_xticks(positions, [LABELS[m] for m in metrics], rotation=30, ha="right")
    ax.set_ylabel("score")
    ax.legend()
    figure.tight_layout()
    try:
        return save_figure(figure, path)
    finally:
        plt.close(figure)
