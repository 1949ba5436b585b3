"""Conversion of original VideoLLaMA3 checkpoints (released, training-code, LoRA runs) to the native layout.

    from vidlab.models.convert import convert_checkpoint
    convert_checkpoint("DAMO-NLP-SG/VideoLLaMA3-2B", "VideoLLaMA3-2B-hf", dtype="bf16")   # vidlab model convert

`checkpoint` drives a conversion; `original` reads the source folders, `keymap` renames tensors, `plan`
checks every tensor before anything is written, `lora` merges LoRA factors, `native_config` and
`native_processor` build the native config and processor, `weights` and `shards` read and write
weight files.
"""

from vidlab.lazy import lazy_exports

_EXPORTS = {"convert_checkpoint": "vidlab.models.convert.checkpoint",
            "CheckpointConversion": "vidlab.models.convert.checkpoint"}

__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
