"""Sharded training on CPU processes: accelerate's FSDP launch is refused there (it would quietly run
DDP), and FSDP2 itself shards the tiny model over 2 gloo processes with the loss of 1 process, and
saves and resumes a sharded checkpoint."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import test_train
import torch
from safetensors.torch import load_file
from test_train import make_config, write_config

REPO = Path(__file__).parents[1]
caption_data = test_train.caption_data  # the fixture, shared
CPU_ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks accelerate's CPU behaviour")
def test_an_fsdp_launch_on_cpus_is_one_error_not_a_quiet_ddp_run(tiny_model_dir, caption_data, tmp_path):
    out = tmp_path / "run"
    path = write_config(make_config(tiny_model_dir, caption_data, out, "train.batch_size=2"), tmp_path / "run.yaml")
    accelerate = Path(sys.executable).with_name("accelerate")
    proc = subprocess.run(
        [str(accelerate), "launch", "--config_file", str(REPO / "configs/accelerate/fsdp.yaml"), "--num_processes",
         "2", "--mixed_precision", "no", "-m", "vidlab.cli", "train", str(path)],
        capture_output=True, text=True, timeout=300, env=CPU_ENV)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors and "asks for FSDP" in errors[0] and "multi_cpu" in errors[0].lower()
    assert not (out / "log.jsonl").exists()  # no step ran


@pytest.mark.parametrize("method", ["lora", "full"])
def test_fsdp2_on_two_cpu_processes_matches_one_and_loads_unsharded(method, tiny_model_dir, caption_data, tmp_path):
    extra = ("method=full", "learning_rates.llm=1e-3") if method == "full" else ("lora.dropout=0",)
    config = write_config(make_config(tiny_model_dir, caption_data, tmp_path / "unused", "train.batch_size=4",
                                      *extra), tmp_path / "run.yaml")
    results = {}
    for world in (1, 2):
        out = tmp_path / f"w{world}" / "result.json"
        out.parent.mkdir()
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world), "--master_port",
             str(29600 + world + (10 if method == "full" else 0)), str(REPO / "tests/fsdp_check.py"), str(config),
             str(out), "3"], capture_output=True, text=True, timeout=300, env=CPU_ENV, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[world] = json.loads(out.read_text())
    assert results[2]["sharded"] and not results[1]["sharded"]
    assert results[2]["losses"] == pytest.approx(results[1]["losses"], abs=1e-4)
    assert results[1]["losses"][-1] < results[1]["losses"][0]  # it trained

    # The gathered result is an ordinary checkpoint (adapter or whole model) that loads without FSDP.
    from vidlab.models import load_model

    one, two = Path(results[1]["model"]), Path(results[2]["model"])
    name = "adapter_model.safetensors" if method == "lora" else "model.safetensors"
    a, b = load_file(str(one / name)), load_file(str(two / name))
    assert set(a) == set(b)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    if method == "lora":
        model, _ = load_model(tiny_model_dir, device="cpu", adapter=str(two))
    else:
        model, _ = load_model(two, device="cpu")
    assert model is not None


def test_fsdp2_sharded_checkpoint_resumes_to_the_same_steps(tiny_model_dir, caption_data, tmp_path):
    # accelerate saves no sharded state on CPUs (it never runs FSDP there): torch's distributed checkpoint
    # on FSDP2, each process writing its own shard of weights and AdamW state, resumed in a fresh launch.
    config = write_config(make_config(tiny_model_dir, caption_data, tmp_path / "unused", "train.batch_size=4",
                                      "lora.dropout=0"), tmp_path / "run.yaml")
    checkpoint = tmp_path / "sharded"

    def launch(name: str, action: str) -> dict:
        out = tmp_path / name / "result.json"
        out.parent.mkdir()
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
             str(29640 + len(name)), str(REPO / "tests/fsdp_check.py"), str(config), str(out), "4", str(checkpoint),
             action], capture_output=True, text=True, timeout=300, env=CPU_ENV, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(out.read_text())

    whole = launch("whole", "save:2")
    assert whole["sharded"] and len(whole["losses"]) == 4
    assert sorted(p.name for p in checkpoint.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]  # one a process
    resumed = launch("resumed", "resume:2")
    assert resumed["losses"] == pytest.approx(whole["losses"][2:], abs=1e-6)
    a = load_file(str(Path(whole["model"]) / "adapter_model.safetensors"))
    b = load_file(str(Path(resumed["model"]) / "adapter_model.safetensors"))
    assert set(a) == set(b)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key

@pytest.mark.parametrize("name", ["deepspeed_zero2.yaml", "deepspeed_zero3.yaml"])
def test_what_vidlab_hands_deepspeed(name):
    """DeepSpeed does not run under accelerate on a CPU (docs/train.md); what vidlab gives it is checked here."""
    import types

    import yaml
    from accelerate.utils import DeepSpeedPlugin

    from vidlab.training.steps import configure_deepspeed

    launch = yaml.safe_load((REPO / "configs/accelerate" / name).read_text())
    settings = launch["deepspeed_config"]
    # No optimiser, scheduler, accumulation or clipping in the file: vidlab's AdamW (one group per part,
    # each with its own rate), its schedule, train.grad_accum and optim.max_grad_norm are what DeepSpeed gets.
    assert not {"optimizer", "scheduler", "gradient_accumulation_steps", "gradient_clipping"} & set(settings)
    plugin = DeepSpeedPlugin(zero_stage=settings["zero_stage"],
                             offload_optimizer_device=settings["offload_optimizer_device"],
                             offload_param_device=settings.get("offload_param_device", "none"),
                             zero3_init_flag=False,  # (True imports deepspeed, which is not installed here)
                             zero3_save_16bit_model=settings.get("zero3_save_16bit_model", False))
    accelerator = types.SimpleNamespace(state=types.SimpleNamespace(deepspeed_plugin=plugin))
    configure_deepspeed(accelerator, batch_size=2, grad_accum=4, max_grad_norm=1.0)
    config = plugin.deepspeed_config
    assert (config["train_micro_batch_size_per_gpu"], config["gradient_accumulation_steps"],
            config["gradient_clipping"]) == (2, 4, 1.0)
    assert config["zero_optimization"]["stage"] == settings["zero_stage"]
    if settings["zero_stage"] == 3:  # the final model is gathered to full 16-bit weights, loadable without ZeRO
        assert config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    configure_deepspeed(accelerator, batch_size=2, grad_accum=1, max_grad_norm=None)
    assert plugin.deepspeed_config["gradient_clipping"] == 0.0  # no clipping asked: DeepSpeed's "off"


def test_two_launches_as_two_machines_train_as_two_processes_on_one(tiny_model_dir, caption_data, tmp_path):
    """`--num_machines 2 --machine_rank R` launched twice (here both on 127.0.0.1) is the run of
    `--num_processes 2` on one machine: same losses, same adapter."""
    settings = ("train.batch_size=1", "train.max_steps=4", "lora.dropout=0", "optim.name=sgd", "optim.momentum=0")
    one = tmp_path / "one"
    proc = test_train.launch_two(write_config(make_config(tiny_model_dir, caption_data, one, *settings),
                                              tmp_path / "one.yaml"))
    assert proc.returncode == 0, proc.stderr[-3000:]

    two = tmp_path / "two"
    path = write_config(make_config(tiny_model_dir, caption_data, two, *settings), tmp_path / "two.yaml")
    accelerate = Path(sys.executable).with_name("accelerate")
    machines = [subprocess.Popen(
        [str(accelerate), "launch", "--multi_gpu", "--num_machines", "2", "--num_processes", "2",
         "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1", "--main_process_port", "29571",
         "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "vidlab.cli", "train", str(path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CPU_ENV) for rank in (0, 1)]
    outputs = [machine.communicate(timeout=400) for machine in machines]
    assert [machine.returncode for machine in machines] == [0, 0], outputs[0][1][-2000:] + outputs[1][1][-2000:]

    def losses(run: Path) -> list[float]:
        return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]

    assert losses(two) == pytest.approx(losses(one), rel=1e-5)
    a, b = load_file(str(one / "adapter_model.safetensors")), load_file(str(two / "adapter_model.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key
    result = json.loads((two / "train_result.json").read_text())
    assert len(result["process_checksums"]) == 2 and len(set(result["process_checksums"])) == 1
