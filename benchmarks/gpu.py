"""A VideoLLaMA3-2B-sized model on a GPU: memory and time of a LoRA training step and of generation.

    python benchmarks/gpu.py [--frames 180] [--size 336x196] [--device cuda] [--json OUT]
    python benchmarks/gpu.py --tiny --device cpu      # the same code at tiny sizes (the tests run this)

The model has the released VideoLLaMA3-2B's sizes (Qwen2.5-1.5B LLM: hidden 1536, 28 layers, 12
heads, 2 key/value heads, vocabulary 151,936, tied embeddings; SigLIP-NaViT vision encoder: hidden
1152, 27 layers, 16 heads, patch 14) with random weights in bf16; no download. The input is one
video of --frames frames of --size pixels (merged 2x2: 180 frames of 336x196 are 15,120 visual
tokens, what the released 16,384-token budget gives 180 frames of a 16:9 video; DiffFP off) and a
short question and a 40-token answer: the step benchmarks/real_size.py measures on the CPU with 2
layers, here at full depth. Measured, each after one warm-up:
    lora step        forward + backward + AdamW step, LoRA r 64 on every LLM Linear, with and
                     without activation checkpointing, the frozen vision encoder forward only (as
                     `vidlab train`); beside it `vidlab data plan`'s estimate of the same peak
    generate         prefill of the whole prompt and 16 new tokens
    generate 4-bit   the same with the LLM in 4-bit (bitsandbytes nf4; CUDA only)
Prints one row per measurement: seconds, peak GPU memory (torch.cuda.max_memory_allocated; on the
CPU, the process's peak resident memory instead).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import peak
import torch

ANSWER_TOKENS = 40
TEXT_2B = {"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28, "num_attention_heads": 12,
           "num_key_value_heads": 2, "vocab_size": 151936, "tie_word_embeddings": True, "rope_theta": 1000000.0,
           "max_position_embeddings": 32768}
VISION_2B = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
             "patch_size": 14}
TEXT_TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "vocab_size": 1024, "tie_word_embeddings": True, "rope_theta": 1000000.0,
             "max_position_embeddings": 4096}
VISION_TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
               "patch_size": 14}
IMAGE_TOKEN, VIDEO_TOKEN = 3, 4  # ids of the placeholders in this random vocabulary


def build_model(tiny: bool, device: torch.device, dtype: torch.dtype):
    from transformers import VideoLlama3Config, VideoLlama3ForConditionalGeneration

    text, vision = (TEXT_TINY, VISION_TINY) if tiny else (TEXT_2B, VISION_2B)
    config = VideoLlama3Config(text_config={"model_type": "qwen2", **text, "eos_token_id": 2, "pad_token_id": 0},
                               vision_config=vision, image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN)
    with torch.device(device):
        model = VideoLlama3ForConditionalGeneration(config)
    return model.to(dtype)


def video_inputs(frames: int, width: int, height: int, device: torch.device, dtype: torch.dtype,
                 text_tokens: int = 64) -> dict:
    """One video of `frames` frames of width x height pixels (multiples of 28), merged 2x2, plus text."""
    grid_h, grid_w = height // 14, width // 14
    visual = frames * (grid_h // 2) * (grid_w // 2)
    generator = torch.Generator().manual_seed(0)
    text = torch.randint(10, 1000, (text_tokens,), generator=generator)
    ids = torch.cat([text[: text_tokens // 2], torch.full((visual,), VIDEO_TOKEN), text[text_tokens // 2 :]])
    return {
        "input_ids": ids[None].to(device),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long, device=device),
        "pixel_values_videos": torch.randn(frames * grid_h * grid_w, 3 * 14 * 14, generator=generator).to(device,
                                                                                                         dtype),
        "video_grid_thw": torch.tensor([[frames, grid_h, grid_w]], device=device),
        "video_merge_sizes": torch.tensor([2], device=device),
        "video_compression_mask": torch.ones(visual, dtype=torch.bool, device=device),
    }


class Meter:
    """Seconds and peak memory of a block (GPU memory on CUDA, resident memory on the CPU)."""

    def __init__(self, device: torch.device):
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        else:
            peak.start()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_gb = torch.cuda.max_memory_allocated() / 2**30
        else:
            self.peak_gb = peak.peak_mb() / 1024
        self.seconds = time.perf_counter() - self.started


def lora_step(model, inputs: dict, device: torch.device, checkpointing: bool) -> dict:
    from peft import LoraConfig, get_peft_model

    from vidlab.models.load import peft_wrapping
    from vidlab.training.model import drop_input_grads_of_frozen_vision, lora_target_regex
    from vidlab.training.steps import label_token_loss

    model.config.use_cache = False  # training keeps no key/value cache
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    with peft_wrapping():
        lora = LoraConfig(r=64, lora_alpha=16, target_modules=lora_target_regex(model, "all-linear"))
        peft_model = get_peft_model(model, lora)
    drop_input_grads_of_frozen_vision(peft_model)  # as `vidlab train`: no backward through the frozen encoder
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    for param in trainable:
        param.data = param.data.float()  # trainable weights in fp32, as vidlab trains them
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    labels = inputs["input_ids"].clone()
    labels[:, :-ANSWER_TOKENS] = -100  # the answer

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, count = label_token_loss(peft_model, inputs, labels)  # as vidlab train: logits at the answer only
        (loss / count).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # warm-up
    with Meter(device) as meter:
        step()
    peft_model.unload()
    if checkpointing:
        model.activation_checkpointing_disable()
    model.config.use_cache = True
    row = {"seconds": meter.seconds, "peak_gb": meter.peak_gb}
    if model.config.text_config.hidden_size == TEXT_2B["hidden_size"]:  # the plan knows the released sizes
        row["plan_gb"] = _planned_peak(inputs, device, checkpointing) / 2**30
    return row


def _planned_peak(inputs: dict, device: torch.device, checkpointing: bool) -> float:
    """`vidlab data plan`'s peak for the step `lora_step` measures (without the runtime it assumes on CUDA, which
    torch.cuda.max_memory_allocated does not count)."""
    from vidlab.data.plan_memory import Setup, estimate
    from vidlab.data.plan_model import read_architecture

    tokens = int(inputs["input_ids"].shape[1])
    setup = Setup(method="lora", precision="bf16" if device.type == "cuda" else "fp32", checkpointing=checkpointing,
                  tokens=tokens, vision_tokens=int(inputs["video_compression_mask"].sum()),
                  label_tokens=ANSWER_TOKENS, lora_dropout=0.0, device=device.type)
    planned = estimate(read_architecture("videollama3-2b", 64, "all-linear"), setup, 64)
    return planned.peak - planned.runtime


@torch.inference_mode()
def generation(model, inputs: dict, device: torch.device) -> dict:
    kwargs = {"max_new_tokens": 16, "min_new_tokens": 16, "do_sample": False, "pad_token_id": 0}
    model.generate(**inputs, **kwargs)  # warm-up
    with Meter(device) as meter:
        model.generate(**inputs, **kwargs)
    return {"seconds": meter.seconds, "peak_gb": meter.peak_gb}


def four_bit(model, inputs: dict, device: torch.device) -> dict:
    if device.type != "cuda":
        return {"skipped": "4-bit needs a CUDA GPU (bitsandbytes)"}
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return {"skipped": "bitsandbytes is not installed (pip install bitsandbytes)"}
    from transformers import BitsAndBytesConfig, VideoLlama3ForConditionalGeneration

    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                          bnb_4bit_compute_dtype=torch.bfloat16,
                                          llm_int8_skip_modules=["vision_model", "projector", "lm_head"])
        model.cpu()  # the bf16 copy leaves the GPU: the peak is the 4-bit model's alone (the last measurement)
        torch.cuda.empty_cache()
        quantized = VideoLlama3ForConditionalGeneration.from_pretrained(
            folder, quantization_config=quantization, dtype=torch.bfloat16, device_map={"": device.index or 0})
    return generation(quantized, inputs, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=None, help="default: 180 (tiny: 4)")
    parser.add_argument("--size", default=None, help="WIDTHxHEIGHT, multiples of 28; default 336x196 (tiny: 56x56)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes: checks the script anywhere, in seconds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    device = torch.device(args.device)
    frames = args.frames or (4 if args.tiny else 180)
    width, height = map(int, (args.size or ("56x56" if args.tiny else "336x196")).split("x"))
    if width % 28 or height % 28:
        parser.error(f"--size {width}x{height}: both sides must be multiples of 28")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = build_model(args.tiny, device, dtype)
    inputs = video_inputs(frames, width, height, device, dtype)
    parameters = sum(p.numel() for p in model.parameters())
    results = {"device": str(torch.cuda.get_device_name(device)) if device.type == "cuda" else "cpu",
               "parameters": parameters, "frames": frames, "size": f"{width}x{height}",
               "prompt_tokens": int(inputs["input_ids"].shape[1]), "measurements": {}}
    for name, run in [("lora step, activation checkpointing", lambda: lora_step(model, inputs, device, True)),
                      ("lora step, no checkpointing", lambda: lora_step(model, inputs, device, False)),
                      ("generate, bf16" if device.type == "cuda" else "generate", lambda: generation(model, inputs,
                                                                                                    device)),
                      ("generate, 4-bit", lambda: four_bit(model, inputs, device))]:
        try:
            results["measurements"][name] = run()
        except torch.OutOfMemoryError as err:
            results["measurements"][name] = {"skipped": f"out of memory ({str(err).splitlines()[0]})"}
            torch.cuda.empty_cache()
    print(f"{results['device']}: {parameters / 1e9:.2f} B parameters, {frames} frames of {width}x{height}, "
          f"{results['prompt_tokens']} prompt tokens")
    unit = "GPU GB" if device.type == "cuda" else "process GB"
    for name, row in results["measurements"].items():
        shown = row.get("skipped") or f"{row['seconds']:.3f} s, peak {row['peak_gb']:.2f} {unit}"
        shown += f" (plan {row['plan_gb']:.2f})" if "plan_gb" in row else ""
        print(f"  {name:<38} {shown}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
