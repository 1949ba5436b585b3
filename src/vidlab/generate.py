"""Answers from model inputs: whole, streamed piece by piece, or for a batch at once (also streamed).

Two things can be brought along to save work:
- a `VisionCache`: the videos' vision-encoder outputs are reused when the same video comes again;
- a `PrefixCache` (`vidlab.prefix_cache`, shared by the server and chat): key/value caches of prompt
  starts. When a prompt of one request starts with the tokens and media of a stored prefix, only the
  tokens after it are run through the model, and neither the vision encoder nor the earlier prefill
  runs again. After the answer, the prompt's start through its last vision token is kept (`keep="media"`),
  or the whole conversation with the answer, for the next turn (`keep="conversation"`).

`prepare` (one request: tensors on the model, the prefix reused) and `keep_prefix` (after its prefill)
are the steps a scheduler that prefills requests one at a time calls itself.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer
from transformers.generation.streamers import BaseStreamer

from vidlab.inputs import Batch
from vidlab.models.logits import logits_at
from vidlab.prefix_cache import PrefixCache, media_key, vision_end
from vidlab.settings import GenerationOptions
from vidlab.vision_cache import VisionCache

# Model inputs that carry pictures: all of them are covered once the cache holds every vision token.
_VISION_INPUTS = ("pixel_values", "image_grid_thw", "image_merge_sizes", "pixel_values_videos", "video_grid_thw",
                  "video_merge_sizes", "video_compression_mask",
                  "pixel_values_frames", "frame_counts", "qformer_input_ids", "qformer_lengths")  # the seed families


@dataclass
class Generated:
    text: str
    token_ids: list[int] = field(default_factory=list)
    reused_tokens: int = 0  # prompt tokens whose keys and values came from the prefix cache


def _on_model(inputs: Batch, model, leave: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Move tensors to the model's device; pixels also to its dtype. Those named in `leave` are left out."""
    moved = {}
    for name, tensor in inputs.tensors.items():
        if name in leave:
            continue
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


Keep = Literal["media", "conversation"]


@dataclass
class Prepared:
    """One batch's model inputs, ready for `model.generate(**tensors)`.

    Attributes:
        tensors: on the model's device; with `cache` (a copy of a stored prefix) when one was reused, and
            without the vision inputs then (the cache covers every vision token).
        reused: prompt tokens the reused prefix covers (0: none).
        media: the prompt's media key for the prefix cache (None: no prefix cache, or a batch of several).
        reused_key: the prefix cache's key of the entry reused.
    """

    tensors: dict
    reused: int = 0
    media: Hashable | None = None
    reused_key: Hashable | None = None


def prepare(model, inputs: Batch, *, vision_cache: VisionCache | None = None,
            prefix_cache: PrefixCache | None = None) -> Prepared:
    """Model inputs for a batch: for a batch of one with a `prefix_cache`, continuing the longest stored prefix
    of its prompt; vision-encoder outputs from `vision_cache` for the videos that still need them."""
    media, hit = None, None
    if prefix_cache is not None and inputs.tensors["input_ids"].shape[0] == 1:  # looked up before the pixels move
        media = media_key(model, inputs.tensors, inputs.video_keys)
        hit = prefix_cache.lookup(model, inputs.tensors["input_ids"][0], media)
    tensors = _on_model(inputs, model, leave=_VISION_INPUTS if hit is not None else ())
    reused, reused_key = 0, None
    if hit is not None:
        tensors["cache"], reused, reused_key = hit.cache, hit.tokens, hit.key
    if not reused and vision_cache is not None:
        tensors = vision_cache.swap_in(model, tensors, inputs.video_keys)
    return Prepared(tensors, reused, media, reused_key)


def _prepare(model, inputs: Batch, vision_cache: VisionCache | None,
             prefix_cache: PrefixCache | None = None) -> tuple[dict, int]:
    prepared = prepare(model, inputs, vision_cache=vision_cache, prefix_cache=prefix_cache)
    return prepared.tensors, prepared.reused


def keep_prefix(prefix_cache: PrefixCache | None, model, prepared: Prepared, cache, answer: list[int] = (), *,
                keep: Keep = "media") -> bool:
    """After a batch of one was prefilled (and maybe answered): keep its prompt's start in `prefix_cache`.

    Args:
        cache: the request's DynamicCache after its prefill or its answer (not changed; the part kept is copied,
            or, when all of it is kept, held as it is: a DynamicCache replaces its tensors as it grows, never
            writes into them).
        answer: the generated token ids, for `keep="conversation"`.
        keep: "media": the prompt through its last vision token (a prompt without media keeps nothing);
            "conversation": the prompt and the answer (all but its last token, which the cache does not hold),
            in place of the entry it continued (the conversation's state before this answer).
    """
    if prefix_cache is None or prepared.media is None or cache is None:
        return False
    prompt = prepared.tensors["input_ids"][0].cpu()
    if keep == "conversation":
        ids = torch.cat([prompt, torch.tensor(list(answer), dtype=torch.long)])
        return prefix_cache.store(ids, prepared.media, cache, replaces=prepared.reused_key)
    end = vision_end(model, prompt)
    if end == 0 or end <= prepared.reused:  # nothing new: what was reused is stored already
        return False
    return prefix_cache.store(prompt, prepared.media, cache, end)


@torch.inference_mode()
def generate_batch(
    model, processor, inputs: Batch, options: GenerationOptions = GenerationOptions(), *,
    vision_cache: VisionCache | None = None,
) -> list[Generated]:
    """One answer per sample of a left-padded batch (`vidlab.inputs.collate(..., "left")`), in order.

    Under greedy decoding each answer is the one `generate` gives for that sample alone.
    """
    tensors, _ = _prepare(model, inputs, vision_cache, None)
    with logits_at(model, 1):  # the native forward would build the whole prompt's logits in prefill
        output = model.generate(**tensors, **options.to_kwargs(), pad_token_id=processor.tokenizer.pad_token_id)
    # Left padding: every prompt ends in the same column, so the answers all start after it.
    prompt_length = tensors["input_ids"].shape[1]
    stop_ids = _stop_ids(model, processor)
    answers = []
    for row in output[:, prompt_length:].tolist():
        ids = _until_stop(row, stop_ids)
        answers.append(Generated(text=processor.tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids))
    return answers


@torch.inference_mode()
def generate(
    model, processor, inputs: Batch, options: GenerationOptions = GenerationOptions(), *,
    vision_cache: VisionCache | None = None, prefix_cache: PrefixCache | None = None, keep: Keep = "media",
) -> Generated:
    """The answer for a batch of one (`vidlab.inputs.build_inputs`).

    Args:
        vision_cache: reuse and keep the videos' vision-encoder outputs.
        prefix_cache: continue the longest stored prefix of the prompt, and keep this one's (see `keep_prefix`).
        keep: what of this prompt `prefix_cache` keeps: "media" (its start through the last vision token) or
            "conversation" (the prompt and the answer, for a follow-up).
    """
    prepared = prepare(model, inputs, vision_cache=vision_cache, prefix_cache=prefix_cache)
    tensors = prepared.tensors
    with logits_at(model, 1):
        output = model.generate(**tensors, **options.to_kwargs(), pad_token_id=processor.tokenizer.pad_token_id,
                                return_dict_in_generate=True)
    generated = output.sequences[0, tensors["input_ids"].shape[1]:].tolist()
    ids = _until_stop(generated, _stop_ids(model, processor))
    keep_prefix(prefix_cache, model, prepared, output.cache, generated, keep=keep)
    return Generated(processor.tokenizer.decode(ids, skip_special_tokens=True), ids, prepared.reused)


class _RecordingStreamer(TextIteratorStreamer):
    """A text streamer that also keeps the generated token ids."""

    def __init__(self, tokenizer, **kwargs):
        super().__init__(tokenizer, **kwargs)
        self.generated: list[int] = []

    def put(self, value: torch.Tensor) -> None:
        if not self.next_tokens_are_prompt:
            self.generated.extend(value.flatten().tolist())
        super().put(value)


class _WhenSet(StoppingCriteria):
    """Stops generation once `event` is set (a stream whose reader went away)."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def stream(
    model, processor, inputs: Batch, options: GenerationOptions = GenerationOptions(), *,
    vision_cache: VisionCache | None = None, prefix_cache: PrefixCache | None = None, keep: Keep = "media",
) -> Iterator[str]:
    """Yield the answer in pieces as it is generated; returns the full `Generated` at the end
    (arguments as `generate`).

    Use as `result = yield from stream(...)` or iterate and read StopIteration.value.
    """
    with torch.inference_mode():
        prepared = prepare(model, inputs, vision_cache=vision_cache, prefix_cache=prefix_cache)
    tensors = prepared.tensors
    streamer = _RecordingStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
    failure: list[BaseException] = []
    result: list = []
    cancelled = threading.Event()  # the caller stopped reading (closed this generator): generation stops too

    def run() -> None:
        try:
            with torch.inference_mode(), logits_at(model, 1):
                result.append(model.generate(**tensors, **options.to_kwargs(), streamer=streamer,
                                             pad_token_id=processor.tokenizer.pad_token_id,
                                             return_dict_in_generate=True,
                                             stopping_criteria=StoppingCriteriaList([_WhenSet(cancelled)])))
        except BaseException as err:  # surfaced in the caller's thread below
            failure.append(err)
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    read_all = False
    try:
        for piece in streamer:
            if piece:
                yield piece
        read_all = True
    finally:
        if not read_all:
            cancelled.set()
        worker.join()  # the model is free again when this returns
    if failure:
        raise failure[0]
    ids = _until_stop(streamer.generated, _stop_ids(model, processor))
    keep_prefix(prefix_cache, model, prepared, result[0].cache, streamer.generated, keep=keep)
    return Generated(processor.tokenizer.decode(ids, skip_special_tokens=True), ids, prepared.reused)


class _BatchStreamer(BaseStreamer):
    """Hands each row's new text to a queue as a batch is generated. transformers' text streamers take
    one row only; this one keeps the ids of every row and sends what each row's text grew by."""

    def __init__(self, tokenizer, stop_ids: set[int], rows: int):
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.done = [False] * rows
        self.sent = [""] * rows
        self.queue: queue.Queue = queue.Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate's first call hands over the prompt
            self._prompt_seen = True
            return
        for row, token in enumerate(value.reshape(len(self.ids), -1)[:, -1].tolist()):
            if self.done[row]:
                continue
            if token in self.stop_ids:
                self.done[row] = True
                continue
            self.ids[row].append(token)
            text = self.tokenizer.decode(self.ids[row], skip_special_tokens=True)
            if text.endswith("\ufffd"):
                continue  # a character cut between tokens: wait for the rest of its bytes
            if text.startswith(self.sent[row]) and len(text) > len(self.sent[row]):
                self.queue.put((row, text[len(self.sent[row]):]))
                self.sent[row] = text

    def end(self) -> None:
        for row, ids in enumerate(self.ids):  # what was held back waiting for a character's last bytes
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            if text.startswith(self.sent[row]) and len(text) > len(self.sent[row]):
                self.queue.put((row, text[len(self.sent[row]):]))
                self.sent[row] = text
        self.queue.put(None)


def stream_batch(
    model, processor, inputs: Batch, options: GenerationOptions = GenerationOptions(), *,
    vision_cache: VisionCache | None = None, adapter_names: list[str] | None = None,
) -> Iterator[tuple[int, str]]:
    """Yield `(row, piece)` while every answer of a left-padded batch is generated together; returns the
    `Generated` of each row (as `generate_batch`) at the end.

    Args:
        adapter_names: per row, the peft adapter that answers it (`"__base__"`: none), so a base model
            and its adapters answer one batch together (peft's mixed adapter batches; adapters on the
            LLM only).
    """
    with torch.inference_mode():
        tensors, _ = _prepare(model, inputs, vision_cache, None)
    rows = tensors["input_ids"].shape[0]
    extra = {"adapter_names": adapter_names} if adapter_names is not None else {}
    streamer = _BatchStreamer(processor.tokenizer, _stop_ids(model, processor), rows)
    failure: list[BaseException] = []
    result: list = []

    def run() -> None:
        try:
            with torch.inference_mode(), logits_at(model, 1):
                result.append(model.generate(**tensors, **options.to_kwargs(), **extra, streamer=streamer,
                                             pad_token_id=processor.tokenizer.pad_token_id))
        except BaseException as err:  # surfaced in the caller's thread below
            failure.append(err)
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    while (item := streamer.queue.get(timeout=600)) is not None:
        yield item
    worker.join()
    if failure:
        raise failure[0]
    prompt_length = tensors["input_ids"].shape[1]
    stop_ids = _stop_ids(model, processor)
    answers = []
    for row in result[0][:, prompt_length:].tolist():
        ids = _until_stop(row, stop_ids)
        answers.append(Generated(text=processor.tokenizer.decode(ids, skip_special_tokens=True), token_ids=ids))
    return answers
