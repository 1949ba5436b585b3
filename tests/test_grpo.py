"""Methods grpo and dpo: rewards, advantage and loss arithmetic by hand, the LoRA reference, one video
encoding per group, short runs on the tiny model that log, save and resume exactly."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidlab import train
from vidlab.data.synthetic import Scene, write_scene
from vidlab.training.config import ConfigError, load_config
from vidlab.training.dpo import dpo_loss
from vidlab.training.grpo import group_advantages, grpo_loss
from vidlab.training.rewards import Reference, accuracy, format_reward, infer_answer_type, span_iou

SCENES = [("circle", "red", "left"), ("square", "blue", "right"), ("triangle", "green", "up"),
          ("circle", "yellow", "down")]
QUESTION = "<video>\nWhich direction does the shape move?"


@pytest.fixture(scope="module")
def direction_data(tmp_path_factory) -> Path:
    """4 clips; grpo.jsonl asks their direction (one-word answers); dpo.jsonl prefers it to "nothing moves"."""
    root = tmp_path_factory.mktemp("rl")
    grpo, dpo = [], []
    for i, (shape, colour, direction) in enumerate(SCENES):
        write_scene(root / f"v{i}.mp4", Scene(shape=shape, colour=colour, direction=direction, size=56, seconds=2,
                                             fps=4))
        grpo.append({"id": f"v{i}", "video": [f"v{i}.mp4"], "conversations": [
            {"from": "human", "value": QUESTION}, {"from": "gpt", "value": direction}]})
        dpo.append({"id": f"p{i}", "video": [f"v{i}.mp4"], "conversations": [{"from": "human", "value": QUESTION}],
                    "chosen": direction, "rejected": "nothing moves"})
    (root / "grpo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in grpo))
    (root / "dpo.jsonl").write_text("".join(json.dumps(r) + "\n" for r in dpo))
    return root


def rl_config(model_dir: Path, data: Path, out: Path, method: str, *extra: str):
    return load_config(None, [
        f"model.path={model_dir}", f"data.train=[{data / (method + '.jsonl')}]", f"output.dir={out}",
        f"method={method}", "data.workers=0", "data.max_frames=4", "learning_rates.llm=0.01", "lora.r=8",
        "lora.alpha=16", "train.batch_size=2", "train.max_steps=2", "optim.warmup_ratio=0",
        "optim.scheduler=constant", "output.log_steps=1", "output.tensorboard=false", "output.progress=false",
        "output.save_steps=100", "train.seed=5", "grpo.num_generations=4", "grpo.max_completion_length=4", *extra,
    ])


# --- rewards -----------------------------------------------------------------------------------


@pytest.mark.parametrize("answer, kind", [("B", "choice"), ("(C)", "choice"), ("D. a red cat", "choice"),
                                          ("Yes", "yes_no"), ("no.", "yes_no"), ("42", "number"),
                                          ("3.5", "number"), ("[2.0, 7.5]", "span"), ("12 - 20 seconds", "span"),
                                          ("left", "exact"), ("A red circle", "exact")])
def test_answer_types_are_inferred_from_the_reference(answer, kind):
    assert infer_answer_type(answer) == kind


@pytest.mark.parametrize("completion, reference, kind, expected", [
    ("B", "B", "choice", 1.0), ("(B) the dog", "B", "choice", 1.0), ("The answer is C.", "B", "choice", 0.0),
    ("<think>hmm</think><answer>B</answer>", "(B)", "choice", 1.0),
    ("Yes, it does.", "yes", "yes_no", 1.0), ("No", "yes", "yes_no", 0.0),
    ("There are 3 cats", "3", "number", 1.0), ("3.01", "3", "number", 0.0),
    ("Left.", "left", "exact", 1.0), ("the left", "left", "exact", 1.0), ("left up", "left", "exact", 0.0),
    ("[0, 10]", "[5, 15]", "span", 5 / 15), ("from 5 to 15", "5 - 15", "span", 1.0), ("never", "[1, 2]", "span", 0.0),
])
def test_accuracy_checks_each_answer_type(completion, reference, kind, expected):
    assert accuracy(completion, Reference(reference, kind)) == pytest.approx(expected)


def test_format_reward_and_span_iou():
    reward = format_reward(r"<think>.*?</think>\s*<answer>.*?</answer>")
    ref = Reference("B", "choice")
    assert reward("<think>a\nb</think>\n<answer>B</answer>", ref) == 1.0
    assert reward("<answer>B</answer>", ref) == 0.0
    assert span_iou((0, 2), (1, 3)) == pytest.approx(1 / 3) and span_iou((0, 1), (2, 3)) == 0.0


# --- advantages and losses by hand -------------------------------------------------------------


def test_group_advantages_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    std = math.sqrt(4 * 0.25 / 3)  # Bessel-corrected, as TRL
    up, down = 0.5 / (std + 1e-4), -0.5 / (std + 1e-4)
    assert torch.allclose(group_advantages(rewards), torch.tensor([[up, down, down, up], [0.0] * 4]))
    assert torch.allclose(group_advantages(rewards, "none"), torch.tensor([[0.5, -0.5, -0.5, 0.5], [0.0] * 4]))


def test_grpo_loss_clips_normalises_and_adds_kl_by_hand():
    # Two answers, two token slots; the second answer has one token. Ratios 1.5, 0.9 | 0.5, (masked).
    old = torch.zeros(2, 2)
    logps = torch.log(torch.tensor([[1.5, 0.9], [0.5, 7.0]]))
    advantages = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[1, 1], [1, 0]])
    common = {"epsilon": 0.2, "epsilon_high": None, "max_completion_length": 4}
    # Per token: -min(r A, clip(r, 0.8, 1.2) A): -1.2, -0.9 | +0.8.
    grpo = grpo_loss(logps, old, None, advantages, mask, beta=0.0, loss_type="grpo", **common)
    assert float(grpo.loss) == pytest.approx(((-1.2 - 0.9) / 2 + 0.8) / 2)
    assert grpo.clip_ratio == pytest.approx(2 / 3) and grpo.kl == 0.0
    dr = grpo_loss(logps, old, None, advantages, mask, beta=0.0, loss_type="dr_grpo", **common)
    assert float(dr.loss) == pytest.approx((-1.2 - 0.9 + 0.8) / (2 * 4))
    wider = grpo_loss(logps, old, None, advantages, mask, beta=0.0, loss_type="grpo", epsilon=0.2, epsilon_high=0.6,
                      max_completion_length=4)
    assert float(wider.loss) == pytest.approx(((-1.5 - 0.9) / 2 + 0.8) / 2)
    # The reference is ln 2 above the policy on every token: k3 KL = e^ln2 - ln2 - 1 = 1 - ln 2 per token.
    kl = grpo_loss(logps, old, logps + math.log(2), advantages, mask, beta=0.1, loss_type="grpo", **common)
    assert kl.kl == pytest.approx(1 - math.log(2))
    assert float(kl.loss) == pytest.approx(float(grpo.loss) + 0.1 * (1 - math.log(2)))


def test_a_small_kl_survives_float32():
    logps = torch.zeros(1, 1)
    out = grpo_loss(logps, logps, logps + 1e-4, torch.zeros(1), torch.ones(1, 1), beta=1.0, epsilon=0.2,
                    epsilon_high=None, loss_type="grpo", max_completion_length=1)
    assert out.kl == pytest.approx(0.5e-8, rel=1e-3)  # d^2 / 2


def test_grpo_gradient_is_the_advantage_over_the_answer_length():
    logps = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -0.2, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    advantages = torch.tensor([0.7, -0.7])
    out = grpo_loss(logps, logps.detach(), None, advantages, mask, beta=0.0, epsilon=0.2, epsilon_high=None,
                    loss_type="grpo", max_completion_length=3)
    out.loss.backward()
    # ratio = 1: d/dlogp of -A * ratio is -A, averaged over the answer's tokens and over the 2 answers.
    expected = torch.tensor([[-0.7 / 3] * 3, [0.7 / 2, 0.7 / 2, 0.0]]) / 2
    assert torch.allclose(logps.grad, expected)


def test_dpo_loss_by_hand():
    chosen, rejected = torch.tensor([-3.0, -1.0]), torch.tensor([-4.0, -0.5])
    ref_chosen, ref_rejected = torch.tensor([-3.5, -1.0]), torch.tensor([-3.5, -1.0])
    beta = 0.5
    logits = [(-3.0 + 4.0) - 0.0, (-1.0 + 0.5) - 0.0]  # (chosen - rejected) - (ref_chosen - ref_rejected)

    def log_sigmoid(x):
        return -math.log(1 + math.exp(-x))

    out = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=beta)
    assert float(out.loss) == pytest.approx(sum(-log_sigmoid(beta * z) for z in logits) / 2)
    assert out.chosen_rewards.tolist() == pytest.approx([0.25, 0.0])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.25, 0.25])
    smooth = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=beta, label_smoothing=0.1)
    assert float(smooth.loss) == pytest.approx(
        sum(-0.9 * log_sigmoid(beta * z) - 0.1 * log_sigmoid(-beta * z) for z in logits) / 2)
    ipo = dpo_loss(chosen, rejected, ref_chosen, ref_rejected, beta=beta, loss_type="ipo")
    assert float(ipo.loss) == pytest.approx(sum((z - 1 / (2 * beta)) ** 2 for z in logits) / 2)


# --- config ------------------------------------------------------------------------------------


def test_config_sections_and_their_checks(tiny_model_dir, direction_data, tmp_path):
    config = rl_config(tiny_model_dir, direction_data, tmp_path / "a", "grpo", "grpo.max_completion_length=9")
    assert config.weights == "lora" and config.grpo.max_completion_length == 9
    assert "grpo:" in config.to_yaml() and "dpo:" not in config.to_yaml()
    sft = load_config(None, [f"model.path={tiny_model_dir}", f"data.train=[{direction_data / 'grpo.jsonl'}]",
                             f"output.dir={tmp_path / 'b'}", "learning_rates.llm=0.001"])
    assert "grpo:" not in sft.to_yaml()  # SFT configs (and their checkpoints) are as before
    with pytest.raises(ConfigError, match="learning_rates: method grpo trains the LLM only.*learning_rates.projector"):
        rl_config(tiny_model_dir, direction_data, tmp_path / "c", "grpo", "learning_rates.projector=0.001")
    with pytest.raises(ConfigError, match="grpo.reward_weights: 1 weights for 2 rewards"):
        rl_config(tiny_model_dir, direction_data, tmp_path / "d", "grpo", "grpo.rewards=[accuracy, format]",
                  "grpo.reward_weights=[1.0]")
    with pytest.raises(ConfigError, match="learning_rates.llm: method lora"):
        rl_config(tiny_model_dir, direction_data, tmp_path / "e", "dpo", "learning_rates.llm=null",
                  "learning_rates.projector=0.1")


def test_records_of_both_layouts(tmp_path, direction_data):
    from vidlab.training.rl_records import load_prompt_records

    hound = tmp_path / "hound.jsonl"  # LLaVA-Hound's DPO pairs, in their own field names
    shutil.copy(direction_data / "v0.mp4", tmp_path / "v0.mp4")
    hound.write_text(json.dumps({"id": "h1", "video": "v0.mp4", "prompt": "Where does it go?", "chosen": "left",
                                 "rejected": "up", "chosen_score": 5, "rejected_score": 2}) + "\n"
                     + json.dumps({"id": "h2", "video": "v0.mp4", "prompt": "Where?", "chosen": "left"}) + "\n")
    records, skipped = load_prompt_records([hound], None, "dpo")
    assert [r.id for r in records] == ["h1"] and records[0].chosen == "left" and records[0].rejected == "up"
    assert records[0].prompt.turns[-1].role == "user" and len(records[0].prompt.media) == 1
    assert len(skipped) == 1 and '"chosen" and "rejected"' in skipped[0].reason
    no_answer = tmp_path / "open.jsonl"
    no_answer.write_text(json.dumps({"video": ["v0.mp4"], "answer_type": "choice",
                                     "conversations": [{"from": "human", "value": QUESTION}]}) + "\n")
    records, skipped = load_prompt_records([no_answer, direction_data / "grpo.jsonl"], None, "grpo")
    assert len(records) == 4 and len(skipped) == 1 and "no reference answer" in skipped[0].reason
    assert records[0].reference == Reference("left", "exact") and records[0].prompt.turns[-1].role == "user"


# --- the model side ----------------------------------------------------------------------------


def _prompt_record(direction_data: Path):
    from vidlab.training.rl_records import load_prompt_records

    records, _ = load_prompt_records([direction_data / "grpo.jsonl"], None, "grpo")
    return records[0]


def test_lora_reference_is_the_base_model(tiny_model_dir, direction_data, tmp_path):
    from vidlab.models import load_model
    from vidlab.training.model import load_for_training
    from vidlab.training.policy import answer_logps, answers_tensor, encode_prompt, reference_logps

    config = rl_config(tiny_model_dir, direction_data, tmp_path / "r", "grpo")
    model, processor = load_for_training(config.as_weights_config(), torch.device("cpu"), "no")
    with torch.no_grad():  # adapters that change the model (peft starts lora_B at zero)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    base, _ = load_model(tiny_model_dir, device="cpu")
    record = _prompt_record(direction_data)
    settings = config.data.media_settings()
    ids, mask = answers_tensor([[5, 9, 11], [7]], processor.tokenizer.pad_token_id)
    prompt = encode_prompt(record, model, processor, settings, None, torch.device("cpu"))
    with torch.no_grad():
        adapted = answer_logps(model.eval(), prompt, ids, mask)
        plain = answer_logps(base, encode_prompt(record, base, processor, settings, None, torch.device("cpu")), ids,
                             mask)
    reference = reference_logps(model, None, prompt, ids, mask)
    assert torch.allclose(reference, plain, atol=1e-5)
    assert not torch.allclose(adapted, plain, atol=1e-3)
    assert (reference[1, 1:] == 0).all()  # masked slots carry nothing


def test_reference_of_a_continued_adapter_is_the_adapted_start(tiny_model_dir, direction_data, tmp_path):
    from vidlab.models import load_model
    from vidlab.training.model import load_for_training
    from vidlab.training.policy import answer_logps, answers_tensor, encode_prompt, reference_logps
    from vidlab.training.rl_loop import _reference_copy

    start, processor = load_for_training(rl_config(tiny_model_dir, direction_data, tmp_path / "s", "grpo")
                                         .as_weights_config(), torch.device("cpu"), "no")
    with torch.no_grad():
        for name, param in start.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    start.save_pretrained(tmp_path / "sft-adapter")
    adapter = tmp_path / "sft-adapter"
    config = rl_config(tiny_model_dir, direction_data, tmp_path / "r", "grpo", f"model.adapter={adapter}")
    model, _ = load_for_training(config.as_weights_config(), torch.device("cpu"), "no")
    reference = _reference_copy(model, config)
    with torch.no_grad():  # the run moves away from its start
        for name, param in model.named_parameters():
            if "lora_A" in name:
                param.add_(0.3)
    adapted, _ = load_model(tiny_model_dir, adapter=tmp_path / "sft-adapter", device="cpu")
    record, settings = _prompt_record(direction_data), config.data.media_settings()
    ids, mask = answers_tensor([[5, 9, 11]], processor.tokenizer.pad_token_id)
    prompt = encode_prompt(record, model, processor, settings, None, torch.device("cpu"))
    with torch.no_grad():
        expected = answer_logps(adapted, encode_prompt(record, adapted, processor, settings, None,
                                                       torch.device("cpu")), ids, mask)
    assert torch.allclose(reference_logps(model, reference, prompt, ids, mask), expected, atol=1e-5)


def test_a_grpo_update_raises_the_rewarded_answer(tiny_model_dir, direction_data, tmp_path):
    from vidlab.training.model import load_for_training
    from vidlab.training.policy import answer_logps, answers_tensor, encode_prompt

    config = rl_config(tiny_model_dir, direction_data, tmp_path / "u", "grpo")
    model, processor = load_for_training(config.as_weights_config(), torch.device("cpu"), "no")
    prompt = encode_prompt(_prompt_record(direction_data), model, processor, config.data.media_settings(), None,
                           torch.device("cpu"))
    ids, mask = answers_tensor([[5, 9, 11], [7, 8], [20, 21, 22], [30]], processor.tokenizer.pad_token_id)
    advantages = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))[0]
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    before = answer_logps(model, prompt, ids, mask)
    grpo_loss(before, before.detach(), None, advantages, mask, beta=0.0, epsilon=0.2, epsilon_high=None,
              loss_type="grpo", max_completion_length=3).loss.backward()
    optimizer.step()
    with torch.no_grad():
        after = answer_logps(model, prompt, ids, mask)
    change = (after - before.detach()).sum(1) / mask.sum(1)
    assert change[0] > 0 and (change[1:] < 0).all()


def test_video_is_decoded_and_encoded_once_per_group(tiny_model_dir, direction_data, tmp_path, monkeypatch):
    from transformers.models.video_llama_3 import modeling_video_llama_3 as native

    import vidlab.training.policy as policy

    calls = {"load_media": 0, "vision": 0}
    load_media, vision_forward = policy.load_media, native.VideoLlama3VisionModel.forward

    def counted_load(*args, **kwargs):
        calls["load_media"] += 1
        return load_media(*args, **kwargs)

    def counted_vision(self, *args, **kwargs):
        calls["vision"] += 1
        return vision_forward(self, *args, **kwargs)

    monkeypatch.setattr(policy, "load_media", counted_load)
    monkeypatch.setattr(native.VideoLlama3VisionModel, "forward", counted_vision)
    # 2 steps x 2 prompts, each answered 4 times (and twice more with shuffled frames, T-GRPO), with a KL
    # reference and two passes per step: 4 decodes and 4 encoder runs in all.
    result = train(rl_config(tiny_model_dir, direction_data, tmp_path / "count", "grpo", "grpo.beta=0.1",
                             "grpo.temporal=true", "grpo.num_iterations=2"))
    assert calls == {"load_media": 4, "vision": 4}
    assert {"rewards.temporal", "rewards.accuracy_shuffled", "temporal_applied"} <= set(result.log[-1])
    samples = tmp_path / "count" / "samples" / "step-000002.jsonl"
    step = [json.loads(line) for line in samples.read_text().splitlines()]
    assert all(len(row["shuffled_accuracy"]) == 2 and "reward.temporal" in row["answers"][0] for row in step)


def test_grpo_run_logs_rewards_writes_samples_and_saves(tiny_model_dir, direction_data, tmp_path):
    out = tmp_path / "grpo"
    result = train(rl_config(tiny_model_dir, direction_data, out, "grpo", "grpo.rewards=[accuracy, format]",
                             "grpo.reward_weights=[1.0, 0.5]"))
    assert result.steps == 2 and [row["step"] for row in result.log] == [1, 2]
    for row in result.log:
        assert {"loss", "reward", "reward_std", "rewards.accuracy", "rewards.format", "kl", "completion_length",
                "clip_ratio"} <= set(row)
        assert 0 < row["completion_length"] <= 4
    step = [json.loads(line) for line in (out / "samples" / "step-000002.jsonl").read_text().splitlines()]
    assert len(step) == 2 and all(len(row["answers"]) == 4 for row in step)
    assert all(row["reference"] in ("left", "right", "up", "down") and row["answer_type"] == "exact" for row in step)
    answer = step[0]["answers"][0]
    assert answer["reward"] == pytest.approx(answer["reward.accuracy"] + 0.5 * answer["reward.format"])
    assert (out / "adapter_config.json").is_file() and (out / "train_result.json").is_file()
    assert json.loads((out / "train_result.json").read_text())["method"] == "grpo"


def test_grpo_resume_repeats_the_run(tiny_model_dir, direction_data, tmp_path):
    settings = ("train.max_steps=4", "output.save_steps=2", "output.save_total_limit=null", "grpo.beta=0.1",
                "grpo.scale_rewards=none", "lora.dropout=0.1")
    whole = tmp_path / "whole"
    train(rl_config(tiny_model_dir, direction_data, whole, "grpo", *settings))
    broken = tmp_path / "broken"  # the run as it was at its step-2 checkpoint
    shutil.copytree(whole, broken)
    shutil.rmtree(broken / "checkpoints" / "step-000004")
    for name in ("adapter_model.safetensors", "train_result.json", "samples/step-000003.jsonl",
                 "samples/step-000004.jsonl"):
        (broken / name).unlink()
    train(rl_config(tiny_model_dir, direction_data, broken, "grpo", *settings), resume=True)
    def rows(run: Path) -> list[dict]:
        return [{k: v for k, v in json.loads(line).items() if k != "prompts_per_s"}
                for line in (run / "log.jsonl").read_text().splitlines()]

    assert [row["step"] for row in rows(broken)] == [1, 2, 3, 4]
    for mine, theirs in zip(rows(broken), rows(whole)):
        assert mine == pytest.approx(theirs, rel=1e-5)
    same = "samples/step-000004.jsonl"  # the same answers sampled again: the RNG resumed too
    assert (broken / same).read_text() == (whole / same).read_text()
    a, b = load_file(str(whole / "adapter_model.safetensors")), load_file(str(broken / "adapter_model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_dpo_run_learns_the_chosen_answers(tiny_model_dir, direction_data, tmp_path):
    out = tmp_path / "dpo"
    result = train(rl_config(tiny_model_dir, direction_data, out, "dpo", "train.max_steps=6", "dpo.beta=0.5"))
    margins = [row["rewards/margins"] for row in result.log]
    assert len(margins) == 6 and margins[0] == pytest.approx(0.0, abs=1e-6)  # the first step: policy = reference
    assert margins[-1] > 0.5 and result.log[-1]["rewards/accuracies"] == 1.0
    assert result.log[-1]["loss"] < math.log(2) - 0.1
    assert (out / "adapter_model.safetensors").is_file()


# --- length shaping, several passes, T-GRPO ------------------------------------------------------


def test_soft_overlong_punishment_by_hand():
    from vidlab.training.rewards import reward_functions, soft_overlong_punishment

    penalty = soft_overlong_punishment(10, 4)  # free up to 6 tokens, then -1/4 per token, -1 from 10 on
    assert [penalty(n) for n in (1, 6, 7, 8, 10, 11)] == [0.0, 0.0, -0.25, -0.5, -1.0, -1.0]
    functions = reward_functions(["accuracy", "soft_overlong"], max_completion_length=10, soft_punish_cache=4)
    assert functions["soft_overlong"]("left", Reference("left", "exact"), 9) == -0.75
    assert functions["accuracy"]("left", Reference("left", "exact"), 9) == 1.0


def test_temporal_bonus_by_hand():
    from vidlab.training.grpo import temporal_bonus

    # Ordered 3/4 right, shuffled 1/2: 0.75 >= 0.8 x 0.5, so each right answer gains 0.3.
    assert temporal_bonus([1.0, 0.0, 1.0, 1.0], [1.0, 0.0], 0.3, 0.8) == ([0.3, 0.0, 0.3, 0.3], True)
    # Ordered 1/4, shuffled 2/2: the frames' order did not help, nothing is added.
    assert temporal_bonus([1.0, 0.0, 0.0, 0.0], [1.0, 1.0], 0.3, 0.8) == ([0.0] * 4, False)
    # A span answer with IoU 0.05 is not "right" (Video-R1's > 0.1).
    assert temporal_bonus([0.05, 0.5], [0.0], 0.3, 0.8) == ([0.0, 0.3], True)


def test_shuffled_features_are_the_encoding_of_shuffled_frames(tiny_model_dir, direction_data, tmp_path):
    from vidlab.training.model import load_for_training
    from vidlab.training.policy import base_model, encode_prompt, shuffled_frames

    config = rl_config(tiny_model_dir, direction_data, tmp_path / "t", "grpo")
    model, processor = load_for_training(config.as_weights_config(), torch.device("cpu"), "no")
    prompt = encode_prompt(_prompt_record(direction_data), model, processor, config.data.media_settings(), None,
                           torch.device("cpu"))
    frames, height, width = prompt.tensors["video_grid_thw"][0].tolist()
    assert frames > 1
    shuffled = shuffled_frames(prompt, torch.Generator().manual_seed(3))
    order = torch.randperm(frames, generator=torch.Generator().manual_seed(3))
    if bool((order == torch.arange(frames)).all()):
        order = order.roll(1)
    # Encode the frames' pixels in that order: the vision encoder gives the shuffled features.
    pixels = prompt.sample.tensors["pixel_values_videos"].reshape(frames, height * width, -1)[order]
    with torch.no_grad():
        expected = base_model(model).get_video_features(
            pixel_values_videos=pixels.reshape(frames * height * width, -1), video_grid_thw=prompt.tensors[
                "video_grid_thw"], video_merge_sizes=prompt.tensors["video_merge_sizes"], return_dict=True
        ).pooler_output[0]
    assert torch.allclose(shuffled.features[0], expected, atol=1e-5)
    assert not torch.allclose(shuffled.features[0], prompt.features[0])
    assert torch.equal(shuffled.tensors["input_ids"], prompt.tensors["input_ids"])  # the text stays as it was


def test_later_passes_clip_the_ratio_to_the_sampling_policy(tiny_model_dir, direction_data, tmp_path):
    from vidlab.training.grpo import GrpoStep
    from vidlab.training.model import load_for_training

    common = ("grpo.beta=0.1", "grpo.max_completion_length=3", "grpo.num_generations=8")
    torch.manual_seed(0)
    config = rl_config(tiny_model_dir, direction_data, tmp_path / "i", "grpo", "grpo.num_iterations=2", *common)
    model, processor = load_for_training(config.as_weights_config(), torch.device("cpu"), "no")
    record = _prompt_record(direction_data)
    cutting = rl_config(tiny_model_dir, direction_data, tmp_path / "m", "grpo", "grpo.mask_truncated_completions=true",
                        *common)
    step = GrpoStep(cutting.grpo, processor, config.data.media_settings(), config.data.model_max_length)
    group = step.rollout(model, None, record, step.encode(record, model, torch.device("cpu")))
    assert any(group.truncated)
    for row, cut in enumerate(group.truncated):  # cut answers (3 tokens, no end token) are left out of the loss
        assert int(group.loss_mask[row].sum()) == (0 if cut else group.lengths[row])
    assert group.old_logps is None  # one pass: the ratio's denominator is the pass's own logp

    step = GrpoStep(config.grpo, processor, config.data.media_settings(), config.data.model_max_length)
    group = step.rollout(model, None, record, step.encode(record, model, torch.device("cpu")))
    assert group.old_logps is not None and group.ref_logps is not None
    group.advantages = [1.0 if i % 2 else -1.0 for i in range(8)]  # every answer carries a signal
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=5.0)
    step.update(model, group, 1.0, lambda loss: loss.backward())
    assert group.passes[0].clip_ratio == 0.0  # the first pass: the policy is the one that sampled
    optimizer.step()
    optimizer.zero_grad()
    step.update(model, group, 1.0, lambda loss: loss.backward())
    assert group.passes[1].clip_ratio > 0.0 and group.passes[1].kl > 0.0
    assert group.clip_ratio == pytest.approx(group.passes[1].clip_ratio / 2)
