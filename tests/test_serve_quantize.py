"""`--quantize 8bit` on a CPU (torchao int8 weights): how much the tiny model's answers change and how much smaller
its LLM gets, that only the LLM's Linear weights are quantized, a server answering on them (adapters in full
precision), and the errors that name what is missing (4-bit needs a GPU; bitsandbytes there)."""

from __future__ import annotations

import io
import json

import pytest
import torch
from serve_support import one_thread_torch, post, running

from vidlab.conversation import parse_messages
from vidlab.errors import ModelLoadError
from vidlab.generate import generate_batch
from vidlab.inputs import collate, encode, load_media
from vidlab.models import load_model
from vidlab.models.quantize import check_quantize
from vidlab.serve import ServeOptions, create_app
from vidlab.settings import GenerationOptions, MediaSettings

torchao = pytest.importorskip("torchao", reason="CPU quantization needs torchao: pip install 'vidlab[quantize]'")


def batch_of(processor, sample_video):
    conversations = [parse_messages([{"role": "user", "content": text}]) for text in (
        "Describe the video.", "What colour is the shape?", "Count to ten.", "Which way does it move?")]
    conversations.append(parse_messages([{"role": "user", "content": [
        {"type": "video", "video": str(sample_video)}, {"type": "text", "text": "What happens?"}]}]))
    settings = MediaSettings()
    samples = [encode(c, load_media(c, processor, settings), processor,
                      settings) for c in conversations]
    return collate(samples, processor.tokenizer.pad_token_id, "left")


def llm_bytes(model) -> int:
    state = {k: v for k, v in model.state_dict().items() if "language_model" in k and "embed" not in k}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.tell()


def test_int8_weights_change_the_tiny_models_answers_little(tiny_model_dir, sample_video):
    with one_thread_torch():
        reference, processor = load_model(tiny_model_dir, device="cpu")
        batch = batch_of(processor, sample_video)
        mask = batch.tensors["attention_mask"].bool()
        model, _ = load_model(tiny_model_dir, device="cpu", quantize="8bit")
        layers = dict(model.named_modules())
        assert type(layers["model.language_model.layers.0.mlp.up_proj"].weight).__name__ != "Parameter"
        assert type(layers["model.vision_model.encoder.layers.0.mlp.fc1"].weight).__name__ == "Parameter"
        assert type(layers["lm_head"].weight).__name__ == "Parameter"
        with torch.inference_mode():
            expected = reference(**batch.tensors).logits[mask]
            got = model(**batch.tensors).logits[mask]
        options = GenerationOptions(max_new_tokens=8)
        same = [a.token_ids == b.token_ids for a, b in zip(generate_batch(reference, processor, batch, options),
                                                           generate_batch(model, processor, batch, options))]
    top1 = float((got.argmax(-1) == expected.argmax(-1)).float().mean())
    error = float((got - expected).norm() / expected.norm())
    size = llm_bytes(model) / llm_bytes(reference)
    print(f"\nint8 vs fp32 on the tiny model: next-token top-1 agreement {top1:.3f}, relative logit error "
          f"{error:.4f}, LLM weights {size:.2f}x, greedy answers equal {sum(same)}/{len(same)}")
    assert top1 >= 0.95 and error < 0.02 and size < 0.5
    assert sum(same) >= len(same) - 1


def test_a_server_answers_on_int8_weights_with_its_adapters_in_full_precision(tiny_model_dir, tmp_path):
    from serve_support import make_adapter

    adapter = make_adapter(tiny_model_dir, tmp_path / "alpha", 1)
    with one_thread_torch():
        app = create_app(str(tiny_model_dir), adapters={"alpha": adapter}, name="tiny", device="cpu",
                         quantize="8bit", options=ServeOptions(generation=GenerationOptions(max_new_tokens=6)))
        layers = dict(app.state.engine.model.named_modules())
        lora = layers["base_model.model.model.language_model.layers.0.self_attn.q_proj"]
        assert type(lora.base_layer.weight).__name__ != "Parameter"
        assert type(lora.lora_A["alpha"].weight).__name__ == "Parameter"
        with running(app) as url:
            for model in ("tiny", "alpha"):
                answer = post(url, {"model": model, "messages": [{"role": "user", "content": "Hi"}]}, key=None)
                assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] <= 6


def test_quantize_errors_name_the_fix():
    with pytest.raises(ModelLoadError, match="Use 8bit or 4bit"):
        check_quantize("3bit", torch.device("cpu"))
    with pytest.raises(ModelLoadError, match="needs a CUDA GPU"):
        check_quantize("4bit", torch.device("cpu"))
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        with pytest.raises(ModelLoadError, match="pip install bitsandbytes"):
            check_quantize("4bit", torch.device("cuda"))


def test_chat_and_eval_load_int8_weights_and_a_quantized_run_is_another_run(tiny_model_dir, sample_video, tmp_path):
    from vidlab import Chat, evaluate
    from vidlab.errors import EvaluationError
    from vidlab.evaluation.run import RunOptions

    with one_thread_torch():
        chat = Chat(tiny_model_dir, device="cpu", quantize="8bit", generation=GenerationOptions(max_new_tokens=4))
        layer = dict(chat.model.named_modules())["model.language_model.layers.0.mlp.up_proj"]
        assert type(layer.weight).__name__ != "Parameter"
        reply = chat.ask("What happens?", video=sample_video)
        assert reply.visual_tokens > 0 and 0 < reply.generated_tokens <= 4
        data = tmp_path / "test.jsonl"
        record = {"id": "a", "video": str(sample_video), "conversations": [
            {"from": "human", "value": "<video>What?"}, {"from": "gpt", "value": "left"}]}
        data.write_text(json.dumps(record) + "\n")
        options = RunOptions(generation=GenerationOptions(max_new_tokens=4), progress=False, workers=0)
        evaluate(tiny_model_dir, data, tmp_path / "run", options=options, device="cpu", quantize="8bit")
        assert json.loads((tmp_path / "run" / "run.json").read_text())["quantize"] == "8bit"
        with pytest.raises(EvaluationError, match="quantize: '8bit' then, None now"):
            evaluate(tiny_model_dir, data, tmp_path / "run", options=options, device="cpu")
