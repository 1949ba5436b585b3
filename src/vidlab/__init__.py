"""vidlab: fine-tune, evaluate and serve VideoLLaMA3 video-language models.

Every command is one call here:

    vidlab.train("configs/lora_videollama3_2b.yaml", train__max_steps=100)      # vidlab train
    vidlab.evaluate("runs/base", "data/test.jsonl", "runs/eval")                 # vidlab eval run
    vidlab.score("runs/eval/predictions.jsonl")                                  # vidlab eval score
    vidlab.convert_checkpoint("DAMO-NLP-SG/VideoLLaMA3-2B", "VideoLLaMA3-2B-hf") # vidlab model convert
    vidlab.merge("runs/base", "runs/lora", "runs/merged")                        # vidlab model merge
    vidlab.run_quickstart("runs/quickstart")                                     # vidlab quickstart
    vidlab.Chat("runs/base").ask("What happens?", video="clip.mp4")             # vidlab chat
    vidlab.create_app("runs/base", adapters={"lora": "runs/lora"})              # vidlab serve (the FastAPI app)
    vidlab.web.launch(model="runs/base", adapters={"tuned": "runs/lora"})        # vidlab web (import vidlab.web)
    vidlab.check_data(["data/train.jsonl"], config="train.yaml")                # vidlab data check
    vidlab.convert_annotations("llava", "llava_video.json", "train.jsonl")      # vidlab data convert

Names are imported on first use, so `import vidlab` and `vidlab --help` do not pay for torch.
"""

from vidlab.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # the commands
    "train": "vidlab.training.api",
    "evaluate": "vidlab.evaluation.api",
    "score": "vidlab.evaluation.api",
    "evaluate_benchmarks": "vidlab.evaluation.suite",
    "convert_checkpoint": "vidlab.models.convert.checkpoint",
    "merge": "vidlab.models.merge",
    "run_quickstart": "vidlab.quickstart.run",
    "Chat": "vidlab.chat",
    "create_app": "vidlab.serve.app",
    "check_data": "vidlab.data",
    "plan_run": "vidlab.data",
    "convert_annotations": "vidlab.data",
    # what they take and return
    "MediaSettings": "vidlab.settings",
    "Sampling": "vidlab.settings",
    "GenerationOptions": "vidlab.settings",
    "VideoCompressor": "vidlab.settings",
    "TrainConfig": "vidlab.training.config",
    "load_config": "vidlab.training.config",
    "TrainResult": "vidlab.training.loop",
    "RunOptions": "vidlab.evaluation.run",
    "EvalResult": "vidlab.evaluation.api",
    "ScoreResult": "vidlab.evaluation.api",
    "JudgeOptions": "vidlab.evaluation.judge",
    "CheckpointConversion": "vidlab.models.convert.checkpoint",
    "AnnotationConversion": "vidlab.data",
    "MergeResult": "vidlab.models.merge",
    "QuickstartSettings": "vidlab.quickstart.run",
    "QuickstartResult": "vidlab.quickstart.run",
    "ServeOptions": "vidlab.serve.options",
    "WebOptions": "vidlab.web.options",
    "Reply": "vidlab.chat",
    "PreparedQuestion": "vidlab.chat",
    # the pieces underneath
    "Conversation": "vidlab.conversation",
    "parse_messages": "vidlab.conversation",
    "parse_record": "vidlab.conversation",
    "VidlabError": "vidlab.errors",
    "encode": "vidlab.inputs",
    "build_inputs": "vidlab.inputs",
    "load_media": "vidlab.inputs",
    "MediaCache": "vidlab.media.cache",
    "VideoClip": "vidlab.media",
    "load_image": "vidlab.media",
    "load_images": "vidlab.media",
    "load_video": "vidlab.media",
    "build_tiny_model": "vidlab.models",
    "load_model": "vidlab.models",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
