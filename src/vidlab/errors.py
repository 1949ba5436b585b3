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


class RecordError(VidlabError):
    """One annotation record that cannot be used.

    `kind` names the problem (one of `vidlab.record_kinds.KINDS`), so that reports sort bad
    records by the error itself, never by the words of its message.
    """

    def __init__(self, message: str, kind: str = "invalid record"):
        super().__init__(message)
        self.kind = kind


class ConversationError(RecordError):
    """An annotation record or chat message list that does not validate."""


class DataFileError(VidlabError):
    """An annotation, predictions or other JSON / JSONL file that cannot be read as it is."""


class ModelLoadError(VidlabError):
    """A model folder, hub id or adapter that cannot be loaded."""


class EvaluationError(VidlabError):
    """An evaluation data file, predictions file, run folder or metric name that cannot be used."""


class CheckpointConversionError(VidlabError):
    """An original VideoLLaMA3 checkpoint that cannot be converted to the native layout as it is."""


class AnnotationConversionError(DataFileError):
    """An annotation file (another data set's format) that is not in the format asked for, or that nothing
    could be converted from."""


class SampleError(VidlabError):
    """A training sample that cannot be used: bad media, over budget."""


class OverBudgetError(SampleError):
    """A sample longer than model_max_length even at one frame per video at the smallest size."""
