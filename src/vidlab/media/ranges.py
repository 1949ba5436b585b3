"""numpy's arange and linspace evaluated at chosen positions only, to the bit, without building them.

The frame rules copy the original's numpy calls (np.arange of ticks and stamps, np.linspace of
stamps); at a high fps those arrays hold duration x fps values, of which a handful are kept.
Written by hand: numpy has no lazy form of either. The formulas are numpy 2's (arange: its first
two values, then start + i x (second - start); linspace: i x step + start, the last value stop);
tests/test_frame_rule_runs.py checks them against numpy itself.
"""

from __future__ import annotations

import math

import numpy as np


def arange_length(start: float, stop: float, step: float) -> int:
    """len(np.arange(start, stop, step)) for floats."""
    return max(math.ceil((stop - start) / step), 0)


def arange_at(start: float, step: float, positions: np.ndarray) -> np.ndarray:
    """np.arange(start, stop, step)[positions] (positions below its length)."""
    positions = np.asarray(positions, dtype=np.int64)
    second = start + step  # numpy computes the second value with the arguments' own arithmetic
    values = start + positions.astype(np.float64) * (second - start)
    values[positions == 1] = second
    values[positions == 0] = start
    return values


def linspace_at(start: float, stop: float, num: int, positions: np.ndarray) -> np.ndarray:
    """np.linspace(start, stop, num)[positions] (positions below num)."""
    positions = np.asarray(positions, dtype=np.int64)
    start, stop = np.float64(start), np.float64(stop)
    delta = np.subtract(stop, start)
    index = positions.astype(np.float64)
    div = num - 1
    if div > 0:
        step = delta / div
        values = index / div * delta if step == 0 else index * step
    else:
        values = index * delta
    values = values + start
    if num > 1:
        values[positions == num - 1] = stop
    return values
