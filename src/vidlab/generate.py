"""Answers from model inputs: whole, streamed piece by piece, or for a batch at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from transformers import TextIteratorStreamer

from vidlab.inputs import Batch
from vidlab.settings import GenerationOptions


@dataclass
class Generated:
    text: str
    token_ids: list[int] = field(default_factory=list)


def _on_model(inputs: Batch, model) -> dict[str, torch.Tensor]:
    """Move tensors to the model's device; pixels also to its dtype."""
    moved = {}
    for name, tensor in inputs.tensors.items():
        tensor = tensor.to(model.device)
        if name.startswith("pixel_values"):
            tensor = tensor.to(model.dtype)
        moved[name] = tensor
    return moved


def _until_stop(ids: list[int], stop_ids: set[int]) -> list[int]:
    for i, token in enumerate(ids):
        if token in stop_ids:
            return ids[:i]
    return ids


def _stop_ids(model, processor) -> set[int]:
    eos = model.generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    ids.add(processor.tokenizer.eos_token_id)
    if processor.tokenizer.pad_token_id is not None:
        ids.add(processor.tokenizer.pad_token_id)
    return ids


@torch.inference_mode()
def generate_batch(
    model, processor, inputs: Batch, options: GenerationOptions = GenerationOptions()
) -> list[Generated]:
    """One answer per sample of a left-padded batch (`vidlab.inputs.collate(..., "left")`), in order.

    Under greedy decoding each answer is the one `generate` gives for that sample alone.
    """
    tensors = _on_model(inputs, model)
    output = model.generate(**tensors, **options.to_kwargs(), pad_token_id=processor.tokenizer.pad_token_id)
    # Left padding: every prompt ends in the same column, so the answers all start after it.
    prompt_length = tensors["input_ids"].shape[1]
    stop_ids = _stop_ids(model, processor)
    answers = []
    for row in output[:, prompt_length:].tolist():
        ids = _until_stop(row, stop_ids)
        answers.append(Generated(text=processor.tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids))
    return answers


def generate(model, processor, inputs: Batch, options: GenerationOptions = GenerationOptions()) -> Generated:
    """The answer for a batch of one (`vidlab.inputs.build_inputs`)."""
    return generate_batch(model, processor, inputs, options)[0]


class _RecordingStreamer(TextIteratorStreamer):
    """A text streamer that also keeps the generated token ids."""

    def __init__(self, tokenizer, **kwargs):
        super().__init__(tokenizer, **kwargs)
        self.generated: list[int] = []

    def put(self, value: torch.Tensor) -> None:
        if not self.next_tokens_are_prompt:
            self.generated.extend(value.flatten().tolist())
        super().put(value)


def stream(model, processor, inputs: Batch, options: GenerationOptions = GenerationOptions()) -> Iterator[str]:
    """Yield the answer in pieces as it is generated; returns the full `Generated` at the end.

    Use as `result = yield from stream(...)` or iterate and read StopIteration.value.
    """
    tensors = _on_model(inputs, model)
    streamer = _RecordingStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with torch.inference_mode():
                model.generate(**tensors, **options.to_kwargs(), streamer=streamer)
        except BaseException as err:  # surfaced in the caller's thread below
            failure.append(err)
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    for piece in streamer:
        if piece:
            yield piece
    worker.join()
    if failure:
        raise failure[0]
    ids = _until_stop(streamer.generated, _stop_ids(model, processor))
    return Generated(text=processor.tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids)
