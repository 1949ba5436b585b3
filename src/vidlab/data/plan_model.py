"""A model's sizes without its weights: the config's dimensions, and parameters counted on the meta device.

The native class is built from the config on PyTorch's meta device (shapes, no memory), so the
counts are exact for any checkpoint: parameters per part, the LLM's decoder Linear layers (what
QLoRA quantises), the LoRA parameters that `vidlab train` would add (its own target rule,
`vidlab.training.model.lora_target_regex`) and the modules `lora.modules_to_save` copies.
Checkpoints not on this machine can be planned from the published dimensions of VideoLLaMA3-2B and
-7B (PRESETS).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from vidlab.errors import VidlabError

# The dimensions in the released checkpoints' config.json (Qwen2.5-1.5B / -7B LLMs, the SigLIP-NaViT encoder).
_VISION = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
           "patch_size": 14}
PRESETS = {
    "videollama3-2b": {
        "text_config": {"model_type": "qwen2", "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                        "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                        "tie_word_embeddings": True},
        "vision_config": _VISION,
        "tie_word_embeddings": True,
    },
    "videollama3-7b": {
        "text_config": {"model_type": "qwen2", "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28,
                        "num_attention_heads": 28, "num_key_value_heads": 4, "vocab_size": 152064,
                        "tie_word_embeddings": False},
        "vision_config": _VISION,
        "tie_word_embeddings": False,
    },
}


class PlanError(VidlabError):
    """A model or setting that cannot be planned as given."""


@dataclass(frozen=True)
class Architecture:
    """What memory depends on in a VideoLLaMA3 model.

    Attributes:
        source: the folder, hub id or preset the sizes were read from.
        hidden, intermediate, layers, heads, kv_heads, vocab: the LLM's dimensions.
        vision_hidden, vision_intermediate, vision_layers: the vision encoder's.
        parameters: parameters per part (vision, projector, llm; a tied output head counted once).
        llm_linear: parameters in the LLM decoder's Linear layers (4/8-bit under QLoRA).
        largest_layer: parameters of one LLM decoder layer (what ZeRO-3 / FSDP gathers at a time).
        lora: parameters of the LoRA adapters `vidlab train` would add with the given rank and targets.
        modules_to_save: parameters of the LLM modules `lora.modules_to_save` trains in full.
    """

    source: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    vision_hidden: int
    vision_intermediate: int
    vision_layers: int
    parameters: dict[str, int]
    llm_linear: int
    largest_layer: int
    lora: int
    modules_to_save: int

    @property
    def total(self) -> int:
        return sum(self.parameters.values())


def preset_named(source: str) -> str | None:
    """The preset a name stands for: videollama3-2b itself, or a released checkpoint's name such as
    DAMO-NLP-SG/VideoLLaMA3-7B or the recipes' checkpoints/VideoLLaMA3-2B-hf (the -Image models have
    the same sizes)."""
    found = re.search(r"videollama3-([27])b", source.lower())
    return f"videollama3-{found.group(1)}b" if found else None


def _native_config(source: str):
    """The config of a local folder or a hub id (the hub cache first, then the network), or None when unreadable."""
    from transformers import AutoConfig

    from vidlab.models.load import check_model_folder

    folder = Path(source).expanduser()
    if folder.exists():
        check_model_folder(folder)  # says what to do with an original (remote-code) checkpoint
        return AutoConfig.from_pretrained(str(folder))
    for local_only in (True, False):  # the hub cache first: no network wait for what is already here
        try:
            return AutoConfig.from_pretrained(source, local_files_only=local_only)
        except (OSError, ValueError):
            if preset_named(source) is not None:
                return None  # a released model's name: its published sizes will do, without asking the hub
    return None


def _config(source: str) -> tuple[object, str]:
    """(config, label): a preset, a folder or hub id, or the published sizes a released model's name stands for."""
    from transformers import VideoLlama3Config

    from vidlab.models.load import looks_local

    if source.lower() in PRESETS:
        return VideoLlama3Config(**PRESETS[source.lower()]), source
    if looks_local(source) and not Path(source).expanduser().exists() and preset_named(source) is None:
        raise PlanError(f"{source}: no such model folder. Plan from the published sizes with --model "
                        f"{' or --model '.join(PRESETS)}, or point model.path at the converted checkpoint.")
    config = _native_config(source)
    preset = preset_named(source)
    if (config is None or getattr(config, "model_type", None) != "video_llama_3") and preset is not None:
        return VideoLlama3Config(**PRESETS[preset]), f"{source} (the published sizes of {preset})"
    if config is None:
        raise PlanError(f"{source}: cannot read its config (not a folder here, not reachable on the hub). Give a "
                        f"local folder, or --model {' or --model '.join(PRESETS)}.")
    return config, source


def read_architecture(source: str, lora_rank: int = 64, lora_targets: list[str] | str = "all-linear",
                      modules_to_save: list[str] = ()) -> Architecture:
    """The sizes of a model folder, hub id (config only) or preset (videollama3-2b, videollama3-7b)."""
    import torch
    from transformers import VideoLlama3ForConditionalGeneration

    from vidlab.training.model import PART_PREFIXES, lora_target_regex, part_of

    config, source = _config(str(source))
    if getattr(config, "model_type", None) != "video_llama_3":
        raise PlanError(f"{source}: not a native VideoLLaMA3 config (model_type {config.model_type!r}).")
    with torch.device("meta"):
        model = VideoLlama3ForConditionalGeneration._from_config(config)
    parameters = {"vision": 0, "projector": 0, "llm": 0}
    for name, param in model.named_parameters():
        parameters[part_of(name)] += param.numel()
    layer_prefix = PART_PREFIXES["llm"][0] + "layers."
    linears = {name: module for name, module in model.named_modules()
               if name.startswith(layer_prefix) and isinstance(module, torch.nn.Linear)}
    per_layer: dict[str, int] = {}
    for name, module in linears.items():
        layer = name[len(layer_prefix):].split(".", 1)[0]
        per_layer[layer] = per_layer.get(layer, 0) + module.weight.numel()
    targets = re.compile(lora_target_regex(model, lora_targets))
    lora = sum(lora_rank * (m.in_features + m.out_features) for name, m in linears.items() if targets.fullmatch(name))
    saved = sum(
        sum(p.numel() for p in module.parameters())
        for name, module in model.named_modules()
        if any(name == n or name.endswith(f".{n}") for n in modules_to_save)
    )
    text, vision = config.text_config, config.vision_config
    return Architecture(
        source=str(source),
        hidden=text.hidden_size, intermediate=text.intermediate_size, layers=text.num_hidden_layers,
        heads=text.num_attention_heads, kv_heads=text.num_key_value_heads, vocab=text.vocab_size,
        vision_hidden=vision.hidden_size, vision_intermediate=vision.intermediate_size,
        vision_layers=vision.num_hidden_layers,
        parameters=parameters,
        llm_linear=sum(m.weight.numel() for m in linears.values()),
        largest_layer=max(per_layer.values(), default=0),
        lora=lora,
        modules_to_save=saved,
    )
