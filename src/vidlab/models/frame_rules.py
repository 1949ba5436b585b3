"""Each model family's own frame rule: what a command takes for a model folder of that family unless told.

`vidlab chat`, `vidlab serve`, `vidlab eval run` and `vidlab web` read the model folder's family (its
config.json's model_type, no weights loaded) and start from its frame rule; an option given on the command
line (or a field given in Python) still wins. VideoLLaMA3 folders and hub ids keep the library defaults.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vidlab.settings import MediaSettings

# model_type of a vidlab folder -> the frame choice its original code makes
FAMILY_FRAME_RULES: dict[str, dict[str, Any]] = {
    "vidlab_tinyllava_video": {"frame_rule": "uniform", "num_frames": 16},  # its 16-frame models and evaluation
    "vidlab_llama_vid": {"frame_rule": "stride"},  # its 1 fps loader (every round(average rate)-th frame)
}
# Options that say how many frames: given any of them, the family's own count is not used (its rule still is),
# so that e.g. `--max-frames 16` gives TinyLLaVA-Video's 1 fps rule.
FRAME_COUNT_FIELDS = ("fps", "max_frames", "min_frames", "num_frames")


def family_frame_rule(model: str | Path | None) -> dict[str, Any]:
    """The frame-choice settings of the model folder's family ({} for VideoLLaMA3, a hub id or no model)."""
    if model is None:
        return {}
    config = Path(model).expanduser() / "config.json"
    try:
        model_type = json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return {}  # not a local folder (a hub id), or a broken one that loading reports properly
    return dict(FAMILY_FRAME_RULES.get(model_type, {}))


def family_defaults(model: str | Path | None, given: Mapping[str, Any] = {}) -> dict[str, Any]:
    """The family's frame rule less what `given` (field -> value; None: not given) decides instead."""
    given = {name for name, value in given.items() if value is not None}
    if "frame_rule" in given:
        return {}  # another rule: the family's frame count belongs to its own rule
    rule = family_frame_rule(model)
    if given & set(FRAME_COUNT_FIELDS):
        rule = {name: value for name, value in rule.items() if name not in FRAME_COUNT_FIELDS}
    return {name: value for name, value in rule.items() if name not in given}


def family_media_settings(model: str | Path | None, base: MediaSettings | None = None, **given: Any) -> MediaSettings:
    """`base` (default: the library defaults) with the model family's frame rule, then the `given` fields; e.g.
    `family_media_settings("llama-vid-7b").frame_rule` is "stride" for a LLaMA-VID folder from `vidlab model convert`.
    """
    values = {**(base.model_dump() if base is not None else {}), **family_defaults(model, given)}
    return MediaSettings(**{**values, **{k: v for k, v in given.items() if v is not None}})
