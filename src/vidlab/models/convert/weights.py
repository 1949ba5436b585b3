"""Weight files of a checkpoint folder, read one file at a time: safetensors or torch.save pickles.

A checkpoint is one file (`model.safetensors`, `pytorch_model.bin`) or shards listed by an index
(`model.safetensors.index.json`, `pytorch_model.bin.index.json`). Shapes come from the headers
(safetensors) or from a memory-mapped load (.bin), so a plan can be checked before any tensor is read.
"""

from __future__ import annotations

import json
import pickle
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from vidlab.errors import CheckpointConversionError

if TYPE_CHECKING:  # torch is imported where tensors are read, so `vidlab model info` on safetensors stays quick
    import torch

SAFETENSORS_DTYPES = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "I64": "int64", "I32": "int32",
    "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2",
}
# Preferred first: safetensors are read lazily, pickles need a load.
LAYOUTS = [
    ("model.safetensors.index.json", "model.safetensors"),
    ("pytorch_model.bin.index.json", "pytorch_model.bin"),
]


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]
    dtype: str  # torch name without the prefix: float32, bfloat16, ...

    @property
    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


@dataclass(frozen=True)
class WeightFile:
    """One weight file; `indexed_keys` are the tensors its index says it holds (empty when unindexed)."""

    path: Path
    indexed_keys: frozenset[str] = field(default_factory=frozenset)

    @property
    def is_safetensors(self) -> bool:
        return self.path.suffix == ".safetensors"

    def infos(self) -> dict[str, TensorInfo]:
        """Shape and dtype of every tensor, without keeping the data in memory."""
        if self.is_safetensors:
            from safetensors import safe_open

            # headers only: the numpy framework spares importing torch (quick `vidlab model info`)
            with self._open_safetensors(safe_open, "numpy") as handle:
                result = {}
                for key in handle.keys():
                    piece = handle.get_slice(key)
                    result[key] = TensorInfo(tuple(piece.get_shape()), SAFETENSORS_DTYPES.get(piece.get_dtype(), "?"))
                return result
        return {key: TensorInfo(tuple(t.shape), str(t.dtype).removeprefix("torch.")) for key, t in self._load().items()}

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every tensor of the file in stored order, read one at a time where the format allows."""
        if self.is_safetensors:
            from safetensors import safe_open

            with self._open_safetensors(safe_open, "pt") as handle:
                for key in handle.keys():
                    yield key, handle.get_tensor(key)
            return
        state = self._load()
        for key in list(state):
            yield key, state.pop(key)

    def _open_safetensors(self, safe_open, framework: str):
        try:
            return safe_open(str(self.path), framework=framework)
        except Exception as err:  # safetensors raises its own error type for a damaged header
            raise CheckpointConversionError(
                f"{self.path}: not a readable safetensors file ({err}). Download or copy this file again."
            ) from err

    def _load(self) -> dict[str, torch.Tensor]:
        import torch

        try:
            # mmap: the pickle's tensors stay on disk until used, so a 15 GB shard does not fill memory.
            state = torch.load(self.path, map_location="cpu", mmap=True, weights_only=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise self._unreadable(err) from err
            # Files from torch < 1.6 are not zip archives and cannot be memory-mapped.
            state = self._load_without_mmap()
        except (pickle.UnpicklingError, EOFError, zipfile.BadZipFile, OSError) as err:
            raise self._unreadable(err) from err
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointConversionError(
                f"{self.path}: holds a {type(state).__name__}, not a dict of tensors (a state_dict). "
                "Pass the folder of a saved model, not a training-state file."
            )
        return state

    def _load_without_mmap(self) -> dict[str, torch.Tensor]:
        import torch

        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except (RuntimeError, pickle.UnpicklingError, EOFError, OSError) as err:
            raise self._unreadable(err) from err

    def _unreadable(self, err: Exception) -> CheckpointConversionError:
        return CheckpointConversionError(
            f"{self.path}: not a readable PyTorch weight file ({err}). Download or copy it again."
        )


def find_weight_files(folder: Path) -> list[WeightFile]:
    """The weight files of a checkpoint folder in index order; every shard an index names must exist."""
    for index_name, single_name in LAYOUTS:
        index_path = folder / index_name
        if index_path.is_file():
            return _indexed_files(index_path)
        if (folder / single_name).is_file():
            return [WeightFile(folder / single_name)]
    present = ", ".join(sorted(p.name for p in folder.iterdir())[:12]) or "nothing"
    raise CheckpointConversionError(
        f"{folder}: no model weights (no model.safetensors, pytorch_model.bin or their .index.json; it holds: "
        f"{present}). Pass the checkpoint folder with its weight files."
    )


def _indexed_files(index_path: Path) -> list[WeightFile]:
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointConversionError(
            f"{index_path}: not a valid shard index (needs a 'weight_map' object: {err}). Download it again."
        ) from err
    by_file: dict[str, set[str]] = {}
    for key, name in weight_map.items():
        by_file.setdefault(name, set()).add(key)
    folder = index_path.parent
    missing = [name for name in by_file if not (folder / name).is_file()]
    if missing:
        raise CheckpointConversionError(
            f"{index_path}: lists {len(missing)} shard(s) that are not in {folder}: {', '.join(sorted(missing))}. "
            "Every shard is needed: download or copy the missing files again."
        )
    return [WeightFile(folder / name, frozenset(keys)) for name, keys in sorted(by_file.items())]
