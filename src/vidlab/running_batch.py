"""Continuous (iteration-level) batching: requests join a running batch between decoding steps and leave it when
they end, so a short answer never waits for a long one and a new request never waits for a batch to finish.

transformers' own continuous batching (`generate_batch`, `ContinuousBatchingManager`, paged attention) is not used:
its `add_request` takes prompt token ids only and builds every step's model input from ids, so VideoLLaMA3's prefill
with vision features (pixels or `mm_encoder_outputs` scattered into `inputs_embeds`) cannot go through it.

Instead the rows share one transformers `DynamicCache`, left-padded: each row's keys and values end in the last
column, an attention mask marks the padding and each row has its own position ids. A joiner is prepared by the
same functions `vidlab.generate` uses (`prepare`: vision cache, prefix cache), its prompt embedded by the model's
own forward (stopped before the LLM), then prefilled in chunks of at most `prefill_tokens` tokens per step (short
prompts together, left-padded), between the decoding steps of the running rows; once its prompt is in, its cache
is padded and concatenated to the batch's. Each row samples with its own settings (temperature, top_p, top_k,
repetition penalty, seed). Rows with different LoRA adapters decode together through peft's mixed adapter batches
(`adapter_names=`); where peft cannot (DoRA), `accepts` keeps one adapter per batch.

Under greedy decoding every answer is the one `vidlab.generate.generate` gives for that request alone.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import (
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.cache_utils import DynamicLayer

from vidlab.generate import Generated, Prepared, _stop_ids, keep_prefix, prepare
from vidlab.inputs import Batch
from vidlab.models.adapters import BASE, active_adapter
from vidlab.models.logits import logits_at
from vidlab.prefix_cache import PrefixCache
from vidlab.settings import GenerationOptions
from vidlab.vision_cache import VisionCache

DEFAULT_PREFILL_TOKENS = 512


@dataclass(eq=False)
class Request:
    """One answer to generate in a running batch.

    Args:
        inputs: a batch of one, left-padded (`vidlab.inputs.build_inputs` or `collate(..., "left")`).
        adapter: the peft adapter that answers (None or `BASE`: the base model).
        seed: sampled requests draw from their own generator seeded with this (None: torch's global one).
        stops: text that ends the answer early once it appears (the caller still cuts the text).
        on_text: called on the model thread with each new piece of the answer's text.
        cancelled: polled before each step; True: the request leaves the batch with what it has.
        vision_cache, prefix_cache: as in `vidlab.generate.generate` (a request prefilled alone keeps the start
            of its prompt through its media in `prefix_cache`).
    """

    inputs: Batch
    options: GenerationOptions = field(default_factory=GenerationOptions)
    adapter: str | None = None
    seed: int | None = None
    stops: list[str] = field(default_factory=list)
    on_text: Callable[[str], None] | None = None
    cancelled: Callable[[], bool] | None = None
    vision_cache: VisionCache | None = None
    prefix_cache: PrefixCache | None = None
    # Filled in as it runs.
    token_ids: list[int] = field(default_factory=list)
    result: Generated | None = None  # set when it leaves the batch (also when cancelled: the answer so far)
    error: BaseException | None = None  # set when its prefill or a step failed
    stopped: bool = False  # it left because `cancelled` said so
    peak_rows: int = 0  # most requests in the batch while this one was in it
    _sent: str = ""
    _prompt_ids: torch.Tensor | None = None
    _prepared: Prepared | None = None
    _processors: LogitsProcessorList | None = None
    _least: int = 0  # the end token is held back until this many tokens are generated (min_tokens, ignore_eos)
    _generator: torch.Generator | None = None

    @property
    def sampled(self) -> bool:
        return self.options.temperature > 0


@dataclass
class _Rows:
    """Rows sharing one left-padded cache: row i's tokens sit in the columns where mask[i] is 1, the last at the end."""

    cache: object  # DynamicCache
    mask: torch.Tensor  # (rows, columns) long
    lengths: torch.Tensor  # (rows,) tokens of each row in the cache: the next position id
    requests: list[Request]


@dataclass
class _Joining:
    request: Request
    embeds: torch.Tensor  # (1, tokens, hidden): the prompt's embeddings not yet in the cache
    cache: object | None  # the request's own DynamicCache so far (a reused prefix, or earlier chunks)
    done: int  # prompt tokens already in `cache`


class _Embedded(Exception):
    def __init__(self, embeds: torch.Tensor):
        self.embeds = embeds


def _core(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def prompt_embeddings(model, tensors: dict) -> torch.Tensor:
    """The LLM's input embeddings for `tensors` as the model's forward builds them (text embeddings with the vision
    features, or a compressor's tokens, in place of the picture tokens).

    Hand-written because the native model has no public "embed with vision" call: its forward runs until the
    language model, where a pre-hook takes the embeddings and stops it.
    """
    language_model = _core(model).model.language_model

    def grab(_module, _args, kwargs):
        raise _Embedded(kwargs["inputs_embeds"])

    handle = language_model.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        model(**tensors)
    except _Embedded as caught:
        return caught.embeds
    finally:
        handle.remove()
    raise RuntimeError("the model's forward did not reach its language model")


def _pad_left(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    pads = [0, 0] * (tensor.dim() - 1 - (dim % tensor.dim())) + [missing, 0]
    return F.pad(tensor, pads)


def _layers(cache) -> list:
    layers = cache.layers
    if any(type(layer) is not DynamicLayer for layer in layers):
        raise TypeError("continuous batching pads full-attention caches only (DynamicLayer); this model's cache has "
                        "sliding-window or other layers. Serve it with --batching static.")
    return layers


def _merge(a: _Rows, b: _Rows) -> _Rows:
    """One set of rows: both padded on the left to the wider one, then stacked."""
    width = max(a.mask.shape[1], b.mask.shape[1])
    for mine, theirs in zip(_layers(a.cache), _layers(b.cache), strict=True):
        mine.keys = torch.cat([_pad_left(mine.keys, width, -2), _pad_left(theirs.keys, width, -2)])
        mine.values = torch.cat([_pad_left(mine.values, width, -2), _pad_left(theirs.values, width, -2)])
    mask = torch.cat([_pad_left(a.mask, width, 1), _pad_left(b.mask, width, 1)])
    return _Rows(a.cache, mask, torch.cat([a.lengths, b.lengths]), a.requests + b.requests)


def _select(rows: _Rows, keep: list[int]) -> _Rows | None:
    """The rows at `keep`, without the leading columns that only padding fills now."""
    if not keep:
        return None
    if len(keep) == len(rows.requests):
        return rows
    index = torch.tensor(keep, device=rows.mask.device)
    mask = rows.mask.index_select(0, index)
    first = int(mask.any(0).nonzero()[0]) if mask.any() else 0
    for layer in _layers(rows.cache):
        layer.keys = layer.keys.index_select(0, index)[..., first:, :]
        layer.values = layer.values.index_select(0, index)[..., first:, :]
    return _Rows(rows.cache, mask[:, first:], rows.lengths.index_select(0, index), [rows.requests[i] for i in keep])


def _split(rows: _Rows, count: int) -> tuple[_Rows, _Rows | None]:
    """(the first `count` rows, the others), each with a cache of its own."""
    total = len(rows.requests)
    if count >= total:
        return rows, None
    head = copy.copy(rows.cache)  # a cache object of its own, whose layers `_select` replaces
    head.layers = [copy.copy(layer) for layer in _layers(rows.cache)]
    first = _select(_Rows(head, rows.mask, rows.lengths, rows.requests), list(range(count)))
    return first, _select(rows, list(range(count, total)))


def _positions(mask: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Position ids of the new columns of a left-padded chunk: each row counts on from `start` (padding: 1, as
    transformers' generate)."""
    positions = start[:, None] + mask.cumsum(-1) - 1
    return positions.masked_fill(mask == 0, 1)


class RunningBatch:
    """The requests being answered, advanced one decoding step at a time by `step` (on one thread).

    Args:
        max_rows: most requests decoding at once.
        prefill_tokens: most prompt tokens prefilled per step: a longer prompt goes in over several steps, while
            the running rows go on decoding.
        ahead: requests beyond `max_rows` that may wait inside the batch (`accepts` says no beyond both). A free
            row is filled from them, and the short prompts among them are prefilled together in one forward pass
            (at most `prefill_tokens` tokens), so that rows ending one at a time do not each cost a forward pass
            for a single joiner; those prefilled before a row is free wait with their first token (None: max_rows).
    """

    def __init__(self, model, processor, *, max_rows: int, prefill_tokens: int = DEFAULT_PREFILL_TOKENS,
                 ahead: int | None = None):
        self.model, self.processor = model, processor
        self.max_rows, self.prefill_tokens = max_rows, prefill_tokens
        self.ahead = max_rows if ahead is None else ahead
        self.stop_ids = _stop_ids(model, processor)
        eos = model.generation_config.eos_token_id
        self._eos = torch.tensor(eos if isinstance(eos, list) else [eos], device=model.device) if eos is not None \
            else torch.tensor(sorted(self.stop_ids), device=model.device)
        configs = getattr(model, "peft_config", {}) or {}
        self.has_adapters = bool(configs)
        # peft's mixed adapter batches do not take DoRA adapters: then a batch holds one adapter at a time.
        self.mixed_adapters = not any(getattr(config, "use_dora", False) for config in configs.values())
        # With SDPA a decoding step takes its mask as built here (see `_step_mask`); other attention kernels (flash,
        # eager) get the 2-D padding mask and build their own.
        self._sdpa = getattr(_core(model).config.get_text_config(), "_attn_implementation", None) == "sdpa"
        self._rows: _Rows | None = None  # decoding
        self._ready: _Rows | None = None  # prefilled (first token chosen), waiting for a free row
        self._joining: list[_Joining | Request] = []
        self.generated_tokens = 0  # tokens generated in all, and rows decoded over all steps (occupancy)
        self.steps = 0
        self.row_steps = 0

    # ---- who is in ---------------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        rows = [*(self._rows.requests if self._rows is not None else []),
                *(self._ready.requests if self._ready is not None else [])]
        return [*rows, *(j.request if isinstance(j, _Joining) else j for j in self._joining)]

    def __len__(self) -> int:
        return len(self.requests)

    def _adapter(self, request: Request) -> str | None:
        if not self.has_adapters:
            return None
        return request.adapter or BASE

    def accepts(self, request: Request) -> bool:
        """Whether `request` may join now (room, and its adapter where adapters cannot mix)."""
        current = self.requests
        if len(current) >= self.max_rows + self.ahead:
            return False
        return self.mixed_adapters or not current or self._adapter(current[0]) == self._adapter(request)

    def add(self, request: Request) -> None:
        """Queue `request` for prefill: it joins the decoding rows once its prompt is in."""
        self._joining.append(request)
        self._note_size()

    def clear(self) -> list[Request]:
        """Every request, out of the batch (after a failure the batch cannot say more about)."""
        requests = self.requests
        self._rows, self._ready, self._joining = None, None, []
        return requests

    def _room(self) -> int:
        """Rows free for requests not prefilled yet."""
        return self.max_rows - sum(len(rows.requests) for rows in (self._rows, self._ready) if rows is not None)

    def _note_size(self) -> None:
        size = min(len(self), self.max_rows)  # those waiting ahead are not generated together with the others
        for request in self.requests:
            request.peak_rows = max(request.peak_rows, size)

    # ---- one step ----------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def step(self) -> list[Request]:
        """Prefill (a chunk of) the joiners, then one decoding step of the rows; the requests that left (answered,
        cancelled, or failed: `Request.error`)."""
        left = self._drop_cancelled()
        if self._joining and self._room() > 0:
            left += self._prefill()
        self._fill()
        if self._rows is not None:
            left += self._decode()
        return left

    def _drop_cancelled(self) -> list[Request]:
        left = []
        for item in list(self._joining):
            request = item.request if isinstance(item, _Joining) else item
            if request.cancelled is not None and request.cancelled():
                self._joining.remove(item)
                request.stopped = True
                left.append(self._finish(request))
        self._rows = self._drop_cancelled_rows(self._rows, left)
        self._ready = self._drop_cancelled_rows(self._ready, left)
        return left

    def _drop_cancelled_rows(self, rows: _Rows | None, left: list[Request]) -> _Rows | None:
        if rows is None:
            return None
        gone = [r.cancelled is not None and r.cancelled() for r in rows.requests]
        if not any(gone):
            return rows
        for request in (r for r, g in zip(rows.requests, gone) if g):
            request.stopped = True
            left.append(self._finish(request))
        return _select(rows, [i for i, g in enumerate(gone) if not g])

    def _fill(self) -> None:
        """Free rows take the prefilled requests that wait, in order."""
        if self._ready is None:
            return
        room = self.max_rows - (len(self._rows.requests) if self._rows is not None else 0)
        if room <= 0:
            return
        moving, self._ready = _split(self._ready, room)
        self._rows = moving if self._rows is None else _merge(self._rows, moving)
        self._note_size()

    def _finish(self, request: Request) -> Request:
        text = self.processor.tokenizer.decode(request.token_ids, skip_special_tokens=True)
        request.result = Generated(text=text, token_ids=list(request.token_ids),
                                   reused_tokens=request.result.reused_tokens
                                   if request.result is not None else 0)
        if request.on_text is not None and text.startswith(request._sent) and len(text) > len(request._sent):
            request.on_text(text[len(request._sent):])  # what was held back for a character's last bytes
            request._sent = text
        return request

    def _scope(self, requests: list[Request]):
        """(context, forward kwargs) that make each row answer as its adapter."""
        names = [self._adapter(r) for r in requests]
        if len(set(names)) <= 1:
            return active_adapter(self.model, names[0] if names else None), {}
        return nullcontext(), {"adapter_names": names}

    def _start(self, request: Request) -> _Joining:
        """Prepare a joiner's prompt: through `vidlab.generate.prepare` (vision and prefix caches), embedded."""
        with active_adapter(self.model, self._adapter(request)):
            request._prepared = prepare(self.model, request.inputs, vision_cache=request.vision_cache,
                                        prefix_cache=request.prefix_cache)
            tensors, reused = dict(request._prepared.tensors), request._prepared.reused
            cache = tensors.pop("cache", None)
            ids = tensors["input_ids"]
            request._prompt_ids = ids[0]
            tensors = {k: v for k, v in tensors.items() if k != "attention_mask"}
            tensors["input_ids"] = ids[:, reused:]
            embeds = prompt_embeddings(self.model, tensors)
        request.result = Generated(text="", reused_tokens=reused)
        request._processors = self._processors(request)
        if request.sampled and request.seed is not None:
            request._generator = torch.Generator(device=self.model.device).manual_seed(request.seed)
        return _Joining(request, embeds, cache, reused)

    def _processors(self, request: Request) -> LogitsProcessorList | None:
        """The logits processors `generate` would use for these options (built from transformers' public classes:
        its own builder is private)."""
        options = request.options
        processors = LogitsProcessorList()
        if options.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(options.repetition_penalty))
        # min_tokens (MinNewTokensLengthLogitsProcessor's rule) is applied to all rows at once in `_advance`.
        request._least = options.max_new_tokens if options.ignore_eos else min(options.min_new_tokens,
                                                                                options.max_new_tokens)
        if request.sampled:
            if options.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(options.temperature))
            if options.top_k:
                processors.append(TopKLogitsWarper(options.top_k))
            if options.top_p < 1.0:
                processors.append(TopPLogitsWarper(options.top_p))
        return processors or None

    def _prefill(self) -> list[Request]:
        """One prefill forward: the first joiner's next chunk, or several short joiners' whole prompts together."""
        failed, budget = [], self.prefill_tokens
        for item in list(self._joining):  # embed new joiners up to this step's prompt tokens
            if budget <= 0:
                break
            if isinstance(item, _Joining):
                budget -= item.embeds.shape[1]
                continue
            try:
                started = self._start(item)
            except Exception as err:  # this request's own inputs failed: it alone leaves
                self._joining.remove(item)
                item.error = err
                failed.append(item)
                continue
            self._joining[self._joining.index(item)] = started
            budget -= started.embeds.shape[1]
        if failed:
            return failed
        first = self._joining[0]
        if not isinstance(first, _Joining):
            return []
        group = [first]
        if self._whole(first, self.prefill_tokens):
            # Short prompts go in together: all without a reused prefix, or all continuing one (padded together);
            # the others wait for a later step.
            budget = self.prefill_tokens - first.embeds.shape[1]
            for item in self._joining[1:]:
                if isinstance(item, _Joining) and self._whole(item, budget) \
                        and (item.cache is None) == (first.cache is None):
                    group.append(item)
                    budget -= item.embeds.shape[1]
        try:
            return self._prefill_group(group)
        except Exception as err:  # out of memory or a bug: these joiners fail, the running rows go on
            for item in group:
                self._joining.remove(item)
                item.request.error = err
            return [item.request for item in group]

    @staticmethod
    def _whole(item: _Joining, budget: int) -> bool:
        """Whether the rest of `item`'s prompt goes in at once within `budget` tokens, none of it prefilled yet."""
        return item.embeds.shape[1] <= budget and item.done == item.request.result.reused_tokens

    def _prefill_group(self, group: list[_Joining]) -> list[Request]:
        take = [min(item.embeds.shape[1], self.prefill_tokens) for item in group]
        width = max(take)
        hidden = group[0].embeds.shape[-1]
        device = group[0].embeds.device
        embeds = torch.zeros((len(group), width, hidden), dtype=group[0].embeds.dtype, device=device)
        new = torch.zeros((len(group), width), dtype=torch.long, device=device)
        for row, (item, n) in enumerate(zip(group, take)):
            embeds[row, width - n:] = item.embeds[0, :n]
            new[row, width - n:] = 1
        done = torch.tensor([item.done for item in group], device=device)
        past, old = None, None
        if group[0].cache is not None:  # the reused prefixes (each request's own copy), padded on the left together
            pasts = None
            for row, item in enumerate(group):
                ones = torch.ones((1, item.cache.get_seq_length()), dtype=torch.long, device=device)
                alone = _Rows(item.cache, ones, done[row:row + 1], [item.request])
                pasts = alone if pasts is None else _merge(pasts, alone)
            past, old = pasts.cache, pasts.mask
        mask = new if old is None else torch.cat([old, new], 1)
        context, extra = self._scope([item.request for item in group])
        with context, logits_at(self.model, 1):
            output = self.model(inputs_embeds=embeds, attention_mask=mask, position_ids=_positions(new, done),
                                cache=past, use_cache=True, **extra)
        for item, n in zip(group, take):
            item.embeds, item.cache, item.done = item.embeds[:, n:], output.cache, item.done + n
        if group[0].embeds.shape[1]:  # a long prompt's chunk: more of it next step
            return []
        for item in group:
            self._joining.remove(item)
        if len(group) == 1:  # its own cache, unpadded: its prompt's start is kept for later requests
            request = group[0].request
            keep_prefix(request.prefix_cache, self.model, request._prepared, output.cache)
        for item in group:
            item.request._prepared = None  # frees a reused prefix's copy once it is in the rows
        rows = _Rows(output.cache, mask, done + torch.tensor(take, device=device), [item.request for item in group])
        rows, ended = self._advance(rows, output.logits[:, -1])
        if rows is not None:
            self._ready = rows if self._ready is None else _merge(self._ready, rows)
        return ended

    def _decode(self) -> list[Request]:
        rows = self._rows
        requests = rows.requests
        last = torch.tensor([[r.token_ids[-1]] for r in requests], device=rows.mask.device)
        mask = torch.cat([rows.mask, torch.ones_like(rows.mask[:, :1])], 1)
        context, extra = self._scope(requests)
        try:
            with context:
                output = self.model(input_ids=last, attention_mask=self._step_mask(mask),
                                    position_ids=rows.lengths[:, None],
                                    cache=rows.cache, use_cache=True, **extra)
        except Exception as err:  # the rows' shared cache is in an unknown state: they all fail
            self._rows = None
            for request in requests:
                request.error = err
            return requests
        rows.mask, rows.lengths = mask, rows.lengths + 1
        self.steps += 1
        self.row_steps += len(requests)
        self._rows, ended = self._advance(rows, output.logits[:, -1])
        return ended

    def _step_mask(self, mask: torch.Tensor) -> torch.Tensor:
        """The attention mask of a decoding step (one new token per row, which sees every column its row fills).

        For SDPA, the 4-D boolean mask transformers would build from `mask` (its padding only: the new token is the
        last), built here because transformers' general mask builder costs about a fifth of a small model's step.
        """
        if not self._sdpa:
            return mask
        return mask[:, None, None, :].bool()

    def _advance(self, rows: _Rows, logits: torch.Tensor) -> tuple[_Rows | None, list[Request]]:
        """Each request's next token from its row of `logits`: (`rows` without the ones that ended, those)."""
        requests = rows.requests
        logits = logits.float()
        held = [row for row, request in enumerate(requests) if len(request.token_ids) < request._least]
        if held:  # as transformers' MinNewTokensLengthLogitsProcessor, for every held row in one go
            held_rows = torch.tensor(held, device=logits.device)
            logits[held_rows[:, None], self._eos[None, :]] = -float("inf")
        chosen = logits.argmax(-1).tolist()
        for row, request in enumerate(requests):
            if request._processors is None and not request.sampled:
                continue
            scores = logits[row:row + 1]
            if request._processors is not None:
                so_far = torch.tensor(request.token_ids, dtype=torch.long, device=scores.device)
                ids = torch.cat([request._prompt_ids.to(scores.device), so_far])[None]
                scores = request._processors(ids, scores)
            if request.sampled:
                probs = torch.softmax(scores, -1)
                chosen[row] = int(torch.multinomial(probs, 1, generator=request._generator))
            else:
                chosen[row] = int(scores.argmax(-1))
        ended = []
        for request, token in zip(requests, chosen):
            self.generated_tokens += 1
            if token in self.stop_ids:
                ended.append(request)
                continue
            request.token_ids.append(token)
            if self._stream(request) or len(request.token_ids) >= request.options.max_new_tokens:
                ended.append(request)
        if not ended:
            return rows, []
        keep = [i for i, r in enumerate(requests) if r not in ended]
        return _select(rows, keep), [self._finish(request) for request in ended]

    def _stream(self, request: Request) -> bool:
        """Send the text's new piece; True once the text holds a stop string."""
        if request.on_text is None and not request.stops:
            return False
        text = self.processor.tokenizer.decode(request.token_ids, skip_special_tokens=True)
        if request.on_text is not None and not text.endswith("\ufffd"):  # else: a character cut between tokens
            if text.startswith(request._sent) and len(text) > len(request._sent):
                request.on_text(text[len(request._sent):])
                request._sent = text
        return any(stop in text for stop in request.stops)
