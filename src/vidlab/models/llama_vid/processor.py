"""LLaMA-VID's processor: template, Llama tokenizer, the Q-Former's BERT tokenizer and CLIP pixels, and the
family's encoder behind `vidlab.inputs`.

`vidlab.inputs.encode` hands a conversation to `LlamaVidProcessor.encode_conversation` when the model is of
this family, so chat, evaluation, training and the server build its inputs on the same road as
VideoLLaMA3's. Frames are chosen by the settings' sampling before (`frame_rule: stride` is the
original's 1 fps rule: every round(average rate)-th frame). A video that came with subtitles is a movie:
its frames and subtitle lines are interleaved as LLaMA-VID's long-video path writes them
(`vidlab.models.llama_vid.movie`), and the model reads its frames as that path does (`movie_pictures`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from vidlab.errors import ModelLoadError, SampleError
from vidlab.files import write_json
from vidlab.models.llama_vid.movie import clip_frame_lines, movie_text
from vidlab.models.llama_vid.template import PICTURE, render, tokenize

PROCESSOR_FILE = "vidlab_processor.json"  # what the processor needs beyond the tokenizers and the image processor
QFORMER_FOLDER = "qformer_tokenizer"


class LlamaVidProcessor:
    """Llama tokenizer + BERT tokenizer (the Q-Former's) + CLIP image processor + template for one checkpoint.

    Args:
        tokenizer: the LLM's tokenizer; `image_token` is added to it when missing.
        qformer_tokenizer: bert-base-uncased's tokenizer (the original adds `[DEC]` as BOS; never used in its ids).
        image_processor: CLIP's (resize the short side, centre crop, CLIP's mean and std).
        tokens_per_frame: the model's context + content tokens per frame.
        qformer_max_length: the Q-Former's text is cut to this many word pieces, from the left.
        image_aspect_ratio: "square" (resize and crop) or "pad" (pad to a square with the mean first) for images.
    """

    reads_subtitles = True  # a video with subtitles becomes its movie prompt (vidlab.inputs.encode checks this)

    def __init__(self, tokenizer, qformer_tokenizer, image_processor, tokens_per_frame: int = 2,
                 qformer_max_length: int = 256, image_aspect_ratio: str = "square", image_token: str = PICTURE,
                 patch_size: int = 14):
        if image_token not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [image_token]})
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.unk_token  # Vicuna's tokenizer has none; padding is masked anyway
        qformer_tokenizer.truncation_side = "left"  # the original keeps a long question's end
        self.tokenizer = tokenizer
        self.qformer_tokenizer = qformer_tokenizer
        self.image_processor = image_processor
        self.tokens_per_frame = tokens_per_frame
        self.qformer_max_length = qformer_max_length
        self.image_aspect_ratio = image_aspect_ratio
        self.image_token = image_token
        self.patch_size = patch_size  # the vision tower's, for the token statistics
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> LlamaVidProcessor:
        folder = Path(folder)
        try:
            settings = json.loads((folder / PROCESSOR_FILE).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ModelLoadError(f"{folder / PROCESSOR_FILE}: cannot read the processor settings ({err}). "
                                 "Convert the checkpoint again with `vidlab model convert`.") from err
        return cls(AutoTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(folder / QFORMER_FOLDER),
                   CLIPImageProcessorPil.from_pretrained(folder), **settings)

    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.tokenizer.save_pretrained(folder)
        self.qformer_tokenizer.save_pretrained(folder / QFORMER_FOLDER)
        self.image_processor.save_pretrained(folder)
        settings = {"tokens_per_frame": self.tokens_per_frame, "qformer_max_length": self.qformer_max_length,
                    "image_aspect_ratio": self.image_aspect_ratio, "image_token": self.image_token,
                    "patch_size": self.patch_size}
        write_json(folder / PROCESSOR_FILE, settings)

    def pixels(self, media) -> torch.Tensor:
        """(frames, 3, H, W) CLIP pixels of a clip's frames, or of an image as one frame."""
        from vidlab.media import VideoClip
        from vidlab.models.tinyllava_video.processor import pad_to_square

        if isinstance(media, VideoClip):
            frames = [np.ascontiguousarray(frame) for frame in media.frames]
        else:
            image = media.convert("RGB")
            if self.image_aspect_ratio == "pad":
                image = pad_to_square(image, tuple(int(x * 255) for x in self.image_processor.image_mean))
            frames = [image]
        return self.image_processor(frames, return_tensors="pt")["pixel_values"]

    def qformer_ids(self, text: str) -> list[int]:
        """The Q-Former's word pieces of a question ([CLS] ... [SEP], at most qformer_max_length, cut on the left)."""
        return self.qformer_tokenizer(text, truncation=True, max_length=self.qformer_max_length).input_ids

    def encode_conversation(self, conversation, media: list, settings=None, *, labels: bool = False,
                            max_length: int | None = None):
        """One conversation -> a `vidlab.inputs.Sample` (the family's part of `vidlab.inputs.encode`)."""
        from vidlab.inputs.encode import InputStats, Sample
        from vidlab.inputs.labels import IGNORE_INDEX
        from vidlab.media import VideoClip

        where = conversation.source
        movies = [isinstance(m, VideoClip) and m.subtitles is not None for m in media]
        rendered = render(conversation, {i: movie_text(clip_frame_lines(m), PICTURE)
                                         for i, m in enumerate(media) if movies[i]})
        if len(rendered.questions) != len(media):
            raise SampleError(f"{where}: {len(rendered.questions)} pictures in the text but {len(media)} decoded "
                              "videos or images")
        frames = [self.pixels(m) for m in media]
        counts = [len(f) * self.tokens_per_frame for f in frames]
        # a movie has one placeholder run per frame (its lines between), any other picture one run in all
        runs = [n for f, movie, count in zip(frames, movies, counts)
                for n in ([self.tokens_per_frame] * len(f) if movie else [count])]
        ids, learned = tokenize(rendered, self.tokenizer, self.image_token_id, runs)
        if max_length is not None and len(ids) > max_length:
            raise SampleError(f"{where}: {len(ids)} tokens ({self.tokens_per_frame} per frame), above max_length "
                              f"{max_length}. Shorten the text, take fewer frames or raise max_length.")
        tensors = {"input_ids": torch.tensor(ids), "attention_mask": torch.ones(len(ids), dtype=torch.long)}
        if labels:
            if not any(learned):
                raise SampleError(f'{where}: no assistant ("gpt") turn, so nothing to learn.')
            tensors["labels"] = torch.tensor([i if keep else IGNORE_INDEX for i, keep in zip(ids, learned)])
        if media:
            texts = [self.qformer_ids(q) for q in rendered.questions]
            tensors["pixel_values_frames"] = torch.cat(frames)
            tensors["frame_counts"] = torch.tensor([len(f) for f in frames])
            tensors["qformer_input_ids"] = torch.tensor([i for t in texts for i in t])
            tensors["qformer_lengths"] = torch.tensor([len(t) for t in texts])
            tensors["movie_pictures"] = torch.tensor(movies, dtype=torch.bool)
        visual = sum(counts)
        patches = sum(len(f) for f in frames) * self.patches_per_frame
        stats = InputStats(frames=[m.stamps for m in media if isinstance(m, VideoClip)], visual_tokens=visual,
                           visual_tokens_before_pruning=patches, text_tokens=len(ids) - visual)
        return Sample(tensors=tensors, stats=stats, text=rendered.text,
                      video_keys=[None] * sum(isinstance(m, VideoClip) for m in media))

    @property
    def patches_per_frame(self) -> int:
        crop = self.image_processor.crop_size
        return (int(crop["height"]) // self.patch_size) * (int(crop["width"]) // self.patch_size)
