"""Checkpoints that resume exactly: trainable weights, optimiser, scheduler, every process's RNG.

A checkpoint is filled in a hidden folder and renamed to `checkpoints/step-NNNNNN` only when every
file is written, so a run killed mid-save leaves the previous checkpoint as the newest complete
one. Frozen weights are not saved (the run's config names the base model they come from).

Under DeepSpeed or FSDP the weights and optimiser state are sharded across processes and only
accelerate can gather them: those runs save through `accelerator.save_state` instead.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vidlab.errors import VidlabError
from vidlab.folders import usual_permissions

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"  # written last: a checkpoint folder without it is not complete
PREFIX = "step-"


class CheckpointError(VidlabError):
    """A checkpoint that cannot be resumed from."""


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:06d}"


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    folder = Path(run_dir) / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.name.startswith(PREFIX) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu").contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    run_dir: Path, step: int, accelerator, model, optimizer, scheduler, progress: dict, keep: int | None
) -> Path:
    """Save everything a resume needs, on every process together; returns the checkpoint folder.

    Args:
        model: the prepared (possibly DDP-wrapped) model.
        progress: JSON data of the loop (step, epoch, samples seen, ...), stored in state.json.
        keep: delete the oldest complete checkpoints beyond this many (None: keep all).
    """
    folder = Path(run_dir) / CHECKPOINTS
    final = folder / checkpoint_name(step)
    staging = folder / f".{final.name}.partial"
    if accelerator.is_main_process:
        if staging.exists():
            shutil.rmtree(staging)  # left by a run killed while saving
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), staging / f"rng-{accelerator.process_index}.pt")
    if is_sharded(accelerator):
        accelerator.save_state(str(staging / "accelerate"))
    elif accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        save_file(trainable_state(unwrapped), str(staging / "trainable.safetensors"))
        torch.save(optimizer.state_dict(), staging / "optimizer.pt")
        if hasattr(unwrapped, "peft_config"):
            unwrapped.save_pretrained(staging / "adapter")  # a usable adapter: vidlab chat --adapter .../adapter
    if accelerator.is_main_process:
        torch.save(scheduler.state_dict(), staging / "scheduler.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (staging / STATE_FILE).write_text(json.dumps({**progress, "world_size": accelerator.num_processes}, indent=2))
        usual_permissions(staging)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        if keep is not None:
            for old in complete_checkpoints(run_dir)[:-keep]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(path: Path, accelerator, model, optimizer, scheduler) -> dict:
    """Restore a checkpoint into the prepared model, optimiser and scheduler; returns its progress data."""
    progress = json.loads((path / STATE_FILE).read_text())
    if progress.get("world_size") != accelerator.num_processes:
        raise CheckpointError(
            f"{path}: saved by {progress.get('world_size')} process(es), resumed with {accelerator.num_processes}. "
            "Data order and RNG streams are per process: resume with the same number of processes."
        )
    if is_sharded(accelerator):
        accelerator.load_state(str(path / "accelerate"))
    else:
        unwrapped = accelerator.unwrap_model(model)
        saved = load_file(str(path / "trainable.safetensors"))
        expected = {name for name, p in unwrapped.named_parameters() if p.requires_grad}
        if set(saved) != expected:
            missing, extra = sorted(expected - set(saved)), sorted(set(saved) - expected)
            raise CheckpointError(
                f"{path}: its trainable weights do not match this run's (missing {missing[:3]}, unexpected "
                f"{extra[:3]}). The config changed what trains; resume with the config saved in the run folder."
            )
        with torch.no_grad():
            params = dict(unwrapped.named_parameters())
            for name, tensor in saved.items():
                params[name].copy_(tensor)
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    _set_rng_state(torch.load(path / f"rng-{accelerator.process_index}.pt", weights_only=False))
    return progress


def is_sharded(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
