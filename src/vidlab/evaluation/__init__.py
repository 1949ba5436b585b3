"""Evaluation: predictions (batched, resumable, sharded), metrics with exact definitions, benchmarks, reports.

    from vidlab.evaluation import run_predictions, score_file, write_report
    run_predictions("runs/tiny", "eval.jsonl", "runs/eval-base")
    score_file("runs/eval-base/predictions.jsonl")
    write_report("runs/eval-base")
    evaluate_benchmarks("runs/tiny", "benchmarks/video", "runs/all")     # every benchmark found, one summary
    run_api_predictions(ApiOptions("http://localhost:8000/v1", "tiny"), "eval.jsonl", "runs/api")  # an endpoint

Names are imported on first use, so importing the package does not pay for torch.
"""

from vidlab.lazy import lazy_exports

_EXPORTS = {
    "EvalRecord": "vidlab.evaluation.records",
    "EvalSet": "vidlab.evaluation.records",
    "load_eval_set": "vidlab.evaluation.sets",
    "extract_letter": "vidlab.evaluation.benchmarks",
    "load_choices": "vidlab.evaluation.benchmarks",
    "load_mvbench": "vidlab.evaluation.benchmarks",
    "load_videomme": "vidlab.evaluation.benchmarks",
    "DEFINITIONS": "vidlab.evaluation.metrics",
    "compute_scores": "vidlab.evaluation.metrics",
    "score_file": "vidlab.evaluation.metrics",
    "RunOptions": "vidlab.evaluation.run",
    "run_predictions": "vidlab.evaluation.run",
    "ApiOptions": "vidlab.evaluation.endpoint",
    "run_api_predictions": "vidlab.evaluation.endpoint",
    "compare_runs": "vidlab.evaluation.report",
    "write_report": "vidlab.evaluation.report",
    "BENCHMARKS": "vidlab.evaluation.benchmarks",
    "load_benchmark": "vidlab.evaluation.benchmarks",
    "JudgeOptions": "vidlab.evaluation.judge",
    "evaluate_benchmarks": "vidlab.evaluation.suite",
    "check_benchmarks": "vidlab.evaluation.suite",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
