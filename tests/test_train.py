"""vidlab train on the tiny model: LoRA and full runs, freezing, resume after SIGKILL, 2 processes, merge."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from vidlab import train
from vidlab.data.synthetic import Scene, write_scene
from vidlab.training.checkpoint import CheckpointError, complete_checkpoints
from vidlab.training.config import ConfigError, load_config
from vidlab.training.loop import build_scheduler, lr_multiplier
from vidlab.training.steps import EpochBatches, summed_token_loss

SCENES = [
    Scene(shape=shape, colour=colour, direction=direction, size=56, seconds=2, fps=4)
    for shape, colour, direction in [
        ("circle", "red", "left"), ("square", "blue", "right"), ("triangle", "green", "up"),
        ("circle", "yellow", "down"), ("square", "red", "up"), ("triangle", "blue", "left"),
        ("circle", "green", "right"), ("square", "yellow", "down"),
    ]
]


@pytest.fixture(scope="module")
def caption_data(tmp_path_factory) -> Path:
    """8 short clips with caption records (JSONL), and a validation file of 2 of them."""
    root = tmp_path_factory.mktemp("captions")
    lines = []
    for i, scene in enumerate(SCENES):
        write_scene(root / f"v{i}.mp4", scene)
        lines.append({"id": f"v{i}", "video": [f"v{i}.mp4"], "conversations": [
            {"from": "human", "value": "<video>\nDescribe the video."}, {"from": "gpt", "value": scene.caption}]})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (root / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines[:2]))
    return root


def make_config(model_dir: Path, data: Path, out: Path, *extra: str):
    overrides = [
        f"model.path={model_dir}", f"data.train=[{data / 'train.jsonl'}]", f"output.dir={out}",
        "data.workers=0", "data.max_frames=4", "learning_rates.llm=0.01", "lora.r=8", "lora.alpha=16",
        "train.batch_size=4", "train.max_steps=8", "optim.warmup_ratio=0", "optim.scheduler=constant",
        "output.log_steps=1", "output.tensorboard=false", "output.progress=false", "output.save_steps=100",
        "train.seed=3", *extra,
    ]
    return load_config(None, overrides)


def write_config(config, path: Path) -> Path:
    path.write_text(config.to_yaml())
    return path


def model_logits(model, processor, video: Path) -> torch.Tensor:
    from vidlab.conversation import parse_record
    from vidlab.inputs import build_inputs, load_media
    from vidlab.settings import MediaSettings

    conv = parse_record({"video": [str(video)], "conversations": [{"from": "human", "value": "<video>\nDescribe."}]})
    inputs = build_inputs(conv, load_media(conv, settings=MediaSettings(max_frames=4)), processor)
    with torch.no_grad():
        return model(**inputs.tensors).logits


def run_cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidlab.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


# --- pieces -----------------------------------------------------------------------------------


def test_summed_token_loss_counts_only_labelled_next_tokens():
    logits = torch.randn(2, 5, 7)
    labels = torch.tensor([[-100, 1, 2, -100, -100], [-100, -100, 3, 4, 5]])
    loss, count = summed_token_loss(logits, labels)
    # Position t predicts label t+1: labelled targets are (0,1),(0,2),(1,2),(1,3),(1,4).
    expected = sum(
        torch.nn.functional.cross_entropy(logits[b, t - 1][None], labels[b, t][None])
        for b, t in [(0, 1), (0, 2), (1, 2), (1, 3), (1, 4)]
    )
    assert count == 5
    assert torch.allclose(loss, expected)


def rates(kind: str, steps: int, warmup: int) -> list[list[float]]:
    """The learning rate of each parameter group (rates 1e-3 and 1e-5) before each step."""
    params = [torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))]
    optimizer = torch.optim.SGD([{"params": [params[0]], "lr": 1e-3}, {"params": [params[1]], "lr": 1e-5}], lr=1e-3)
    scheduler = build_scheduler(optimizer, kind, steps, warmup)
    seen = []
    for _ in range(steps + 1):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return seen


def test_lr_schedule_warms_up_then_decays_to_zero_on_every_part():
    cosine = rates("cosine", 100, 10)
    assert cosine[0] == pytest.approx([1e-4, 1e-6])  # the first step already learns: 1/warmup of the rate
    assert cosine[4] == pytest.approx([0.5e-3, 0.5e-5]) and cosine[9] == pytest.approx([1e-3, 1e-5])
    assert cosine[55] == pytest.approx([0.5e-3, 0.5e-5])  # half way down the cosine, each part from its own rate
    assert cosine[100] == pytest.approx([0.0, 0.0], abs=1e-12)
    assert rates("linear", 100, 10)[55] == pytest.approx([0.5e-3, 0.5e-5])
    assert rates("constant", 100, 10)[99] == pytest.approx([1e-3, 1e-5])


@pytest.mark.parametrize("kind, name", [("cosine", "cosine"), ("linear", "linear"),
                                        ("constant", "constant_with_warmup")])
def test_lr_schedule_is_transformers_after_warmup(kind, name):
    from transformers import get_scheduler

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    theirs = get_scheduler(name, optimizer, num_warmup_steps=10, num_training_steps=100).lr_lambdas[0]
    ours = [lr_multiplier(s, 100, 10, kind) for s in range(101)]
    assert ours[10:] == pytest.approx([theirs(s) for s in range(10, 101)])  # the same after warmup
    assert ours[:10] == pytest.approx([theirs(s + 1) for s in range(10)])  # warmup one step ahead


def test_epoch_batches_are_disjoint_across_processes_and_resume_where_they_stopped():
    ranks = [list(EpochBatches(22, 2, rank, 2, seed=1, epoch=0)) for rank in range(2)]
    assert [len(r) for r in ranks] == [5, 5]  # 22 // 4 global batches; the tail of 2 is dropped
    flat = [i for r in ranks for batch in r for i in batch]
    assert len(flat) == len(set(flat)) == 20
    assert list(EpochBatches(22, 2, 0, 2, seed=1, epoch=0, start=3)) == ranks[0][3:]
    assert list(EpochBatches(22, 2, 0, 2, seed=1, epoch=1)) != ranks[0]


# --- runs on the tiny model -------------------------------------------------------------------


def test_lora_run_learns_and_saves_an_adapter_that_changes_the_model(tiny_model_dir, caption_data, tmp_path):
    from peft import PeftModel
    from transformers import VideoLlama3ForConditionalGeneration

    from vidlab.models import load_model

    out = tmp_path / "lora"
    result = train(make_config(tiny_model_dir, caption_data, out, "train.max_steps=12"))
    losses = [row["loss"] for row in result.log if "loss" in row]
    assert result.steps == 12 and len(losses) == 12
    assert sum(losses[-3:]) / 3 < losses[0] - 0.5  # nats; a random tiny model starts near ln(vocab)
    assert (out / "adapter_config.json").is_file() and (out / "processor_config.json").is_file()
    assert (out / "config.yaml").is_file() and (out / "log.jsonl").is_file()
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["method"] == "lora" and saved["lora"]["r"] == 8

    base, processor = load_model(tiny_model_dir, device="cpu")
    tuned, _ = load_model(tiny_model_dir, adapter=out, device="cpu")
    video = caption_data / "v0.mp4"
    assert not torch.allclose(model_logits(base, processor, video), model_logits(tuned, processor, video))
    # Plain transformers + peft load the run folder too.
    plain = PeftModel.from_pretrained(VideoLlama3ForConditionalGeneration.from_pretrained(tiny_model_dir), out)
    assert torch.allclose(model_logits(plain.eval(), processor, video), model_logits(tuned, processor, video))


def test_no_backward_runs_through_a_frozen_vision_tower(tiny_model_dir, caption_data, tmp_path):
    """With LoRA on the LLM and activation checkpointing, the vision encoder's outputs need no gradient: transformers'
    `enable_input_require_grads` hooks the patch embeddings too, which made every backward run through the frozen
    encoder (and recompute its checkpointed layers) for gradients nothing uses."""
    from vidlab.conversation import parse_record
    from vidlab.inputs import build_inputs, load_media
    from vidlab.settings import MediaSettings
    from vidlab.training.model import load_for_training

    config = make_config(tiny_model_dir, caption_data, tmp_path / "run", "train.gradient_checkpointing=true",
                         "lora.dropout=0")  # two equal steps
    model, processor = load_for_training(config, torch.device("cpu"), "no")
    conv = parse_record({"video": [str(caption_data / "v0.mp4")], "conversations": [
        {"from": "human", "value": "<video>\nDescribe."}, {"from": "gpt", "value": "a red circle"}]})
    tensors = build_inputs(conv, load_media(conv, settings=MediaSettings(max_frames=4)), processor).tensors
    layers = [m for m in model.modules() if type(m).__name__.endswith("VisionEncoderLayer")]
    needs_grad = []
    for layer in layers:
        layer.register_forward_hook(lambda _m, _a, out: needs_grad.append(
            (out[0] if isinstance(out, tuple) else out).requires_grad))

    def step() -> dict[str, torch.Tensor]:
        model.zero_grad()
        needs_grad.clear()
        model(**tensors).logits.float().pow(2).mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    frozen = step()
    assert needs_grad == [False] * len(layers) and layers
    model.enable_input_require_grads()  # what transformers does to every sub-model
    hooked = step()
    assert needs_grad == [True] * len(layers)  # backward would run through every layer of the encoder
    assert frozen.keys() == hooked.keys()
    for name, grad in frozen.items():
        torch.testing.assert_close(grad, hooked[name], rtol=1e-5, atol=1e-7)


def test_full_run_trains_only_parts_with_a_rate(tiny_model_dir, caption_data, tmp_path):
    from vidlab.models import load_model

    out = tmp_path / "full"
    config = make_config(tiny_model_dir, caption_data, out, "method=full", "learning_rates.llm=null",
                         "learning_rates.projector=0.001", "train.max_steps=3")
    train(config)
    before = load_file(str(tiny_model_dir / "model.safetensors"))
    after = load_file(str(out / "model.safetensors"))
    assert set(before) == set(after)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.startswith("model.projector.") for name in changed)
    model, _ = load_model(out, device="cpu")  # a whole native checkpoint
    assert type(model).__name__ == "VideoLlama3ForConditionalGeneration"


def test_lora_with_a_trained_projector_and_head_keeps_the_rest_bit_identical(tiny_model_dir, caption_data, tmp_path):
    from vidlab.models import load_model

    out = tmp_path / "lora-projector"
    train(make_config(tiny_model_dir, caption_data, out, "learning_rates.projector=0.001", "train.max_steps=3",
                      "lora.modules_to_save=[lm_head]"))
    assert set(json.loads((out / "adapter_config.json").read_text())["modules_to_save"]) == {"projector", "lm_head"}
    base, _ = load_model(tiny_model_dir, device="cpu")
    tuned, _ = load_model(tiny_model_dir, adapter=out, device="cpu")
    merged = tuned.merge_and_unload().state_dict()
    for name, tensor in base.state_dict().items():
        if name.startswith(("model.vision_model.", "model.language_model.embed_tokens.")):
            assert torch.equal(tensor, merged[name]), name
    assert any(not torch.equal(t, merged[n]) for n, t in base.state_dict().items() if n.startswith("model.projector."))
    assert not torch.equal(base.state_dict()["lm_head.weight"], merged["lm_head.weight"])


def test_a_trained_head_stays_tied_to_the_embeddings_on_a_tied_model(tiny_model_dir, caption_data, tmp_path):
    # VideoLLaMA3-2B's output head is its embedding matrix; training one must train both as one.
    from transformers import AutoProcessor, VideoLlama3ForConditionalGeneration

    from vidlab.models import load_model

    tied_dir = tmp_path / "tied"
    model = VideoLlama3ForConditionalGeneration.from_pretrained(tiny_model_dir)
    model.config.tie_word_embeddings = model.config.text_config.tie_word_embeddings = True
    model.tie_weights()
    model.save_pretrained(tied_dir)
    AutoProcessor.from_pretrained(tiny_model_dir).save_pretrained(tied_dir)

    out = tmp_path / "lora-tied"
    train(make_config(tied_dir, caption_data, out, "train.max_steps=3", "lora.modules_to_save=[lm_head]"))
    assert json.loads((out / "adapter_config.json").read_text())["ensure_weight_tying"] is True
    base, _ = load_model(tied_dir, device="cpu")
    assert base.lm_head.weight is base.get_input_embeddings().weight
    merged = load_model(tied_dir, adapter=out, device="cpu")[0].merge_and_unload()
    head, embeddings = merged.lm_head.weight, merged.get_input_embeddings().weight
    assert torch.equal(head, embeddings)
    assert not torch.equal(head, base.lm_head.weight)


def test_modules_to_save_must_be_llm_modules_without_adapters(tiny_model_dir, caption_data, tmp_path):
    from vidlab.training.model import TrainSetupError

    for name, problem in [("nothing_here", "names no module"), ("projector", "outside the LLM"),
                          ("language_model.layers.0.mlp.down_proj", "already gets LoRA adapters")]:
        config = make_config(tiny_model_dir, caption_data, tmp_path / name, f"lora.modules_to_save=[{name}]")
        with pytest.raises(TrainSetupError, match=f"lora.modules_to_save: '{name}' .*{problem}"):
            train(config)
    with pytest.raises(ConfigError, match="method full already trains every LLM weight"):
        make_config(tiny_model_dir, caption_data, tmp_path / "full", "method=full", "lora.modules_to_save=[lm_head]")


def test_merge_equals_adapter_on_base(tiny_model_dir, caption_data, tmp_path):
    from vidlab.models import load_model

    out = tmp_path / "lora"
    train(make_config(tiny_model_dir, caption_data, out, "train.max_steps=3", "learning_rates.projector=0.001",
                      "lora.modules_to_save=[lm_head]"))
    proc = run_cli("model", "merge", str(tmp_path / "merged"), "--base", str(tiny_model_dir), "--adapter", str(out))
    assert proc.returncode == 0, proc.stderr
    tuned, processor = load_model(tiny_model_dir, adapter=out, device="cpu")
    merged, _ = load_model(tmp_path / "merged", device="cpu")
    video = caption_data / "v1.mp4"
    assert torch.allclose(model_logits(tuned, processor, video), model_logits(merged, processor, video), atol=1e-5)
    import vidlab  # the same through the Python API

    result = vidlab.merge(tiny_model_dir, out, tmp_path / "merged-api", dtype="bf16")
    assert result.folder == tmp_path / "merged-api" and result.adapter == out
    again, _ = load_model(result.folder, device="cpu", dtype="fp32")
    assert torch.allclose(model_logits(again, processor, video), model_logits(merged, processor, video), atol=0.05)


def test_resume_after_sigkill_matches_an_uninterrupted_run(tiny_model_dir, caption_data, tmp_path):
    settings = ("train.max_steps=24", "output.save_steps=2", "output.save_total_limit=2", "lora.dropout=0.1",
                "train.grad_accum=2", "train.batch_size=2")
    whole = tmp_path / "whole"
    train(make_config(tiny_model_dir, caption_data, whole, *settings))

    broken = tmp_path / "broken"
    path = write_config(make_config(tiny_model_dir, caption_data, broken, *settings), tmp_path / "run.yaml")
    process = subprocess.Popen([sys.executable, "-m", "vidlab.cli", "train", str(path)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not any(int(p.name[5:]) >= 4 for p in complete_checkpoints(broken)):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    steps_done = max(int(p.name[5:]) for p in complete_checkpoints(broken))
    assert 4 <= steps_done < 24, "the kill should land after a checkpoint and before the end"
    assert not (broken / "adapter_config.json").exists()

    proc = run_cli("train", str(path), "--resume")
    assert proc.returncode == 0, proc.stderr
    whole_log = [r["loss"] for r in map(json.loads, (whole / "log.jsonl").read_text().splitlines())]
    resumed_log = [r["loss"] for r in map(json.loads, (broken / "log.jsonl").read_text().splitlines())]
    assert resumed_log == pytest.approx(whole_log, rel=1e-5)
    a = load_file(str(whole / "adapter_model.safetensors"))
    b = load_file(str(broken / "adapter_model.safetensors"))
    assert set(a) == set(b)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name
    assert len(complete_checkpoints(broken)) == 2  # save_total_limit


def test_two_processes_train_in_step_and_learn(tiny_model_dir, caption_data, tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    out = tmp_path / "ddp"
    path = write_config(make_config(tiny_model_dir, caption_data, out, "train.batch_size=2", "train.max_steps=10"),
                        tmp_path / "ddp.yaml")
    proc = subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "vidlab.cli", "train", str(path)],
        capture_output=True, text=True, timeout=400, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "train_result.json").read_text())
    assert len(result["process_checksums"]) == 2 and len(set(result["process_checksums"])) == 1
    losses = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) / 3 < losses[0] - 0.3
    assert result["samples"] == 10 * 2 * 2


def test_validation_loss_and_bleu_are_logged_every_eval_steps(tiny_model_dir, caption_data, tmp_path):
    out = tmp_path / "run"
    config = make_config(tiny_model_dir, caption_data, out, f"data.val=[{caption_data / 'val.jsonl'}]",
                         "output.eval_steps=2", "train.max_steps=4", "output.eval_max_new_tokens=8")
    train(config)
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    evals = [row for row in rows if "eval_loss" in row]
    assert [row["step"] for row in evals] == [2, 4]
    assert all(row["eval_samples"] == 2 and 0 <= row["eval_bleu4"] <= 100 for row in evals)
    assert evals[1]["eval_loss"] < evals[0]["eval_loss"]  # the validation records are training records here
    assert len((out / "eval" / "step-000004" / "val" / "predictions.jsonl").read_text().splitlines()) == 2


def test_bad_samples_are_skipped_and_listed(tiny_model_dir, caption_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(caption_data, data)
    (data / "broken.mp4").write_bytes(b"not a video at all")
    with (data / "train.jsonl").open("a") as handle:
        handle.write('{"id": "gone", "video": ["missing.mp4"], "conversations": [{"from": "human", "value": '
                     '"<video>\\nx"}, {"from": "gpt", "value": "y"}]}\n')
        handle.write("{not json\n")
        handle.write('{"id": "bad-video", "video": ["broken.mp4"], "conversations": [{"from": "human", "value": '
                     '"<video>\\nx"}, {"from": "gpt", "value": "y"}]}\n')
    out = tmp_path / "run"
    result = train(make_config(tiny_model_dir, data, out, "train.max_steps=3", "train.batch_size=3",
                               "train.epochs=1"))
    rows = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    by_line = {row["line"]: row for row in rows}
    assert by_line[9]["id"] == "gone" and "missing.mp4" in by_line[9]["reason"]
    assert by_line[10]["id"] is None and "JSON" in by_line[10]["reason"]
    assert by_line[11]["id"] == "bad-video" and "broken.mp4" in by_line[11]["reason"]  # found while decoding
    assert all(row["file"].endswith("train.jsonl") for row in rows)
    assert result.skipped == len(rows)


def test_strict_stops_at_the_first_bad_sample(tiny_model_dir, caption_data, tmp_path):
    from vidlab.errors import VidlabError

    data = tmp_path / "data"
    shutil.copytree(caption_data, data)
    with (data / "train.jsonl").open("a") as handle:
        handle.write("{not json\n")
    with pytest.raises(VidlabError, match=r"train.jsonl:9"):
        train(make_config(tiny_model_dir, data, tmp_path / "run", "data.strict=true"))


# --- configs and errors through the CLI -------------------------------------------------------


def test_config_errors_name_each_problem_and_the_fix(tiny_model_dir, caption_data, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({
        "model": {"path": str(tiny_model_dir)},
        "data": {"train": [str(caption_data / "nope.jsonl")], "fpss": 2},
        "train": {"batch_size": "four"},
        "learning_rates": {"llm": 1e-4},
        "output": {"dir": str(tmp_path / "out")},
    }))
    proc = run_cli("train", str(path))
    assert proc.returncode == 2
    assert "data.fpss: unknown key; did you mean 'fps'?" in proc.stderr
    assert "train.batch_size" in proc.stderr and "'four'" in proc.stderr
    assert not (tmp_path / "out").exists()
    path.write_text(yaml.safe_dump({
        "model": {"path": str(tiny_model_dir)}, "data": {"train": [str(caption_data / "nope.jsonl")]},
        "learning_rates": {"llm": 1e-4}, "output": {"dir": str(tmp_path / "out")},
    }))
    proc = run_cli("train", str(path), "--set", "train.max_steps=2")
    assert proc.returncode == 2 and "nope.jsonl: no such annotation file" in proc.stderr


def test_config_check_prints_the_resolved_config_with_overrides(tiny_model_dir, caption_data, tmp_path):
    path = write_config(make_config(tiny_model_dir, caption_data, tmp_path / "o"), tmp_path / "c.yaml")
    proc = run_cli("train", str(path), "--check", "--set", "lora.r=4", "--set", "data.fps=2")
    assert proc.returncode == 0, proc.stderr
    resolved = yaml.safe_load(proc.stdout)
    assert resolved["lora"]["r"] == 4 and resolved["data"]["fps"] == 2.0


def test_a_finished_run_folder_is_not_overwritten(tiny_model_dir, caption_data, tmp_path):
    from vidlab.errors import VidlabError

    out = tmp_path / "run"
    train(make_config(tiny_model_dir, caption_data, out, "train.max_steps=1"))
    with pytest.raises(VidlabError, match="holds a run already.*--resume"):
        train(make_config(tiny_model_dir, caption_data, out, "train.max_steps=1"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_qlora_and_fp16_need_a_gpu(tiny_model_dir, caption_data, tmp_path):
    from vidlab.errors import VidlabError

    with pytest.raises(VidlabError, match="qlora.*CUDA GPU.*Use method lora"):
        train(make_config(tiny_model_dir, caption_data, tmp_path / "q", "method=qlora"))
    with pytest.raises(VidlabError, match="fp16 needs a CUDA GPU"):
        train(make_config(tiny_model_dir, caption_data, tmp_path / "h", "train.precision=fp16"))


# --- checkpoints that know what made them --------------------------------------------------------


def cut_back_to(run: Path, step: int) -> None:
    """Make a finished run look as if it was killed right after its checkpoint at `step`."""
    for checkpoint in complete_checkpoints(run):
        if int(checkpoint.name[5:]) > step:
            shutil.rmtree(checkpoint)
    for name in ("adapter_model.safetensors", "adapter_config.json", "train_result.json"):
        (run / name).unlink(missing_ok=True)


def test_resume_refuses_a_changed_setting_but_not_a_changed_output_key(tiny_model_dir, caption_data, tmp_path):
    out = tmp_path / "run"
    settings = ("train.max_steps=4", "output.save_steps=2", "output.save_total_limit=null")
    train(make_config(tiny_model_dir, caption_data, out, *settings))
    assert (complete_checkpoints(out)[0] / "config.yaml").read_text() == (out / "config.yaml").read_text()
    cut_back_to(out, 2)
    with pytest.raises(CheckpointError) as caught:
        train(make_config(tiny_model_dir, caption_data, out, *settings, "data.fps=2", "learning_rates.llm=0.02"),
              resume=True)
    message = str(caught.value)
    assert "data.fps: 1.0 then, 2.0 now" in message and "learning_rates.llm: 0.01 then, 0.02 now" in message
    assert "train.max_steps" not in message  # unchanged keys are not named
    assert not (out / "train_result.json").exists()
    assert "fps: 1.0" in (out / "config.yaml").read_text()  # the refused config was not recorded
    # A changed log interval (or data worker count) does not change the result: the run goes on.
    result = train(make_config(tiny_model_dir, caption_data, out, *settings, "output.log_steps=2"), resume=True)
    assert result.steps == 4 and (out / "adapter_model.safetensors").is_file()
    assert "log_steps: 2" in (out / "config.yaml").read_text()


def test_tensorboard_gets_the_logged_numbers(tiny_model_dir, caption_data, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is in the dev extra; without it runs log to log.jsonl only")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    train(make_config(tiny_model_dir, caption_data, out, "train.max_steps=3", "output.tensorboard=true"))
    events = EventAccumulator(str(out / "tensorboard")).Reload()
    losses = [event.value for event in events.Scalars("loss")]
    logged = [json.loads(line)["loss"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert losses == pytest.approx(logged) and "lr/llm" in events.Tags()["scalars"]


@pytest.fixture(scope="module")
def mixed_data(caption_data, tmp_path_factory) -> Path:
    """Video and text-only records alternating: with one sample per process, steps where one process
    has a video and the other none."""
    root = tmp_path_factory.mktemp("mixed")
    rows = []
    for i, line in enumerate((caption_data / "train.jsonl").read_text().splitlines()[:6]):
        video = json.loads(line)
        video["video"] = [str(caption_data / video["video"][0])]
        rows.append(video)
        rows.append({"id": f"t{i}", "conversations": [{"from": "human", "value": f"Say {i}."},
                                                       {"from": "gpt", "value": f"{i} is said."}]})
    (root / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def launch_two(config_path: Path, *args: str) -> subprocess.CompletedProcess:
    accelerate = Path(sys.executable).with_name("accelerate")
    return subprocess.run(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "vidlab.cli", "train", str(config_path), *args],
        capture_output=True, text=True, timeout=400,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
    )


def test_two_processes_with_mixed_batches_train_as_one_and_resume(tiny_model_dir, mixed_data, tmp_path):
    # The projector trains, so a process whose sample has no video leaves it without a gradient. Plain SGD
    # (no dropout) makes the weights a direct sum of the gradients: a wrongly scaled or lost gradient shows.
    settings = ("learning_rates.projector=0.5", "learning_rates.llm=0.5", "optim.name=sgd", "optim.momentum=0",
                "optim.max_grad_norm=null", "lora.dropout=0", "train.max_steps=6", "output.save_steps=2",
                "output.save_total_limit=null")
    two = tmp_path / "two"
    path = write_config(make_config(tiny_model_dir, mixed_data, two, "train.batch_size=1", *settings),
                        tmp_path / "two.yaml")
    records = [json.loads(line) for line in (mixed_data / "train.jsonl").read_text().splitlines()]
    steps = [batch for rank in range(2) for batch in EpochBatches(len(records), 1, rank, 2, seed=3, epoch=0)]
    pairs = list(zip(steps[: len(steps) // 2], steps[len(steps) // 2 :]))
    assert any(("video" in records[a[0]]) != ("video" in records[b[0]]) for a, b in pairs), "no mixed step"

    proc = launch_two(path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained 6 steps") == 1  # process 0 reports for the run

    one = tmp_path / "one"
    train(make_config(tiny_model_dir, mixed_data, one, "train.batch_size=2", *settings))
    a, b = load_file(str(two / "adapter_model.safetensors")), load_file(str(one / "adapter_model.safetensors"))
    assert set(a) == set(b) and any("projector" in name for name in a)
    initial = load_file(str(tiny_model_dir / "model.safetensors"))["model.projector.readout.0.weight"]
    assert (a["base_model.model.model.projector.readout.0.weight"] - initial).abs().max() > 1e-3  # it trained
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name

    # One save/load path on two processes too: back to the step-2 checkpoint, resume, same end.
    resumed = tmp_path / "resumed"
    shutil.copytree(two, resumed)
    cut_back_to(resumed, 2)
    path = write_config(make_config(tiny_model_dir, mixed_data, resumed, "train.batch_size=1", *settings),
                        tmp_path / "resumed.yaml")
    proc = launch_two(path, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = load_file(str(resumed / "adapter_model.safetensors"))
    for name in a:
        assert torch.allclose(a[name], c[name], atol=1e-6), name
    losses = [json.loads(line)["loss"] for line in (two / "log.jsonl").read_text().splitlines()]
    again = [json.loads(line)["loss"] for line in (resumed / "log.jsonl").read_text().splitlines()]
    assert again == pytest.approx(losses, rel=1e-5)


def test_two_processes_killed_with_sigkill_resume_to_the_uninterrupted_run(tiny_model_dir, caption_data, tmp_path):
    # vidlab's own loop under DDP (2 gloo processes): the launcher and both workers killed at once after a
    # checkpoint, `--resume` goes on from the last one. Plain SGD without dropout makes 2 processes of batch
    # 1 the same run as 1 process of batch 2, the uninterrupted run compared with.
    settings = ("learning_rates.llm=0.5", "optim.name=sgd", "optim.momentum=0", "optim.max_grad_norm=null",
                "lora.dropout=0", "train.max_steps=16", "output.save_steps=2", "output.save_total_limit=2")
    one = tmp_path / "one"
    train(make_config(tiny_model_dir, caption_data, one, "train.batch_size=2", *settings))

    killed = tmp_path / "killed"
    path = write_config(make_config(tiny_model_dir, caption_data, killed, "train.batch_size=1", *settings),
                        tmp_path / "killed.yaml")
    accelerate = Path(sys.executable).with_name("accelerate")
    process = subprocess.Popen(
        [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "vidlab.cli", "train", str(path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,  # its own group: kill all
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"},
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not any(int(p.name[5:]) >= 4 for p in complete_checkpoints(killed)):
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and both training processes, as a lost machine
    process.wait()
    steps_done = max(int(p.name[5:]) for p in complete_checkpoints(killed))
    assert 4 <= steps_done < 16, "the kill should land after a checkpoint and before the end"
    assert not (killed / "adapter_model.safetensors").exists()

    proc = launch_two(path, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = [json.loads(line)["loss"] for line in (one / "log.jsonl").read_text().splitlines()]
    resumed = [json.loads(line)["loss"] for line in (killed / "log.jsonl").read_text().splitlines()]
    assert len(resumed) == 16 and resumed == pytest.approx(losses, rel=1e-5)
    a, b = load_file(str(one / "adapter_model.safetensors")), load_file(str(killed / "adapter_model.safetensors"))
    assert set(a) == set(b)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_strict_with_data_workers_is_one_error_line(tiny_model_dir, caption_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(caption_data, data)
    (data / "broken.mp4").write_bytes(b"not a video at all")
    lines = (data / "train.jsonl").read_text().splitlines()
    lines[0] = json.dumps({**json.loads(lines[0]), "video": ["broken.mp4"]})
    (data / "train.jsonl").write_text("\n".join(lines) + "\n")
    path = write_config(make_config(tiny_model_dir, data, tmp_path / "run", "data.strict=true", "data.workers=2",
                                    "train.batch_size=8"), tmp_path / "strict.yaml")
    proc = run_cli("train", str(path))
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{data / 'train.jsonl'}:1: " in errors[0] and "broken.mp4" in errors[0]
    assert "Traceback" not in proc.stderr and "DataLoader worker" not in proc.stderr


def test_records_with_wrong_types_are_skipped_not_fatal(tiny_model_dir, caption_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(caption_data, data)
    good = json.loads((data / "train.jsonl").read_text().splitlines()[0])
    bad = [{**good, "start": "abc"}, {**good, "start": "00:01:05"}, {**good, "end": [1]}, {**good, "video": 5}]
    with (data / "train.jsonl").open("a") as handle:
        handle.write("".join(json.dumps(r) + "\n" for r in bad))
    out = tmp_path / "run"
    result = train(make_config(tiny_model_dir, data, out, "train.max_steps=1"))
    rows = [json.loads(line) for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert result.skipped == 4 and [row["line"] for row in rows] == [9, 10, 11, 12]
    assert '"start" must be a number of seconds' in rows[0]["reason"]
    assert "for '00:01:05' write 65" in rows[1]["reason"]
    assert '"end" must be' in rows[2]["reason"] and '"video" must be a path' in rows[3]["reason"]


def test_train_api_takes_a_path_and_keyword_overrides(tiny_model_dir, caption_data, tmp_path):
    path = write_config(make_config(tiny_model_dir, caption_data, tmp_path / "unused"), tmp_path / "c.yaml")
    result = train(path, train__max_steps=2, output__dir=str(tmp_path / "api"), set=["lora.r=4"])
    assert result.steps == 2 and result.run_dir == tmp_path / "api" and result.is_main
    saved = yaml.safe_load((tmp_path / "api" / "config.yaml").read_text())
    assert saved["lora"]["r"] == 4 and saved["train"]["max_steps"] == 2
    with pytest.raises(ConfigError, match="train.max_stepz: unknown key; did you mean 'max_steps'"):
        train(path, train__max_stepz=2)


def test_non_finite_settings_are_config_errors(tiny_model_dir, caption_data, tmp_path):
    path = write_config(make_config(tiny_model_dir, caption_data, tmp_path / "o"), tmp_path / "c.yaml")
    proc = run_cli("train", str(path), "--check", "--set", "data.fps=.inf", "--set", "data.folder_fps=.nan")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[0].startswith("error: ") and "(data.fps, data.folder_fps)" in \
        proc.stderr.splitlines()[0]  # the first line says which settings
    assert "data.fps: input should be a finite number" in proc.stderr
    assert "data.folder_fps: input should be a finite number" in proc.stderr
    proc = run_cli("train", str(path), "--check", "--set", "data.fps=.inf")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == f"error: {path}: data.fps: input should be a finite number (got inf)"
