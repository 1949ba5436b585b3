"""TinyLLaVA-Video's processor: template, tokenizer and SigLIP pixels, and the family's encoder behind `vidlab.inputs`.

`vidlab.inputs.encode` hands a conversation to `TinyLlavaVideoProcessor.encode_conversation` when the model is of
this family, so chat, evaluation, training and the server build its inputs on the same road as
VideoLLaMA3's. Frames are chosen by the settings' sampling before (`frame_rule: uniform`,
`num_frames: 16` is the original's 16-frame rule; `max_frames` with no `num_frames` its 1 fps rule).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoTokenizer
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from vidlab.errors import ModelLoadError, SampleError
from vidlab.files import write_json
from vidlab.models.tinyllava_video.template import PICTURE, render, rendered_text, tokenize

PROCESSOR_FILE = "vidlab_processor.json"  # what the processor needs beyond the tokenizer and the image processor


def pad_to_square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """The image centred on a square of `fill` (the original's expand2square, for image_aspect_ratio "pad")."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), fill)
    square.paste(image, ((side - width) // 2, (side - height) // 2))
    return square


class TinyLlavaVideoProcessor:
    """Tokenizer + SigLIP image processor + template for one TinyLLaVA-Video checkpoint.

    Args:
        tokenizer: the LLM's tokenizer (Qwen2.5's or Phi-2's); `image_token` is added to it when missing.
        image_processor: SigLIP's (PIL backend: the original resizes with PIL too).
        num_queries: tokens per picture (the model's `num_queries`).
        image_aspect_ratio: "square" or "pad" (images only; frames are always resized).
    """

    def __init__(self, tokenizer, image_processor, num_queries: int = 512, image_aspect_ratio: str = "square",
                 image_token: str = PICTURE, patch_size: int = 14):
        if image_token not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [image_token]})
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.num_queries = num_queries
        self.image_aspect_ratio = image_aspect_ratio
        self.image_token = image_token
        self.patch_size = patch_size  # the vision tower's, for the token statistics
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> TinyLlavaVideoProcessor:
        folder = Path(folder)
        try:
            settings = json.loads((folder / PROCESSOR_FILE).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ModelLoadError(f"{folder / PROCESSOR_FILE}: cannot read the processor settings ({err}). "
                                 "Convert the checkpoint again with `vidlab model convert`.") from err
        return cls(AutoTokenizer.from_pretrained(folder), SiglipImageProcessorPil.from_pretrained(folder), **settings)

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)
        settings = {"num_queries": self.num_queries, "image_aspect_ratio": self.image_aspect_ratio,
                    "image_token": self.image_token, "patch_size": self.patch_size}
        write_json(folder / PROCESSOR_FILE, settings)

    def pixels(self, media) -> torch.Tensor:
        """(frames, 3, H, W) SigLIP pixels of a clip's frames, or of an image as one frame."""
        from vidlab.media import VideoClip

        if isinstance(media, VideoClip):
            frames = [np.ascontiguousarray(frame) for frame in media.frames]
        else:
            image = media.convert("RGB")
            if self.image_aspect_ratio == "pad":
                image = pad_to_square(image, tuple(int(x * 255) for x in self.image_processor.image_mean))
            frames = [image]
        return self.image_processor(frames, return_tensors="pt")["pixel_values"]

    def encode_conversation(self, conversation, media: list, settings=None, *, labels: bool = False,
                            max_length: int | None = None):
        """One conversation -> a `vidlab.inputs.Sample` (the family's part of `vidlab.inputs.encode`)."""
        from vidlab.inputs.encode import InputStats, Sample
        from vidlab.inputs.labels import IGNORE_INDEX
        from vidlab.media import VideoClip

        where = conversation.source
        pieces = render(conversation)
        pictures = sum(piece.text == PICTURE for piece in pieces)
        if pictures != len(media):
            raise SampleError(f"{where}: {pictures} pictures in the text but {len(media)} decoded videos or images")
        ids, learned = tokenize(pieces, self.tokenizer, self.image_token_id, self.num_queries)
        if max_length is not None and len(ids) > max_length:
            raise SampleError(f"{where}: {len(ids)} tokens ({self.num_queries} per picture), above max_length "
                              f"{max_length}. Shorten the text or raise max_length.")
        tensors = {"input_ids": torch.tensor(ids), "attention_mask": torch.ones(len(ids), dtype=torch.long)}
        if labels:
            if not any(learned):
                raise SampleError(f'{where}: no assistant ("gpt") turn, so nothing to learn.')
            tensors["labels"] = torch.tensor([i if keep else IGNORE_INDEX for i, keep in zip(ids, learned)])
        if media:
            frames = [self.pixels(m) for m in media]
            tensors["pixel_values_frames"] = torch.cat(frames)
            tensors["frame_counts"] = torch.tensor([len(f) for f in frames])
        visual = self.num_queries * len(media)
        patches = sum(len(m) if isinstance(m, VideoClip) else 1 for m in media)
        stats = InputStats(frames=[m.stamps for m in media if isinstance(m, VideoClip)], visual_tokens=visual,
                           visual_tokens_before_pruning=patches * self.patches_per_frame, text_tokens=len(ids) - visual)
        return Sample(tensors=tensors, stats=stats, text=rendered_text(pieces),
                      video_keys=[None] * sum(isinstance(m, VideoClip) for m in media))

    @property
    def patches_per_frame(self) -> int:
        size = self.image_processor.size
        return (int(size["height"]) // self.patch_size) * (int(size["width"]) // self.patch_size)
