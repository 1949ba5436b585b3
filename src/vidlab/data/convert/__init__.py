"""Other formats -> vidlab annotation records (and records -> LLaMA-Factory sharegpt): one module per source."""

from vidlab.data.convert.common import ConvertError, Problem
from vidlab.data.convert.run import CAPTION_FORMATS, FORMAT_HELP, FORMATS, TARGETS, ConvertResult, convert_data

__all__ = ["CAPTION_FORMATS", "FORMATS", "FORMAT_HELP", "TARGETS", "ConvertError", "ConvertResult", "Problem",
           "convert_data"]
