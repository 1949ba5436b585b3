"""A prompt encoded once, and the log-probabilities of several answers to it, for GRPO and DPO.

A video makes reinforcement tuning expensive in one place: a prompt is answered G times (GRPO) or
judged on two answers (DPO), and again by the reference model. Here a prompt's media are decoded
once (`vidlab.inputs.load_media`), encoded once (`vidlab.inputs.encode`), and its vision features
computed once; every row (each sampled answer, the reference's forward) gets the same feature
tensors, so the vision encoder runs once per prompt. Only the LLM trains under these methods, so
the features of the policy and of the reference (the base without adapters) are the same.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch

from vidlab.inputs import TEXT_KEYS, Sample, encode, load_media
from vidlab.models.logits import logits_at
from vidlab.settings import MediaSettings
from vidlab.training.rl_records import PromptRecord


def base_model(model):
    """The VideoLlama3ForConditionalGeneration under DDP and peft wrappers."""
    model = getattr(model, "module", model)
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@dataclass
class EncodedPrompt:
    """A prompt's model inputs for one row, its vision features computed (no pixels left)."""

    sample: Sample
    tensors: dict  # one row: input_ids (1, P), attention_mask (1, P), vision tensors, mm_encoder_outputs
    features: tuple  # per video, the projector's output (no gradient: the vision side is frozen)

    @property
    def length(self) -> int:
        return int(self.tensors["input_ids"].shape[1])


def encode_prompt(record: PromptRecord, model, processor, settings: MediaSettings, max_length: int | None,
                  device: torch.device) -> EncodedPrompt:
    """Decode and encode the record's prompt, and run the vision encoder on its videos: once."""
    media = load_media(record.prompt, processor, settings, data_root=record.data_root)
    sample = encode(record.prompt, media, processor, settings, max_length=max_length)
    tensors = {k: (v[None] if k in TEXT_KEYS else v).to(device) for k, v in sample.tensors.items()}
    features: tuple = ()
    if "pixel_values_videos" in tensors:
        base = base_model(model)
        with torch.no_grad():
            output = base.get_video_features(
                pixel_values_videos=tensors.pop("pixel_values_videos").to(base.dtype),
                video_grid_thw=tensors["video_grid_thw"], video_merge_sizes=tensors["video_merge_sizes"],
                return_dict=True,
            )
        features = tuple(output.pooler_output)
    if "pixel_values" in tensors:
        tensors["pixel_values"] = tensors["pixel_values"].to(base_model(model).dtype)
    return EncodedPrompt(sample, tensors, features)


def rows_inputs(prompt: EncodedPrompt, rows: int) -> dict:
    """The prompt's model inputs repeated for `rows` rows, sharing its vision features (no new encoder call)."""
    from vidlab.models.compressors import VideoFeatures

    out = {}
    for key, tensor in prompt.tensors.items():
        if key in ("input_ids", "attention_mask"):
            out[key] = tensor.repeat(rows, 1)
        else:  # per-video and per-image tensors follow the rows' videos in order
            out[key] = torch.cat([tensor] * rows)
    if prompt.features:
        grids, merges = out["video_grid_thw"], out["video_merge_sizes"]
        out["mm_encoder_outputs"] = {"video": VideoFeatures(pooler_output=prompt.features * rows,
                                                            video_grid_thw=grids, video_merge_sizes=merges)}
    return out


def shuffled_frames(prompt: EncodedPrompt, generator: torch.Generator | None = None) -> EncodedPrompt:
    """The prompt with each video's frames in a random order (T-GRPO's contrast), from its computed features.

    The vision encoder attends within a frame only, so shuffling a video's per-frame feature blocks is
    what encoding shuffled frames gives, without running the encoder again. The prompt's text (the frames'
    timestamps included) stays as it is, as in Video-R1, which shuffles the frames after sampling them.
    A video of several frames never keeps its order (an identity draw is rotated by one frame).
    """
    if not prompt.features:
        return prompt
    grids, merges = prompt.tensors["video_grid_thw"], prompt.tensors["video_merge_sizes"]
    features, orders = [], []
    offset = 0
    for feature, (frames, height, width), merge in zip(prompt.features, grids.tolist(), merges.tolist()):
        per_frame = height * width // (merge * merge)
        order = torch.randperm(frames, generator=generator)
        if frames > 1 and bool((order == torch.arange(frames)).all()):
            order = order.roll(1)
        index = (order[:, None] * per_frame + torch.arange(per_frame)[None]).reshape(-1).to(feature.device)
        features.append(feature[index])
        orders.append(index + offset)
        offset += feature.shape[0]
    tensors = dict(prompt.tensors)
    mask = tensors.get("video_compression_mask")
    if mask is not None and mask.shape[0] == offset:  # DiffFP's kept tokens travel with their frames
        tensors["video_compression_mask"] = mask[torch.cat(orders).to(mask.device)]
    return EncodedPrompt(prompt.sample, tensors, tuple(features))


def answers_tensor(answers: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Answers' token ids right-padded into (ids, mask), each (rows, longest answer)."""
    longest = max(1, max(len(a) for a in answers))
    ids = torch.full((len(answers), longest), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(answers), longest), dtype=torch.long)
    for row, answer in enumerate(answers):
        ids[row, : len(answer)] = torch.tensor(answer, dtype=torch.long)
        mask[row, : len(answer)] = 1
    return ids, mask


def answer_logps(model, prompt: EncodedPrompt, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token log-probabilities (rows, answer length) of each answer after the prompt (0 where masked)."""
    rows = ids.shape[0]
    inputs = rows_inputs(prompt, rows)
    device = inputs["input_ids"].device
    ids, mask = ids.to(device), mask.to(device)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], ids], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], mask], dim=1)
    # The output head runs only at the last answer-length + 1 positions (the logits at t predict token t + 1):
    # at every position the native model's logits would be rows x prompt tokens x the 152k vocabulary.
    with logits_at(model, ids.shape[1] + 1):
        logits = model(**inputs, use_cache=False).logits
    scores = logits[:, :-1].float()
    logps = torch.gather(scores.log_softmax(-1), 2, ids[..., None]).squeeze(-1)
    return logps * mask


@contextmanager
def reference_of(model, reference):
    """The reference model: a frozen copy given (full fine-tuning), else the model with its adapters off."""
    if reference is not None:
        yield reference
        return
    unwrapped = getattr(model, "module", model)
    with unwrapped.disable_adapter() if hasattr(unwrapped, "disable_adapter") else nullcontext():
        yield unwrapped


def reference_logps(model, reference, prompt: EncodedPrompt, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token log-probabilities of the answers under the reference model (no gradient, dropout off)."""
    with torch.no_grad(), reference_of(model, reference) as ref:
        was_training = ref.training
        ref.eval()
        try:
            return answer_logps(ref, prompt, ids, mask)
        finally:
            ref.train(was_training)
