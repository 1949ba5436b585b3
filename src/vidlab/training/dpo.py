"""DPO on chosen/rejected answers to one video and question: both answers share one encoding of the prompt.

Per pair, the prompt's video is decoded, encoded and run through the vision encoder once
(`policy.encode_prompt`); the chosen and the rejected answer are one batch of two rows sharing those
features, under the policy and under the reference (the base with its adapters off, or a frozen
copy for full fine-tuning), so the reference's log-probabilities cost one more LLM forward and no
vision encoder. The loss is TRL's DPOTrainer's (and its option names):
    logits = (chosen - rejected) - (ref_chosen - ref_rejected)      answers' summed log-probabilities
    sigmoid: -(1 - label_smoothing) * log sigmoid(beta * logits) - label_smoothing * log sigmoid(-beta * logits)
    ipo:     (logits - 1 / (2 * beta))^2, on log-probabilities averaged over each answer's tokens
An answer is trained on its tokens and the end-of-turn token, as SFT labels an assistant turn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vidlab.training.config import DpoSection
from vidlab.training.policy import EncodedPrompt, answer_logps, answers_tensor, encode_prompt, reference_logps
from vidlab.training.rl_records import PromptRecord

END_OF_TURN = "<|im_end|>"


@dataclass
class DpoLoss:
    loss: torch.Tensor  # mean over pairs
    chosen_rewards: torch.Tensor  # beta * (chosen - ref_chosen), per pair
    rejected_rewards: torch.Tensor


def dpo_loss(chosen: torch.Tensor, rejected: torch.Tensor, ref_chosen: torch.Tensor, ref_rejected: torch.Tensor, *,
             beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0) -> DpoLoss:
    """The DPO loss of pairs from their answers' log-probabilities (each (pairs,)) under policy and reference."""
    logits = (chosen - rejected) - (ref_chosen - ref_rejected)
    if loss_type == "ipo":
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        losses = -F.logsigmoid(beta * logits) * (1 - label_smoothing) - F.logsigmoid(-beta * logits) * label_smoothing
    return DpoLoss(losses.mean(), beta * (chosen - ref_chosen).detach(), beta * (rejected - ref_rejected).detach())


@dataclass
class PairResult:
    prompt: EncodedPrompt
    ids: torch.Tensor
    mask: torch.Tensor
    ref: torch.Tensor  # the reference's sequence log-probabilities of chosen and rejected
    loss: float = 0.0
    chosen_reward: float = 0.0
    rejected_reward: float = 0.0


class DpoStep:
    """The reference's log-probabilities (rollout), then forward and backward (update) of one pair at a
    time; the shared loop (rl_loop) steps the optimiser. One pass per pair."""

    writes_samples = False
    iterations = 1

    def __init__(self, settings: DpoSection, processor, media_settings, max_length: int):
        self.settings = settings
        self.processor = processor
        self.media_settings = media_settings
        self.max_length = max_length

    def answer_ids(self, text: str) -> list[int]:
        tokenizer = self.processor.tokenizer
        end = tokenizer.convert_tokens_to_ids(END_OF_TURN)
        end = end if isinstance(end, int) and end != tokenizer.unk_token_id else tokenizer.eos_token_id
        return tokenizer(text, add_special_tokens=False).input_ids + [end]

    def encode(self, record: PromptRecord, model, device) -> EncodedPrompt:
        answers = max(len(self.answer_ids(record.chosen)), len(self.answer_ids(record.rejected)))
        return encode_prompt(record, model, self.processor, self.media_settings,
                             max(self.max_length - answers, 16), device)

    def sequence_logps(self, per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        total = per_token.sum(1)
        if self.settings.loss_type == "ipo":  # IPO compares average log-probabilities (as TRL)
            return total / mask.to(total.device).sum(1)
        return total

    def rollout(self, model, reference, record: PromptRecord, prompt: EncodedPrompt) -> PairResult:
        ids, mask = answers_tensor([self.answer_ids(record.chosen), self.answer_ids(record.rejected)],
                                   self.processor.tokenizer.pad_token_id)
        ref = self.sequence_logps(reference_logps(model, reference, prompt, ids, mask), mask)
        return PairResult(prompt, ids, mask, ref)

    def update(self, model, pair: PairResult, scale: float, backward) -> None:
        s = self.settings
        policy = self.sequence_logps(answer_logps(model, pair.prompt, pair.ids, pair.mask), pair.mask)
        ref = pair.ref.to(policy.device)
        out = dpo_loss(policy[:1], policy[1:], ref[:1], ref[1:], beta=s.beta, loss_type=s.loss_type,
                       label_smoothing=s.label_smoothing)
        backward(out.loss * scale)
        pair.loss = float(out.loss.detach())
        pair.chosen_reward, pair.rejected_reward = float(out.chosen_rewards[0]), float(out.rejected_rewards[0])

    @staticmethod
    def summary(results: list[PairResult]) -> dict:
        """TRL's DPO log names: rewards/chosen, rewards/rejected, rewards/accuracies, rewards/margins."""
        n = len(results)
        return {
            "loss": sum(r.loss for r in results) / n,
            "rewards/chosen": sum(r.chosen_reward for r in results) / n,
            "rewards/rejected": sum(r.rejected_reward for r in results) / n,
            "rewards/accuracies": sum(r.chosen_reward > r.rejected_reward for r in results) / n,
            "rewards/margins": sum(r.chosen_reward - r.rejected_reward for r in results) / n,
        }
