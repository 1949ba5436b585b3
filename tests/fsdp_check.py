"""FSDP2 on CPU processes (gloo) without accelerate, which runs FSDP only on GPUs: run by
test_train_sharded.py under `torchrun --nproc_per_node N` (N=1: no sharding, the reference).

    python -m torch.distributed.run --nproc_per_node 2 tests/fsdp_check.py CONFIG.yaml OUT.json [STEPS]
        [CHECKPOINT_DIR save:K | resume:K]

The model and data are vidlab's (load_for_training, load_records, TrainDataset, Collator); the layers
sharded are those configs/accelerate/fsdp.yaml names. The global batch is the same for every N: each
process takes its slice, the loss is summed over label tokens and divided by the global token count.
Writes OUT.json (rank 0): each step's loss and seconds, each process's peak RSS, whether the weights
were DTensor shards, and the trained
model gathered in full to OUT's folder/model (save_pretrained), for loading without FSDP.
With CHECKPOINT_DIR, `save:K` writes a sharded checkpoint (weights and optimizer state, each process its
own shard, torch.distributed.checkpoint) after step K; `resume:K` loads it and runs steps K+1.. .
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import yaml


def main() -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_state_dict,
        set_state_dict,
    )
    from torch.distributed.fsdp import fully_shard

    from vidlab.training.config import load_config
    from vidlab.training.data import Collator, TrainDataset, load_records
    from vidlab.training.model import load_for_training

    config_path, out, steps = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 3
    checkpoint, (action, at) = (Path(sys.argv[4]), sys.argv[5].split(":")) if len(sys.argv) > 5 else (None, ("", 0))
    at = int(at)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if world > 1 else 0
    torch.manual_seed(0)
    config = load_config(config_path)
    model, processor = load_for_training(config, torch.device("cpu"), "no")
    fsdp = yaml.safe_load((Path(__file__).parents[1] / "configs/accelerate/fsdp.yaml").read_text())["fsdp_config"]
    layer_names = set(fsdp["fsdp_transformer_layer_cls_to_wrap"].split(","))
    if world > 1:
        wrapped = [m for m in model.modules() if type(m).__name__ in layer_names]
        assert wrapped, f"none of {layer_names} in the model"
        for module in wrapped:
            fully_shard(module, reshard_after_forward=fsdp["fsdp_reshard_after_forward"])
        fully_shard(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rates.llm)
    records, _ = load_records([Path(f) for f in config.data.train])
    dataset = TrainDataset(records, processor, config.data.media_settings(), config.data.model_max_length)
    collate = Collator(processor.tokenizer.pad_token_id)
    size, per = config.train.batch_size, config.train.batch_size // world
    losses = []
    start = 0
    if action == "resume":
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optim": optim_state}
        dcp.load(state, checkpoint_id=checkpoint)  # each process reads its own shard
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        start = at
    model.train()
    seconds = []
    for step in range(start, steps):
        started = time.perf_counter()
        items = [dataset[(step * size + i) % len(dataset)] for i in range(size)]
        batches = [collate(items[r * per:(r + 1) * per]) for r in range(world)]
        total_tokens = sum(b["num_label_tokens"] for b in batches)
        inputs = dict(batches[rank]["inputs"])
        labels = inputs.pop("labels")
        logits = model(**inputs).logits
        loss_sum = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(),
                                                     ignore_index=-100, reduction="sum")
        # FSDP averages gradients over the processes: scale so that the average is the global per-token mean.
        (loss_sum * world / total_tokens).backward()
        optimizer.step()
        optimizer.zero_grad()
        step_loss = loss_sum.detach() / total_tokens
        if world > 1:
            dist.all_reduce(step_loss)
        losses.append(float(step_loss))
        seconds.append(time.perf_counter() - started)
        if action == "save" and step + 1 == at:
            model_state, optim_state = get_state_dict(model, optimizer)
            dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=checkpoint)
    sharded = type(trainable[0]).__name__ == "DTensor"
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # this process's peak RSS (KiB on Linux)
    peaks = [None] * world
    if world > 1:
        dist.all_gather_object(peaks, peak_mb)
    else:
        peaks = [peak_mb]
    if rank == 0:
        model_dir = out.parent / "model"
        model.save_pretrained(model_dir, state_dict=state)
        processor.save_pretrained(model_dir)
        out.write_text(json.dumps({"losses": losses, "seconds": seconds, "peak_rss_mb": peaks, "sharded": sharded,
                                   "world": world, "model": str(model_dir)}))
    if world > 1:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
