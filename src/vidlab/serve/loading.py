"""The served model: one base model, several named LoRA adapters on it (as vLLM's --lora-modules), quantized
when asked (`vidlab.load_model(adapters=...)`). A batch runs as one adapter, or as the base model
(`vidlab.models.adapters.active_adapter`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from vidlab.errors import ModelLoadError
from vidlab.models.adapters import adapter_folder, load_adapters
from vidlab.models.load import load_model
from vidlab.models.quantize import quantize_weights

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")


def check_adapter_names(base: str, adapters: Mapping[str, str | Path]) -> None:
    """Raise a ModelLoadError for a name clients could not use, or a folder that is not an adapter."""
    for name, folder in adapters.items():
        if not _NAME.match(name):
            raise ModelLoadError(f"--adapter {name}={folder}: a name is letters, digits and ._:/- (up to 128). "
                                 "Rename it.")
        if name == base:
            raise ModelLoadError(f"--adapter {name}={folder}: the name is the base model's. Give the adapter another "
                                 "name (or the base another --name).")
        adapter_folder(name, folder)


def load_served_model(
    model: str | Path | tuple, adapters: Mapping[str, str | Path], *, dtype: str = "auto", device: str = "auto",
    quantize: str | None = None,
):
    """(model, processor) with every adapter loaded under its name.

    Args:
        model: a checkpoint folder or hub id, or an already loaded (model, processor) pair.
        adapters: name -> PEFT adapter folder.
        quantize: 8bit or 4bit LLM weights (see `vidlab.models.quantize`); None: as saved.
    """
    if not isinstance(model, tuple):
        return load_model(model, adapters=adapters, dtype=dtype, device=device, quantize=quantize)
    base, processor = model
    device = next(base.parameters()).device
    base = load_adapters(base, adapters)
    if quantize is not None and device.type != "cuda":  # torchao quantizes the loaded base layers; adapters stay full
        quantize_weights(base, quantize)
    return base, processor
