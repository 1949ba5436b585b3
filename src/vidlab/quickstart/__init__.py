"""`vidlab quickstart`: data set, base training, LoRA, evaluations and a report, offline on a CPU.

    from vidlab.quickstart import FAST, QuickstartSettings, run_quickstart
    result = run_quickstart("runs/quickstart")             # the real quickstart
    result = run_quickstart("runs/qs-fast", FAST)          # a shorter smoke run
    result.passed, result.summary["checks"], result.report

Names are imported on first use, so importing the package does not pay for torch.
"""

from vidlab.lazy import lazy_exports

_EXPORTS = {
    "FAST": "vidlab.quickstart.run",
    "QuickstartSettings": "vidlab.quickstart.run",
    "run_quickstart": "vidlab.quickstart.run",
    "QuickstartResult": "vidlab.quickstart.run",
    "config_folder": "vidlab.quickstart.run",
    "SUMMARY_KEYS": "vidlab.quickstart.report",
    "CHECKS": "vidlab.quickstart.report",
    "attribute_accuracy": "vidlab.quickstart.report",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
