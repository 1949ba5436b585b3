"""Model loading, the tiny offline model, and (later) conversion of original checkpoints."""

from vidlab.models.load import load_model, resolve_device, resolve_dtype
from vidlab.models.tiny import TinySpec, build_tiny_model

__all__ = ["load_model", "resolve_device", "resolve_dtype", "build_tiny_model", "TinySpec"]
