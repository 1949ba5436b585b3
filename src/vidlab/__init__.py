"""vidlab: fine-tune, evaluate and serve VideoLLaMA3 video-language models.

Names are imported on first use, so `import vidlab` and `vidlab --help` do not pay for torch.
"""

from vidlab.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "Chat": "vidlab.chat",
    "Reply": "vidlab.chat",
    "Conversation": "vidlab.conversation",
    "parse_messages": "vidlab.conversation",
    "parse_record": "vidlab.conversation",
    "VidlabError": "vidlab.errors",
    "GenerationOptions": "vidlab.generate",
    "build_inputs": "vidlab.inputs",
    "load_media": "vidlab.inputs",
    "Sampling": "vidlab.media",
    "VideoClip": "vidlab.media",
    "load_image": "vidlab.media",
    "load_images": "vidlab.media",
    "load_video": "vidlab.media",
    "build_tiny_model": "vidlab.models",
    "load_model": "vidlab.models",
}

__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
