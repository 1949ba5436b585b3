"""The chat template and special tokens of VideoLLaMA3 in the native transformers layout.

The released checkpoints render a turn as `<|im_start|>{role}\\n{content}<|im_end|>\\n`, an image as
its tokens followed by a newline, and a video as `Time 0.0s:<tokens>,Time 1.0s:<tokens>,...\\n`.
The native processor writes the `Time X.Xs:` prefixes and the commas itself when it expands
`<|video_pad|>`, so the template only places one `<|video_pad|>` (or `<|image_pad|>`) and the
newline; the rendered text is then the same as the original's. There is no default system prompt.
"""

from __future__ import annotations

from vidlab.settings import VideoCompressor

IMAGE_TOKEN = "<|image_pad|>"
VIDEO_TOKEN = "<|video_pad|>"
PAD_TOKEN = "<|endoftext|>"
END_OF_TURN = "<|im_end|>"

# Qwen2.5's special tokens, in the order (and so with the ids relative to each other) Qwen uses.
SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    IMAGE_TOKEN,
    VIDEO_TOKEN,
]

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{- '<|image_pad|>\n' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|video_pad|>\n' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)


# The video compressor a processor's model has, kept on the processor: vidlab's model loaders attach it, and the
# prompt layout (`vidlab.inputs.compressed`) follows it.
_ATTRIBUTE = "video_compressor"


def attach_video_compressor(processor, spec: VideoCompressor | None):
    """Tell a processor (in place) which compressor its model has; returns it. vidlab's loaders call this."""
    setattr(processor, _ATTRIBUTE, spec if spec is not None and spec.active else None)
    return processor


def video_compressor_of(processor) -> VideoCompressor | None:
    """The compressor a processor's model has (None: none, every merged patch as released)."""
    return getattr(processor, _ATTRIBUTE, None)
