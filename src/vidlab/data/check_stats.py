"""Distributions of the checked samples: percentiles for check.json and histograms as a PNG.

The samples come as one array per measure (`SampleSizes`), not as a dict per sample: a million
samples are a few tens of MB.
"""

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


def distribution(values) -> dict | None:
    """min, mean, p50/p90/p95/p99 and max of the values (None when there are none)."""
    if len(values) == 0:
        return None
    array = np.asarray(values, dtype=float)
    summary = {"count": int(array.size), "min": float(array.min()), "mean": float(array.mean())}
    for q in (50, 90, 95, 99):
        summary[f"p{q}"] = float(np.percentile(array, q))
    summary["max"] = float(array.max())
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in summary.items()}


def distributions(values: dict[str, np.ndarray]) -> dict:
    """Per measure (and visual tokens before DiffFP pruning and label tokens), the distribution over the samples
    that have it; `values` holds, per measure, its values in sample order, those a sample lacks left out."""
    keys = [*MEASURES, "visual_tokens_before_pruning", "label_tokens"]
    return {key: distribution(values[key]) for key in keys}


def save_histograms(values: dict[str, np.ndarray], count: int, path: Path, max_length: int | None) -> Path | None:
    """One histogram per measure (the budget drawn on total tokens) of `count` samples, as a PNG; None when there
    are none."""
    if not count:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(MEASURES), figsize=(4 * len(MEASURES), 3.2))
    for axis, (key, label) in zip(axes, MEASURES.items()):
        if len(values[key]):
            axis.hist(values[key], bins=min(40, max(5, len(np.unique(values[key])))), color="#4c72b0")
        else:
            axis.text(0.5, 0.5, "none", ha="center", va="center", transform=axis.transAxes)
        if key == "total_tokens" and max_length:
            axis.axvline(max_length, color="#c44e52", linestyle="--", label=f"model_max_length {max_length}")
            axis.legend(fontsize=7)
        axis.set_xlabel(label)
        axis.set_ylabel("samples")
    figure.suptitle(f"{count} usable samples", fontsize=10)
    figure.tight_layout()
    try:
        return save_figure(figure, path)
    finally:
        plt.close(figure)
