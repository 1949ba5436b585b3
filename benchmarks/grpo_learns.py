"""Does GRPO learn? A video-dependent question learnt from the exact-match reward alone, on a CPU.

    python benchmarks/grpo_learns.py --task colour --prompts 16 --grpo-steps 150   # the recorded run

Default (`--task colour` or `direction`): the quickstart's questions about its synthetic clips
(`vidlab data synth`: "What colour is the shape?", 6 colours; "Which direction does the shape move?", 4).

1. a model that can see: the quickstart's base model (the tiny VideoLLaMA3 trained on the clips'
   captions, configs/quickstart/base.yaml), taken from the quickstart folder `--quickstart` (made there by the
   quickstart's own first steps when missing: data set, untrained model, base training; `--fast` for the short
   sizes); it writes captions, never one-word answers (0% on the questions);
2. the format base: that model fine-tuned (the quickstart's LoRA recipe, output head included, then merged)
   on its first training clips, each clip once with EVERY answer, so it learns the one-word format and to name
   each value equally often, and nothing about which one a clip shows: its greedy answer is the same for every
   clip, at chance on the balanced held-out set, and a group of 8 sampled answers usually holds a right one;
3. GRPO from the format base (LoRA r 16 and the head, `rewards: [accuracy]`, the exact-match reward; no label is
   trained on, only the rewards of sampled answers) on other training clips;
4. held-out accuracy (greedy answers to the quickstart's test clips, which no run saw) of the format base and
   of the GRPO policy, and the reward curve (mean sampled accuracy per step), to OUT/result.json.

The held-out set is balanced, so any answer that ignores the video scores at most chance: a lift above
it is read from the video. `--base random` runs colour from the random tiny model instead, and
`--task told|blue` are the earlier runs on it (own 56-pixel clips, 4 colours; `told` names the colour
in the question; `blue` asks "Name a colour" and always rewards blue: the loop's mechanics only).
Every run recorded is in docs/train.md, "Does it learn?".
"""

from __future__ import annotations

import argparse
import json
import random
import time
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


def held_out_accuracy(model_dir: Path, adapter: Path | None, held_out: Path, settings) -> float:
    """Greedy answers to the held-out clips (media as `settings`, a MediaSettings), scored by the GRPO accuracy
    reward."""
    import torch

    from vidlab.models import load_model
    from vidlab.training.policy import encode_prompt, rows_inputs
    from vidlab.training.rewards import accuracy
    from vidlab.training.rl_records import load_prompt_records

    model, processor = load_model(model_dir, adapter=adapter, device="cpu")
    records, _ = load_prompt_records([held_out], None, "grpo")
    right = 0.0
    for record in records:
        prompt = encode_prompt(record, model, processor, settings, None, torch.device("cpu"))
        with torch.no_grad():
            out = model.generate(**rows_inputs(prompt, 1), max_new_tokens=6, do_sample=False,
                                 pad_token_id=processor.tokenizer.pad_token_id)
        text = processor.tokenizer.decode(out[0, prompt.length:], skip_special_tokens=True)
        right += accuracy(text, record.reference)
    return right / len(records)


def quickstart_base(folder: Path, fast: bool, progress: bool) -> tuple[Path, Path]:
    """The quickstart's caption-trained base model and its data set, in a quickstart folder's layout (its
    data/ and runs/base/): reused when there, else made by the quickstart's own steps (data set, untrained
    model, base training from configs/quickstart/base.yaml). Returns (model folder, data folder)."""
    from vidlab.data.synthetic_dataset import SynthSettings, write_synthetic_dataset
    from vidlab.models.tiny import build_tiny_model
    from vidlab.quickstart import FAST, QuickstartSettings, config_folder
    from vidlab.quickstart.run import Layout
    from vidlab.training.api import train
    from vidlab.training.config import load_config

    layout = Layout(folder)
    base = layout.run("base")
    if (base / "train_result.json").is_file():
        return base, layout.data
    # --fast: FAST's 150 base steps instead of 900, on the full data set (GRPO needs more clips than FAST's 96)
    settings = QuickstartSettings(base_steps=FAST.base_steps) if fast else QuickstartSettings()
    if not (layout.data / "dataset.json").is_file():
        write_synthetic_dataset(layout.data, SynthSettings(train=settings.train_videos, val=0,
                                                           test=settings.test_videos, seed=settings.seed),
                                progress=progress)
    if not (layout.init / "config.json").is_file():
        build_tiny_model(layout.init, seed=settings.seed)
    train(load_config(config_folder() / "base.yaml", [
        f"model.path={layout.init}", f"data.train=[{layout.data / 'train.caption.jsonl'}]", f"output.dir={base}",
        f"train.seed={settings.seed}", *([f"train.max_steps={settings.base_steps}"] if settings.base_steps else []),
        f"output.progress={str(progress).lower()}",
    ]))
    return base, layout.data


def write_seeing_data(out: Path, data: Path, task: str, values: list[str], counts: dict[str, int], seed: int,
                      template: str = "{}") -> dict[str, Path]:
    """The quickstart data set's `task` question (direction or colour) in three record files: the format
    base's (its first training clips, each once with every answer: the right one no more often than the
    others), GRPO's (the next training clips, the clip's own answer as the reference) and the held-out
    test clips'. Video paths are made absolute, so the files can live in `out`."""
    from vidlab.files import read_jsonl, write_jsonl

    def phrased(record: dict) -> dict:
        turns = [record["conversations"][0], {"from": "gpt", "value": template.format(record[task])}]
        return {**record, "video": [str((data / v).resolve()) for v in record["video"]], "conversations": turns}

    train = [phrased(r) for r in read_jsonl(data / f"train.{task}.jsonl")]
    test = [phrased(r) for r in read_jsonl(data / f"test.{task}.jsonl")]
    if counts["format"] + counts["grpo"] > len(train) or counts["held_out"] > len(test):
        raise SystemExit(f"{data}: {len(train)} training and {len(test)} test clips; asked for "
                         f"{counts['format']} + {counts['grpo']} and {counts['held_out']}")
    rng = random.Random(seed)
    formats = []
    for record in train[:counts["format"]]:
        for value in values:
            turns = [record["conversations"][0], {"from": "gpt", "value": template.format(value)}]
            formats.append({**record, "id": f"{record['id']}-{value}", "conversations": turns})
    rng.shuffle(formats)
    rows = {"format": formats, "grpo": train[counts["format"]:counts["format"] + counts["grpo"]],
            "held_out": test[:counts["held_out"]]}
    paths = {}
    for name, items in rows.items():
        paths[name] = out / f"{name}.jsonl"
        write_jsonl(paths[name], items)
    return paths


def run_seeing(args) -> dict:
    """direction / colour from the quickstart's caption model: format base, GRPO, held-out accuracy before/after."""
    from vidlab.data.synthetic import COLOURS as SYNTH_COLOURS
    from vidlab.data.synthetic import DIRECTIONS
    from vidlab.models.merge import merge_adapter
    from vidlab.quickstart import config_folder
    from vidlab.training.api import train
    from vidlab.training.config import load_config

    base, data = quickstart_base(args.quickstart, args.fast, args.progress)
    out = args.out
    values = list(DIRECTIONS) if args.task == "direction" else list(SYNTH_COLOURS)
    files = write_seeing_data(out / "data", data, args.task, values,
                              {"format": args.format_clips, "grpo": args.train, "held_out": args.held_out}, args.seed,
                              args.answer)
    recipe = config_folder() / "lora.yaml"  # the quickstart's LoRA recipe: its media settings, r 16, the head trained
    common = ["optim.warmup_ratio=0", "optim.scheduler=constant", "output.log_steps=1", "output.tensorboard=false",
              f"output.progress={str(args.progress).lower()}", f"train.seed={args.seed}", "output.save_steps=1000",
              "data.workers=0", "train.gradient_checkpointing=false"]
    format_run, format_model = out / "format", out / "format-model"
    if not (format_model / "config.json").is_file():
        if not (format_run / "train_result.json").is_file():
            train(load_config(recipe, [f"model.path={base}", f"data.train=[{files['format']}]",
                                       f"output.dir={format_run}", f"learning_rates.llm={args.sft_lr}",
                                       f"train.max_steps={args.sft_steps}", *common]))
        merge_adapter(base, format_run, format_model, overwrite=True)
    grpo = out / "grpo"
    config = load_config(recipe, [
        f"model.path={format_model}", f"data.train=[{files['grpo']}]", f"output.dir={grpo}", "method=grpo",
        f"learning_rates.llm={args.grpo_lr}", f"grpo.num_iterations={args.num_iterations}",
        f"train.batch_size={args.prompts}", f"train.max_steps={args.grpo_steps}",
        f"grpo.num_generations={args.generations}", "grpo.max_completion_length=6", f"grpo.beta={args.beta}",
        "grpo.rewards=[accuracy]", f"grpo.temperature={args.temperature}", *common])
    result = train(config, resume="auto" if (grpo / "checkpoints").exists() else None)
    settings = config.data.media_settings()
    before = held_out_accuracy(format_model, None, files["held_out"], settings)
    after = held_out_accuracy(format_model, grpo, files["held_out"], settings)
    return {"base": "quickstart", "chance": round(1 / len(values), 4), "before": before, "after": after,
            "log": result.log, "answer": args.answer, "format_clips": args.format_clips, "sft_steps": args.sft_steps,
            "sft_lr": args.sft_lr}


def run_random_base(args) -> dict:
    """blue / told / colour from the random tiny model: the earlier runs (see the module docstring)."""
    from vidlab import train
    from vidlab.models.tiny import build_tiny_model
    from vidlab.settings import MediaSettings
    from vidlab.training.config import load_config

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
        f"train.batch_size={args.prompts}", f"train.max_steps={args.grpo_steps}",
        f"grpo.num_generations={args.generations}", "grpo.max_completion_length=4", f"grpo.beta={args.beta}",
        "grpo.rewards=[accuracy]", *common,
    ]), resume="auto" if (grpo / "checkpoints").exists() else None)
    settings = MediaSettings(max_frames=args.max_frames)
    before = held_out_accuracy(base, None, held_out, settings)
    after = (held_out_accuracy(base, grpo, held_out, settings) if args.grpo_weights == "lora" else
             held_out_accuracy(grpo, None, held_out, settings))
    return {"base": "random", "chance": 0.25, "before": before, "after": after, "log": result.log,
            "weights": args.grpo_weights, "sft_steps": args.sft_steps, "sft_lr": args.sft_lr}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("colour", "direction", "told", "blue"), default="colour",
                        help="direction, colour: read from the video (the quickstart's questions); told: the question "
                             "names the colour; blue: one answer is always the rewarded one (the loop's mechanics)")
    parser.add_argument("--base", choices=("quickstart", "random"), default=None,
                        help="the model the format base is fine-tuned from: the quickstart's caption model (default "
                             "for direction and colour) or the random tiny model (blue and told always)")
    parser.add_argument("--quickstart", type=Path, default=None,
                        help="a quickstart folder (`vidlab quickstart --out DIR`): its data/ and runs/base/ are "
                             "reused, or made here by the quickstart's first steps (default "
                             "runs/grpo-learns-quickstart, -fast with --fast)")
    parser.add_argument("--fast", action="store_true",
                        help="train a new quickstart base for `vidlab quickstart --fast`'s "
                        "150 steps, not 900")
    parser.add_argument("--out", type=Path, default=None, help="default runs/grpo-learns-TASK")
    parser.add_argument("--train", type=int, default=None, help="GRPO's clips (default 256; random base 32)")
    parser.add_argument("--held-out", type=int, default=None, help="held-out clips (default 120; random base 24)")
    parser.add_argument("--format-clips", type=int, default=240,
                        help="clips of the format base (each once with every answer)")
    parser.add_argument("--sft-steps", type=int, default=None, help="format base steps (default 200)")
    parser.add_argument("--sft-lr", type=float, default=None, help="format base rate (default 2e-3; random base 3e-3)")
    parser.add_argument("--answer", default="{}", help="the answer's wording, {} the value (e.g. 'it moves {}')")
    parser.add_argument("--grpo-steps", type=int, default=None, help="default 150; random base 40")
    parser.add_argument("--grpo-lr", type=float, default=None, help="default 2e-3; random base 3e-3")
    parser.add_argument("--prompts", type=int, default=None,
                        help="prompts per GRPO step (train.batch_size; default 16, random base 4)")
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-frames", type=int, default=4, help="random base only")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--grpo-weights", choices=("lora", "full"), default="lora", help="random base only")
    parser.add_argument("--num-iterations", type=int, default=1, help="grpo.num_iterations")
    parser.add_argument("--progress", action="store_true", help="show training progress bars")
    args = parser.parse_args()
    seeing = args.task in ("direction", "colour") and args.base != "random"
    if args.task in ("told", "blue") and args.base == "quickstart":
        parser.error("told and blue run from the random tiny model only")
    defaults = {"train": (256, 32), "held_out": (120, 24), "sft_steps": (200, 200), "sft_lr": (2e-3, 3e-3),
                "grpo_steps": (150, 40), "grpo_lr": (2e-3, 3e-3), "prompts": (16, 4)}
    for name, (quickstart_value, random_value) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quickstart_value if seeing else random_value)
    args.out = args.out or Path(f"runs/grpo-learns-{args.task}")
    args.quickstart = args.quickstart or Path("runs/grpo-learns-quickstart" + ("-fast" if args.fast else ""))
    import torch

    torch.set_num_threads(args.threads)
    started = time.monotonic()
    run = run_seeing(args) if seeing else run_random_base(args)
    log = run.pop("log")
    curve = [round(row["rewards.accuracy"], 4) for row in log]
    summary = {"task": args.task, **run, "before": round(run["before"], 4), "after": round(run["after"], 4),
               "held_out": args.held_out, "grpo_clips": args.train, "grpo_steps": args.grpo_steps,
               "prompts": args.prompts,
               "generations": args.generations, "lr": args.grpo_lr, "beta": args.beta,
               "temperature": args.temperature, "num_iterations": args.num_iterations,
               "sampled_accuracy_per_step": curve, "seconds": round(time.monotonic() - started, 1)}
    (args.out / "result.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
