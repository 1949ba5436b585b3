"""GRPO with verifiable rewards: sample a group of answers per prompt, reward them, push up the better ones.

For each prompt the video is decoded, encoded and run through the vision encoder once
(`policy.encode_prompt`); the G = `grpo.num_generations` answers are sampled in one batch that
shares those features, and the same features serve the policy's and the reference's forward.

The objective is TRL's GRPO (and its option names): per answer i of a group with rewards r,
    advantage A_i = (r_i - mean(r)) / (std(r) + 1e-4)   (scale_rewards "none": without the division)
    per token:  -min(ratio * A_i, clip(ratio, 1 - epsilon, 1 + epsilon_high) * A_i) + beta * KL
with ratio = exp(logp - logp_old) and KL = exp(ref - logp) - (ref - logp) - 1 (k3 estimator);
loss_type "grpo" averages each answer's tokens then the answers, "dr_grpo" sums the tokens over
G x max_completion_length (Dr. GRPO, no length bias). `num_iterations` passes train on each step's
answers (TRL's mu): with one, logp_old is logp without gradient (ratio 1, as TRL); with more,
logp_old is taken at sampling time, so from the second pass on the ratio moves and is clipped.
Length shaping: the `soft_overlong` reward (DAPO) and `mask_truncated_completions`. T-GRPO
(`temporal`, Video-R1): the prompt is also answered with its frames shuffled (no training on those
answers), and right answers gain `temporal_bonus` when ordered frames are answered right at least
`temporal_ratio` times as often as shuffled ones.

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
    shuffled_frames,
)
from vidlab.training.rewards import accuracy, reward_functions
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
    """One prompt's group: what was sampled, how it scored, and what its passes measured (for the log and samples/).

    The tensors (answers, loss mask, advantages, the sampling policy's and the reference's log-probabilities)
    are what each of the `num_iterations` passes trains on.
    """

    record: PromptRecord
    prompt: EncodedPrompt
    texts: list[str]
    rewards: dict[str, list[float]]  # per reward function, per answer
    total: list[float]
    advantages: list[float]
    lengths: list[int]
    truncated: list[bool]
    ids: torch.Tensor
    loss_mask: torch.Tensor
    old_logps: torch.Tensor | None  # None: one pass, the ratio's denominator is the pass's own logp (detached)
    ref_logps: torch.Tensor | None
    shuffled_accuracy: list[float] | None = None  # T-GRPO: the accuracy of the answers to shuffled frames
    temporal_applied: bool | None = None
    passes: list[LossParts] | None = None

    @property
    def loss(self) -> float:
        return sum(float(p.loss.detach()) for p in self.passes) / len(self.passes)

    @property
    def kl(self) -> float:
        return sum(p.kl for p in self.passes) / len(self.passes)

    @property
    def clip_ratio(self) -> float:
        return sum(p.clip_ratio for p in self.passes) / len(self.passes)

    def sample_row(self) -> dict:
        row = {
            "id": self.record.id, "source": self.record.source,
            "prompt": " ".join(turn.text for turn in self.record.prompt.turns if turn.role == "user"),
            "reference": self.record.reference.answer, "answer_type": self.record.reference.answer_type,
            "answers": [{"text": text, "reward": total, "advantage": round(adv, 4), "tokens": n,
                         **({"truncated": True} if cut else {}),
                         **{f"reward.{name}": values[i] for name, values in self.rewards.items()}}
                        for i, (text, total, adv, n, cut) in enumerate(zip(self.texts, self.total, self.advantages,
                                                                           self.lengths, self.truncated))],
        }
        if self.shuffled_accuracy is not None:
            row["shuffled_accuracy"] = self.shuffled_accuracy
            row["temporal_applied"] = self.temporal_applied
        return row


def temporal_bonus(ordered: list[float], shuffled: list[float], bonus: float, ratio: float) -> tuple[list[float], bool]:
    """T-GRPO's reward (Video-R1): when the group's accuracy on ordered frames is at least `ratio` x its
    accuracy on shuffled frames, each right answer (accuracy > 0.1) gets `bonus`; else nothing."""
    applied = sum(ordered) / len(ordered) >= ratio * (sum(shuffled) / len(shuffled))
    return [bonus if applied and acc > 0.1 else 0.0 for acc in ordered], applied


class GrpoStep:
    """Rollout (sample, reward, reference) and the passes of one prompt at a time; rl_loop steps the optimiser."""

    def __init__(self, settings: GrpoSection, processor, media_settings, max_length: int):
        self.settings = settings
        self.iterations = settings.num_iterations
        self.writes_samples = settings.log_completions
        self.processor = processor
        self.media_settings = media_settings
        self.max_length = max_length
        self.functions = reward_functions(settings.rewards, settings.format_pattern,
                                          max_completion_length=settings.max_completion_length,
                                          soft_punish_cache=settings.soft_punish_cache)
        self.weights = dict(zip(settings.rewards, settings.reward_weights or [1.0] * len(settings.rewards)))
        # Not GenerationOptions: it has no "all tokens" top_k, which is TRL's (and sampling's) default.
        self.generate_kwargs = {"max_new_tokens": settings.max_completion_length, "do_sample": True,
                                "temperature": settings.temperature, "top_p": settings.top_p,
                                "top_k": settings.top_k or 0}

    def prompt_length_limit(self) -> int:
        return max(self.max_length - self.settings.max_completion_length, 16)

    def encode(self, record: PromptRecord, model, device) -> EncodedPrompt:
        return encode_prompt(record, model, self.processor, self.media_settings, self.prompt_length_limit(), device)

    def _texts(self, answers: list[list[int]]) -> list[str]:
        return [self.processor.tokenizer.decode(a, skip_special_tokens=True) for a in answers]

    def rollout(self, model, reference, record: PromptRecord, prompt: EncodedPrompt) -> GroupResult:
        """Sample the group, reward it, and take what the passes compare against (no gradient)."""
        s = self.settings
        answers = sample_answers(model, self.processor, prompt, s.num_generations, self.generate_kwargs)
        texts = self._texts(answers)
        rewards = {name: [float(fn(text, record.reference, len(answer))) for text, answer in zip(texts, answers)]
                   for name, fn in self.functions.items()}
        shuffled_accuracy, applied = None, None
        if s.temporal and prompt.features:
            count = s.shuffled_num_generations or max(1, s.num_generations // 2)
            shuffled = self._texts(sample_answers(model, self.processor, shuffled_frames(prompt), count,
                                                  self.generate_kwargs))
            shuffled_accuracy = [accuracy(text, record.reference) for text in shuffled]
            rewards["temporal"], applied = temporal_bonus(rewards["accuracy"], shuffled_accuracy, s.temporal_bonus,
                                                          s.temporal_ratio)
        total = torch.tensor([sum(self.weights.get(name, 1.0) * values[i] for name, values in rewards.items())
                              for i in range(len(texts))])
        advantages = group_advantages(total[None], s.scale_rewards)[0]
        ids, mask = answers_tensor(answers, self.processor.tokenizer.pad_token_id)
        stop = _stop_ids(model, self.processor)
        truncated = [not a or a[-1] not in stop for a in answers]
        if s.mask_truncated_completions:  # DAPO: a cut answer says nothing about its end; it is not trained on
            mask = mask * torch.tensor([[0 if cut else 1] for cut in truncated], dtype=mask.dtype)
        ref = reference_logps(model, reference, prompt, ids, mask) if s.beta != 0 else None
        old = None
        if self.iterations > 1:  # the sampling policy's log-probabilities, for the ratio of the later passes
            with torch.no_grad():
                old = answer_logps(model, prompt, ids, mask)
        return GroupResult(record, prompt, texts, rewards, total.tolist(), advantages.tolist(),
                           [len(a) for a in answers], truncated, ids, mask, old, ref, shuffled_accuracy, applied, [])

    def update(self, model, group: GroupResult, scale: float, backward) -> None:
        """One pass over the group: forward with gradient, the clipped loss, backward(loss * scale)."""
        s = self.settings
        logps = answer_logps(model, group.prompt, group.ids, group.loss_mask)
        old = group.old_logps if group.old_logps is not None else logps.detach()
        parts = grpo_loss(logps, old, group.ref_logps, torch.tensor(group.advantages, device=logps.device),
                          group.loss_mask.to(logps.device), beta=s.beta, epsilon=s.epsilon,
                          epsilon_high=s.epsilon_high, loss_type=s.loss_type,
                          max_completion_length=s.max_completion_length)
        backward(parts.loss * scale)
        group.passes.append(LossParts(parts.loss.detach(), parts.kl, parts.clip_ratio))

    @staticmethod
    def summary(results: list[GroupResult]) -> dict:
        """The step's numbers for log.jsonl and the progress bar (loss, kl, clip_ratio: over the passes)."""
        answers = [t for r in results for t in r.total]
        row = {
            "loss": sum(r.loss for r in results) / len(results),
            "reward": sum(answers) / len(answers),
            "reward_std": sum(float(torch.tensor(r.total).std()) for r in results) / len(results),
            "completion_length": sum(n for r in results for n in r.lengths) / len(answers),
            "clipped_completions": sum(c for r in results for c in r.truncated) / len(answers),
            "kl": sum(r.kl for r in results) / len(results),
            "clip_ratio": sum(r.clip_ratio for r in results) / len(results),
        }
        for name in results[0].rewards:
            values = [v for r in results for v in r.rewards[name]]
            row[f"rewards.{name}"] = sum(values) / len(values)
        temporal = [r for r in results if r.shuffled_accuracy is not None]
        if temporal:
            row["rewards.accuracy_shuffled"] = sum(sum(r.shuffled_accuracy) / len(r.shuffled_accuracy)
                                                   for r in temporal) / len(temporal)
            row["temporal_applied"] = sum(r.temporal_applied for r in temporal) / len(temporal)
        return row
