"""Model loading, the tiny offline model, and conversion of original checkpoints.

The names below are imported on first use, so that light commands (`vidlab model info`) do not pay
for importing transformers' model classes.
"""

from __future__ import annotations

from vidlab.lazy import lazy_exports

_EXPORTS = {
    "load_model": "vidlab.models.load",
    "resolve_device": "vidlab.models.load",
    "resolve_dtype": "vidlab.models.load",
    "build_tiny_model": "vidlab.models.tiny",
    "TinySpec": "vidlab.models.tiny",
    "convert_checkpoint": "vidlab.models.convert.checkpoint",
    "CheckpointConversion": "vidlab.models.convert.checkpoint",
    "model_info": "vidlab.models.info",
    "render_model_info": "vidlab.models.info",
}

__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
