"""Check a conversion before writing anything: every source tensor used once, every target filled, shapes equal.

The plan is made from the weight files' headers only. Every problem is collected, and one
CheckpointConversionError lists them all, each with the file, the tensor and what to do.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vidlab.errors import CheckpointConversionError
from vidlab.models.convert.keymap import (
    canonical_key,
    is_derived_buffer,
    is_training_key,
    native_key,
    original_key,
    strip_peft_names,
)
from vidlab.models.convert.lora import LoraFactors
from vidlab.models.convert.weights import TensorInfo, WeightFile

_SHOWN = 20  # per kind of problem; the rest are counted


@dataclass
class Problems:
    """What stops a conversion, by kind, each entry naming a tensor and its file."""

    missing: list[str] = field(default_factory=list)
    shapes: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    twice: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    _ADVICE = {
        "missing": "the native model needs but the checkpoint lacks (a shard missing or truncated? download the "
        "checkpoint again)",
        "shapes": "with a shape that does not fit config.json (use the config.json saved with these weights)",
        "unused": "with no place in the native model (not a VideoLLaMA3 mlp2x_gelu checkpoint, or changed after "
        "training; remove them or use the original files)",
        "twice": "stored twice (two files, or both encoder layouts; keep one copy)",
        "other": "that cannot be used",
    }

    def __bool__(self) -> bool:
        return any((self.missing, self.shapes, self.unused, self.twice, self.other))

    def raise_if_any(self, subject: str) -> None:
        if not self:
            return
        lines = [f"{subject}: cannot be converted to the native VideoLLaMA3 layout."]
        for kind, advice in self._ADVICE.items():
            entries = getattr(self, kind)
            if not entries:
                continue
            lines.append(f"- {len(entries)} tensor{'s' if len(entries) != 1 else ''} {advice}:")
            lines += [f"    {entry}" for entry in entries[:_SHOWN]]
            if len(entries) > _SHOWN:
                lines.append(f"    ... and {len(entries) - _SHOWN} more")
        raise CheckpointConversionError("\n".join(lines))


@dataclass
class ConversionPlan:
    """Where every tensor of the source goes, and what replaces or updates it on the way."""

    files: list[WeightFile]
    targets: dict[tuple[Path, str], str]  # (file, stored name) -> native name; absent: dropped
    dropped: list[str]  # stored names left out on purpose, with the reason
    replacements: dict[str, str]  # native name -> name in non_lora_trainables.bin
    lora: dict[str, LoraFactors]  # native name -> factors to merge
    biases: dict[str, torch.Tensor]  # native name -> a bias trained with the adapter (not in non_lora_trainables)
    layout: str  # released or training
    dtype_numel: Counter  # parameters per stored dtype, over the tensors written


def _shape(shape: tuple[int, ...]) -> str:
    return str(tuple(shape))


def plan_conversion(
    files: list[WeightFile],
    expected: dict[str, tuple[int, ...]],
    tied_embeddings: bool,
    replacement_file: WeightFile | None = None,
    lora: dict[str, LoraFactors] | None = None,
    lora_problems: list[str] | None = None,
    lora_biases: dict[str, torch.Tensor] | None = None,
    subject: str = "checkpoint",
) -> ConversionPlan:
    """Map every stored tensor to its native name and check the result against `expected` (name -> shape).

    Args:
        files: the weight files of the (base) checkpoint.
        expected: what the native model stores, from `native_tensor_shapes`.
        tied_embeddings: lm_head shares the embedding matrix; a stored lm_head is the same matrix and is dropped.
        replacement_file: non_lora_trainables.bin of a LoRA run; its tensors replace the base's.
        lora: LoRA factors by released-layout weight name, merged into those weights.
        lora_problems: adapter tensors already found unusable.
        lora_biases: biases saved with the adapter, by released-layout name; one that
            non_lora_trainables.bin also holds is taken from there.
        subject: named at the start of the error message.

    Raises:
        CheckpointConversionError: listing every missing, misshapen, unused or duplicated tensor.
    """
    problems = Problems(other=list(lora_problems or []))
    targets: dict[tuple[Path, str], str] = {}
    filled: dict[str, str] = {}  # native name -> where it came from, for messages
    dropped: list[str] = []
    dtype_numel: Counter = Counter()
    layouts = set()
    native_infos: dict[str, TensorInfo] = {}
    not_in_shard: dict[str, str] = {}  # native name -> the shard the index promised it in
    for weight_file in files:
        infos = weight_file.infos()
        for key in weight_file.indexed_keys - set(infos):
            not_in_shard[native_key(canonical_key(key)) or key] = weight_file.path.name
        for key, info in infos.items():
            where = f"{key} in {weight_file.path.name}"
            canonical = canonical_key(key)
            if is_derived_buffer(canonical):
                dropped.append(f"{where}: recomputed from the config")
                continue
            layouts.add("training" if is_training_key(key) else "released")
            target = native_key(canonical)
            if tied_embeddings and target == "lm_head.weight":
                dropped.append(f"{where}: the tied copy of the embedding matrix (tie_word_embeddings)")
                continue
            if target not in expected:
                problems.unused.append(f"{where} {_shape(info.shape)}")
                continue
            if target in filled:
                problems.twice.append(f"{where} and {filled[target]} both become {target}")
                continue
            filled[target] = where
            targets[(weight_file.path, key)] = target
            native_infos[target] = info
            if info.shape != expected[target]:
                problems.shapes.append(f"{where}: {_shape(info.shape)}, expected {_shape(expected[target])}")
    replacements = _plan_replacements(replacement_file, expected, filled, problems)
    merged = _plan_lora(lora or {}, expected, filled, problems)
    biases = _plan_biases(lora_biases or {}, replacements, expected, filled, problems, dropped)
    for target in expected:
        if target in filled:
            continue
        entry = f"{original_key(target)} (becomes {target})"
        if target in not_in_shard:
            entry += f": the index puts it in {not_in_shard[target]}, which lacks it (a truncated file?)"
        problems.missing.append(entry)
    problems.raise_if_any(subject)
    for info in native_infos.values():
        dtype_numel[info.dtype] += info.numel
    layout = "training" if "training" in layouts else "released"
    return ConversionPlan(files, targets, dropped, replacements, merged, biases, layout, dtype_numel)


def _plan_replacements(
    replacement_file: WeightFile | None, expected: dict, filled: dict, problems: Problems
) -> dict[str, str]:
    if replacement_file is None:
        return {}
    replacements: dict[str, str] = {}
    for key, info in replacement_file.infos().items():
        where = f"{key} in {replacement_file.path.name}"
        target = native_key(canonical_key(strip_peft_names(key)))
        if target not in expected or target not in filled:
            problems.unused.append(f"{where} {_shape(info.shape)}: the base model has no such tensor")
        elif target in replacements:
            problems.twice.append(f"{where} and {replacements[target]} both replace {target}")
        elif info.shape != expected[target]:
            problems.shapes.append(f"{where}: {_shape(info.shape)}, expected {_shape(expected[target])}")
        else:
            replacements[target] = key
    return replacements


def _plan_lora(lora: dict[str, LoraFactors], expected: dict, filled: dict, problems: Problems) -> dict:
    merged: dict[str, LoraFactors] = {}
    for weight_key, factors in lora.items():
        target = native_key(weight_key)
        if target not in expected or target not in filled:
            problems.unused.append(f"LoRA factors of {weight_key}: the base model has no such weight")
        elif factors.shape != expected[target]:
            problems.shapes.append(
                f"LoRA factors of {weight_key}: B @ A is {_shape(factors.shape)}, the weight {_shape(expected[target])}"
            )
        else:
            merged[target] = factors
    return merged


def _plan_biases(
    biases: dict[str, torch.Tensor], replacements: dict, expected: dict, filled: dict, problems: Problems,
    dropped: list[str],
) -> dict[str, torch.Tensor]:
    planned: dict[str, torch.Tensor] = {}
    for key, tensor in biases.items():
        target = native_key(key)
        if target in replacements:
            dropped.append(f"{key} in the adapter: the same bias is taken from non_lora_trainables.bin")
        elif target not in expected or target not in filled:
            problems.unused.append(f"bias {key} in the adapter: the base model has no such tensor")
        elif tuple(tensor.shape) != expected[target]:
            problems.shapes.append(f"bias {key} in the adapter: {_shape(tuple(tensor.shape))}, expected "
                                   f"{_shape(expected[target])}")
        else:
            planned[target] = tensor
    return planned
