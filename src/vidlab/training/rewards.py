"""Verifiable rewards for GRPO: how a sampled answer is checked against a record's reference answer.

Answer types (a record's optional `answer_type`, else inferred from the reference by `infer_answer_type`):
    choice   a multiple-choice letter ("B", "(B)", "B. a cat"): the first option letter of the answer
    yes_no   yes or no: the answer's first word
    number   the first number in the answer equals the reference's (relative tolerance 1e-6)
    exact    the normalised answer (lower case, no punctuation, articles or extra spaces) equals the reference's
    span     a time span "[12.5, 20]" or "12.5 - 20" seconds: the temporal IoU of the two spans, in [0, 1]

When the answer holds `<answer>...</answer>`, only the text inside is checked (the R1 format). Rewards
are written by hand: they are small string checks no maintained library ships for these answer types.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

ANSWER_TYPES = ("choice", "yes_no", "number", "exact", "span")
REWARD_NAMES = ("accuracy", "format", "soft_overlong")
# The R1 output format: reasoning in <think>, the answer in <answer> (TinyLLaVA-Video-R1, Video-R1).
DEFAULT_FORMAT_PATTERN = r"<think>.*?</think>\s*<answer>.*?</answer>"

_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_CHOICE = re.compile(r"^\s*\(?([A-Z])(?:[).:\s]|$)")
# A reference that is an option letter: "B", "(B)", "B.", "B) a cat", "B. a cat" (not "A red circle").
_CHOICE_REFERENCE = re.compile(r"^\(?[A-Z]\)?[.:]?$|^\(?[A-Z][).:]\s")
_CHOICE_ANYWHERE = re.compile(r"(?:^|[\s(])([A-Z])(?=$|[).:,\s])")
_SECONDS = r"\s*(?:s|sec|seconds)?\s*"
_SPAN = re.compile(rf"^\s*\[?\s*({_NUMBER}){_SECONDS}(?:,|-|to|–)\s*({_NUMBER}){_SECONDS}\]?\s*\.?$")
_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


@dataclass(frozen=True)
class Reference:
    """What a sample is checked against: the record's last assistant turn and how to check it."""

    answer: str
    answer_type: str


def answer_part(text: str) -> str:
    """The text inside the last <answer>...</answer>, or the whole text when it has none."""
    found = _ANSWER_TAG.findall(text)
    return found[-1].strip() if found else text.strip()


def normalise(text: str) -> str:
    """Lower case without punctuation, articles and repeated spaces (SQuAD's answer normalisation)."""
    text = text.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


def _number(text: str) -> float | None:
    found = re.search(_NUMBER, text.replace(",", ""))
    return float(found.group()) if found else None


def _span(text: str) -> tuple[float, float] | None:
    found = _SPAN.match(text)
    if found is None:
        numbers = re.findall(_NUMBER, text)
        if len(numbers) < 2:
            return None
        start, end = float(numbers[0]), float(numbers[1])
    else:
        start, end = float(found.group(1)), float(found.group(2))
    return (start, end) if end >= start else (end, start)


def infer_answer_type(answer: str) -> str:
    """The answer type a reference answer reads as: a letter is a choice, yes/no, a number, a span, else exact."""
    text = answer.strip()
    if _CHOICE_REFERENCE.match(text):
        return "choice"
    if normalise(text) in ("yes", "no"):
        return "yes_no"
    if re.fullmatch(rf"\s*{_NUMBER}\s*\.?\s*", text.replace(",", "")):
        return "number"
    if _SPAN.match(text):
        return "span"
    return "exact"


def unreadable_reference(answer: str, answer_type: str) -> str | None:
    """Why no answer could ever score on this reference under `answer_type` (None: it reads as that type)."""
    text = answer_part(answer)
    if answer_type == "choice" and _choice(text) is None:
        return "has no option letter (such as B or (B))"
    if answer_type == "yes_no" and _first_word(text) not in ("yes", "no"):
        return "does not start with yes or no"
    if answer_type == "number" and _number(text) is None:
        return "holds no number"
    if answer_type == "span" and _span(text) is None:
        return "holds no time span (two numbers, such as [12.5, 20])"
    if answer_type == "exact" and not normalise(text):
        return "is empty once lower-cased without punctuation and articles"
    return None


def _choice(text: str) -> str | None:
    found = _CHOICE.match(text) or _CHOICE_ANYWHERE.search(text)
    return found.group(1) if found else None


def _first_word(text: str) -> str:
    words = normalise(text).split()
    return words[0] if words else ""


def span_iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Temporal intersection over union of two (start, end) spans."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else float(a == b)


def accuracy(completion: str, reference: Reference) -> float:
    """1.0 for a right answer, 0.0 for a wrong one (span: the IoU)."""
    given, want = answer_part(completion), reference.answer.strip()
    kind = reference.answer_type
    if kind == "choice":
        return float(_choice(given) is not None and _choice(given) == _choice(want))
    if kind == "yes_no":
        return float(_first_word(given) == _first_word(want))
    if kind == "number":
        a, b = _number(given), _number(want)
        return float(a is not None and b is not None and math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9))
    if kind == "span":
        a, b = _span(given), _span(want)
        return span_iou(a, b) if a is not None and b is not None else 0.0
    return float(normalise(given) == normalise(want))


def format_reward(pattern: str) -> Callable[[str, Reference], float]:
    """1.0 when the whole completion matches `pattern` (regular expression, dot matches newlines)."""
    compiled = re.compile(pattern, re.DOTALL)

    def reward(completion: str, reference: Reference) -> float:
        return float(compiled.fullmatch(completion.strip()) is not None)

    return reward


def soft_overlong_punishment(max_completion_length: int, soft_punish_cache: int) -> Callable[[int], float]:
    """DAPO's length penalty of an answer of n tokens (TRL's get_soft_overlong_punishment): 0 up to
    max_completion_length - soft_punish_cache, then falling linearly to -1 at max_completion_length."""
    free = max_completion_length - soft_punish_cache

    def penalty(tokens: int) -> float:
        if tokens <= free:
            return 0.0
        if tokens <= max_completion_length:
            return (free - tokens) / soft_punish_cache
        return -1.0

    return penalty


def reward_functions(names: list[str], format_pattern: str = DEFAULT_FORMAT_PATTERN, *,
                     max_completion_length: int = 256, soft_punish_cache: int = 64) -> dict[str, Callable]:
    """The named reward functions, each (completion text, reference, completion tokens) -> float."""
    fmt = format_reward(format_pattern)
    overlong = soft_overlong_punishment(max_completion_length, soft_punish_cache)
    known = {"accuracy": lambda text, ref, tokens: accuracy(text, ref),
             "format": lambda text, ref, tokens: fmt(text, ref),
             "soft_overlong": lambda text, ref, tokens: overlong(tokens)}
    return {name: known[name] for name in names}
