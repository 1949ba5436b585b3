"""Conversation + media + processor + settings -> model inputs: the one road every workload takes.

    load_media   the conversation's videos and images, decoded (frames chosen by the settings, sized for the
                 processor, through a cache): every command's one road into media
    encode       one conversation -> a Sample (tokens, pixels, masks; labels when asked; token budget)
    collate      Samples -> a padded Batch (right for training, left for generation)
    build_inputs one conversation -> a Batch of one, for generation
"""

from vidlab.inputs.batch import VISION_KEYS, Batch, build_inputs, collate
from vidlab.inputs.encode import TEXT_KEYS, InputStats, Sample, encode
from vidlab.inputs.labels import IGNORE_INDEX, assistant_label_mask, label_assistant_turns
from vidlab.inputs.load import LoadedMedia, MediaLoad, load_media
from vidlab.inputs.processing import FrameSizer, video_frame_size, video_metadata

__all__ = [
    "Batch",
    "FrameSizer",
    "IGNORE_INDEX",
    "InputStats",
    "LoadedMedia",
    "MediaLoad",
    "Sample",
    "TEXT_KEYS",
    "VISION_KEYS",
    "assistant_label_mask",
    "build_inputs",
    "collate",
    "encode",
    "label_assistant_turns",
    "load_media",
    "video_frame_size",
    "video_metadata",
]
