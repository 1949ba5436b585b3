"""Model loading, the tiny offline model, and conversion of original checkpoints.

The names below are imported on first use, so that light commands (`vidlab model info`) do not pay
for importing transformers' model classes.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_model": "vidlab.models.load",
    "resolve_device": "vidlab.models.load",
    "resolve_dtype": "vidlab.models.load",
    "build_tiny_model": "vidlab.models.tiny",
    "TinySpec": "vidlab.models.tiny",
    "convert_checkpoint": "vidlab.models.convert",
    "model_info": "vidlab.models.info",
    "render_model_info": "vidlab.models.info",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value
