"""Labels for training: which tokens of a rendered conversation are learned.

Only the assistant replies and their closing `<|im_end|>` are learned (as in the original
VideoLLaMA3); the `<|im_start|>assistant\n` prefix, system and user turns and every vision token
get -100. Written by hand although transformers' `return_assistant_tokens_mask` gives the same
mask (tests/test_train_data.py checks that they agree on multi-turn video records with a system
turn): the library's needs `{% generation %}` markers in the model's chat template, which neither
the VideoLLaMA3 checkpoints nor their conversions have, and this one works on any Qwen-style template.
"""

from __future__ import annotations

import bisect
import functools

import torch

from vidlab.errors import VidlabError
from vidlab.models.template import END_OF_TURN, IMAGE_TOKEN, VIDEO_TOKEN

IGNORE_INDEX = -100  # the label of a position that is not learned (PyTorch cross-entropy's ignore_index)


@functools.lru_cache(maxsize=8)
def _markers(tokenizer) -> tuple[int, tuple[int, ...], tuple[int, ...], int, frozenset[int]]:
    """Token ids the label mask looks for, tokenized once per tokenizer.

    Returns (<|im_start|>, tokens of "assistant\\n", tokens of "assistant", <|im_end|>, vision token ids).
    """
    start_id = tokenizer.convert_tokens_to_ids("<|im_start|>")
    end_id = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    header = tuple(tokenizer("assistant\n", add_special_tokens=False)["input_ids"])
    role = tuple(tokenizer("assistant", add_special_tokens=False)["input_ids"])
    if header[: len(role)] != role:
        role = header  # the role name merged with the newline: only exact header matches count
    unknown = tokenizer.unk_token_id
    vision_ids = (tokenizer.convert_tokens_to_ids(token) for token in (VIDEO_TOKEN, IMAGE_TOKEN))
    vision = frozenset(i for i in vision_ids if i is not None and i != unknown)
    if start_id is None or start_id == unknown or end_id is None or end_id == unknown:
        raise VidlabError(
            "the tokenizer has no <|im_start|> / <|im_end|> tokens, so assistant replies cannot be found. "
            "Use the model's own (Qwen2) tokenizer."
        )
    return start_id, header, role, end_id, vision


def assistant_label_mask(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """True at the tokens that are learned: each assistant reply and its closing <|im_end|>.

    A reply starts after `<|im_start|>` + the tokens of "assistant\\n" and runs up to and including
    the next `<|im_end|>` (to the end when there is none). The prefix itself, system and user turns,
    vision tokens and anything after the last `<|im_end|>` (the template's trailing newline) are False.
    When the reply begins with whitespace the tokenizer may merge the role's newline with it (Qwen:
    "\\n\\n" is one token); then the reply starts at that merged token.

    Args:
        input_ids: (length,) token ids of one sample.
        tokenizer: the processor's tokenizer.
    """
    if input_ids.dim() != 1:
        raise ValueError(f"assistant_label_mask takes one sample's (length,) ids, got shape {tuple(input_ids.shape)}")
    start_id, header, role, end_id, vision = _markers(tokenizer)
    ids = input_ids.tolist()
    mask = torch.zeros(len(ids), dtype=torch.bool)
    ends = (input_ids == end_id).nonzero().flatten().tolist()
    for start in (input_ids == start_id).nonzero().flatten().tolist():
        body = start + 1
        if tuple(ids[body : body + len(header)]) == header:
            first = body + len(header)
        elif (
            role != header
            and tuple(ids[body : body + len(role)]) == role
            and body + len(role) < len(ids)
            and tokenizer.decode([ids[body + len(role)]]).startswith("\n")
        ):
            first = body + len(role)
        else:
            continue
        after = bisect.bisect_left(ends, first)
        last = ends[after] if after < len(ends) else len(ids) - 1
        mask[first : last + 1] = True
    for token in vision:
        mask &= input_ids != token
    return mask


def label_assistant_turns(input_ids: torch.Tensor, tokenizer) -> torch.Tensor:
    """Labels for one sample: the token ids where `assistant_label_mask` is True, -100 elsewhere."""
    return torch.where(assistant_label_mask(input_ids, tokenizer), input_ids, torch.full_like(input_ids, IGNORE_INDEX))
