"""The tiny offline model and load_model: real classes, deterministic, clear errors, adapters."""

import json

import pytest
import torch
from transformers import AutoProcessor, VideoLlama3ForConditionalGeneration

from vidlab.errors import ModelLoadError
from vidlab.models import load_model, resolve_device, resolve_dtype
from vidlab.models.template import SPECIAL_TOKENS
from vidlab.models.tiny import build_tiny_model


def test_tiny_model_loads_with_plain_transformers(tiny_model_dir):
    model = VideoLlama3ForConditionalGeneration.from_pretrained(tiny_model_dir)
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    params = sum(p.numel() for p in model.parameters())
    assert 100_000 <= params <= 5_000_000
    tokenizer = processor.tokenizer
    # Qwen's special tokens, each a single token, in Qwen's order.
    ids = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS)
    assert ids == sorted(ids) and len(set(ids)) == len(SPECIAL_TOKENS)
    assert [tokenizer(token)["input_ids"] for token in SPECIAL_TOKENS] == [[i] for i in ids]
    assert model.config.video_token_id == processor.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert model.config.image_token_id == processor.image_token_id
    assert processor.video_processor.merge_size == 2 and processor.image_processor.merge_size == 1
    assert tokenizer.eos_token == "<|im_end|>"


def test_same_seed_same_files_other_seed_other_weights(tmp_path, tiny_model_dir):
    again = build_tiny_model(tmp_path / "again", seed=0)
    for name in ["model.safetensors", "tokenizer.json", "config.json", "processor_config.json"]:
        assert (again / name).read_bytes() == (tiny_model_dir / name).read_bytes(), name
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert (other / "model.safetensors").read_bytes() != (tiny_model_dir / "model.safetensors").read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (tiny_model_dir / "tokenizer.json").read_bytes()


def test_tiny_folder_is_readable_like_any_new_folder(tiny_model_dir):
    import os

    umask = os.umask(0)
    os.umask(umask)
    assert tiny_model_dir.stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's owner-only 0o700
    assert (tiny_model_dir / "config.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_tiny_overwrite_replaces_the_folder(tmp_path):
    (tmp_path / "old.txt").write_text("old")
    build_tiny_model(tmp_path, seed=0, overwrite=True)
    assert not (tmp_path / "old.txt").exists() and (tmp_path / "config.json").is_file()
    assert not [p for p in tmp_path.parent.iterdir() if p.name.startswith(f".{tmp_path.name}.")]


def test_tiny_refuses_a_non_empty_folder_unless_told(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(Exception, match="not empty.*--overwrite"):
        build_tiny_model(tmp_path, seed=0)
    assert (tmp_path / "keep.txt").exists()


def test_load_model_defaults_on_a_cpu(tiny_model_dir):
    model, processor = load_model(tiny_model_dir)
    assert model.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not model.training
    assert processor.video_token_id == model.config.video_token_id
    if not torch.cuda.is_available():
        assert model.dtype == torch.float32


def test_device_and_dtype_rules():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    with pytest.raises(ModelLoadError, match="unknown dtype 'fp8'"):
        resolve_dtype("fp8", torch.device("cpu"))
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(ModelLoadError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_load_model_errors_name_the_folder_and_the_fix(tmp_path):
    with pytest.raises(ModelLoadError, match="no such model folder"):
        load_model(tmp_path / "missing")
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="not a model folder .*weights.bin"):
        load_model(tmp_path)
    original = tmp_path / "original"
    original.mkdir()
    (original / "config.json").write_text(json.dumps({"model_type": "videollama3_qwen2"}))
    with pytest.raises(ModelLoadError, match="original VideoLLaMA3 remote-code format.*vidlab model convert"):
        load_model(original)
    other = tmp_path / "llama"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ModelLoadError, match="model_type is 'llama'"):
        load_model(other)


def test_adapter_is_applied(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = VideoLlama3ForConditionalGeneration.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)  # a trained adapter is non-zero
    peft_model.save_pretrained(tmp_path / "adapter")

    ids = torch.tensor([[1, 50, 60, 70, 2]])
    plain, _ = load_model(tiny_model_dir, device="cpu")
    adapted, _ = load_model(tiny_model_dir, adapter=tmp_path / "adapter", device="cpu")
    with torch.no_grad():
        plain_logits = plain(input_ids=ids).logits
        adapted_logits = adapted(input_ids=ids).logits
        expected = peft_model.eval()(input_ids=ids).logits
    assert not torch.allclose(plain_logits, adapted_logits)
    torch.testing.assert_close(adapted_logits, expected)
    with pytest.raises(ModelLoadError, match="not a PEFT adapter folder"):
        load_model(tiny_model_dir, adapter=tmp_path)
