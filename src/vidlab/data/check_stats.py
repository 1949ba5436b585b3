"""Distributions of the checked samples: percentiles for check.json and histograms as a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vidlab.files import save_figure

# What each sample row holds, with the label the report and the figure use.
MEASURES = {
    "duration": "duration (s)",
    "frames": "frames",
    "visual_tokens": "visual tokens",
    "text_tokens": "text tokens",
    "total_tokens": "total tokens",
}


def distribution(values: list[float]) -> dict | None:
    """min, mean, p50/p90/p95/p99 and max of the values (None when there are none)."""
    if not values:
        return None
    array = np.asarray(values, dtype=float)
    summary = {"count": int(array.size), "min": float(array.min()), "mean": float(array.mean())}
    for q in (50, 90, 95, 99):
        summary[f"p{q}"] = float(np.percentile(array, q))
    summary["max"] = float(array.max())
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()}


def distributions(samples: list[dict]) -> dict:
    """Per measure (and visual tokens before DiffFP pruning), the distribution over the samples that have it."""
    keys = [*MEASURES, "visual_tokens_before_pruning", "label_tokens"]
    return {key: distribution([s[key] for s in samples if s.get(key) is not None]) for key in keys}


def save_histograms(samples: list[dict], path: Path, max_length: int | None) -> Path | None:
    """One histogram per measure (the budget drawn on total tokens), as a PNG; None when there are no samples."""
    if not samples:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(MEASURES), figsize=(4 * len(MEASURES), 3.2))
    for axis, (key, label) in zip(axes, MEASURES.items()):
        values = [s[key] for s in samples if s.get(key) is not None]
        if values:
            axis.hist(values, bins=min(40, max(5, len(set(values)))), color="#4c72b0")
        else:
            axis.text(0.5, 0.5, "none", ha="center", va="center", transform=axis.transAxes)
        if key == "total_tokens" and max_length:
            axis.axvline(max_length, color="#c44e52", linestyle="--", label=f"model_max_length {max_length}")
            axis.legend(fontsize=7)
        axis.set_xlabel(label)
        axis.set_ylabel("samples")
    figure.suptitle(f"{len(samples)} usable samples", fontsize=10)
    figure.tight_layout()
    try:
        return save_figure(figure, path)
    finally:
        plt.close(figure)
