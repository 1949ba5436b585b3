"""Annotation files in other formats -> vidlab annotation records (and records -> LLaMA-Factory sharegpt).

`convert_annotations` (`vidlab data convert`) drives it; one module per source format. Checkpoints
are converted by `vidlab.models.convert` (`convert_checkpoint`, `vidlab model convert`).
"""

from vidlab.data.convert.annotations import (
    CAPTION_FORMATS,
    FORMAT_HELP,
    FORMATS,
    TARGETS,
    AnnotationConversion,
    convert_annotations,
)
from vidlab.data.convert.common import Problem
from vidlab.errors import AnnotationConversionError

__all__ = ["CAPTION_FORMATS", "FORMATS", "FORMAT_HELP", "TARGETS", "AnnotationConversion", "AnnotationConversionError",
           "Problem", "convert_annotations"]
