"""Key/value caches of prompt prefixes, reused by later prompts that start with the same tokens and media.

Many questions about one video share their start: the system message, the video's thousands of
tokens and the text before the question. `PrefixCache` keeps the model's key/value cache of such a
start (at most `max_bytes`, the least recently used forgotten first), and a later prompt with the
same media whose tokens begin the same way reuses the longest stored match: only the tokens after
it go through the model, and neither the vision encoder nor the earlier prefill runs again.

- The server keeps each prompt's start through its last video or image token; `vidlab chat` keeps
  the whole conversation after each answer, which the next turn continues. Both go through the one
  `PrefixCache` (`vidlab.generate` looks up and keeps).
- An entry is keyed by the media (`media_key`: the model and its adapter, the videos' cache keys, a
  digest of the other vision inputs) and its token ids. A match must cover every vision token of the
  new prompt, so the new tokens never need pixels.
- A reused prefix is handed out as a fresh `DynamicCache` holding a copy of the stored tensors: the
  request extends its copy, the stored entry never changes.
- VideoLLaMA3 numbers its text positions 1-D from the attention mask (`generate` makes the position
  ids from it), so a continued prefill gives the positions, and logits, of a cold one.
Thread-safe.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable
from dataclasses import dataclass

import torch
from cachetools import Cache
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from vidlab.bounded_cache import BoundedCache

DEFAULT_MAX_BYTES = 2 << 30  # a 16K-token video prompt of a 7B model in bf16 (~1 GiB) twice

# Inputs that are not media: tokens and masks are matched as token ids.
_TEXT_INPUTS = ("input_ids", "attention_mask", "labels")


@dataclass(frozen=True, eq=False)
class PrefixEntry:
    """The keys and values of a prompt's first `len(ids)` tokens, per layer (1, heads, tokens, dim)."""

    ids: torch.Tensor  # (tokens,) on the CPU
    layers: tuple[tuple[torch.Tensor, torch.Tensor], ...]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.layers for t in layer)


@dataclass
class PrefixHit:
    """A stored prefix for one prompt: `cache` holds its first `tokens` tokens (a copy the caller may extend)."""

    cache: DynamicCache
    tokens: int
    key: Hashable  # the entry's, for `store(..., replaces=key)`


def _entry_bytes(entry: PrefixEntry) -> int:
    return entry.nbytes


def _digest(tensors: dict[str, torch.Tensor], names: list[str]) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(names):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def answering_as(model) -> tuple:
    """The model object and the adapter answering now: its active adapter, or none while peft's
    `disable_adapter()` holds (`vidlab.models.adapters.active_adapter(model, BASE)`), which keeps the name."""
    adapter = getattr(model, "active_adapter", None)
    if adapter is not None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        layer = next((m for m in model.modules() if isinstance(m, BaseTunerLayer)), None)
        if layer is not None and layer.disable_adapters:
            adapter = None
    return id(model), str(adapter)


def media_key(model, tensors: dict[str, torch.Tensor], video_keys: list[Hashable | None]) -> Hashable:
    """What a prompt's key/value cache depends on besides its token ids: the model and its active adapter,
    and the media. Videos are named by their cache keys (`Sample.video_keys`: the clip, frames, grid);
    everything else that is not tokens (images, DiffFP masks, a compressor's question) by a digest of its
    values. A video without a key is digested by its pixels."""
    hashed = [name for name in tensors if name not in _TEXT_INPUTS]
    if video_keys and all(key is not None for key in video_keys):
        hashed = [name for name in hashed if name != "pixel_values_videos"]
    else:
        video_keys = []
    return answering_as(model), tuple(video_keys), _digest(tensors, hashed)


def vision_end(model, ids: torch.Tensor) -> int:
    """The index after a prompt's last video or image token (0: it has none)."""
    config = model.config
    vision = [i for i in (getattr(config, "image_token_id", None), getattr(config, "video_token_id", None))
              if i is not None]
    where = torch.isin(ids, torch.tensor(vision, device=ids.device)).nonzero()
    return int(where[-1]) + 1 if len(where) else 0


def _shared(a: torch.Tensor, b: torch.Tensor) -> int:
    """How many first tokens `a` and `b` have in common."""
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = (a[:n] != b[:n]).nonzero()
    return int(differ[0]) if len(differ) else n


def _plain_layers(cache) -> bool:
    """Only DynamicCache's full-attention layers are copied and cropped here (no sliding windows, quantized
    or static layers), with one row."""
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer and layer.is_initialized and layer.keys.shape[0] == 1
                                for layer in layers)


class PrefixCache(BoundedCache[PrefixEntry]):
    """Prompt prefixes' key/value caches by media and token ids; at most `max_bytes` in all.

    `hits` and `misses` count lookups, `tokens_saved` the prompt tokens hits did not run again.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        super().__init__(max_bytes, _entry_bytes)
        self.tokens_saved = 0

    def _entries(self) -> list[tuple[Hashable, PrefixEntry]]:
        """Every entry, without making any the most recently used (the LRU's own items() would; call locked)."""
        return [(key, Cache.__getitem__(self._values, key)) for key in list(self._values)]

    def lookup(self, model, ids: torch.Tensor, media: Hashable) -> PrefixHit | None:
        """The longest stored prefix of `ids` (a prompt's token ids) with these media that covers all the
        prompt's vision tokens and leaves at least its last token to run; None when there is none."""
        ids = ids.detach().cpu()
        least = max(vision_end(model, ids), 1)
        most = len(ids) - 1  # the last prompt token goes through the model: its logits start the answer
        best, best_key, best_length = None, None, 0
        with self._lock:
            for key, entry in self._entries():
                if key[0] != media:
                    continue
                length = min(_shared(entry.ids, ids), most)
                if length >= least and length > best_length:
                    best, best_key, best_length = entry, key, length
            if best is None:
                self.misses += 1
                return None
            self._values[best_key]  # now the most recently used
            self.hits += 1
            self.tokens_saved += best_length
        # DynamicCache copies what it is given (concatenated onto an empty layer): the entry stays as it is.
        copy = DynamicCache(ddp_cache_data=[(k[..., :best_length, :], v[..., :best_length, :]) for k, v in best.layers])
        return PrefixHit(copy, best_length, best_key)

    def store(self, ids: torch.Tensor, media: Hashable, cache, length: int | None = None, *,
              replaces: Hashable | None = None) -> bool:
        """Keep the keys and values of the first `length` tokens of `cache` (default: all it holds), whose token
        ids are `ids[:length]`, for prompts with these media. An entry that a longer stored one starts with is
        not kept (the longer one serves every prompt it would), and a new entry replaces those it covers.
        Returns whether it is kept. The tensors are copied when only part of them is kept, so the rest is freed
        with the caller's cache. `replaces`: the key of an entry this one continues (a conversation's state before
        its last answer), forgotten once this one is kept."""
        if not _plain_layers(cache):
            return False
        held = cache.get_seq_length()
        length = held if length is None else min(length, held)
        ids = ids.detach().cpu()[:length]
        if length < 1 or len(ids) < length:
            return False
        key = (media, ids.numpy().tobytes())
        with self._lock:
            covered = [k for k, entry in self._entries() if k[0] == media and len(entry.ids) <= length
                       and _shared(entry.ids, ids) == len(entry.ids)]
            if any(k[0] == media and len(entry.ids) > length and _shared(entry.ids, ids) == length
                   for k, entry in self._entries()):
                return False
            for k in covered:
                del self._values[k]

        def part(tensor: torch.Tensor) -> torch.Tensor:
            return tensor if tensor.shape[-2] == length else tensor[..., :length, :].clone()

        entry = PrefixEntry(ids.clone(), tuple((part(layer.keys), part(layer.values)) for layer in cache.layers))
        self.put(key, entry)
        kept = key in self
        if kept and replaces is not None and replaces != key:
            with self._lock:
                self._values.pop(replaces, None)
        return kept
