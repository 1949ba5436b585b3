"""Vision-encoder outputs kept per video, so a video asked about again skips the vision encoder.

The model turns a video's pixels into one embedding per merged patch (vision encoder, then
projector); DiffFP's mask and a video compressor (whose llamavid tokens depend on the question)
are applied after, so the embeddings depend only on the pixels, the model and its adapter. They
are kept under the video's key (`Sample.video_keys`: the clip's identity, the frames kept, the
grid and the processor) with the model's identity and active adapter, in a `BoundedCache` (bytes,
least recently used forgotten first). `generate` hands cached embeddings to the model as
`mm_encoder_outputs` instead of pixels. Thread-safe.
"""

from __future__ import annotations

from collections.abc import Hashable

import torch

from vidlab.bounded_cache import BoundedCache

DEFAULT_MAX_BYTES = 512 << 20


def _base(model):
    """The VideoLlama3ForConditionalGeneration under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def model_identity(model) -> tuple:
    """The model object and its active adapter: embeddings from one are not another's."""
    return id(model), str(getattr(model, "active_adapter", None))


def _tensor_bytes(embeddings: torch.Tensor) -> int:
    return embeddings.numel() * embeddings.element_size()


class VisionCache(BoundedCache[torch.Tensor]):
    """Projected vision embeddings per video key; at most `max_bytes` in all."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        super().__init__(max_bytes, _tensor_bytes)

    @torch.inference_mode()
    def swap_in(self, model, tensors: dict[str, torch.Tensor], video_keys: list[Hashable | None]) -> dict:
        """The batch's model inputs with the videos' pixels replaced by their embeddings: cached ones
        reused, the rest computed (in one call) and kept. Inputs without videos come back as they are."""
        if "pixel_values_videos" not in tensors or not video_keys:
            return tensors
        grids = tensors["video_grid_thw"]
        merges = tensors["video_merge_sizes"]
        pixels = tensors["pixel_values_videos"].split(grids.prod(-1).tolist())
        owner = model_identity(model)
        keys = [None if key is None else (owner, key) for key in video_keys]
        found = [None if key is None else self.get(key) for key in keys]
        missing = [i for i, embeddings in enumerate(found) if embeddings is None]
        self.misses += keys.count(None)  # a video without a key is never found
        if missing:
            outputs = _base(model).get_video_features(
                pixel_values_videos=torch.cat([pixels[i] for i in missing]),
                video_grid_thw=grids[missing],
                video_merge_sizes=merges[missing],
                return_dict=True,
            )
            for i, embeddings in zip(missing, outputs.pooler_output):
                found[i] = embeddings
                if keys[i] is not None:
                    self.put(keys[i], embeddings)
        from vidlab.models.compressors import VideoFeatures

        swapped = {k: v for k, v in tensors.items() if k != "pixel_values_videos"}
        # The grids travel with the embeddings: generation drops them from the inputs, and a video
        # compressor cuts the embeddings into frames by them.
        swapped["mm_encoder_outputs"] = {"video": VideoFeatures(pooler_output=tuple(found), video_grid_thw=grids,
                                                                video_merge_sizes=merges)}
        return swapped
