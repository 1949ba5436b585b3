"""Real sizes: the 2b/7b shapes, logits only at label positions (training, validation, generation), the
vision encoder's per-frame attention."""

import copy
import json

import pytest
import torch
from conftest import gradient_frames

from vidlab.media.writer import write_video
from vidlab.models.logits import chunked_cross_entropy, label_positions, output_head
from vidlab.settings import MediaSettings
from vidlab.training.data import Collator, encode_record, load_records
from vidlab.training.steps import label_token_loss, summed_token_loss

VIDEO_QA = [{"from": "human", "value": "<video>\nWhat happens?"}, {"from": "gpt", "value": "A red ball moves left."},
            {"from": "human", "value": "Is it fast?"}, {"from": "gpt", "value": "No, slowly."}]
TEXT_QA = [{"from": "human", "value": "Say yes."}, {"from": "gpt", "value": "yes"}]


@pytest.fixture(scope="module")
def mixed_batch(tiny_model, tmp_path_factory):
    """A padded batch of a video, a text-only and an image-free long-answer record: rows of different lengths."""
    folder = tmp_path_factory.mktemp("real_size")
    write_video(folder / "clip.mp4", gradient_frames(12, 112, 112), fps=4)
    long_answer = [{"from": "human", "value": "Describe the video."},
                   {"from": "gpt", "value": "a red circle moves left. " * 6}]
    rows = [{"video": "clip.mp4", "conversations": VIDEO_QA}, {"conversations": TEXT_QA},
            {"conversations": long_answer}]
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    records, skipped = load_records([folder / "data.jsonl"], data_root=folder)
    assert not skipped
    processor = tiny_model[1]
    samples = [encode_record(r, processor, MediaSettings(fps=2), 4096) for r in records]
    batch = Collator(processor.tokenizer.pad_token_id)([{"sample": s, "skipped": []} for s in samples])["inputs"]
    assert len({len(s) for s in samples}) == 3
    return batch


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def _loss_and_grads(model, batch, labelled_only: bool, chunk: int = 1024):
    model.zero_grad(set_to_none=True)
    inputs = dict(batch)
    labels = inputs.pop("labels")
    if labelled_only:
        loss, n = label_token_loss(model, inputs, labels, chunk=chunk)
    else:
        loss, n = summed_token_loss(model(**inputs).logits, labels)
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), n, grads


@pytest.mark.parametrize("method", ["full", "lora"])
def test_label_only_logits_give_the_same_loss_and_gradients(tiny_model, mixed_batch, method):
    model = copy.deepcopy(tiny_model[0]).float().train()
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=r".*language_model.*_proj",
                                                 init_lora_weights=False))
    else:
        model.requires_grad_(True)
    reference, count, expected = _loss_and_grads(model, mixed_batch, labelled_only=False)
    for chunk in (1024, 7):  # one piece, and chunks smaller than the label count
        loss, n, grads = _loss_and_grads(model, mixed_batch, labelled_only=True, chunk=chunk)
        assert n == count > 7
        assert abs(loss.item() - reference.item()) <= 1e-6 * abs(reference.item())
        assert grads.keys() == expected.keys() and len(grads) > 4
        for name, grad in grads.items():
            assert _relative(grad, expected[name]) <= 1e-6, name


def test_training_builds_logits_only_at_label_positions(tiny_model, mixed_batch):
    model = tiny_model[0]
    shapes = []
    handle = output_head(model).register_forward_hook(lambda _m, _a, out: shapes.append(tuple(out.shape)))
    inputs = dict(mixed_batch)
    labels = inputs.pop("labels")
    try:
        with torch.no_grad():
            label_token_loss(model, inputs, labels)
    finally:
        handle.remove()
    positions, targets = label_positions(labels)
    rows, length = labels.shape
    assert shapes == [(rows, len(positions), model.config.text_config.vocab_size)]
    assert len(positions) < length / 2 and (targets != -100).sum() == (labels[:, 1:] != -100).sum()


def test_chunked_cross_entropy_upcasts_bf16_like_the_reference():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 9, 50, generator=generator).bfloat16().requires_grad_(True)
    targets = torch.randint(0, 50, (2, 9), generator=generator)
    targets[0, :3] = -100
    chunked = chunked_cross_entropy(logits, targets, chunk=4)
    (grad,) = torch.autograd.grad(chunked, logits)
    reference = torch.nn.functional.cross_entropy(logits.reshape(-1, 50).float(), targets.reshape(-1),
                                                  ignore_index=-100, reduction="sum")
    (expected,) = torch.autograd.grad(reference, logits)
    assert abs(chunked.item() - reference.item()) <= 1e-6 * reference.item()
    assert grad.dtype == torch.bfloat16 and torch.equal(grad, expected)


def test_generation_never_builds_the_prompts_logits(tiny_model, sample_video):
    from vidlab.conversation import parse_record
    from vidlab.generate import generate
    from vidlab.inputs import build_inputs, load_media
    from vidlab.settings import GenerationOptions

    model, processor = tiny_model
    conv = parse_record({"video": [str(sample_video)], "conversations": [{"from": "human", "value": "<video>\nHi?"}]})
    inputs = build_inputs(conv, load_media(conv, settings=MediaSettings(max_frames=4)), processor)
    shapes = []
    handle = output_head(model).register_forward_hook(lambda _m, _a, out: shapes.append(tuple(out.shape)))
    try:
        answer = generate(model, processor, inputs, GenerationOptions(max_new_tokens=4))
    finally:
        handle.remove()
    assert inputs.tensors["input_ids"].shape[1] > 20
    assert shapes and all(shape[1] == 1 for shape in shapes)  # prefill included
    assert len(shapes) >= len(answer.token_ids)
    # Unhooked, the same model gives the same answer: only the unused logits were left out.
    with torch.no_grad():
        full = model(**inputs.tensors).logits[0, -1]
    assert answer.token_ids[0] == int(full.argmax())


def test_the_2b_shape_has_the_released_sizes_and_runs_a_forward(tiny_model):
    from transformers import VideoLlama3ForConditionalGeneration

    from vidlab.models.shapes import shape_spec
    from vidlab.models.tiny import build_config

    spec = shape_spec("2b", layers=1)
    assert (spec.text_layers, spec.vision_layers) == (1, 1) and shape_spec("2b").text_layers == 2
    config = build_config(tiny_model[1].tokenizer, spec)
    text, vision = config.text_config, config.vision_config
    assert (text.hidden_size, text.intermediate_size, text.num_attention_heads, text.num_key_value_heads,
            text.vocab_size) == (1536, 8960, 12, 2, 151936)
    assert text.rope_parameters["rope_theta"] == 1e6 and config.tie_word_embeddings
    assert (vision.hidden_size, vision.intermediate_size, vision.num_attention_heads, vision.patch_size) == \
        (1152, 4304, 16, 14)
    model = VideoLlama3ForConditionalGeneration._from_config(config, dtype=torch.bfloat16).eval()
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, 6, 151936) and torch.isfinite(logits).all()
    seven = build_config(tiny_model[1].tokenizer, shape_spec("7b"))
    assert (seven.text_config.hidden_size, seven.text_config.vocab_size, seven.text_config.num_hidden_layers) == \
        (3584, 152064, 2)


def test_vision_encoder_attends_within_each_frame_without_a_mask(tiny_model, monkeypatch):
    model, processor = tiny_model
    frames = [f for f in gradient_frames(6, 112, 112)]
    pixels = processor.video_processor(videos=[frames], return_tensors="pt")
    grid = pixels["video_grid_thw"]
    t, h, w = grid[0].tolist()
    assert t == 6
    calls = []
    original = torch.nn.functional.scaled_dot_product_attention

    def recording(query, key, value, attn_mask=None, **kwargs):
        calls.append((tuple(key.shape), attn_mask))
        return original(query, key, value, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", recording)
    with torch.no_grad():
        model.model.get_video_features(pixels["pixel_values_videos"], grid, pixels["video_merge_sizes"])
    vision = model.config.vision_config
    assert len(calls) == t * vision.num_hidden_layers
    assert all(shape[-2] == h * w and mask is None for shape, mask in calls)  # one frame's patches, no mask


def test_the_plan_counts_logits_at_label_positions_only(tiny_model_dir, tmp_path):
    from vidlab.data.check import check_data
    from vidlab.data.plan import plan_run, render_plan
    from vidlab.data.plan_memory import Setup, estimate
    from vidlab.data.plan_model import read_architecture

    arch = read_architecture("videollama3-2b")
    video = Setup(tokens=16384, vision_tokens=16000, checkpointing=True)
    answered = estimate(arch, video.but(label_tokens=40))
    assert answered.logits == 40 * 151936 * 14 + 16384 * 1536 * 6  # bf16 logits, their fp32 loss; hidden states
    assert estimate(arch, video).logits == 384 * 151936 * 14 + 16384 * 1536 * 6  # no count: every text token
    long = estimate(arch, video.but(label_tokens=3000)).logits - 16384 * 1536 * 6
    assert long == 1024 * 151936 * 14 + (3000 - 1024) * 151936 * 4  # fp32 one chunk at a time
    assert answered.peak < 12 * 2**30

    data = tmp_path / "train.jsonl"
    rows = [{"id": f"r{n}", "conversations": [{"from": "human", "value": "Say it."},
                                             {"from": "gpt", "value": "yes " * (n + 1)}]} for n in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = {"model": {"path": str(tiny_model_dir)}, "data": {"train": [str(data)], "workers": 0},
              "method": "lora", "learning_rates": {"llm": 1e-4}, "output": {"dir": str(tmp_path / "run")}}
    checked = check_data(config=config, out_dir=tmp_path / "check", workers=0, progress=False)
    most = checked.report["stats"]["label_tokens"]["max"]
    plan = plan_run(config, stats=checked.out_dir / "check.json")
    assert plan.setup.label_tokens == most > 3
    assert f"logits at {int(most)} label positions" in render_plan(plan)
