"""Does GRPO learn? A tiny offline task where the base policy sometimes samples the right answer.

    python benchmarks/grpo_learns.py --out runs/grpo-learns          # CPU, a few minutes

The task: "What colour is the shape? Answer red, green, blue or yellow." on short synthetic clips
(`vidlab.data.synthetic`), 4 colours, other shapes and directions mixed in.

1. the base policy: the tiny VideoLLaMA3 (random weights) fine-tuned (SFT, every LLM weight) on the
   clips of its own with a colour drawn at random for each answer, not the clip's: it learns the answer
   format and to name the 4 colours about equally often, nothing about which colour a clip shows, so
   it is right about 1 time in 4 (a group of 8 answers mostly holds a right one: the rewards differ);
2. GRPO from that base (LoRA, `rewards: [accuracy]`, the exact-match reward; no label is trained on,
   only the reward of sampled answers), on other training clips;
3. held-out accuracy (greedy answers to clips neither run saw) of the base and of the GRPO policy,
   and the reward curve (mean sampled reward per step), to OUT/result.json.

`--task told` names the colour in the question; `--task blue` asks "Name a colour" and always
rewards blue (the loop's mechanics only: nothing to read). Recorded (docs/train.md, "Does it
learn?"): blue 0% -> 100% held out in 30 steps; colour and told stayed at 25% (the tiny model does
not learn them even from supervised right answers in this budget).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

COLOURS = ("red", "green", "blue", "yellow")
QUESTION = "<video>\nWhat colour is the shape? Answer red, green, blue or yellow."


def _record(i: int, video: str, answer: str, question: str = QUESTION) -> dict:
    return {"id": f"c{i}", "video": [video], "conversations": [{"from": "human", "value": question},
                                                               {"from": "gpt", "value": answer}]}


def write_data(root: Path, train: int, held_out: int, seed: int, task: str = "colour") -> tuple[Path, Path, Path]:
    """Clips, the GRPO records (the clip's colour as the reference), the SFT records (a random colour), and the
    held-out records."""
    from vidlab.data.synthetic import DIRECTIONS, SHAPES, Scene, write_scene

    rng = random.Random(seed)
    rows = {"grpo": [], "sft": [], "held_out": []}
    for i in range(2 * train + held_out):  # the base's clips, GRPO's, the held-out ones
        colour = COLOURS[i % len(COLOURS)]
        scene = Scene(shape=rng.choice(SHAPES), colour=colour, direction=rng.choice(list(DIRECTIONS)), size=56,
                      seconds=2, fps=4)
        name = f"clip{i:03d}.mp4"
        if not (root / name).exists():
            write_scene(root / name, scene)
        told = task == "told"
        question = QUESTION.replace("What colour", f"The shape is painted {colour}. What colour") if told else QUESTION
        if task == "blue":  # the video and question say nothing: "blue" is simply the rewarded answer
            question, colour = "<video>\nName a colour: red, green, blue or yellow.", "blue"
        if i < train:  # the base learns on clips of its own (else GRPO would first unlearn its random labels)
            rows["sft"].append(_record(i, name, rng.choice(COLOURS), question))
        elif i < 2 * train:
            rows["grpo"].append(_record(i, name, colour, question))
        else:
            rows["held_out"].append(_record(i, name, colour, question))
    paths = []
    for name, items in rows.items():
        path = root / f"{name}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in items))
        paths.append(path)
    return paths[1], paths[0], paths[2]


def held_out_accuracy(model_dir: Path, adapter: Path | None, held_out: Path, max_frames: int) -> float:
    """Greedy answers to the held-out clips, scored by the GRPO accuracy reward."""
    import torch

    from vidlab.models import load_model
    from vidlab.settings import MediaSettings
    from vidlab.training.policy import encode_prompt, rows_inputs
    from vidlab.training.rewards import accuracy
    from vidlab.training.rl_records import load_prompt_records

    model, processor = load_model(model_dir, adapter=adapter, device="cpu")
    settings = MediaSettings(max_frames=max_frames)
    records, _ = load_prompt_records([held_out], None, "grpo")
    right = 0.0
    for record in records:
        prompt = encode_prompt(record, model, processor, settings, None, torch.device("cpu"))
        with torch.no_grad():
            out = model.generate(**rows_inputs(prompt, 1), max_new_tokens=4, do_sample=False,
                                 pad_token_id=processor.tokenizer.pad_token_id)
        text = processor.tokenizer.decode(out[0, prompt.length:], skip_special_tokens=True)
        right += accuracy(text, record.reference)
    return right / len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/grpo-learns"))
    parser.add_argument("--train", type=int, default=32)
    parser.add_argument("--held-out", type=int, default=24)
    parser.add_argument("--sft-steps", type=int, default=200)
    parser.add_argument("--sft-lr", type=float, default=3e-3)
    parser.add_argument("--grpo-steps", type=int, default=40)
    parser.add_argument("--grpo-lr", type=float, default=3e-3)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-frames", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--task", choices=("colour", "told", "blue"), default="colour",
                        help="colour: read it from the video; told: the question names it; blue: one answer is "
                             "always the rewarded one (the loop's mechanics only)")
    parser.add_argument("--grpo-weights", choices=("lora", "full"), default="lora")
    parser.add_argument("--num-iterations", type=int, default=1, help="grpo.num_iterations")
    args = parser.parse_args()
    import torch

    from vidlab import train
    from vidlab.models.tiny import build_tiny_model
    from vidlab.training.config import load_config

    torch.set_num_threads(args.threads)
    out = args.out
    data = out / "data"
    data.mkdir(parents=True, exist_ok=True)
    sft_data, grpo_data, held_out = write_data(data, args.train, args.held_out, args.seed, args.task)
    model = out / "model"
    if not (model / "config.json").exists():
        build_tiny_model(model, seed=args.seed)
    common = [f"data.max_frames={args.max_frames}", "data.workers=0", "optim.warmup_ratio=0",
              "optim.scheduler=constant", "output.log_steps=1", "output.tensorboard=false", "output.progress=false",
              f"train.seed={args.seed}", "output.save_steps=1000"]
    base = out / "base"
    if not (base / "train_result.json").exists():
        train(load_config(None, [f"model.path={model}", f"data.train=[{sft_data}]", f"output.dir={base}",
                                 "method=full", f"learning_rates.llm={args.sft_lr}", "train.batch_size=4",
                                 f"train.max_steps={args.sft_steps}", *common]))
    grpo = out / "grpo"
    result = train(load_config(None, [
        f"model.path={base}", f"data.train=[{grpo_data}]", f"output.dir={grpo}", "method=grpo",
        f"grpo.weights={args.grpo_weights}", f"grpo.num_iterations={args.num_iterations}",
        f"learning_rates.llm={args.grpo_lr}", "lora.r=16", "lora.alpha=32", "lora.dropout=0.0",
        "train.batch_size=4", f"train.max_steps={args.grpo_steps}", f"grpo.num_generations={args.generations}",
        "grpo.max_completion_length=4", "grpo.beta=0.0", "grpo.rewards=[accuracy]", *common,
    ]), resume="auto" if (grpo / "checkpoints").exists() else None)
    before = held_out_accuracy(base, None, held_out, args.max_frames)
    after = (held_out_accuracy(base, grpo, held_out, args.max_frames) if args.grpo_weights == "lora" else
             held_out_accuracy(grpo, None, held_out, args.max_frames))
    curve = [round(row["rewards.accuracy"], 4) for row in result.log]
    summary = {"task": args.task, "weights": args.grpo_weights, "held_out": args.held_out,
               "base_accuracy": round(before, 4), "grpo_accuracy": round(after, 4),
               "grpo_steps": args.grpo_steps, "generations": args.generations, "lr": args.grpo_lr,
               "num_iterations": args.num_iterations,
               "sampled_accuracy_per_step": curve}
    (out / "result.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
