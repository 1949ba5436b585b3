"""Peak memory of one training process, from the model's sizes, the run's settings and the longest sample.

The formulas (docs/data.md lists them with their sources):
    weights      frozen weights in the compute dtype (LoRA), fp32 for full fine-tuning, 4/8-bit LLM
                 Linear layers plus fp32 everything else for QLoRA (peft's k-bit preparation upcasts
                 what is not quantised); trainable copies and LoRA adapters in fp32
    gradients    4 bytes per trainable parameter (vidlab keeps trainable weights in fp32)
    optimizer    AdamW 8 bytes (two fp32 moments), SGD with momentum 4, per trainable parameter
    activations  per LLM layer and token, the bytes autograd saves in a Qwen2 decoder layer,
                 measured with saved-tensor hooks on transformers 5.24 / torch 2.14 (LAYER_BYTES);
                 with activation checkpointing each layer keeps only its input (hidden x dtype
                 bytes) and one layer is recomputed at a time
    logits       only at the positions that have labels (vidlab.training.steps.label_token_loss):
                 label tokens x vocabulary x (4 logits + 4 log-softmax + 4 its gradient) in fp32, 2
                 more for the bf16 logits under mixed precision; past LOSS_CHUNK label tokens, the
                 rest keep only their logits and gradient in the compute dtype (fp32 one chunk at a time)
    vision       a trained vision encoder keeps its layers' activations per patch (4 patches per
                 video token) through the step; a frozen one runs forward only, before the LLM, and
                 needs the working set of one layer while it runs (a phase of its own)
    backward     the end of backward holds up to BACKWARD_TOKEN_VECTORS hidden-size vectors per token
                 more than the per-layer term (growing with the length), and a sample with video
                 VIDEO_TOKEN_VECTORS more (measured)
GRPO and DPO (Setup.rl): one forward runs `batch_size` rows of one prompt (G sampled answers, or the
chosen and the rejected answer) sharing the prompt's vision features (encoded once, frozen); the
output head runs at the answer positions only (label_tokens: the logits formula as SFT's); the
step's prompts accumulate gradients one
after the other (grad_accum = prompts per step). GRPO adds a generation phase (the KV cache of G
rows: 2 x layers x kv_heads x head size x tokens, no gradient); a reference that is a frozen copy
(full fine-tuning, or a continued adapter) adds the weights once more in the compute dtype; with
the adapters switched off as the reference, nothing. The reference's and the old policy's forward
run without gradient and need less than the training forward.
Sharding: ZeRO-2 divides gradients and optimizer states by the number of GPUs; ZeRO-3 and FSDP
also the weights (plus one gathered layer). DDP adds gradient buckets (one more gradient copy).
The peak is weights + optimizer states + the largest of the phases: a frozen vision encoder's
forward, the end of the forward pass (activations, logits, gradients kept across accumulation), the
end of backward (all gradients and one layer's activations) and the update (gradients, optimizer
temporaries); plus the runtime.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from vidlab.data.plan_model import Architecture
from vidlab.models.logits import LOSS_CHUNK

MIB, GIB = 2**20, 2**30
STRATEGIES = ("none", "ddp", "zero2", "zero3", "fsdp")

# Bytes autograd keeps per LLM decoder layer and token: (per hidden unit, per intermediate unit, per LoRA rank).
# Measured on the Qwen2 layers of transformers 5.24 with torch 2.14 (saved-tensor hooks, unique storages), at
# 2 key-value heads of 4: models with fewer key-value heads per head keep slightly less, so this errs high.
LAYER_BYTES = {
    ("lora", 4, True): (68, 20, 28), ("lora", 4, False): (28, 16, 28),
    ("lora", 2, True): (50, 12, 14), ("lora", 2, False): (26, 8, 14),
    ("full", 4, True): (36, 16, 0), ("full", 4, False): (36, 16, 0),
    ("full", 2, True): (32, 8, 0), ("full", 2, False): (32, 8, 0),
}
LAYER_CONSTANT = 24  # bytes per layer and token that do not scale with the sizes (measured)
# Not measured on a GPU (none was available): the CUDA context, cuBLAS workspaces and the caching
# allocator's reserve are commonly 0.5-1 GiB; on the CPU the measured runtime cost of a step was ~24 MiB.
RUNTIME = {"cuda": 1 * GIB, "cpu": 24 * MIB}
# The end of backward holds up to this many hidden-size vectors (x dtype bytes) per token beyond the per-layer term,
# growing with the length up to BACKWARD_EXTRA_FULL_AT tokens, and a video sample VIDEO_TOKEN_VECTORS more: measured
# on the 2b shape in fp32 (benchmarks/real_size.py calibrate, text: 0.5 at 2K tokens, 4.9 at 8K, 5.6 at 16K; video
# steps: 10.7 at 6,068 tokens, 9.9 at 16,868 in all); which tensors hold them was not isolated.
BACKWARD_TOKEN_VECTORS = 5
BACKWARD_EXTRA_FULL_AT = 8192
VIDEO_TOKEN_VECTORS = 5
QUANT_BYTES = {4: 0.5 + 1 / 64 + 4 / (64 * 256), 8: 1.0}  # nf4 with double-quantised block scales; int8


@dataclass(frozen=True)
class Setup:
    """What decides the memory of a run (from a training config, the check's statistics and the plan's options).

    Attributes:
        method: lora, qlora or full.
        trained: parts with a learning rate (vision, projector, llm).
        precision: bf16, fp16 or fp32 (the compute dtype).
        checkpointing: activation checkpointing on.
        batch_size, grad_accum: samples per step per process, steps per optimiser step.
        tokens: LLM tokens of the longest sample (text + visual after pruning).
        vision_tokens: visual tokens of the longest sample before DiffFP pruning (what the encoder sees).
        label_tokens: learned (answer) tokens of a sample, where the logits are built; None: every text token
            of the longest sample (tokens - vision_tokens), the most a sample can have.
        lora_dropout, bits: LoRA dropout (> 0 keeps dropout masks); QLoRA's 4 or 8 bits.
        optimizer: adamw or sgd (momentum > 0 keeps one state).
        gpus, strategy: processes and how they share the model (none, ddp, zero2, zero3, fsdp).
        device: cuda or cpu (the CPU trains in fp32 and has no CUDA context).
        rl: sft, grpo or dpo; under grpo/dpo batch_size is the rows of one prompt's forward (G, or 2),
            grad_accum the prompts of an optimiser step, label_tokens the answer tokens.
        reference_copy: the GRPO/DPO reference is a frozen copy of the model (not the adapters switched off).
    """

    method: str = "lora"
    trained: tuple[str, ...] = ("llm",)
    precision: str = "bf16"
    checkpointing: bool = False
    batch_size: int = 1
    grad_accum: int = 1
    tokens: int = 16384
    vision_tokens: int = 0
    label_tokens: int | None = None
    lora_dropout: float = 0.05
    bits: int = 4
    optimizer: str = "adamw"
    momentum: float = 0.9
    gpus: int = 1
    strategy: str = "none"
    device: str = "cuda"
    rl: str = "sft"
    reference_copy: bool = False

    def but(self, **changes) -> Setup:
        return replace(self, **changes)


@dataclass(frozen=True)
class Estimate:
    """Bytes per process, by component, and the peak."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    logits: int
    vision: int
    buckets: int
    runtime: int
    forward_phase: int
    backward_phase: int
    update_phase: int
    peak: int
    trainable: int
    generation_phase: int = 0  # GRPO: the KV cache of sampling the group

    def to_dict(self) -> dict:
        return asdict(self)


def _dtype_bytes(setup: Setup) -> int:
    return 4 if setup.precision == "fp32" or setup.device == "cpu" else 2


def trainable_parameters(arch: Architecture, setup: Setup) -> tuple[int, int, int]:
    """(parameters trained in full, LoRA parameters, LLM modules copied by modules_to_save)."""
    full_parts = [p for p in setup.trained if p != "llm" or setup.method == "full"]
    full = sum(arch.parameters[p] for p in full_parts)
    if setup.method == "full":
        return full, 0, 0
    return full, arch.lora, arch.modules_to_save


def _weights(arch: Architecture, setup: Setup, c: int) -> float:
    full, lora, saved = trainable_parameters(arch, setup)
    if setup.method == "full":
        return arch.total * 4  # loaded in fp32: trainable and frozen alike
    copies = (full + saved) * 4 + lora * 4  # peft keeps the frozen original beside each trained copy
    if setup.method == "qlora":
        return arch.llm_linear * QUANT_BYTES[setup.bits] + (arch.total - arch.llm_linear) * 4 + copies
    return arch.total * c + copies


def layer_bytes(arch: Architecture, setup: Setup, c: int, r: int) -> int:
    """Bytes one LLM decoder layer keeps per token for backward (no checkpointing)."""
    kind = "full" if setup.method == "full" else "lora"
    per_h, per_i, per_r = LAYER_BYTES[(kind, c, setup.lora_dropout > 0)]
    return per_h * arch.hidden + per_i * arch.intermediate + per_r * r + LAYER_CONSTANT


def label_count(setup: Setup) -> int:
    """Positions of one sample whose logits training builds (see Setup.label_tokens)."""
    if setup.label_tokens is not None:
        return min(setup.label_tokens, setup.tokens)
    return max(setup.tokens - setup.vision_tokens, 1)


def label_logits(arch: Architecture, setup: Setup, c: int) -> int:
    """Bytes of one sample's logits and loss: fp32 for one chunk of LOSS_CHUNK rows, the compute dtype beyond."""
    labels = label_count(setup)
    in_fp32 = min(labels, LOSS_CHUNK)
    return in_fp32 * arch.vocab * (12 + (2 if c == 2 else 0)) + (labels - in_fp32) * arch.vocab * 2 * c


def _largest_trained_tensor(arch: Architecture, setup: Setup) -> int:
    """Elements of the largest tensor the optimiser updates (LoRA adapters are small: their largest is ignored)."""
    sizes = [0]
    if "llm" in setup.trained and setup.method == "full":
        sizes.append(arch.vocab * arch.hidden)
    if "vision" in setup.trained:
        sizes.append(arch.vision_hidden * arch.vision_intermediate)
    if "projector" in setup.trained:
        sizes.append(arch.vision_hidden * 4 * arch.hidden)
    return max(sizes)


def estimate(arch: Architecture, setup: Setup, lora_rank: int = 64) -> Estimate:
    """The peak memory of one process of the run (see the module docstring for each part)."""
    c = _dtype_bytes(setup)
    full, lora, saved = trainable_parameters(arch, setup)
    trainable = full + lora + saved
    shards = setup.gpus if setup.strategy in ("zero2", "zero3", "fsdp") else 1
    weights = _weights(arch, setup, c)
    if setup.strategy in ("zero3", "fsdp") and setup.gpus > 1:
        weights = weights / setup.gpus + arch.largest_layer * (4 if setup.method == "full" else c)
    gradients = trainable * 4 / shards
    optimizer = trainable * (8 if setup.optimizer == "adamw" else 4 if setup.momentum > 0 else 0) / shards
    buckets = trainable * 4 if setup.strategy == "ddp" and setup.gpus > 1 else 0

    tokens = setup.batch_size * setup.tokens
    per_layer = layer_bytes(arch, setup, c, lora_rank if setup.method != "full" else 0)
    if setup.checkpointing:
        activations = arch.layers * tokens * c * arch.hidden + tokens * per_layer
    else:
        activations = arch.layers * tokens * per_layer
    if setup.method == "full" and c == 2:
        # Autocast casts each fp32 weight to bf16 per use and keeps the copy for backward.
        activations += 2 * arch.parameters["llm"] / (arch.layers if setup.checkpointing else 1)
    logits = setup.batch_size * label_logits(arch, setup, c) + tokens * arch.hidden * (c + 4)
    if setup.reference_copy:
        weights += arch.total * c

    # A video token merges 2x2 patches; GRPO/DPO encode a prompt's video once for all its rows.
    patches = (setup.batch_size if setup.rl == "sft" else 1) * setup.vision_tokens * 4
    hv, iv = arch.vision_hidden, arch.vision_intermediate
    if "vision" in setup.trained:
        per_patch = (36 * hv + 8 * iv) if c == 4 else (32 * hv + 4 * iv)
        layers = 1 if setup.checkpointing else arch.vision_layers
        vision = patches * per_patch * layers + (patches * c * hv * arch.vision_layers if setup.checkpointing else 0)
    else:
        # One frozen layer's working set, nothing kept: its input, norm, attention and MLP outputs (measured on the
        # 2b shape without gradients: 54 KB a patch, this says 57).
        vision = patches * (5 * hv + 2 * iv) * c
        if "projector" in setup.trained:
            vision += setup.batch_size * setup.vision_tokens * (hv + 2 * arch.hidden) * c
    # A frozen encoder (and projector) runs forward only and is done before the LLM starts: its own phase.
    kept_vision, vision_phase = (vision, 0) if {"vision", "projector"} & set(setup.trained) else (0, vision)
    vectors = (BACKWARD_TOKEN_VECTORS * min(1.0, setup.tokens / BACKWARD_EXTRA_FULL_AT)
               + (VIDEO_TOKEN_VECTORS if setup.vision_tokens else 0))

    kept_gradients = gradients if setup.grad_accum > 1 else 0
    # Full fine-tuning: the output head's weight gradient is made first in backward, while every activation is
    # still held (measured: without checkpointing at 8K tokens the plan was 29% low without it).
    head_gradient = arch.vocab * arch.hidden * 4 if setup.method == "full" and "llm" in setup.trained else 0
    forward_phase = activations + logits + kept_vision + max(kept_gradients, head_gradient)
    # The end of backward: all gradients, the first layer's activations (recomputed under checkpointing) and the
    # checkpointed inputs not yet freed.
    stored_inputs = arch.layers * tokens * c * arch.hidden if setup.checkpointing else 0
    backward_phase = gradients + buckets + tokens * per_layer + stored_inputs + int(vectors * tokens * arch.hidden * c)
    if setup.device == "cpu":
        # torch's AdamW on the CPU goes tensor by tensor: sqrt and division make two temporaries of the largest
        # trained tensor (measured on the 2b shape, full fine-tuning: the 151,936-row embedding).
        update_phase = gradients + buckets + 2 * 4 * min(_largest_trained_tensor(arch, setup), trainable)
    else:  # foreach AdamW on CUDA: temporaries for all of them, about one more fp32 copy
        update_phase = gradients + buckets + trainable * 4
    generation_phase = 0
    if setup.rl == "grpo":  # sampling: the group's KV cache and one step's logits, gradients of earlier prompts kept
        head = arch.hidden // arch.heads
        generation_phase = (2 * arch.layers * arch.kv_heads * head * tokens * c + setup.batch_size * arch.vocab * 8
                            + kept_gradients)
    runtime = RUNTIME[setup.device]
    phases = (vision_phase, forward_phase, backward_phase, update_phase, generation_phase)
    peak = weights + optimizer + max(phases) + runtime
    return Estimate(*(int(v) for v in (weights, gradients, optimizer, activations, logits, vision, buckets, runtime,
                                       forward_phase, backward_phase, update_phase, peak, trainable,
                                       generation_phase)))
