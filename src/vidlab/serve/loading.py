"""The served model: one base model, several named LoRA adapters on it (as vLLM's --lora-modules), quantized
when asked. A batch runs with one adapter active, or with adapters disabled for the base model.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

from vidlab.errors import ModelLoadError
from vidlab.models.load import load_model, peft_wrapping, resolve_device
from vidlab.models.quantize import check_quantize, quantize_weights

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
        if not (Path(folder) / "adapter_config.json").is_file():
            raise ModelLoadError(f"--adapter {name}={folder}: not a PEFT adapter folder (no adapter_config.json). "
                                 "Pass the output folder of `vidlab train`.")


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
    if isinstance(model, tuple):
        base, processor = model
        on_cuda = next(base.parameters()).device.type == "cuda"
    else:
        on_cuda = resolve_device(device).type == "cuda"
        check_quantize(quantize, torch.device("cuda" if on_cuda else "cpu"))
        # bitsandbytes quantizes while loading; on the CPU, torchao quantizes below, after the adapters.
        base, processor = load_model(model, dtype=dtype, device=device, quantize=quantize if on_cuda else None)
    if adapters:
        from peft import PeftModel

        (first, folder), *rest = adapters.items()
        with peft_wrapping():
            base = PeftModel.from_pretrained(base, str(folder), adapter_name=first)
            for name, folder in rest:
                base.load_adapter(str(folder), adapter_name=name)
        base.eval()
    if quantize is not None and not on_cuda:  # torchao quantizes the loaded base layers; adapters stay full
        quantize_weights(base, quantize)
    return base, processor


@contextmanager
def active_adapter(model, name: str | None) -> Iterator[None]:
    """Run with adapter `name` active, or with every adapter disabled (name None: the base model)."""
    if not hasattr(model, "disable_adapter"):
        yield
        return
    if name is None:
        with model.disable_adapter():
            yield
        return
    model.set_adapter(name)
    yield
