"""4- and 8-bit weights for inference (`--quantize 8bit|4bit`): less memory for the same model.

On a CUDA GPU the LLM's Linear layers load through bitsandbytes (int8, or nf4 with double
quantization, computing in bf16/fp16). On a CPU they are quantized after loading through torchao,
int8 weight-only (one scale per output channel); 4-bit is refused there, because torchao's packed
int4 kernels need a GPU (its CPU int4 keeps one int4 value per byte: no smaller than int8). Either
way the vision encoder, the projector and the output head stay in full precision (as in
VideoLLaMA3's own QLoRA path), and LoRA adapters stay in full precision on top of the quantized
base layers.
"""

from __future__ import annotations

import torch

from vidlab.errors import ModelLoadError

QUANTIZE_CHOICES = ("8bit", "4bit")
KEEP_FULL = ("vision_model", "projector", "lm_head")  # module names that stay in full precision


def check_quantize(quantize: str | None, device: torch.device) -> None:
    """Raise a ModelLoadError naming what is missing when `quantize` cannot run on `device`."""
    if quantize is None:
        return
    if quantize not in QUANTIZE_CHOICES:
        raise ModelLoadError(f"--quantize {quantize}: unknown. Use 8bit or 4bit.")
    if device.type == "cuda":
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as err:
            raise ModelLoadError(f"--quantize {quantize} on a GPU needs bitsandbytes: pip install bitsandbytes "
                                 "(or pip install 'vidlab[quantize]').") from err
    elif quantize == "4bit":
        raise ModelLoadError("--quantize 4bit needs a CUDA GPU (bitsandbytes nf4); none is visible. On a CPU use "
                             "--quantize 8bit (torchao int8 weights).")
    else:
        try:
            import torchao  # noqa: F401
        except ImportError as err:
            raise ModelLoadError(f"--quantize {quantize} on the CPU needs torchao: pip install torchao "
                                 "(or pip install 'vidlab[quantize]').") from err


def bitsandbytes_config(quantize: str, compute_dtype: torch.dtype):
    """The transformers `BitsAndBytesConfig` for loading on a CUDA GPU."""
    from transformers import BitsAndBytesConfig

    skip = list(KEEP_FULL)
    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype, llm_int8_skip_modules=skip)


def quantized_placement(quantize: str | None, dtype: torch.dtype, device: torch.device) -> tuple[torch.dtype, dict]:
    """(dtype, from_pretrained placement kwargs): bitsandbytes on a CUDA GPU (computing in half), else as asked."""
    if quantize is None or device.type != "cuda":
        return dtype, {"device_map": str(device)}
    dtype = dtype if dtype != torch.float32 else torch.float16  # bitsandbytes computes in half
    return dtype, {"device_map": {"": device.index or 0}, "quantization_config": bitsandbytes_config(quantize, dtype)}


def _quantizable(module: torch.nn.Module, name: str) -> bool:
    # LoRA's own A/B matrices stay full precision; the base layer they wrap is quantized.
    return isinstance(module, torch.nn.Linear) and "lora_" not in name and not any(k in name for k in KEEP_FULL)


def quantize_weights(model: torch.nn.Module, quantize: str) -> torch.nn.Module:
    """Quantize a loaded model's LLM Linear weights to int8 in place with torchao (the CPU path); returns the model."""
    check_quantize(quantize, torch.device("cpu"))
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(model, Int8WeightOnlyConfig(), filter_fn=_quantizable)
    return model

