"""What scoring found for a predictions file: the numbers, each sample's, and what could not be computed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Scores:
    values: dict[str, float]  # metric -> 0-100 (CIDEr may pass 100)
    per_sample: dict[str, dict[str, Any]]  # id -> {"sentence_bleu4", "sentence_rouge_l"} or {"choice", "correct"}
    notes: dict[str, str] = field(default_factory=dict)  # metric -> why it is missing
    sacrebleu_signature: str | None = None
    tokenization: str | None = None
    accuracy: dict[str, Any] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)  # ids whose answer could not be read (counted wrong)
