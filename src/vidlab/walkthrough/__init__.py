"""`vidlab quickstart`: data set, base training, LoRA, evaluations and a report, offline on a CPU.

    from vidlab.walkthrough import FAST, QuickstartSettings, run_quickstart
    summary = run_quickstart("runs/quickstart")            # the real quickstart
    summary = run_quickstart("runs/qs-fast", FAST)          # a shorter smoke run
    summary["passed"], summary["checks"]

Names are imported on first use, so importing the package does not pay for torch.
"""

from vidlab.lazy import lazy_exports

_EXPORTS = {
    "FAST": "vidlab.walkthrough.run",
    "QuickstartSettings": "vidlab.walkthrough.run",
    "run_quickstart": "vidlab.walkthrough.run",
    "quickstart": "vidlab.walkthrough.run",
    "QuickstartResult": "vidlab.walkthrough.run",
    "config_folder": "vidlab.walkthrough.run",
    "SUMMARY_KEYS": "vidlab.walkthrough.report",
    "CHECKS": "vidlab.walkthrough.report",
    "attribute_accuracy": "vidlab.walkthrough.report",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
