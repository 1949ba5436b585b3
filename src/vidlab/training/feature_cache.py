"""Vision features extracted once to disk, for training with a frozen vision tower (`data.feature_cache`).

With the vision encoder and projector frozen, a video's projected embeddings are the same at every
epoch, so decoding and encoding it each time is wasted work. `extract_features` runs the training
data set once (the same samples, in the same order, with the same replacements of bad records as
`TrainDataset`) and writes each sample without its video pixels, plus its videos' embeddings, into
shards of `SHARD_SIZE` samples (safetensors, written atomically). A shard's name carries a hash of
its records, their media files (size and modification time), the media settings and the model, so
a second run (or one interrupted part way) reuses every shard still valid and extracts the rest.
`CachedFeatureDataset` reads the shards; `with_cached_features` hands the embeddings to the model as
`mm_encoder_outputs`, the road `vidlab.vision_cache` and generation already use.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

import torch

from vidlab.errors import SampleError
from vidlab.files import write_atomic
from vidlab.inputs import InputStats, Sample
from vidlab.training.data import SkipNote, TrainDataset, _resolve
from vidlab.vision_cache import _base

FORMAT = 1
SHARD_SIZE = 64
FEATURES = "video_features"  # a sample's videos' embeddings, one after another
LENGTHS = "video_feature_lengths"  # embeddings per video


def base_key(config) -> str:
    """What every sample's features depend on besides its record: the model, the media settings, the length limit."""
    model = Path(config.model.path).expanduser()
    weights = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in model.glob("*.safetensors")) \
        if model.is_dir() else []
    parts = [FORMAT, str(model.resolve()) if model.exists() else config.model.path, weights, config.model.adapter,
             config.data.media_settings().model_dump(mode="json"), config.data.model_max_length, config.data.strict]
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def shard_path(folder: Path, key: str, records, start: int, stop: int) -> Path:
    """The shard of records [start, stop): its name changes when a record or one of its media files does."""
    digest = hashlib.sha256(key.encode())
    for i in range(start, stop):
        record = records[i]
        digest.update(f"{record.position.file}\0{record.position.index}\0".encode())
        digest.update(record.conversation.model_dump_json().encode())
        for part in record.conversation.media:
            path = _resolve(part.path, record.data_root)
            stat = path.stat() if path.exists() else None
            digest.update(f"{path}\0{stat and stat.st_size}\0{stat and stat.st_mtime_ns}".encode())
    return folder / f"shard-{start:09d}-{digest.hexdigest()[:20]}.safetensors"


def shard_paths(folder: Path, key: str, records, shard_size: int) -> list[Path]:
    return [shard_path(folder, key, records, start, min(start + shard_size, len(records)))
            for start in range(0, len(records), shard_size)]


@torch.no_grad()
def _video_embeddings(model, sample: Sample, device) -> list[torch.Tensor]:
    tensors = sample.tensors
    if "pixel_values_videos" not in tensors:
        return []
    outputs = _base(model).get_video_features(
        pixel_values_videos=tensors["pixel_values_videos"].to(device),
        video_grid_thw=tensors["video_grid_thw"].to(device),
        video_merge_sizes=tensors["video_merge_sizes"].to(device),
        return_dict=True,
    )
    return [embeddings.detach().cpu() for embeddings in outputs.pooler_output]


def _write_shard(path: Path, model, dataset: TrainDataset, start: int, stop: int, device) -> None:
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    items = []
    for n, index in enumerate(range(start, stop)):
        item = dataset[index]
        if item.get("fatal"):
            raise SampleError(item["fatal"])
        sample = item["sample"]
        videos = _video_embeddings(model, sample, device)
        for name, tensor in sample.tensors.items():
            if name != "pixel_values_videos":
                tensors[f"{n}.{name}"] = tensor.contiguous()
        if videos:
            tensors[f"{n}.{FEATURES}"] = torch.cat(videos).contiguous()
            tensors[f"{n}.{LENGTHS}"] = torch.tensor([len(v) for v in videos], dtype=torch.long)
        items.append({"stats": asdict(sample.stats), "text": sample.text, "shrunk": sample.shrunk,
                      "skipped": [note.to_dict() for note in item["skipped"]]})
    write_atomic(path, save(tensors, metadata={"format": str(FORMAT), "items": json.dumps(items)}))


def extract_features(model, dataset: TrainDataset, folder: str | Path, key: str, *, shard_size: int | None = None,
                     rank: int = 0, world: int = 1, autocast=nullcontext) -> tuple[list[Path], int]:
    """Write the shards of `dataset` that `folder` does not hold yet (this process's share: every `world`-th).

    Returns every shard's path and how many this call wrote. The model is put in eval mode and back.
    """
    shard_size = shard_size or SHARD_SIZE
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    paths = shard_paths(folder, key, dataset.records, shard_size)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    written = 0
    try:
        for number, path in enumerate(paths):
            if number % world != rank or path.is_file():
                continue
            start = number * shard_size
            with autocast():
                _write_shard(path, model, dataset, start, min(start + shard_size, len(dataset)), device)
            written += 1
    finally:
        model.train(was_training)
    return paths, written


class CachedFeatureDataset(torch.utils.data.Dataset):
    """The items `TrainDataset` gives, read from the shards `extract_features` wrote (no decoding, no encoder)."""

    def __init__(self, records, shards: list[Path], shard_size: int | None = None):
        self.records, self.shards, self.shard_size = records, shards, shard_size or SHARD_SIZE

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        from safetensors import safe_open

        shard, n = divmod(index, self.shard_size)
        with safe_open(str(self.shards[shard]), "pt") as handle:
            item = json.loads(handle.metadata()["items"])[n]
            prefix = f"{n}."
            tensors = {name[len(prefix):]: handle.get_tensor(name) for name in handle.keys() if name.startswith(prefix)}
        videos = len(tensors[LENGTHS]) if LENGTHS in tensors else 0
        sample = Sample(tensors, InputStats(**item["stats"]), item["text"], item["shrunk"], [None] * videos)
        return {"sample": sample, "record": self.records[index],
                "skipped": [SkipNote(**note) for note in item["skipped"]]}


def with_cached_features(inputs: dict) -> dict:
    """A batch read from the cache as model inputs: the embeddings go in as `mm_encoder_outputs` (as
    `VisionCache.swap_in` hands them), with the grids a video compressor cuts them by."""
    from vidlab.models.compressors import VideoFeatures

    inputs = dict(inputs)
    features, lengths = inputs.pop(FEATURES), inputs.pop(LENGTHS)
    inputs["mm_encoder_outputs"] = {"video": VideoFeatures(
        pooler_output=tuple(features.split(lengths.tolist())), video_grid_thw=inputs["video_grid_thw"],
        video_merge_sizes=inputs["video_merge_sizes"])}
    return inputs


def cached_dataset(config, dataset: TrainDataset, model, accelerator) -> CachedFeatureDataset:
    """`data.feature_cache` for a run: the missing shards extracted (shared among the processes), then read."""
    key = base_key(config)
    shard_size = SHARD_SIZE
    paths, written = extract_features(model, dataset, config.data.feature_cache, key, shard_size=shard_size,
                                      rank=accelerator.process_index, world=accelerator.num_processes,
                                      autocast=accelerator.autocast)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        print(f"feature cache {config.data.feature_cache}: {len(paths)} shard(s), {written} extracted now", flush=True)
    return CachedFeatureDataset(dataset.records, paths, shard_size)


__all__ = ["CachedFeatureDataset", "cached_dataset", "extract_features", "with_cached_features"]
