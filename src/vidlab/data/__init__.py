"""Data before training: synthetic data sets, and `vidlab data check | plan | convert`.

    vidlab.data.check_data(["train.jsonl"], config="train.yaml")        # vidlab data check
    vidlab.data.plan_run("train.yaml", stats="data-check/check.json")   # vidlab data plan
    vidlab.data.convert_annotations("msrvtt", "train_val_videodatainfo.json", "msrvtt.jsonl")   # vidlab data convert
    vidlab.data.plan_video_tokens(3600, settings=vidlab.MediaSettings(max_frames=3600))   # vidlab data tokens

Names are imported on first use (torch and transformers load only when a command needs them).
"""

from vidlab.lazy import lazy_exports

_EXPORTS = {
    "check_data": "vidlab.data.check",
    "CheckResult": "vidlab.data.check",
    "plan_run": "vidlab.data.plan",
    "render_plan": "vidlab.data.plan",
    "PlanResult": "vidlab.data.plan",
    "plan_video_tokens": "vidlab.data.plan_tokens",
    "render_token_costs": "vidlab.data.plan_tokens",
    "TokenCost": "vidlab.data.plan_tokens",
    "convert_annotations": "vidlab.data.convert",
    "AnnotationConversion": "vidlab.data.convert",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
