"""PEFT adapters on a loaded model: loaded side by side under names, and one switcher to answer as one of them.

`load_model(..., adapters={"tuned": "runs/lora"})` loads them; chat, the server and the web page
answer as one with `active_adapter(model, name)` (or as the base model with `BASE`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from vidlab.errors import ModelLoadError
from vidlab.settings import VideoCompressor

BASE = "__base__"  # the base model, every adapter off (peft's own name for it in a mixed-adapter batch)
DEFAULT = "default"  # peft's name for a single adapter
ADAPTER_COMPRESSOR_FILE = "vidlab_video_compressor.json"  # beside an adapter trained with a new compressor


def adapter_folder(name: str, folder: str | Path) -> Path:
    """The folder of adapter `name`, checked.

    Raises:
        ModelLoadError: the folder is not a PEFT adapter folder.
    """
    folder = Path(folder).expanduser()
    if not (folder / "adapter_config.json").is_file():
        given = str(folder) if name == DEFAULT else f"{name}={folder}"
        raise ModelLoadError(
            f"--adapter {given}: not a PEFT adapter folder (no adapter_config.json). Pass the output folder of "
            "`vidlab train` with method lora (or any peft save_pretrained folder)."
        )
    return folder


def adapter_compressor(adapter: str | Path | None) -> VideoCompressor | None:
    """The compressor a LoRA run added to its base (kept beside the adapter), or None."""
    path = Path(adapter).expanduser() / ADAPTER_COMPRESSOR_FILE if adapter is not None else None
    if path is None or not path.is_file():
        return None
    return VideoCompressor.model_validate_json(path.read_text(encoding="utf-8"))


def adapters_compressor(adapters: Mapping[str, str | Path]) -> VideoCompressor | None:
    """The compressor the base needs for these adapters: the one a lone adapter was trained with, if any.

    Raises:
        ModelLoadError: an adapter trained with a new compressor is loaded beside others (the base model
            and the other adapters would get a compressor they were not trained with).
    """
    brought = {name: spec for name, folder in adapters.items() if (spec := adapter_compressor(folder)) is not None}
    if brought and len(adapters) > 1:
        name = next(iter(brought))
        raise ModelLoadError(f"--adapter {name}={adapters[name]}: was trained with a new {brought[name].kind} video "
                             "compressor, which the base model and the other adapters lack. Load it alone.")
    return next(iter(brought.values()), None)


@contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around peft calls that wrap a model: peft (0.21) reads transformers' deprecated
    `is_gradient_checkpointing` alias, a FutureWarning the user can do nothing about."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def load_adapters(model, adapters: Mapping[str, str | Path]):
    """The model with every adapter loaded under its name (the first active), in eval mode; `model` itself
    when there are none.

    Raises:
        ModelLoadError: a folder that is not a PEFT adapter folder.
    """
    if not adapters:
        return model
    from peft import PeftModel

    folders = {name: adapter_folder(name, folder) for name, folder in adapters.items()}
    (first, folder), *rest = folders.items()
    with peft_wrapping():
        model = PeftModel.from_pretrained(model, str(folder), adapter_name=first)
        for name, folder in rest:
            model.load_adapter(str(folder), adapter_name=name)
    model.eval()
    return model


def adapter_names(model) -> list[str]:
    """The adapters loaded on the model, in order (none for a model without)."""
    return list(getattr(model, "peft_config", {}) or {})


@contextmanager
def active_adapter(model, name: str | None) -> Iterator[None]:
    """Answer as adapter `name` inside this block, or as the base model (`BASE`: every adapter off); None,
    or a model without adapters: as the model is. The caller holds the model (one answer at a time)."""
    if name is None or not hasattr(model, "disable_adapter"):
        yield
    elif name == BASE:
        with model.disable_adapter():
            yield
    else:
        model.set_adapter(name)
        yield
