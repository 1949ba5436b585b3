"""`vidlab.train`: what `vidlab train CONFIG --set ...` does, as a call.

    result = vidlab.train("configs/lora_videollama3_2b.yaml", train__max_steps=100, output__dir="runs/lora")
    result.run_dir, result.steps, result.final_loss
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidlab.training.config import TrainConfig, load_config
from vidlab.training.loop import TrainResult, run_training


def train(
    config: str | Path | dict | TrainConfig,
    *,
    resume: bool | str | None = None,
    set: list[str] = (),  # noqa: A002 - the name of `vidlab train --set`
    **overrides: Any,
) -> TrainResult:
    """Train (or resume) as the config says; returns the run folder, steps, final loss and skips.

    Args:
        config: a YAML file (copy one from configs/), the same as a mapping, or a TrainConfig.
        resume: True continues from the newest checkpoint, "auto" if there is one, False starts
            (None: the config's `resume`).
        set: `section.key=value` strings, as `vidlab train --set` takes them.
        overrides: keys as `section__key=value` (e.g. `train__max_steps=100`), applied after `set`.

    Raises:
        ConfigError: every problem of the config at once (unknown keys, wrong types, missing files).
    """
    resolved = load_config(config, list(set))
    if overrides:
        resolved = load_config(resolved, {key.replace("__", "."): value for key, value in overrides.items()})
    return run_training(resolved, resume=resume)
