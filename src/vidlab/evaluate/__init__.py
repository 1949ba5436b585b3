"""Evaluation: predictions (batched, resumable, sharded), metrics with exact definitions, benchmarks, reports.

    from vidlab.evaluate import run_predictions, score_file, write_report
    run_predictions("runs/tiny", "eval.jsonl", "runs/eval-base")
    score_file("runs/eval-base/predictions.jsonl")
    write_report("runs/eval-base")

Names are imported on first use, so importing the package does not pay for torch.
"""

from vidlab.lazy import lazy_exports

_EXPORTS = {
    "EvalRecord": "vidlab.evaluate.data",
    "EvalSet": "vidlab.evaluate.data",
    "load_eval_set": "vidlab.evaluate.data",
    "extract_letter": "vidlab.evaluate.benchmarks",
    "load_choices": "vidlab.evaluate.benchmarks",
    "load_mvbench": "vidlab.evaluate.benchmarks",
    "load_videomme": "vidlab.evaluate.benchmarks",
    "DEFINITIONS": "vidlab.evaluate.metrics",
    "compute_scores": "vidlab.evaluate.metrics",
    "score_file": "vidlab.evaluate.metrics",
    "RunOptions": "vidlab.evaluate.run",
    "run_predictions": "vidlab.evaluate.run",
    "compare_runs": "vidlab.evaluate.report",
    "write_report": "vidlab.evaluate.report",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
