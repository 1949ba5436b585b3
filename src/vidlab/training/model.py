"""The model a training run optimises: loaded, quantised or adapted, with per-part freezing.

Parts are VideoLLaMA3's three: the vision encoder, the projector and the LLM (with its embeddings
and output head), plus a video compressor when the model has one or `model.video_compressor` adds
one. A part trains only when the config gives it a learning rate. With LoRA the LLM's
weights stay frozen and its Linear layers get adapters; a vision encoder or projector that has a
rate trains fully and is saved with the adapter (peft `modules_to_save`), so the run folder loads
with plain peft; so do the LLM modules named in `lora.modules_to_save` (such as the output head).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from vidlab.errors import VidlabError
from vidlab.models.load import peft_wrapping
from vidlab.settings import VideoCompressor
from vidlab.training.config import PARTS, TrainConfig

# Module prefixes of each part in the native VideoLlama3ForConditionalGeneration.
PART_PREFIXES = {
    "vision": ("model.vision_model.",),
    "projector": ("model.projector.",),
    "compressor": ("model.video_compressor.",),
    "llm": ("model.language_model.", "lm_head."),
}
PEFT_MODULE_NAMES = {"vision": "vision_model", "projector": "projector", "compressor": "video_compressor"}


class TrainSetupError(VidlabError):
    """A method, precision or device combination that cannot train here."""


@dataclass
class PartSummary:
    part: str
    parameters: int
    trainable: int
    learning_rate: float | None


def part_of(name: str) -> str:
    """Which part a parameter belongs to, from its name (peft's prefixes and wrappers stripped)."""
    name = name.removeprefix("base_model.model.")
    name = re.sub(r"\.(modules_to_save|original_module)\.default\.", ".", name)
    for part, prefixes in PART_PREFIXES.items():
        if name.startswith(prefixes):
            return part
    raise ValueError(f"parameter {name!r} belongs to no known part of VideoLLaMA3")


def lora_target_regex(model: torch.nn.Module, target_modules: list[str] | str) -> str:
    """A peft target regex matching the chosen Linear layers of the LLM only (not the vision encoder)."""
    prefix = PART_PREFIXES["llm"][0]
    leaves = sorted({
        name.rsplit(".", 1)[-1]
        for name, module in model.named_modules()
        if name.startswith(prefix) and isinstance(module, torch.nn.Linear)
    })
    if target_modules != "all-linear":
        unknown = sorted(set(target_modules) - set(leaves))
        if unknown:
            raise TrainSetupError(
                f"lora.target_modules: {', '.join(unknown)} is not a Linear layer of the LLM. "
                f"Use all-linear or some of: {', '.join(leaves)}."
            )
        leaves = list(target_modules)
    return rf"{re.escape(prefix)}.*\.({'|'.join(map(re.escape, leaves))})"


def resolve_precision(precision: str, device: torch.device) -> str:
    """accelerate's mixed_precision value: auto is bf16 on GPUs that have it, fp16 on others, none on CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return "no"
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if precision == "fp16" and device.type != "cuda":
        raise TrainSetupError("train.precision: fp16 needs a CUDA GPU. Use fp32 or bf16 on the CPU.")
    return "no" if precision == "fp32" else precision


def _quantization_config(config: TrainConfig, compute_dtype: torch.dtype, device: torch.device):
    if device.type != "cuda":
        raise TrainSetupError(
            "method qlora: 4/8-bit base weights need a CUDA GPU (bitsandbytes kernels), and none is visible. "
            "Use method lora on this machine."
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise TrainSetupError("method qlora needs bitsandbytes: pip install bitsandbytes") from err
    from transformers import BitsAndBytesConfig

    # The vision encoder, projector and output head stay in full precision, as in the original QLoRA path.
    skip = ["vision_model", "projector", "lm_head"]
    if config.lora.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute_dtype,
        llm_int8_skip_modules=skip,
    )


def load_for_training(config: TrainConfig, device: torch.device, mixed_precision: str):
    """(model, processor) ready for the optimiser: adapted, frozen per part, trainable weights in fp32."""
    from transformers import AutoProcessor

    from vidlab.models.load import (
        adapter_compressor,
        check_model_folder,
        checkpoint_compressor,
        load_weights,
        looks_local,
        model_compressor,
        model_family,
    )
    from vidlab.models.template import attach_video_compressor

    source = config.model.path
    if looks_local(source):
        check_model_folder(Path(source).expanduser())
    compute_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision, torch.float32)
    # Frozen base weights of an adapter run can live in the compute dtype; weights that train stay fp32.
    load_dtype = compute_dtype if config.method in ("lora", "qlora") else torch.float32
    kwargs = {}
    if config.method == "qlora":
        kwargs["quantization_config"] = _quantization_config(config, compute_dtype, device)
        kwargs["device_map"] = {"": device.index or 0}
    family = model_family(source) if looks_local(source) else None
    own = None if family else checkpoint_compressor(source) or adapter_compressor(config.model.adapter)
    _check_compressor(config, own)
    wanted = config.model.video_compressor
    if family == "tinyllava_video":  # another model family: its own classes, the same parts
        from vidlab.models.tinyllava_video.model import TinyLlavaVideoForConditionalGeneration
        from vidlab.models.tinyllava_video.processor import TinyLlavaVideoProcessor

        model = TinyLlavaVideoForConditionalGeneration.from_pretrained(
            source, dtype=load_dtype, attn_implementation=config.model.attn_implementation, **kwargs)
        processor = TinyLlavaVideoProcessor.from_pretrained(source)
    elif family == "llama_vid":
        from vidlab.models.llama_vid.model import LlamaVidForConditionalGeneration
        from vidlab.models.llama_vid.processor import LlamaVidProcessor

        model = LlamaVidForConditionalGeneration.from_pretrained(
            source, dtype=load_dtype, attn_implementation=config.model.attn_implementation, **kwargs)
        processor = LlamaVidProcessor.from_pretrained(source)
    else:
        model = load_weights(source, wanted if wanted is not None and wanted.active else own, dtype=load_dtype,
                             attn_implementation=config.model.attn_implementation, **kwargs)
        processor = attach_video_compressor(AutoProcessor.from_pretrained(source), model_compressor(model))
    model.config.use_cache = False
    if config.train.gradient_checkpointing:
        # Also makes the input embeddings' output require grad, so that checkpointed layers above a
        # frozen embedding still pass gradients to LoRA adapters.
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    if config.method == "full":
        model.requires_grad_(False)
        rates = config.learning_rates.trained()
        for name, param in model.named_parameters():
            param.requires_grad_(part_of(name) in rates)
    else:
        model = _add_adapters(model, config)
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    drop_input_grads_of_frozen_vision(model)
    return model, processor


def drop_input_grads_of_frozen_vision(model: torch.nn.Module) -> None:
    """Undo `enable_input_require_grads` on a vision tower that trains nothing.

    transformers 5 hooks every sub-model's input embeddings (activation checkpointing and peft call it), so the
    patch embeddings' output required grad and every backward ran back through the frozen vision encoder,
    recomputing its checkpointed layers, for input gradients nothing uses. Non-reentrant checkpointing (the only
    kind vidlab uses) passes gradients to trainable weights without it.
    """
    if any(param.requires_grad for name, param in model.named_parameters() if _part_or_none(name) == "vision"):
        return
    for name, module in model.named_modules():
        if _part_or_none(name + ".") != "vision":
            continue
        for key, hook in list(module._forward_hooks.items()):  # torch keeps no public way to find a hook
            if getattr(hook, "__name__", "") == "make_inputs_require_grads":
                del module._forward_hooks[key]


def _part_or_none(name: str) -> str | None:
    try:
        return part_of(name)
    except ValueError:
        return None


def _check_compressor(config: TrainConfig, own) -> None:
    """A compressor rate needs a compressor with weights; a new compressor with weights needs a rate."""
    wanted = config.model.video_compressor
    compressor = own if wanted is None or not wanted.active else wanted
    rate = config.learning_rates.compressor
    if rate is not None and (compressor is None or not compressor.has_weights):
        what = "no video compressor" if compressor is None else f"a {compressor.kind} compressor, which has no weights"
        kinds = ", ".join(VideoCompressor.weighted_kinds())
        raise TrainSetupError(f"learning_rates.compressor: the model has {what}. Remove learning_rates.compressor, "
                              f"or add one with model.video_compressor ({kinds}).")
    if own is None and compressor is not None and compressor.has_weights and rate is None:
        raise TrainSetupError(
            f"model.video_compressor: a new {compressor.kind} compressor starts untrained, and learning_rates has no "
            "rate for it. Give learning_rates.compressor (e.g. 1e-4; docs/compressors.md)."
        )


def _add_adapters(model, config: TrainConfig):
    from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training

    if config.method == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.train.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    targets = lora_target_regex(model, config.lora.target_modules)
    check_llm_modules_to_save(model, config.lora.modules_to_save, targets)
    full_parts = [PEFT_MODULE_NAMES[p] for p in config.learning_rates.trained() if p != "llm"]
    to_save = full_parts + list(config.lora.modules_to_save)
    if config.model.adapter is not None:
        with peft_wrapping():
            model = PeftModel.from_pretrained(model, config.model.adapter, is_trainable=True)
        missing = sorted(set(to_save) - set(model.peft_config["default"].modules_to_save or []))
        if missing:
            raise TrainSetupError(
                f"model.adapter: {config.model.adapter} does not hold trainable copies of {', '.join(missing)}, but "
                "learning_rates or lora.modules_to_save asks to train them. Drop them from the config, or start a new "
                "adapter (remove model.adapter)."
            )
        return model
    output, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=targets,
        modules_to_save=to_save or None,
        # A model whose output head shares the embedding matrix (VideoLLaMA3-2B) keeps sharing it when one is saved.
        ensure_weight_tying=bool(config.lora.modules_to_save) and output.weight is embeddings.weight,
        task_type="CAUSAL_LM",
    )
    with peft_wrapping():
        return get_peft_model(model, lora)


def check_llm_modules_to_save(model: torch.nn.Module, names: list[str], lora_targets: str) -> None:
    """Each lora.modules_to_save name must pick modules of the LLM (as peft matches it: the name or a
    dotted suffix) that LoRA does not already adapt."""
    problems = []
    for name in names:
        matches = [key for key, _ in model.named_modules() if key == name or key.endswith(f".{name}")]
        outside = [key for key in matches if not f"{key}.".startswith(PART_PREFIXES["llm"])]
        adapted = [key for key in matches if re.fullmatch(lora_targets, key)]
        if not matches:
            problems.append(f"{name!r} names no module of the model (e.g. lm_head, embed_tokens)")
        elif outside:
            problems.append(f"{name!r} also matches {outside[0]}, outside the LLM; the vision encoder and projector "
                            "train through learning_rates.vision and learning_rates.projector")
        elif adapted:
            problems.append(f"{name!r} matches {adapted[0]}, which already gets LoRA adapters; drop it from "
                            "lora.target_modules or from lora.modules_to_save")
    if problems:
        raise TrainSetupError("lora.modules_to_save: " + "; ".join(problems) + ".")


def summarize_parts(model: torch.nn.Module, config: TrainConfig) -> list[PartSummary]:
    """Parameters and trainable parameters per part (for the start-of-run table)."""
    totals = {part: [0, 0] for part in PARTS}
    for name, param in model.named_parameters():
        if ".original_module." in name:
            continue  # peft keeps the frozen original beside a trained copy; count the module once
        counts = totals[part_of(name)]
        counts[0] += param.numel()
        counts[1] += param.numel() if param.requires_grad else 0
    rates = config.learning_rates.trained()
    return [PartSummary(part, total, trainable, rates.get(part)) for part, (total, trainable) in totals.items()
            if total or part != "compressor"]


def parameter_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict]:
    """Optimiser groups: one per trained part, without weight decay on biases and norms."""
    rates = config.learning_rates.trained()
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        part = part_of(name)
        decay = param.ndim >= 2 and config.optim.weight_decay > 0
        groups.setdefault((part, decay), []).append(param)
    return [
        {"params": params, "lr": rates[part], "weight_decay": config.optim.weight_decay if decay else 0.0,
         "name": f"{part}{'' if decay else ' (no decay)'}" if config.optim.weight_decay > 0 else part}
        for (part, decay), params in sorted(groups.items())
    ]


def save_adapter_compressor(model, folder: Path) -> None:
    """Beside an adapter: the model's video compressor setting, so `load_model(base, adapter)` rebuilds it on a
    base that has none (the compressor's trained weights are in the adapter, peft modules_to_save)."""
    from vidlab.files import write_atomic
    from vidlab.models.load import ADAPTER_COMPRESSOR_FILE, model_compressor

    compressor = model_compressor(model)
    if compressor is not None:
        write_atomic(Path(folder) / ADAPTER_COMPRESSOR_FILE, compressor.model_dump_json(indent=2) + "\n")
