"""Errors a user can cause. Each message names the file, the record and what to do.

Anything that is not a `VidlabError` is a bug in vidlab and keeps its traceback.
"""

from __future__ import annotations


class VidlabError(Exception):
    """Base class of every error caused by input, configuration or environment."""


class MediaError(VidlabError):
    """A video, image or frame folder that cannot be used."""


class MediaNotFoundError(MediaError):
    pass


class UnreadableMediaError(MediaError):
    pass


class NoVideoStreamError(MediaError):
    pass


class NoFramesError(MediaError):
    pass


class ClipWindowError(MediaError):
    pass


class TruncatedVideoError(MediaError):
    """A video file whose readable frames end well before the length its header declares."""


class SettingsError(VidlabError):
    """A frame-sampling or token setting out of range (fps 0, inf or nan, max_frames 0, ...)."""


class ConversationError(VidlabError):
    """An annotation record or chat message list that does not validate."""


class DataFileError(VidlabError):
    """An annotation, predictions or other JSON / JSONL file that cannot be read as it is."""


class ModelLoadError(VidlabError):
    """A model folder, hub id or adapter that cannot be loaded."""


class EvaluationError(VidlabError):
    """An evaluation data file, predictions file, run folder or metric name that cannot be used."""


class ConversionError(VidlabError):
    """An original VideoLLaMA3 checkpoint that cannot be converted to the native layout as it is."""


class SampleError(VidlabError):
    """A training sample that cannot be used: bad media, over budget."""
