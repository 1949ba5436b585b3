"""Reading an answer out of a model's free text: option letters, yes/no, intervals.

`extract_letter` is vidlab's own reader (used for data sets in vidlab's formats). Each benchmark's
reader, which follows VideoLLaMA3's evaluation code, is in that benchmark's module (its spec's
`read_answer`), built from the pieces here; where that code stops the whole run on an answer it
cannot read, the readers return None, and the answer counts as wrong and is listed
(docs/fidelity.md, "Answer reading").
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

LETTERS = string.ascii_uppercase
# Video-MME's and LongVideoBench's readers also try an option that is a digit as its English word.
_DIGIT_WORDS = dict(zip("0123456789", ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")))


def normalise(text: str) -> str:
    """Lower case, punctuation as spaces, single spaces."""
    text = text.lower().translate(str.maketrans(string.punctuation, " " * len(string.punctuation)))
    return " ".join(text.split())


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower-case, no punctuation, no articles, single spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def extract_letter(response: str, options: Sequence[str]) -> str | None:
    """The option letter a free-form answer picks, or None when it names none or several.

    Understands "B", "(B)", "B.", "B) text", "[B]", "**B**", "Answer: B", "The answer is (B)",
    "The best option is B.", and an answer that quotes exactly one option's text. An article "A"
    ("A man walks") is not read as option A.
    """
    valid = LETTERS[: len(options)]
    if not valid:
        return None
    text = response.strip()
    letter_class = f"[{valid}]"
    # 1. The answer starts with the letter on its own: "B", "(B)", "B.", "B)", "**B**", "B: the dog".
    lead = re.match(rf"^[\s\*\(\[\"'`]*({letter_class})(?:[\)\]\.:,\*\"'`]|\s*$|\s+[-–—])", text)
    if lead:
        return lead.group(1)
    if len(text) == 1 and text.upper() in valid:
        return text.upper()
    # 2. After an announcing phrase: "answer is B", "Answer: (C)", "best option is: D", "option B".
    announced = re.search(
        rf"(?i:answer|option|choice)(?:\s+(?i:is|would\s+be|should\s+be))?\s*[:\-]?\s*[\(\[\*\"']*"
        rf"({letter_class})(?![A-Za-z])",
        text,
    )
    if announced:
        return announced.group(1)
    # 3. A bracketed letter, when only one letter appears that way: "... so (C) fits".
    bracketed = set(re.findall(rf"\(({letter_class})\)", text))
    if len(bracketed) == 1:
        return bracketed.pop()
    # 4. A letter standing alone before punctuation or at the end: "I think it is B."
    alone = set(re.findall(rf"(?<![A-Za-z'])({letter_class})(?=[\.\):,;!?]|\s*$)", text))
    if len(alone) == 1:
        return alone.pop()
    # 5. The text of exactly one option (the longest, when one option's text holds another's).
    said = normalise(text)
    quoted = [i for i, option in enumerate(options) if normalise(option) and f" {normalise(option)} " in f" {said} "]
    if quoted:
        longest = max(quoted, key=lambda i: len(normalise(options[i])))
        others = [i for i in quoted if i != longest]
        if all(normalise(options[i]) in normalise(options[longest]) for i in others):
            return valid[longest]
    return None


# ---- what VideoLLaMA3's readers share (each benchmark module holds its own reader) ------------------------


def without_answer_word(response: str) -> str:
    """Every VideoLLaMA3 reader first deletes the words "answer" / "Answer", so "Answer: B" is read as ": B"."""
    return response.replace("answer", "").replace("Answer", "")


def option_text_in(response: str, options: Sequence[str], digits_as_words: bool = False) -> int | None:
    """The first option whose text (spaces and "." stripped) occurs in the lower-cased response; an option
    with no text left occurs in every response, as in VideoLLaMA3's readers."""
    lowered = response.lower()
    for index, option in enumerate(options):
        text = option.strip().strip(".")
        spelled = _DIGIT_WORDS.get(text, text) if digits_as_words else text
        if text.lower() in lowered or spelled.lower() in lowered:
            return index
    return None


def first_letter_match(pattern: str, response: str, valid: str) -> str | None:
    """The option letter inside the first match of `pattern`. VideoLLaMA3 strips the match of spaces and
    brackets and looks it up among the letters; where punctuation it did not strip stays ("(B)," -> "B),")
    its lookup fails and the run stops. vidlab reads the one letter of the match instead."""
    found = re.search(pattern, response)
    if found is None:
        return None
    letters = [c for c in found.group(0) if c in valid]
    return letters[0] if len(letters) == 1 else None


def letter_range(options: Sequence[str]) -> str:
    """The letters of the options, as the "[A-D]" class of a reader's pattern."""
    valid = LETTERS[: len(options)]
    return f"[{valid[0]}-{valid[-1]}]" if valid else "[]"


# ---- TempCompass's rules ----------------------------------------------------------------------------

_CAPTION_PREFIXES = ("option", "sentence", "caption")


def tempcompass_target(answer: str, task_format: str) -> str:
    """What a right answer starts with: "yes"/"no", the option letter ("a"), or the caption label ("2")."""
    if task_format == "yes_no":
        return answer.strip().lower()
    if task_format == "caption_matching":
        label = answer.split(":")[0].strip().lower()
        for word in _CAPTION_PREFIXES:
            label = label.replace(word, "").strip()
        return label
    return answer.split(".")[0].strip().lower()  # multi-choice and captioning: "B. dunking" -> "b"


def read_tempcompass(response: str, task_format: str, target: str) -> tuple[bool, bool]:
    """(right, readable) under VideoLLaMA3's TempCompass rules.

    yes_no: right when the lower-cased answer starts with the expected word; an answer with neither
    "yes" nor "no" in it is unreadable. caption_matching: the words option/sentence/caption are
    removed everywhere, then the answer must start with the label. multi-choice: the lower-cased answer
    must start with the letter.
    """
    said = response.lower()
    if task_format == "yes_no":
        if "yes" not in said and "no" not in said:
            return False, False
        return said.startswith(target), True
    if task_format == "caption_matching":
        for word in _CAPTION_PREFIXES:
            said = said.replace(word, "").strip()
        return said.startswith(target), True
    return said.startswith(target), True


# ---- time intervals ---------------------------------------------------------------------------------

_PAIR_RE = re.compile(r"(\d+\.?\d*|\d*\.\d+)\s*(?:-|to)\s*(\d+\.?\d*|\d*\.\d+)")
_NUMBER_RE = re.compile(r"\d*\.?\d+")


def read_intervals(response: str) -> list[list[float]]:
    """[start, end] pairs in seconds, as VideoLLaMA3 reads a grounding answer: every "a - b" / "a to b";
    failing that, all numbers taken in pairs (an odd count drops the first). Empty when there are none."""
    pairs = _PAIR_RE.findall(response)
    if pairs:
        return [[float(a), float(b)] for a, b in pairs]
    numbers = _NUMBER_RE.findall(response)
    if len(numbers) % 2:
        numbers = numbers[1:]
    return [[float(numbers[i]), float(numbers[i + 1])] for i in range(0, len(numbers), 2)]
