"""GRPO with verifiable rewards: sample a group of answers per prompt, reward them, push up the better ones.

For each prompt the video is decoded, encoded and run through the vision encoder once
(`policy.encode_prompt`); the G = `grpo.num_generations` answers are sampled in one batch that
shares those features, and the same features serve the policy's and the reference's forward.

The objective is TRL's GRPO (and its option names): per answer i of a group with rewards r,
    advantage A_i = (r_i - mean(r)) / (std(r) + 1e-4)   (scale_rewards "none": without the division)
    per token:  -min(ratio * A_i, clip(ratio, 1 - epsilon, 1 + epsilon_high) * A_i) + beta * KL
with ratio = exp(logp - logp_old) and KL = exp(ref - logp) - (ref - logp) - 1 (k3 estimator);
loss_type "grpo" averages each answer's tokens then the answers, "dr_grpo" sums the tokens over
G x max_completion_length (Dr. GRPO, no length bias). One optimisation pass per generation
(TRL's num_iterations = 1): logp_old is logp without gradient, so the ratio is 1 and the clip shows
in `clip_ratio` only once several passes are added.

Why not TRL's GRPOTrainer: it builds model inputs from raw prompts and images with the processor on
each call (re-encoding the video per rollout and for the reference) and knows neither vidlab's
encoder, whose settings must match chat and evaluation, nor the VideoLLaMA3 features it can share.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vidlab.training.config import GrpoSection
from vidlab.training.policy import (
    EncodedPrompt,
    answer_logps,
    answers_tensor,
    base_model,
    encode_prompt,
    reference_logps,
    rows_inputs,
)
from vidlab.training.rewards import reward_functions
from vidlab.training.rl_records import PromptRecord


def group_advantages(rewards: torch.Tensor, scale_rewards: str = "group") -> torch.Tensor:
    """Each answer's reward minus its group's mean, divided by the group's std (+1e-4) unless scale is "none".

    rewards: (groups, G). The std is the sample standard deviation (Bessel-corrected), as TRL's.
    """
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale_rewards == "none":
        return centred
    return centred / (rewards.std(dim=1, keepdim=True) + 1e-4)


@dataclass
class LossParts:
    loss: torch.Tensor
    kl: float  # mean per-token KL to the reference (0 without one)
    clip_ratio: float  # share of tokens whose ratio was clipped


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor | None, advantages: torch.Tensor,
              mask: torch.Tensor, *, beta: float, epsilon: float, epsilon_high: float | None, loss_type: str,
              max_completion_length: int) -> LossParts:
    """The clipped GRPO loss of one group's answers.

    Args:
        logps, old_logps, ref_logps: per-token log-probabilities (G, T) under the policy (with gradient),
            the policy that sampled, and the reference (None: beta is 0).
        advantages: (G,) one per answer.
        mask: (G, T) 1 on answer tokens.
    """
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon, 1 + (epsilon_high if epsilon_high is not None else epsilon))
    gain = advantages[:, None]
    per_token = -torch.min(ratio * gain, clipped * gain)
    kl = torch.zeros_like(per_token)
    if beta != 0 and ref_logps is not None:
        delta = ref_logps - logps
        # exp(d) - d - 1 written as expm1(d) - d: the same value, without losing the small KL of nearby
        # policies to float32 cancellation (exp(d) - 1 - d rounds to 0 for |d| below ~1e-4).
        kl = torch.expm1(delta) - delta
        per_token = per_token + beta * kl
    if loss_type == "dr_grpo":
        loss = (per_token * mask).sum() / (logps.shape[0] * max_completion_length)
    else:
        loss = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    tokens = mask.sum().clamp(min=1)
    was_clipped = ((ratio * gain) != (clipped * gain)).to(mask.dtype)
    return LossParts(loss, float((kl.detach() * mask).sum() / tokens), float((was_clipped * mask).sum() / tokens))


def _stop_ids(model, processor) -> set[int]:
    eos = base_model(model).generation_config.eos_token_id
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    ids.add(processor.tokenizer.eos_token_id)
    return ids


def _completion(row: list[int], stop_ids: set[int]) -> list[int]:
    """The answer's tokens up to and including its end token (trained on, as TRL does)."""
    for i, token in enumerate(row):
        if token in stop_ids:
            return row[: i + 1]
    return row


@torch.no_grad()
def sample_answers(model, processor, prompt: EncodedPrompt, count: int, generate_kwargs: dict) -> list[list[int]]:
    """`count` sampled answers to the prompt in one batch, sharing its vision features; dropout off."""
    unwrapped = getattr(model, "module", model)
    was_training = unwrapped.training
    unwrapped.eval()
    try:
        inputs = rows_inputs(prompt, count)
        pad = processor.tokenizer.pad_token_id
        config = base_model(model).config
        # An answer holding a video or image placeholder token would be read as one more picture in the forward.
        vision = [i for i in (getattr(config, "image_token_id", None), getattr(config, "video_token_id", None))
                  if i is not None]
        output = unwrapped.generate(**inputs, **generate_kwargs, pad_token_id=pad, use_cache=True,
                                    suppress_tokens=vision or None)
    finally:
        unwrapped.train(was_training)
    stop = _stop_ids(model, processor)
    return [_completion(row, stop) for row in output[:, prompt.length:].tolist()]


@dataclass
class GroupResult:
    """One prompt's group: what was sampled and how it scored (for the log and samples/)."""

    record: PromptRecord
    texts: list[str]
    rewards: dict[str, list[float]]  # per reward function, per answer
    total: list[float]
    advantages: list[float]
    lengths: list[int]
    loss: float
    kl: float
    clip_ratio: float

    def sample_row(self) -> dict:
        return {
            "id": self.record.id, "source": self.record.source,
            "prompt": " ".join(turn.text for turn in self.record.prompt.turns if turn.role == "user"),
            "reference": self.record.reference.answer, "answer_type": self.record.reference.answer_type,
            "answers": [{"text": text, "reward": total, "advantage": round(adv, 4), "tokens": n,
                         **{f"reward.{name}": values[i] for name, values in self.rewards.items()}}
                        for i, (text, total, adv, n) in enumerate(zip(self.texts, self.total, self.advantages,
                                                                      self.lengths))],
        }


class GrpoStep:
    """Rollout, reward and loss of one prompt at a time; the shared loop (rl_loop) steps the optimiser."""

    def __init__(self, settings: GrpoSection, processor, media_settings, max_length: int):
        self.settings = settings
        self.writes_samples = settings.log_completions
        self.processor = processor
        self.media_settings = media_settings
        self.max_length = max_length
        self.functions = reward_functions(settings.rewards, settings.format_pattern)
        self.weights = settings.reward_weights or [1.0] * len(settings.rewards)
        # Not GenerationOptions: it has no "all tokens" top_k, which is TRL's (and sampling's) default.
        self.generate_kwargs = {"max_new_tokens": settings.max_completion_length, "do_sample": True,
                                "temperature": settings.temperature, "top_p": settings.top_p,
                                "top_k": settings.top_k or 0}

    def prompt_length_limit(self) -> int:
        return max(self.max_length - self.settings.max_completion_length, 16)

    def encode(self, record: PromptRecord, model, device) -> EncodedPrompt:
        return encode_prompt(record, model, self.processor, self.media_settings, self.prompt_length_limit(), device)

    def run(self, model, reference, record: PromptRecord, prompt: EncodedPrompt, scale: float,
            backward) -> GroupResult:
        """One group: sample, reward, forward, backward(loss * scale). Returns what it measured."""
        s = self.settings
        answers = sample_answers(model, self.processor, prompt, s.num_generations, self.generate_kwargs)
        texts = [self.processor.tokenizer.decode(a, skip_special_tokens=True) for a in answers]
        rewards = {name: [float(fn(text, record.reference)) for text in texts] for name, fn in self.functions.items()}
        total = torch.tensor([sum(w * rewards[name][i] for w, name in zip(self.weights, rewards))
                              for i in range(len(texts))])
        advantages = group_advantages(total[None], s.scale_rewards)[0]
        ids, mask = answers_tensor(answers, self.processor.tokenizer.pad_token_id)
        ref = reference_logps(model, reference, prompt, ids, mask) if s.beta != 0 else None
        logps = answer_logps(model, prompt, ids, mask)
        parts = grpo_loss(logps, logps.detach(), ref, advantages.to(logps.device), mask.to(logps.device),
                          beta=s.beta, epsilon=s.epsilon, epsilon_high=s.epsilon_high, loss_type=s.loss_type,
                          max_completion_length=s.max_completion_length)
        backward(parts.loss * scale)
        return GroupResult(record, texts, rewards, total.tolist(), advantages.tolist(), [len(a) for a in answers],
                           float(parts.loss.detach()), parts.kl, parts.clip_ratio)

    @staticmethod
    def summary(results: list[GroupResult]) -> dict:
        """The step's numbers for log.jsonl and the progress bar."""
        answers = [t for r in results for t in r.total]
        row = {
            "loss": sum(r.loss for r in results) / len(results),
            "reward": sum(answers) / len(answers),
            "reward_std": sum(float(torch.tensor(r.total).std()) for r in results) / len(results),
            "completion_length": sum(n for r in results for n in r.lengths) / len(answers),
            "kl": sum(r.kl for r in results) / len(results),
            "clip_ratio": sum(r.clip_ratio for r in results) / len(results),
        }
        for name in results[0].rewards:
            values = [v for r in results for v in r.rewards[name]]
            row[f"rewards.{name}"] = sum(values) / len(values)
        return row
