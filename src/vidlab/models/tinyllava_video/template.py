"""TinyLLaVA-Video's conversation templates (qwen2_base, phi) and how a conversation becomes token ids and labels.

Both templates are the same text (the tokenizers differ):

    {system} USER: <image>\\n{question} ASSISTANT: {answer}<|endoftext|>USER: {question} ASSISTANT:

A question with a picture loses its `<image>` and is stripped, then gets `<image>\\n` in front; a
prompt ends with `ASSISTANT:`. Learned (labels): each answer with the space before it and its
`<|endoftext|>`, as the original's `make_labels` marks them. Text is tokenized in pieces cut at the
picture and at `ASSISTANT:`, which are pre-tokenizer boundaries, so the ids are those of the whole.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidlab.conversation import Conversation, MediaPart, TextPart

DEFAULT_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
PICTURE = "<image>"  # where the picture's tokens go, in the rendered text
END = "<|endoftext|>"  # closes each answer (the original's separator; also Qwen2.5's and Phi-2's end of text)


@dataclass(frozen=True)
class Piece:
    text: str  # PICTURE alone for a picture
    learned: bool = False


def _question(turn) -> tuple[str, bool]:
    text = "".join(p.text for p in turn.parts if isinstance(p, TextPart))
    pictures = sum(isinstance(p, MediaPart) for p in turn.parts)
    if not pictures:
        return text, False
    return f"{PICTURE}\n{text.replace(PICTURE, '').strip()}".strip(), True


def render(conversation: Conversation) -> list[Piece]:
    """The conversation as template pieces; a conversation ending with a user turn is a prompt (ends with ASSISTANT:).

    A system turn replaces the template's system line (the original drops it and keeps its own).
    """
    turns = list(conversation.turns)
    system = DEFAULT_SYSTEM
    if turns and turns[0].role == "system":
        system = turns.pop(0).text
    pieces = [Piece(system + " ")]
    for i in range(0, len(turns), 2):
        question, has_picture = _question(turns[i])
        text = "USER: " + question + " ASSISTANT:"
        if has_picture:
            before, after = text.split(PICTURE, 1)
            pieces += [Piece(before), Piece(PICTURE), Piece(after)]
        else:
            pieces.append(Piece(text))
        if i + 1 < len(turns):
            pieces.append(Piece(" " + turns[i + 1].text + END, learned=True))
    return [piece for piece in pieces if piece.text]


def rendered_text(pieces: list[Piece]) -> str:
    return "".join(piece.text for piece in pieces)


def tokenize(pieces: list[Piece], tokenizer, picture_id: int, picture_tokens: int) -> tuple[list[int], list[bool]]:
    """Token ids (each picture as `picture_tokens` copies of `picture_id`) and, per token, whether it is learned."""
    ids: list[int] = []
    learned: list[bool] = []
    bos = tokenizer.bos_token_id
    if bos is not None and tokenizer("a").input_ids[:1] == [bos]:  # a tokenizer that starts text with BOS: once
        ids.append(bos)
        learned.append(False)
    for piece in pieces:
        if piece.text == PICTURE:
            part = [picture_id] * picture_tokens
        else:
            part = tokenizer(piece.text, add_special_tokens=False).input_ids
        ids += part
        learned += [piece.learned] * len(part)
    return ids, learned
