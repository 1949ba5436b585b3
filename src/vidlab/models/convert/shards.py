"""Write tensors as sharded safetensors with an index, holding at most one shard in memory."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from vidlab.errors import CheckpointConversionError

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(I?B)?\s*$", re.IGNORECASE)


def parse_size(size: int | str) -> int:
    """Bytes in `size`: an int, or text like 4GB, 500MB, 2GiB (powers of 1000 for GB, 1024 for GiB)."""
    if isinstance(size, int):
        if size <= 0:
            raise CheckpointConversionError(f"shard size {size}: must be positive, e.g. 4GB.")
        return size
    match = _SIZE.match(size)
    if match is None:
        raise CheckpointConversionError(f"shard size {size!r}: not a size. Write it like 4GB, 500MB or 2GiB.")
    number, unit, suffix = float(match[1]), match[2].upper(), (match[3] or "B").upper()
    base = 1024 if suffix == "IB" else 1000
    result = int(number * base ** "_KMGT".index(unit or "_"))
    if result <= 0:
        raise CheckpointConversionError(f"shard size {size!r}: must be positive, e.g. 4GB.")
    return result


class ShardWriter:
    """Collects tensors and writes a shard whenever the next tensor would make it larger than the limit.

    Shards get their final names (`model-00001-of-00003.safetensors`) in `close()`, once their number is
    known; a single shard becomes `model.safetensors` with no index, as transformers writes it.
    """

    def __init__(self, folder: Path, max_shard_bytes: int) -> None:
        self.folder = folder
        self.max_shard_bytes = max_shard_bytes
        self._buffer: dict[str, torch.Tensor] = {}
        self._buffer_bytes = 0
        self._shards: list[tuple[Path, list[str]]] = []
        self.total_bytes = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if self._buffer and self._buffer_bytes + size > self.max_shard_bytes:
            self._flush()
        tensor = tensor.contiguous()
        if tensor.untyped_storage().nbytes() != size:
            tensor = tensor.clone()  # a view into a larger (maybe shared) storage; safetensors refuses those
        self._buffer[name] = tensor
        self._buffer_bytes += size
        self.total_bytes += size

    def _flush(self) -> None:
        path = self.folder / f".shard-{len(self._shards):05d}.tmp"
        save_file(self._buffer, str(path), metadata={"format": "pt"})
        self._shards.append((path, list(self._buffer)))
        self._buffer, self._buffer_bytes = {}, 0

    def close(self) -> list[Path]:
        """Write what is left, name the shards and write the index; returns the shard paths."""
        if self._buffer or not self._shards:
            self._flush()
        count = len(self._shards)
        if count == 1:
            final = self.folder / SINGLE_FILE
            self._shards[0][0].rename(final)
            return [final]
        weight_map, paths = {}, []
        for number, (path, names) in enumerate(self._shards, start=1):
            final = self.folder / f"model-{number:05d}-of-{count:05d}.safetensors"
            path.rename(final)
            paths.append(final)
            weight_map.update({name: final.name for name in names})
        index = {"metadata": {"total_size": self.total_bytes}, "weight_map": dict(sorted(weight_map.items()))}
        (self.folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
        return paths
