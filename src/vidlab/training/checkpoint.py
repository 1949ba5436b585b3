"""Checkpoints that resume exactly and know what made them, through accelerate's save_state/load_state.

accelerate saves the optimiser, every process's RNG and (under DeepSpeed or FSDP, where only it can
gather the shards) the weights; the scheduler is registered with it for checkpointing. On one
process or under DDP the weights are saved by the hooks below, trainable ones only (frozen base
weights come from the model the run's config names), and loaded back with a check that they are
exactly this run's trainable weights.

Every checkpoint holds the resolved config that made it (config.yaml). A resume compares it with
the run's config and refuses a change to anything that alters the result.

A checkpoint is filled in a hidden folder and renamed to `checkpoints/step-NNNNNN` only when every
file is written, so a run killed mid-save leaves the previous checkpoint as the newest complete one.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file

from vidlab.errors import VidlabError
from vidlab.folders import usual_permissions
from vidlab.training.model import save_adapter_compressor

CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"  # written last: a checkpoint folder without it is not complete
CONFIG_FILE = "config.yaml"
PREFIX = "step-"
WEIGHTS_FILE = "model.safetensors"  # accelerate's name for the (here: trainable) weights of the model
# Config keys whose change does not alter what a run computes: where and how often it writes, how data is read.
RESUMABLE_CHANGES = ("output.", "data.workers", "data.worker_timeout", "data.feature_cache", "resume")


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


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().to("cpu").contiguous() for name, p in model.named_parameters() if p.requires_grad}


def _trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def register_trainable_weights(accelerator) -> None:
    """Make save_state keep only the trainable weights, and load_state check and restore them.

    Under DeepSpeed and FSDP accelerate saves and loads the (sharded) weights itself and these hooks
    see no model.
    """

    def save_hook(models: list, weights: list[dict], output_dir: str) -> None:
        for i, model in enumerate(models[: len(weights)]):
            names = _trainable_names(model)
            weights[i] = {name: tensor for name, tensor in weights[i].items() if name in names}

    def load_hook(models: list, input_dir: str) -> None:
        while models:
            model = models.pop(0)  # loaded here, so accelerate does not load it again
            path = Path(input_dir) / WEIGHTS_FILE
            if not path.is_file():
                raise CheckpointError(
                    f"{input_dir}: no {WEIGHTS_FILE}. It was written by an older vidlab or is damaged: resume it with "
                    "the vidlab version that wrote it, or start the run again."
                )
            saved = load_file(str(path))
            expected = _trainable_names(model)
            if set(saved) != expected:
                missing, extra = sorted(expected - set(saved)), sorted(set(saved) - expected)
                raise CheckpointError(
                    f"{input_dir}: its trainable weights do not match this run's (missing {missing[:3]}, unexpected "
                    f"{extra[:3]}). What trains changed; resume with the config saved in the checkpoint."
                )
            params = dict(model.named_parameters())
            with torch.no_grad():
                for name, tensor in saved.items():
                    params[name].copy_(tensor)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)


def save_checkpoint(
    run_dir: Path, step: int, accelerator, model, config_yaml: str, progress: dict, keep: int | None
) -> Path:
    """Save everything a resume needs, on every process together; returns the checkpoint folder.

    Args:
        model: the prepared (possibly DDP-wrapped) model, for the usable adapter copy.
        config_yaml: the run's resolved config, kept in the checkpoint.
        progress: JSON data of the loop (step, samples seen, ...), stored in state.json.
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
    accelerator.save_state(str(staging))
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        if hasattr(unwrapped, "peft_config") and not is_sharded(accelerator):
            unwrapped.save_pretrained(staging / "adapter")  # a usable adapter: vidlab chat --adapter .../adapter
            save_adapter_compressor(unwrapped, staging / "adapter")
        (staging / CONFIG_FILE).write_text(config_yaml, encoding="utf-8")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state = {**progress, "world_size": accelerator.num_processes}
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2))
        usual_permissions(staging)
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        if keep is not None:
            for old in complete_checkpoints(run_dir)[:-keep]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def config_changes(saved_yaml: str, config_yaml: str) -> list[str]:
    """Keys whose value differs between two resolved configs and that alter the result, as
    "key: old then, new now" (keys in RESUMABLE_CHANGES may change)."""

    def flat(node, prefix: str = "") -> dict:
        if not isinstance(node, dict):
            return {prefix: node}
        out = {}
        for key, value in node.items():
            out.update(flat(value, f"{prefix}{key}."))
        return out if out else {prefix: node}

    before = {k.rstrip("."): v for k, v in flat(yaml.safe_load(saved_yaml) or {}).items()}
    after = {k.rstrip("."): v for k, v in flat(yaml.safe_load(config_yaml) or {}).items()}
    changed = []
    for key in sorted(set(before) | set(after)):
        if key.startswith(RESUMABLE_CHANGES) or before.get(key) == after.get(key):
            continue
        changed.append(f"{key}: {before.get(key)!r} then, {after.get(key)!r} now")
    return changed


def load_checkpoint(path: Path, accelerator, config_yaml: str) -> dict:
    """Restore a checkpoint into the prepared model and optimiser, the registered scheduler and this
    process's RNG; returns its progress data.

    Raises:
        CheckpointError: another number of processes, or a config that changed a key that alters the result.
    """
    progress = json.loads((path / STATE_FILE).read_text())
    if progress.get("world_size") != accelerator.num_processes:
        raise CheckpointError(
            f"{path}: saved by {progress.get('world_size')} process(es), resumed with {accelerator.num_processes}. "
            "Data order and RNG streams are per process: resume with the same number of processes."
        )
    saved = path / CONFIG_FILE
    if saved.is_file():
        changed = config_changes(saved.read_text(encoding="utf-8"), config_yaml)
        if changed:
            raise CheckpointError(
                f"{path}: the config changed since this checkpoint, in keys that change the result: "
                + "; ".join(changed) + f". Resume with the config it was saved with ({saved}), or start a new run "
                "in another output.dir. (Output keys such as output.log_steps, and data.workers, may change.)"
            )
    accelerator.load_state(str(path))
    return progress


def is_sharded(accelerator) -> bool:
    from accelerate.utils import DistributedType

    return accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
