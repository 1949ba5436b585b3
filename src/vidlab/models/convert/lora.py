"""LoRA factors of an original-code run, ready to merge: W' = W + scale * B @ A.

peft saves `base_model.model.<module>.lora_A.weight` (r, in) and `...lora_B.weight` (out, r) for
every wrapped Linear. The original training code targets every Linear whose last name is one of the
LLM's (q/k/v/o/gate/up/down_proj); peft matches names by suffix, so the vision encoder's q/k/v_proj
get factors too. Those are merged like the rest.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from vidlab.models.convert.keymap import canonical_key, strip_peft_names
from vidlab.models.convert.original import LoraRun

_FACTOR = re.compile(r"^(?P<module>.+)\.lora_(?P<side>[AB])(\.[^.]+)?\.weight$")


@dataclass(frozen=True)
class LoraFactors:
    """The two factors of one Linear and how much of B @ A to add."""

    weight_key: str  # released-layout name of the weight they update
    a: torch.Tensor  # (r, in)
    b: torch.Tensor  # (out, r)
    scale: float
    fan_in_fan_out: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        out_features, in_features = self.b.shape[0], self.a.shape[1]
        return (in_features, out_features) if self.fan_in_fan_out else (out_features, in_features)

    def merge(self, weight: torch.Tensor) -> torch.Tensor:
        """weight + scale * B @ A, computed in float32 and returned in weight's dtype."""
        delta = (self.b.float() @ self.a.float()) * self.scale
        if self.fan_in_fan_out:
            delta = delta.T
        return (weight.float() + delta).to(weight.dtype)


@dataclass(frozen=True)
class LoraContents:
    factors: dict[str, LoraFactors]  # by weight_key
    problems: list[str]  # tensors of the adapter file that cannot be merged, with the reason
    # Trained biases (peft saves every bias with the factors when the run used --lora_bias all or
    # lora_only), by released-layout name; they replace the base's.
    biases: dict[str, torch.Tensor]


def _pattern_value(patterns: dict, module: str, default: float) -> float:
    # peft's rule: a pattern key applies to a module whose name is the key or ends with ".key".
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return default


def read_lora(run: LoraRun) -> LoraContents:
    """Pair up the adapter's A and B factors and work out each pair's scale from adapter_config.json."""
    config = run.adapter_config
    sides: dict[str, dict[str, torch.Tensor]] = {}
    problems = []
    biases: dict[str, torch.Tensor] = {}
    for key, tensor in run.adapter_file.tensors():
        name = strip_peft_names(key)
        if name.endswith(".bias") and ".lora_" not in name:
            biases[canonical_key(name)] = tensor
            continue
        match = _FACTOR.match(name)
        if match is None:
            problems.append(f"{key} in {run.adapter_file.path.name}: not a LoRA A/B factor of a Linear layer")
            continue
        sides.setdefault(match["module"], {})[match["side"]] = tensor
    factors = {}
    for module, pair in sides.items():
        if set(pair) != {"A", "B"}:
            missing = "B" if "A" in pair else "A"
            problems.append(f"{module}: lora_{missing} is missing from {run.adapter_file.path.name}")
            continue
        rank = pair["A"].shape[0]
        alpha = _pattern_value(config.get("alpha_pattern") or {}, module, config.get("lora_alpha", 8))
        scale = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
        weight_key = canonical_key(module + ".weight")
        factors[weight_key] = LoraFactors(
            weight_key, pair["A"], pair["B"], scale, bool(config.get("fan_in_fan_out", False))
        )
    return LoraContents(factors, problems, biases)
