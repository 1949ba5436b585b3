"""Temporal grounding scores: IoU of predicted intervals with the true one, mIoU and recall at IoU thresholds."""

from __future__ import annotations

from collections.abc import Sequence

THRESHOLDS = (0.3, 0.5, 0.7)


def interval_iou(predicted: Sequence[Sequence[float]], truth: Sequence[float]) -> float:
    """IoU as VideoLLaMA3 computes it, several predicted intervals allowed.

    Intersection: the sum over predicted intervals (each ordered low to high) of its overlap with the
    true interval. Union: the true length plus the predicted lengths, minus the intersection. No
    predicted interval gives 0; so does a union of 0 (a zero-length truth and nothing predicted).
    """
    low, high = min(truth), max(truth)
    intersection = 0.0
    union = high - low
    for interval in predicted:
        start, end = min(interval), max(interval)
        intersection += max(0.0, min(end, high) - max(start, low))
        union += end - start
    union -= intersection
    return intersection / union if union > 0 else 0.0


def grounding_scores(ious: Sequence[float]) -> dict[str, float]:
    """mIoU and R1@0.3 / 0.5 / 0.7 (share of samples with IoU at or above the threshold), all x100."""
    if not ious:
        return {}
    scores = {"miou": 100.0 * sum(ious) / len(ious)}
    for threshold in THRESHOLDS:
        scores[f"r1@{threshold}"] = 100.0 * sum(iou >= threshold for iou in ious) / len(ious)
    return scores
