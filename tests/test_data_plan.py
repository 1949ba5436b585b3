"""vidlab data plan: model sizes from the config alone, the memory formulas by hand, steps per epoch, the changes
it proposes, and the estimate held against the measured peak memory of real training steps on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vidlab.data.check import check_data
from vidlab.data.plan import plan_run, render_plan
from vidlab.data.plan_memory import GIB, MIB, Setup, estimate
from vidlab.data.plan_model import Architecture, PlanError, read_architecture
from vidlab.errors import VidlabError
from vidlab.models.info import model_info
from vidlab.training.config import load_config


def config_for(model: Path, tmp_path: Path, *extra: str) -> dict:
    data = tmp_path / "train.jsonl"
    if not data.exists():
        data.write_text(json.dumps({"conversations": [{"from": "human", "value": "Say yes."},
                                                      {"from": "gpt", "value": "yes"}]}) + "\n")
    overrides = [f"model.path={model}", f"data.train=[{data}]", f"output.dir={tmp_path / 'run'}",
                 "learning_rates.llm=1e-4", "lora.r=8", *extra]
    return load_config(None, overrides, check_paths=False).model_dump(mode="json")


def test_sizes_from_the_config_match_the_weights_and_peft(tiny_model_dir):
    arch = read_architecture(str(tiny_model_dir), lora_rank=8, modules_to_save=["lm_head"])
    counted = model_info(tiny_model_dir)["parameters"]
    assert arch.parameters == {part: counted[part] for part in ("vision", "projector", "llm")}

    import torch

    from vidlab.training.model import load_for_training

    config = load_config(None, [f"model.path={tiny_model_dir}", "data.train=[x.jsonl]", "output.dir=x",
                                "learning_rates.llm=1e-4", "lora.r=8", "lora.modules_to_save=[lm_head]"],
                         check_paths=False)
    model, _ = load_for_training(config, torch.device("cpu"), "no")
    trained = dict(model.named_parameters())
    assert arch.lora == sum(p.numel() for name, p in trained.items() if "lora_" in name)
    assert arch.modules_to_save == sum(p.numel() for name, p in trained.items() if "modules_to_save" in name)


def test_the_published_sizes_of_videollama3_2b():
    arch = read_architecture("videollama3-2b", lora_rank=64)
    assert arch.parameters["llm"] == 1_543_714_304  # Qwen2.5-1.5B with its tied output head
    # Per layer, r x (in + out) for q, k, v, o (1536->1536, 1536->256 twice, 1536->1536) and gate, up, down
    # (1536->8960 twice, 8960->1536), over 28 layers.
    assert arch.lora == 28 * 64 * (3072 + 1792 + 1792 + 3072 + 3 * 10496) == 73_859_072
    with pytest.raises(PlanError, match="no such model folder.*--model videollama3-2b"):
        read_architecture("./checkpoints/not-here")
    # A recipe's placeholder path (not converted yet) names a release: its published sizes, without the network.
    placeholder = read_architecture("checkpoints/VideoLLaMA3-7B-hf")
    assert placeholder.source == "checkpoints/VideoLLaMA3-7B-hf (the published sizes of videollama3-7b)"
    assert placeholder.parameters == read_architecture("videollama3-7b").parameters


ARCH = Architecture(source="hand", hidden=100, intermediate=300, layers=2, heads=4, kv_heads=2, vocab=1000,
                    vision_hidden=10, vision_intermediate=20, vision_layers=1,
                    parameters={"vision": 1000, "projector": 100, "llm": 10000}, llm_linear=8000, largest_layer=4000,
                    lora=500, modules_to_save=0)


def test_lora_in_bf16_by_hand():
    est = estimate(ARCH, Setup(method="lora", precision="bf16", tokens=10, lora_dropout=0.05), lora_rank=8)
    assert est.weights == 11100 * 2 + 500 * 4  # frozen in bf16, adapters in fp32
    assert (est.gradients, est.optimizer) == (500 * 4, 500 * 8)
    per_layer = 50 * 100 + 12 * 300 + 14 * 8 + 24
    assert est.activations == 2 * 10 * per_layer
    assert est.logits == 10 * 1000 * 14 + 10 * 100 * 6
    assert est.forward_phase == est.activations + est.logits
    extra = int(5 * 10 / 8192 * 10 * 100 * 2)  # BACKWARD_TOKEN_VECTORS a token, scaled by the length, in bf16
    assert est.backward_phase == 2000 + 10 * per_layer + extra and est.update_phase == 2000 + 2000
    assert est.peak == est.weights + est.optimizer + est.forward_phase + GIB
    qlora = estimate(ARCH, Setup(method="qlora", tokens=10), lora_rank=8)
    assert qlora.weights == int(8000 * (0.5 + 1 / 64 + 4 / (64 * 256)) + 3100 * 4 + 500 * 4)


def test_full_fine_tuning_on_the_cpu_and_sharded_by_hand():
    est = estimate(ARCH, Setup(method="full", tokens=10, device="cpu"), lora_rank=8)
    assert (est.weights, est.gradients, est.optimizer) == (11100 * 4, 10000 * 4, 10000 * 8)
    per_layer = 36 * 100 + 16 * 300 + 24
    assert est.activations == 2 * 10 * per_layer
    assert est.logits == 10 * 1000 * 12 + 10 * 100 * 8
    head_gradient = 1000 * 100 * 4  # made first in backward, while the activations are held
    assert est.peak == 44400 + 80000 + (2 * 10 * per_layer + 128000 + head_gradient) + 24 * MIB
    zero3 = estimate(ARCH, Setup(method="full", tokens=10, device="cpu", gpus=4, strategy="zero3"), lora_rank=8)
    assert (zero3.weights, zero3.gradients, zero3.optimizer) == (11100 + 4000 * 4, 10000, 20000)
    ddp = estimate(ARCH, Setup(method="full", tokens=10, device="cpu", gpus=4, strategy="ddp"), lora_rank=8)
    assert ddp.buckets == 40000 and ddp.weights == 44400
    checkpointed = estimate(ARCH, Setup(method="full", tokens=10, device="cpu", checkpointing=True), lora_rank=8)
    assert checkpointed.activations == 2 * 10 * 4 * 100 + 10 * per_layer


def test_steps_per_epoch_and_the_longest_sample_from_check_json(tiny_model_dir, tmp_path):
    config = config_for(tiny_model_dir, tmp_path, "train.batch_size=2", "train.grad_accum=4", "train.epochs=3")
    stats = tmp_path / "check.json"
    stats.write_text(json.dumps({"ok": 100, "stats": {"total_tokens": {"max": 900}, "text_tokens": {"p99": 80},
                                                      "visual_tokens_before_pruning": {"max": 700}}}))
    plan = plan_run(config, stats=stats, gpus=3)
    assert (plan.records, plan.steps_per_epoch, plan.total_steps) == (100, 4, 12)  # 100 // 6 = 16 batches, /4 steps
    assert (plan.setup.tokens, plan.setup.vision_tokens, plan.setup.strategy) == (900, 700, "ddp")
    worst = plan_run(config)  # no statistics: every sample as long as model_max_length allows
    assert worst.setup.tokens == 16384 and worst.records == 1 and worst.estimate.peak > plan.estimate.peak


def test_plan_reads_what_check_wrote(tiny_model_dir, tmp_path):
    config = config_for(tiny_model_dir, tmp_path)
    checked = check_data(config=config, out_dir=tmp_path / "check", workers=0, progress=False)
    plan = plan_run(config, stats=checked.out_dir / "check.json")
    assert plan.setup.tokens == checked.samples[0]["total_tokens"] and plan.records == 1


def test_a_run_that_does_not_fit_gets_changes_that_do(tmp_path):
    recipe = Path(__file__).parents[1] / "src/vidlab/configs/lora_videollama3_2b.yaml"
    plan = plan_run(recipe, model="videollama3-2b", gpu_memory=16, overrides=["train.gradient_checkpointing=false"])
    assert plan.fits is False and plan.estimate.peak > 16 * GIB
    fitting = [c for c in plan.changes if c.fits]
    assert fitting and all(c.estimate.peak <= 16 * GIB for c in fitting)
    assert any("train.gradient_checkpointing=true" in c.overrides for c in plan.changes)
    for change in fitting:  # the advice holds: the same plan with those overrides fits
        redone = plan_run(recipe, model="videollama3-2b", gpu_memory=16,
                          overrides=["train.gradient_checkpointing=false", *change.overrides])
        assert redone.fits and redone.estimate.peak == change.estimate.peak
    assert plan_run(recipe, model="videollama3-2b", gpu_memory=80).changes == []


def test_the_command(tmp_path, tiny_model_dir):
    from vidlab.cli import app

    config = tmp_path / "train.yaml"
    import yaml

    config.write_text(yaml.safe_dump(config_for(tiny_model_dir, tmp_path)))
    done = CliRunner().invoke(app, ["data", "plan", "--config", str(config), "--gpu-memory", "80", "--json"])
    assert done.exit_code == 0, done.output
    shown = json.loads(done.output)
    assert shown["fits"] is True and shown["parameters"] == read_architecture(str(tiny_model_dir)).parameters
    text = CliRunner().invoke(app, ["data", "plan", "--config", str(config), "--model", "videollama3-7b"])
    assert "videollama3-7b: 8.04 B parameters" in text.output and "peak" in text.output


MEASURE = """
import json, sys
from vidlab.data.plan_measure import measure_step
for overrides in json.loads(sys.argv[2]):
    print(json.dumps(measure_step(sys.argv[1], 768, "cpu", overrides)), flush=True)
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures resident memory through Linux /proc")
def test_the_estimate_is_within_15_percent_of_measured_training_steps(tmp_path):
    """A real LoRA step and a real full fine-tuning step with checkpointing, on a model big enough (256 wide,
    4 layers) that activations, not libraries, fill the memory; 768 tokens. Measured: peak resident memory
    of the second step above what the model and the optimiser states already hold."""
    from vidlab.models.tiny import TinySpec, build_tiny_model

    model = build_tiny_model(tmp_path / "model", spec=TinySpec(text_hidden=256, text_intermediate=768, text_layers=4,
                                                               text_heads=4, text_kv_heads=2))
    config = tmp_path / "train.yaml"
    import yaml

    config.write_text(yaml.safe_dump(config_for(model, tmp_path)))
    cases = [["train.gradient_checkpointing=false"],
             ["method=full", "learning_rates.llm=1e-5", "train.gradient_checkpointing=true"]]
    done = subprocess.run([sys.executable, "-c", MEASURE, str(config), json.dumps(cases)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
    assert done.returncode == 0, done.stderr[-2000:]
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(results) == 2
    for case, result in zip(cases, results):
        ratio = result["estimated_step"] / result["measured_step"]
        assert 0.85 <= ratio <= 1.15, (case, result)
        assert result["measured_step"] > 30 * MIB  # activations dominate: the comparison is not noise


def test_plan_and_train_count_the_same_usable_records(tiny_model_dir, tmp_path):
    from vidlab.training.api import train

    data = tmp_path / "train.jsonl"
    good = [{"id": f"ok{n}", "conversations": [{"from": "human", "value": f"Say {n}."}, {"from": "gpt", "value": "ok"}]}
            for n in range(6)]
    wordy = [{"id": f"long{n}", "conversations": [{"from": "human", "value": f"{n} " + "word " * 150},
                                                   {"from": "gpt", "value": "yes"}]} for n in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in good + wordy))
    config = config_for(tiny_model_dir, tmp_path, "data.model_max_length=100", "data.workers=0",
                        "train.batch_size=1", "train.epochs=1", "output.progress=false", "output.tensorboard=false",
                        "output.save_steps=1000", "optim.warmup_ratio=0")
    checked = check_data(config=config, out_dir=tmp_path / "check", workers=0, progress=False)
    assert (checked.report["ok"], checked.report["bad_by_kind"]) == (6, {"over budget": 3})

    unchecked = plan_run(config, stats=checked.out_dir / "check.json")
    assert unchecked.records == 6 and "data.check" in unchecked.records_note and "all 9" in unchecked.records_note
    shown = render_plan(unchecked)
    assert "steps        6 records: 6 optimiser steps per epoch" in shown and "with data.check: " in shown
    config["data"]["check"] = str(checked.out_dir / "check.json")
    plan = plan_run(config)  # data.check is the statistics
    assert (plan.records, plan.total_steps, plan.records_note) == (6, 6, None)

    path = tmp_path / "train.yaml"
    path.write_text(load_config(config, check_paths=False).to_yaml())
    result = train(path)
    assert result.steps == plan.total_steps == 6
    skipped = [json.loads(line) for line in (result.run_dir / "skipped.jsonl").read_text().splitlines()]
    assert [(row["id"], row["kind"]) for row in skipped] == [(f"long{n}", "over budget") for n in range(3)]

    data.write_text(data.read_text())  # changed after the check: its list of bad records may be wrong now
    os.utime(data, (checked.out_dir.stat().st_mtime + 10,) * 2)
    with pytest.raises(VidlabError, match=r"data\.check: .*changed after it.*vidlab data check"):
        train(path, output__dir=str(tmp_path / "again"))
