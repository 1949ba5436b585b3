"""Converting original VideoLLaMA3 checkpoints (released, training-code, LoRA run) to the native layout.

The tiny original checkpoint in tests/data/ and its reference logits come from the original model
(see tests/data/README.md). The other layouts are built here from its tensors, written the way the
original code writes them: remote-code save_pretrained (safetensors, sharded with an index), the
training code's torch.save (.bin shards, `model.vision_encoder.vision_encoder.*`), and peft's
save_pretrained plus torch.save(non_lora_trainables.bin) for a LoRA run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoProcessor, PreTrainedTokenizerFast, VideoLlama3ForConditionalGeneration
from transformers.video_utils import VideoMetadata

from vidlab.errors import CheckpointConversionError, ModelLoadError
from vidlab.models import load_model
from vidlab.models.convert.checkpoint import convert_checkpoint
from vidlab.models.info import model_info, render_model_info

DATA = Path(__file__).parent / "data"
RELEASED = DATA / "videollama3-original-tiny"
REFERENCE = DATA / "reference_outputs.safetensors"
ORIGINAL_IMAGE_ID = 300  # `<image>` in the tiny tokenizer
TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
LLM_LINEARS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ---------------------------------------------------------------- building original checkpoints


def released_state() -> dict[str, torch.Tensor]:
    return load_file(RELEASED / "model.safetensors")


def released_config() -> dict:
    return json.loads((RELEASED / "config.json").read_text())


def as_native(key: str) -> str:
    """The native name the conversion must give a released-layout tensor (written out here, not imported)."""
    for old, new in [("model.vision_encoder.", "model.vision_model."), ("model.mm_projector.", "model.projector."),
                     ("lm_head.", "lm_head."), ("model.", "model.language_model.")]:
        if key.startswith(old):
            return new + key[len(old):]
    raise AssertionError(key)


def write_released(folder: Path, state: dict | None = None, shards: int = 1, config: dict | None = None) -> Path:
    """A released-layout folder: the tiny checkpoint's files, weights as `save_pretrained` shards them."""
    shutil.copytree(RELEASED, folder)
    os.remove(folder / "model.safetensors")
    state = released_state() if state is None else state
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    names = sorted(state)
    if shards == 1:
        save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
        return folder
    weight_map = {}
    for number, chunk in enumerate(np.array_split(np.array(names), shards), start=1):
        shard = f"model-{number:05d}-of-{shards:05d}.safetensors"
        save_file({k: state[k] for k in chunk}, folder / shard, metadata={"format": "pt"})
        weight_map.update({k: shard for k in chunk})
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return folder


def write_vision_encoder(folder: Path, preprocessor: dict) -> Path:
    """What `--vision_encoder` points the training code at: the encoder's config and image processor."""
    folder.mkdir()
    sizes = released_config()["vision_encoder_config"]
    (folder / "config.json").write_text(json.dumps({**sizes, "model_type": "videollama3_vision_encoder"}))
    (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    return folder


ENCODER_PREPROCESSOR = {
    "image_processor_type": "Videollama3ImageProcessor", "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
    "min_tokens": 4, "max_tokens": 64, "patch_size": 14, "resample": 3, "rescale_factor": 1 / 255,
}


def write_training(folder: Path, encoder: Path, tie: bool = False) -> Path:
    """A folder as the original training code saves it: torch.save shards with an index, keys
    `model.vision_encoder.vision_encoder.*`, a config naming the vision encoder (no vision_encoder_config),
    the tokenizer, and no processor files (train.py saves none)."""
    folder.mkdir()
    state = {k.replace("model.vision_encoder.", "model.vision_encoder.vision_encoder."): v
             for k, v in released_state().items()}
    if tie:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]  # one tensor under two names, as in a tied model
    config = {k: v for k, v in released_config().items() if k not in ("vision_encoder_config", "auto_map")}
    config.update({"vision_encoder": str(encoder), "mm_vision_encoder": str(encoder), "mm_hidden_size": 64,
                   "tie_word_embeddings": tie, "torch_dtype": "float32"})
    (folder / "config.json").write_text(json.dumps(config))
    for name in TOKENIZER_FILES:
        shutil.copy(RELEASED / name, folder / name)
    names = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2:]}
    for shard, keys in halves.items():
        torch.save({k: state[k] for k in keys}, folder / shard)
    weight_map = {k: shard for shard, keys in halves.items() for k in keys}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return folder


class OriginalLayout(torch.nn.Module):
    """Modules named like Videollama3Qwen2ForCausalLM's, so peft wraps them as it did in train.py."""

    def prepare_inputs_for_generation(self, *args, **kwargs):  # peft's CAUSAL_LM wrapper looks for it
        raise NotImplementedError


def module_tree(state: dict[str, torch.Tensor]) -> OriginalLayout:
    root = OriginalLayout()
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        module, _, name = key.rpartition(".")
        groups.setdefault(module, {})[name] = tensor
    for module, params in groups.items():
        parent = root
        *path, leaf_name = module.split(".")
        for part in path:
            if not hasattr(parent, part):
                parent.add_module(part, torch.nn.Module())
            parent = getattr(parent, part)
        weight = params["weight"]
        if weight.dim() == 2 and "embed" not in leaf_name:
            leaf = torch.nn.Linear(weight.shape[1], weight.shape[0], bias="bias" in params)
        else:
            leaf = torch.nn.Module()
            for name, tensor in params.items():
                leaf.register_parameter(name, torch.nn.Parameter(torch.empty_like(tensor)))
        parent.add_module(leaf_name, leaf)
    root.load_state_dict(state)
    return root


def write_lora_run(folder: Path, base: str, rank: int = 4, alpha: int = 8, lora_bias: str = "none") -> dict:
    """A LoRA run as train.py saves it (the projector trained in full, LoRA on the LLM's Linears;
    with lora_bias "all" every bias trains too and is saved with the factors and in non_lora_trainables).

    Returns what it wrote and `merged`: the weights the original loader ends up with (base, then
    non_lora_trainables.bin, then peft's merge_and_unload), by released-layout name.
    """
    from peft import LoraConfig, get_peft_model

    training = {k.replace("model.vision_encoder.", "model.vision_encoder.vision_encoder."): v
                for k, v in released_state().items()}
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.05, target_modules=LLM_LINEARS, task_type="CAUSAL_LM",
                        bias=lora_bias)
    model = get_peft_model(module_tree(training), config)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)  # a trained adapter is non-zero
            if "mm_projector" in name:
                param.add_(0.5)  # trained in full, like the projector in train.py
            bias_trains = lora_bias == "all" and name.endswith(".bias")
            if bias_trains and "mm_projector" not in name:
                param.add_(0.25)
            param.requires_grad = "lora_" in name or "mm_projector" in name or bias_trains
    # train.py's get_peft_state_maybe_zero_3: the factors, and with lora_bias all every bias as well.
    lora = {n: p.detach().clone() for n, p in model.named_parameters()
            if "lora_" in n or (lora_bias == "all" and "bias" in n)}
    non_lora = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n and p.requires_grad}
    model.peft_config["default"].base_model_name_or_path = base
    model.save_pretrained(folder, state_dict=lora)
    torch.save(non_lora, folder / "non_lora_trainables.bin")
    # model.config.save_pretrained(output_dir): train.py's config class, naming the encoder it loaded
    run_config = {k: v for k, v in released_config().items() if k not in ("vision_encoder_config", "auto_map")}
    run_config.update({"vision_encoder": "DAMO-NLP-SG/SigLIP-NaViT", "mm_hidden_size": 64, "use_cache": True})
    (folder / "config.json").write_text(json.dumps(run_config))
    merged = {k.replace("model.vision_encoder.vision_encoder.", "model.vision_encoder."): v
              for k, v in model.merge_and_unload().state_dict().items()}
    return {"lora": lora, "non_lora": non_lora, "scale": alpha / rank, "merged": merged}


def left_behind(parent: Path, name: str) -> list[str]:
    return [p.name for p in parent.iterdir() if name in p.name]


# ---------------------------------------------------------------- released checkpoints


@pytest.fixture(scope="module")
def converted_released(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("released")
    source = write_released(work / "original", shards=3)
    return convert_checkpoint(source, work / "native", progress=False, max_shard_size="200KB").folder


def test_native_model_reproduces_the_original_logits(converted_released):
    model = VideoLlama3ForConditionalGeneration.from_pretrained(converted_released).eval()
    config = model.config
    reference = load_file(REFERENCE)
    with torch.no_grad():
        image_ids = reference["image.input_ids"].masked_fill(reference["image.input_ids"] == ORIGINAL_IMAGE_ID,
                                                             config.image_token_id)
        image = model(input_ids=image_ids, pixel_values=reference["image.pixel_values"],
                      image_grid_thw=reference["image.grid_sizes"],
                      image_merge_sizes=reference["image.merge_sizes"]).logits
        video_ids = reference["video.input_ids"].masked_fill(reference["video.input_ids"] == ORIGINAL_IMAGE_ID,
                                                             config.video_token_id)
        tokens = int((reference["video.grid_sizes"].prod(-1) // reference["video.merge_sizes"] ** 2).sum())
        video = model(input_ids=video_ids, pixel_values_videos=reference["video.pixel_values"],
                      video_grid_thw=reference["video.grid_sizes"], video_merge_sizes=reference["video.merge_sizes"],
                      video_compression_mask=torch.ones(tokens, dtype=torch.bool)).logits
    assert (image_ids == config.image_token_id).sum() == 24 and (video_ids == config.video_token_id).sum() == 12
    torch.testing.assert_close(image, reference["image.logits"], atol=1e-5, rtol=0)
    torch.testing.assert_close(video, reference["video.logits"], atol=1e-5, rtol=0)


def test_every_weight_lands_where_it_belongs(converted_released):
    source = released_state()
    native = VideoLlama3ForConditionalGeneration.from_pretrained(converted_released).state_dict()
    named = {
        "model.vision_model.encoder.layers.1.self_attn.q_proj.weight":
            "model.vision_encoder.encoder.layers.1.self_attn.q_proj.weight",
        "model.projector.readout.2.weight": "model.mm_projector.readout.2.weight",
        "model.projector.readout.0.bias": "model.mm_projector.readout.0.bias",
        "model.language_model.layers.1.mlp.down_proj.weight": "model.layers.1.mlp.down_proj.weight",
        "model.language_model.embed_tokens.weight": "model.embed_tokens.weight",
        "model.language_model.norm.weight": "model.norm.weight",
        "lm_head.weight": "lm_head.weight",
    }
    for native_name, original_name in named.items():
        assert torch.equal(native[native_name], source[original_name]), native_name
    assert set(native) == {as_native(k) for k in source}
    for key, tensor in source.items():
        assert torch.equal(native[as_native(key)], tensor), key


def test_output_is_sharded_with_an_index_and_a_complete_folder(converted_released):
    index = json.loads((converted_released / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert all((converted_released / s).stat().st_size < 200_000 + 70_000 for s in shards)  # limit + one tensor
    assert len(index["weight_map"]) == len(released_state())
    expected_files = {"config.json", "generation_config.json", "processor_config.json", "tokenizer.json",
                      "tokenizer_config.json", "chat_template.jinja", "vidlab_conversion.json"}
    assert expected_files <= {p.name for p in converted_released.iterdir()}
    assert left_behind(converted_released.parent, ".native.converting") == []
    config = json.loads((converted_released / "config.json").read_text())
    assert config["model_type"] == "video_llama_3" and config["dtype"] == "float32"
    assert config["vision_config"]["hidden_size"] == 64 and config["vision_config"]["patch_size"] == 14
    assert config["text_config"]["model_type"] == "qwen2" and config["text_config"]["num_key_value_heads"] == 2
    assert config["image_token_id"] == 12 and config["video_token_id"] == 13  # <|image_pad|>, <|video_pad|>
    assert config["tie_word_embeddings"] is False


def test_tokenizer_keeps_every_id_and_template_renders_like_the_original(converted_released):
    processor = AutoProcessor.from_pretrained(converted_released)
    original = PreTrainedTokenizerFast.from_pretrained(RELEASED)
    tokenizer = processor.tokenizer
    assert len(tokenizer) == len(original) == 303 and tokenizer.get_vocab() == original.get_vocab()
    assert tokenizer.convert_tokens_to_ids(["<image>", "<|image_pad|>", "<|video_pad|>"]) == [300, 12, 13]
    assert processor.image_token_id == 12 and processor.video_token_id == 13
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "Sure?"},
    ]
    native = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    before = original.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert native == before.replace("<image>", "<|image_pad|>")
    assert tokenizer.apply_chat_template(messages, tokenize=False) == processor.apply_chat_template(
        messages, tokenize=False)


def test_dtype_option_casts_every_weight(tmp_path):
    out = convert_checkpoint(RELEASED, tmp_path / "bf16", dtype="bf16", progress=False).folder
    model = VideoLlama3ForConditionalGeneration.from_pretrained(out, dtype="auto")
    assert model.dtype == torch.bfloat16 and json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    stored = load_file(out / "model.safetensors")
    assert {t.dtype for t in stored.values()} == {torch.bfloat16}
    source = released_state()["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(stored["model.language_model.layers.0.self_attn.q_proj.weight"], source.to(torch.bfloat16))
    with pytest.raises(CheckpointConversionError, match="dtype 'fp8': use bf16, fp16 or fp32"):
        convert_checkpoint(RELEASED, tmp_path / "fp8", dtype="fp8", progress=False)
    assert not (tmp_path / "fp8").exists()


def test_vidlab_loads_the_converted_folder(converted_released):
    model, processor = load_model(converted_released, device="cpu")
    assert processor.video_token_id == model.config.video_token_id == 13
    record = json.loads((converted_released / "vidlab_conversion.json").read_text())
    assert record["kind"] == "released" and record["original_image_token_id"] == ORIGINAL_IMAGE_ID
    assert record["tensors"] == len(released_state()) and record["dropped"] == []


# ---------------------------------------------------------------- preprocessing


def uniform_image(height: int, width: int, value: int) -> Image.Image:
    return Image.fromarray(np.full((height, width, 3), value, dtype=np.uint8))


def video_inputs(processor, frames: np.ndarray) -> dict:
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "What happens?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    count, height, width = frames.shape[:3]
    metadata = VideoMetadata(total_num_frames=count, fps=1.0, width=width, height=height,
                             frames_indices=list(range(count)))
    return processor(text=[text], videos=[frames], video_metadata=[metadata], return_tensors="pt")


def image_inputs(processor, image: Image.Image) -> dict:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return processor(text=[text], images=[image], return_tensors="pt")


@pytest.fixture(scope="module")
def converted_training(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("training")
    encoder = write_vision_encoder(work / "SigLIP-NaViT", ENCODER_PREPROCESSOR)
    source = write_training(work / "trained", encoder, tie=True)
    return convert_checkpoint(source, work / "native", progress=False).folder


# The original image processor (image_processing_videollama3.simple_batched_resize): factor = 14 * merge;
# round both sides to the factor; if the area is over max_tokens * factor^2 / number of frames, scale both
# sides by beta = sqrt(h * w / budget) and floor to the factor; then, if under min_tokens * factor^2, scale
# up and ceil. Worked out per case below.
PREPROCESSING_CASES = {
    # released tiny: min_tokens 16, max_tokens 16384, CLIP mean/std.
    "released": {
        # image 100x150, merge 1, factor 14: round -> 98 x 154, within budget -> grid (1, 7, 11), 77 tokens
        "image": ([[1, 7, 11]], 1, 77),
        # 4 frames 120x160, merge 2, factor 28: round -> 112 x 168 (18816 <= 16384 * 784 / 4) -> grid (4, 8, 12),
        # 4 * 6 = 24 tokens a frame, 96 in all
        "video": ([[4, 8, 12]], 2, 24),
        "mean": [0.48145466, 0.4578275, 0.40821073],
        "std": [0.26862954, 0.26130258, 0.27577711],
    },
    # training layout, its vision encoder's preprocessor: min_tokens 4, max_tokens 64, mean/std 0.5.
    "training": {
        # image: 98 x 154 = 15092 > 64 * 196 = 12544 -> beta = sqrt(15000 / 12544) = 1.0935,
        # floor(100 / 1.0935 / 14) = 6, floor(150 / 1.0935 / 14) = 9 -> 84 x 126 -> grid (1, 6, 9), 54 tokens
        "image": ([[1, 6, 9]], 1, 54),
        # video: budget 64 * 784 / 4 = 12544 a frame; 112 x 168 = 18816 over it -> beta = sqrt(19200 / 12544)
        # = 1.2372, floor(120 / 1.2372 / 28) = 3, floor(160 / 1.2372 / 28) = 4 -> 84 x 112 (above 4 * 784)
        # -> grid (4, 6, 8), 3 * 4 = 12 tokens a frame
        "video": ([[4, 6, 8]], 2, 12),
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
    },
}


@pytest.mark.parametrize("case", ["released", "training"])
def test_processor_reproduces_the_original_budget_merge_and_normalisation(case, converted_released, converted_training):
    folder = {"released": converted_released, "training": converted_training}[case]
    expected = PREPROCESSING_CASES[case]
    processor = AutoProcessor.from_pretrained(folder)

    grid, merge, tokens = expected["image"]
    batch = image_inputs(processor, uniform_image(100, 150, 200))
    assert batch["image_grid_thw"].tolist() == grid and batch["image_merge_sizes"].tolist() == [merge]
    assert int((batch["input_ids"] == processor.image_token_id).sum()) == tokens
    # Every patch value is (200 / 255 - mean) / std, channel by channel, with the original's mean and std.
    patches = batch["pixel_values"].view(-1, 3, 14 * 14)
    for channel, (mean, deviation) in enumerate(zip(expected["mean"], expected["std"])):
        torch.testing.assert_close(patches[:, channel], torch.full_like(patches[:, channel],
                                                                       (200 / 255 - mean) / deviation))

    grid, merge, per_frame = expected["video"]
    moving = np.random.default_rng(0).integers(0, 255, (4, 120, 160, 3), dtype=np.uint8)
    batch = video_inputs(processor, moving)
    assert batch["video_grid_thw"].tolist() == grid and batch["video_merge_sizes"].tolist() == [merge]
    assert int((batch["input_ids"] == processor.video_token_id).sum()) == 4 * per_frame
    # The prompt is the original's: its template writes `Time t.ts:<image>` per frame, joined by commas, and
    # its processor expands each <image> into the frame's tokens.
    original = PreTrainedTokenizerFast.from_pretrained(RELEASED).apply_chat_template(
        [{"role": "user", "content": [{"type": "video", "num_frames": 4, "timestamps": [0.0, 1.0, 2.0, 3.0]},
                                      {"type": "text", "text": "What happens?"}]}],
        tokenize=False, add_generation_prompt=True,
    )
    assert original.count("<image>") == 4
    assert processor.decode(batch["input_ids"][0]) == original.replace("<image>", "<|video_pad|>" * per_frame)

    # DiffFP is on: frames identical to the one before keep only their first token.
    still = np.repeat(moving[:1], 4, axis=0)
    batch = video_inputs(processor, still)
    assert int(batch["video_compression_mask"].sum()) == per_frame + 3
    assert int((batch["input_ids"] == processor.video_token_id).sum()) == per_frame + 3
    assert processor.video_processor.fps == 1 and processor.video_processor.max_frames == 180


# ---------------------------------------------------------------- training-code checkpoints


def test_training_checkpoint_with_bin_shards_and_tied_embeddings(converted_training):
    source = released_state()
    model = VideoLlama3ForConditionalGeneration.from_pretrained(converted_training)
    native = model.state_dict()
    assert model.config.tie_word_embeddings
    assert torch.equal(native["model.vision_model.encoder.layers.1.self_attn.q_proj.weight"],
                       source["model.vision_encoder.encoder.layers.1.self_attn.q_proj.weight"])
    assert torch.equal(native["model.projector.readout.2.weight"], source["model.mm_projector.readout.2.weight"])
    assert torch.equal(native["model.language_model.layers.0.self_attn.k_proj.bias"],
                       source["model.layers.0.self_attn.k_proj.bias"])
    # The head is the embedding matrix, stored once.
    assert torch.equal(native["lm_head.weight"], source["model.embed_tokens.weight"])
    stored = load_file(converted_training / "model.safetensors")
    assert "lm_head.weight" not in stored and len(stored) == len(source) - 1
    record = json.loads((converted_training / "vidlab_conversion.json").read_text())
    assert record["kind"] == "training" and len(record["dropped"]) == 1 and "tied" in record["dropped"][0]
    assert record["preprocessing_read_from"][0].endswith("SigLIP-NaViT/preprocessor_config.json")
    # The encoder's keys are all in the second .bin shard; info still tells the layout.
    described = model_info(converted_training.parent / "trained")
    assert described["layout"] == "training" and described["tie_word_embeddings"] is True
    assert described["parameters"] == model_info(converted_training)["parameters"]


def test_training_checkpoint_without_vision_sizes_says_where_to_find_them(tmp_path):
    source = write_training(tmp_path / "trained", tmp_path / "not-here")
    with pytest.raises(
        CheckpointConversionError, match="no vision_encoder_config and it names '.*not-here'.*vision_encoder"):
        convert_checkpoint(source, tmp_path / "native", progress=False)
    assert not (tmp_path / "native").exists()


def test_training_checkpoint_without_preprocessor_says_what_to_copy(tmp_path
    ):
    config = released_config()
    encoder = tmp_path / "encoder-without-processor"
    encoder.mkdir()
    (encoder / "config.json").write_text(json.dumps(config["vision_encoder_config"]))
    source = write_training(tmp_path / "trained", encoder)
    with pytest.raises(
        CheckpointConversionError, match="no preprocessor_config.json in .*Copy preprocessor_config.json"):
        convert_checkpoint(source, tmp_path / "native", progress=False)
    assert left_behind(tmp_path, "native") == []


# ---------------------------------------------------------------- LoRA runs


def test_lora_run_is_merged_into_the_base(tmp_path
    ):
    base = write_released(tmp_path / "base")
    run = tmp_path / "lora-run"
    written = write_lora_run(run, base=str(base))
    out = convert_checkpoint(run, tmp_path / "merged", progress=False).folder

    source = released_state()
    native = VideoLlama3ForConditionalGeneration.from_pretrained(out).state_dict()
    # The original loader's result, tensor by tensor.
    assert set(native) == {as_native(k) for k in written["merged"]}
    for key, tensor in written["merged"].items():
        torch.testing.assert_close(native[as_native(key)], tensor, msg=key)
    # The same, written as the LoRA formula W + alpha / r * B @ A for one LLM and one vision Linear
    # (peft matched the vision encoder's q/k/v_proj by name too).
    for module, native_name in [
        ("model.layers.1.self_attn.q_proj", "model.language_model.layers.1.self_attn.q_proj.weight"),
        ("model.vision_encoder.vision_encoder.encoder.layers.0.self_attn.v_proj",
         "model.vision_model.encoder.layers.0.self_attn.v_proj.weight"),
    ]:
        a = written["lora"][f"base_model.model.{module}.lora_A.default.weight"]
        b = written["lora"][f"base_model.model.{module}.lora_B.default.weight"]
        weight = source[module.replace("vision_encoder.vision_encoder.", "vision_encoder.") + ".weight"]
        torch.testing.assert_close(native[native_name], weight + written["scale"] * b @ a)
        assert not torch.allclose(native[native_name], weight)
    # non_lora_trainables.bin replaces the base's projector; untouched tensors stay as they were.
    trained_projector = written["non_lora"]["base_model.model.model.mm_projector.readout.2.weight"]
    assert torch.equal(native["model.projector.readout.2.weight"], trained_projector)
    assert torch.equal(native["lm_head.weight"], source["lm_head.weight"])
    assert torch.equal(native["model.vision_model.encoder.layers.0.mlp.fc1.weight"],
                       source["model.vision_encoder.encoder.layers.0.mlp.fc1.weight"])
    record = json.loads((out / "vidlab_conversion.json").read_text())
    lora_modules = 2 * 7 + 2 * 3  # 7 Linears a LLM layer, q/k/v in each vision layer
    assert record["kind"] == "lora" and record["lora_merged"] == lora_modules
    assert record["replaced_from_non_lora_trainables"] == [
        "model.projector.readout.0.bias", "model.projector.readout.0.weight",
        "model.projector.readout.2.bias", "model.projector.readout.2.weight",
    ]


def test_lora_run_with_trained_biases_converts(tmp_path):
    base = write_released(tmp_path / "base")
    run = tmp_path / "lora-bias-run"
    written = write_lora_run(run, base=str(base), lora_bias="all")
    out = convert_checkpoint(run, tmp_path / "merged", progress=False).folder
    native = VideoLlama3ForConditionalGeneration.from_pretrained(out).state_dict()
    for key, tensor in written["merged"].items():
        torch.testing.assert_close(native[as_native(key)], tensor, msg=key)
    source = released_state()
    assert not torch.equal(native["model.language_model.layers.0.self_attn.q_proj.bias"],
                           source["model.layers.0.self_attn.q_proj.bias"])  # the trained bias, not the base's
    record = json.loads((out / "vidlab_conversion.json").read_text())
    assert "model.language_model.layers.0.self_attn.q_proj.bias" in record["replaced_from_non_lora_trainables"]
    assert record["biases_from_adapter"] == []  # the adapter's copies equal the non_lora_trainables ones
    assert any("the same bias is taken from non_lora_trainables.bin" in d for d in record["dropped"])


def test_lora_run_without_non_lora_trainables_is_refused_unless_only_the_llm_trained(tmp_path):
    base = write_released(tmp_path / "base")
    run = tmp_path / "lora-run"
    written = write_lora_run(run, base=str(base))
    (run / "non_lora_trainables.bin").unlink()
    with pytest.raises(CheckpointConversionError, match=r"(?s)has no non_lora_trainables\.bin.*projector.*--llm-only"):
        convert_checkpoint(run, tmp_path / "merged", progress=False)
    assert left_behind(tmp_path, "merged") == []
    out = convert_checkpoint(run, tmp_path / "merged", progress=False, llm_only=True).folder
    native = VideoLlama3ForConditionalGeneration.from_pretrained(out).state_dict()
    source = released_state()
    assert torch.equal(native["model.projector.readout.2.weight"], source["model.mm_projector.readout.2.weight"])
    key = "model.layers.1.self_attn.q_proj.weight"
    torch.testing.assert_close(native[as_native(key)], written["merged"][key])  # the LoRA factors are merged


@pytest.mark.filterwarnings("ignore:Could not find a config file")  # peft looks for the missing base too
def test_lora_base_can_be_given_and_must_be_found(tmp_path):
    base = write_released(tmp_path / "base")
    run = tmp_path / "lora-run"
    write_lora_run(run, base="/cluster/home/someone/VideoLLaMA3-2B")  # the training machine's path
    with pytest.raises(
        CheckpointConversionError, match=r"(?s)/cluster/home/someone/VideoLLaMA3-2B: no such folder.*--base"):
        convert_checkpoint(run, tmp_path / "merged", progress=False)
    assert not (tmp_path / "merged").exists()
    out = convert_checkpoint(run, tmp_path / "merged", base=base, progress=False).folder
    assert json.loads((out / "vidlab_conversion.json").read_text())["base"] == str(base)
    with pytest.raises(CheckpointConversionError, match="--base is only for LoRA runs"
    ):
        convert_checkpoint(base, tmp_path / "other", base=base, progress=False)


# ---------------------------------------------------------------- what is refused, and what is left behind


def _not_a_checkpoint(folder: Path) -> Path:
    folder.mkdir()
    (folder / "notes.txt").write_text("weights are elsewhere")
    return folder


def _llama(folder: Path) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return folder


def _missing_shard(folder: Path) -> Path:
    write_released(folder, shards=3)
    os.remove(folder / "model-00002-of-00003.safetensors")
    return folder


def _wrong_shape(folder: Path) -> Path:
    state = released_state()
    state["model.layers.1.self_attn.o_proj.weight"] = torch.zeros(64, 32)
    return write_released(folder, state)


def _extra_tensor(folder: Path) -> Path:
    state = released_state()
    state["model.mm_projector.extra.weight"] = torch.zeros(4)
    return write_released(folder, state)


def _missing_tensor(folder: Path) -> Path:
    state = released_state()
    del state["model.vision_encoder.encoder.layers.1.mlp.fc2.bias"]
    return write_released(folder, state)


def _truncated_shard(folder: Path) -> Path:
    write_released(folder, shards=3)
    shard = folder / "model-00002-of-00003.safetensors"
    kept = load_file(shard)
    kept.pop(sorted(kept)[0])
    save_file(kept, shard)
    return folder


def _damaged_shard(folder: Path) -> Path:
    write_released(folder, shards=3)
    (folder / "model-00003-of-00003.safetensors").write_bytes(b"\x00" * 64)
    return folder


def _both_encoder_layouts(folder: Path) -> Path:
    state = released_state()
    duplicate = state["model.vision_encoder.post_layernorm.weight"].clone()
    state["model.vision_encoder.vision_encoder.post_layernorm.weight"] = duplicate
    return write_released(folder, state)


def _linear_projector(folder: Path) -> Path:
    return write_released(folder, config={**released_config(), "mm_projector_type": "linear"})


BAD_SOURCES = {
    "not a checkpoint": (_not_a_checkpoint, r"not a VideoLLaMA3 checkpoint \(no config.json.*notes.txt"),
    "another model": (_llama, r"model_type is 'llama', not an original VideoLLaMA3 one"),
    "missing shard": (_missing_shard, r"index.json: lists 1 shard\(s\) that are not in .*model-00002-of-00003"),
    "wrong shape": (_wrong_shape, r"(?s)1 tensor with a shape that does not fit config.json.*o_proj.weight "
                                  r"in model.safetensors: \(64, 32\), expected \(64, 64\)"),
    "extra tensor": (_extra_tensor, r"(?s)1 tensor with no place.*mm_projector.extra.weight in model.safetensors "
                                    r"\(4,\)"),
    "missing tensor": (_missing_tensor, r"(?s)1 tensor the native model needs but the checkpoint lacks.*"
                                        r"model.vision_encoder.encoder.layers.1.mlp.fc2.bias \(becomes model.vision"),
    "truncated shard": (_truncated_shard, r"index puts it in model-00002-of-00003.safetensors, which lacks it"),
    "damaged shard": (_damaged_shard, r"model-00003-of-00003.safetensors: not a readable safetensors file"),
    "both encoder layouts": (_both_encoder_layouts, r"(?s)1 tensor stored twice.*post_layernorm.weight in model"),
    "linear projector": (_linear_projector, r"mm_projector_type is 'linear'; the native VideoLLaMA3 class"),
    "already native": (lambda folder: convert_checkpoint(RELEASED, folder, progress=False).folder,
                       r"already a native transformers VideoLLaMA3 checkpoint"),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_bad_sources_are_refused_clearly_and_leave_no_output(case, tmp_path):
    make, message = BAD_SOURCES[case]
    source = make(tmp_path / "source")
    with pytest.raises(CheckpointConversionError, match=message):
        convert_checkpoint(source, tmp_path / "out", progress=False)
    assert left_behind(tmp_path, "out") == []


def test_a_crash_while_writing_leaves_no_output_folder(tmp_path, monkeypatch):
    from vidlab.models.convert import shards

    calls = []

    def add_then_fail(self, name, tensor):
        calls.append(name)
        if len(calls) == 10:
            raise OSError("No space left on device")
        self._buffer[name] = tensor

    monkeypatch.setattr(shards.ShardWriter, "add", add_then_fail)
    with pytest.raises(OSError, match="No space left"):
        convert_checkpoint(RELEASED, tmp_path / "out", progress=False)
    assert left_behind(tmp_path, "out") == []


def test_existing_output_and_bad_options_are_refused(tmp_path, monkeypatch):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(CheckpointConversionError, match="already exists and is not empty"):
        convert_checkpoint(RELEASED, tmp_path / "out", progress=False)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["keep.txt"]
    with pytest.raises(CheckpointConversionError, match="not a size"):
        convert_checkpoint(RELEASED, tmp_path / "new", max_shard_size="big", progress=False)

    import huggingface_hub

    def offline(*args, **kwargs):
        raise huggingface_hub.errors.LocalEntryNotFoundError("no connection to the hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(CheckpointConversionError, match="DAMO-NLP-SG/VideoLLaMA3-2B: not a local folder.*hf download"):
        convert_checkpoint("DAMO-NLP-SG/VideoLLaMA3-2B", tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()


# ---------------------------------------------------------------- model info


def test_model_info_for_each_format(converted_released, tmp_path):
    source = released_state()
    by_part = {"vision": 0, "projector": 0, "llm": 0}
    for key, tensor in source.items():
        part = "vision" if ".vision_encoder." in key else "projector" if ".mm_projector." in key else "llm"
        by_part[part] += tensor.numel()

    original = model_info(RELEASED)
    assert original["format"] == "original" and original["layout"] == "released"
    assert original["parameters"] == {**by_part, "total": sum(by_part.values())}
    assert original["tokens"]["image_token_index"] == 300 and original["tokens"]["video_pad_id"] == 13
    assert original["processor"]["video_merge_size"] == 2 and original["processor"]["max_frames"] == 180

    native = model_info(converted_released)
    assert native["format"] == "native" and native["parameters"] == original["parameters"]
    assert native["dtype"] == "float32" and native["tokens"]["image_token"] == "<|image_pad|>"
    assert native["processor"]["image"]["max_tokens"] == 16384 and native["processor"]["video"]["merge_size"] == 2
    assert native["processor"]["video"]["diff_frame_pruning"] is True
    text = render_model_info(native)
    assert "format      native, converted from" in text and "video_token_id 13" in text

    run = tmp_path / "run"
    write_lora_run(run, base=str(RELEASED), rank=4)
    adapter = model_info(run)
    assert adapter["format"] == "adapter" and adapter["r"] == 4 and adapter["base"] == str(RELEASED)
    # A rank-4 pair per Linear: (out + in) * 4 parameters.
    assert adapter["parameters"]["projector"] == 0 and adapter["parameters"]["vision"] == 2 * 3 * (64 + 64) * 4
    assert adapter["non_lora_trainables"]["projector"] == by_part["projector"]
    with pytest.raises(ModelLoadError, match="not a VideoLLaMA3 checkpoint"):
        model_info(_not_a_checkpoint(tmp_path / "nothing"))


# ---------------------------------------------------------------- command line


def run_cli(*args: str) -> subprocess.CompletedProcess:
    vidlab = Path(sys.executable).parent / "vidlab"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([str(vidlab), *args], capture_output=True, text=True, timeout=300, env=env)


def test_convert_api_returns_the_folder_and_what_it_holds(tmp_path):
    import vidlab

    result = vidlab.convert_checkpoint(RELEASED, tmp_path / "native", dtype="fp16", progress=False)
    assert result.folder == tmp_path / "native" and (result.folder / "config.json").is_file()
    assert result.info["format"] == "native" and result.info["dtype"] == "float16"
    parameters = result.info["parameters"]
    assert parameters["total"] == sum(parameters[part] for part in ("vision", "projector", "llm"))


def test_cli_convert_and_info(tmp_path):
    out = tmp_path / "native"
    result = run_cli("model", "convert", str(RELEASED), str(out), "--dtype", "bf16", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"wrote native VideoLLaMA3 to {out}\n") and "dtype       bfloat16" in result.stdout
    info = run_cli("model", "info", str(out), "--json")
    assert info.returncode == 0, info.stderr
    described = json.loads(info.stdout)
    assert described["format"] == "native" and described["dtype"] == "bfloat16"
    assert described["tokens"]["image_token_id"] == 12 and described["parameters"]["total"] > 200_000

    refused = run_cli("model", "convert", str(tmp_path / "nowhere"), str(tmp_path / "out2"))
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.startswith(f"error: {tmp_path / 'nowhere'}: no such folder")
    helped = run_cli("model", "convert", "--help")
    assert helped.returncode == 0 and "--base" in helped.stdout and "LoRA runs only" in helped.stdout
