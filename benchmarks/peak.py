"""Peak resident memory of this process from a chosen point on (Linux /proc; ru_maxrss elsewhere).

ru_maxrss alone cannot be reset, and after a fork it starts at the parent's size; /proc's VmHWM is
this process's own peak, and writing 5 to /proc/self/clear_refs resets it to the current size.
"""

from __future__ import annotations

import resource
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_mb(key: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def start() -> float:
    """Begin a measurement: reset the peak where the system allows it; returns the resident MB now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    now = _status_mb("VmRSS:")
    return now if now is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_mb() -> float:
    """The process's peak resident MB since `start` (since it began, where it cannot be reset)."""
    peak = _status_mb("VmHWM:")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_peak_mb(pid: int) -> float | None:
    """Another process's peak resident MB (its VmHWM; None where /proc cannot say)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def process_cpu_seconds(pid: int) -> float:
    """Another process's user and system CPU seconds so far (0 where /proc cannot say)."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
