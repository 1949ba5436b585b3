"""`vidlab quickstart`: the whole toolkit on a tiny VideoLLaMA3, offline, on a laptop CPU in minutes.

Each step is the command a user would run on a real model; quickstart only chains them (in one
process) and prints each command before running it:

    1  data set             vidlab data synth DIR/data ...
    2  untrained model      vidlab model tiny DIR/models/init ...
    3  evaluate it          vidlab eval run ... captions of the test videos
    4  base model           vidlab train DIR/configs/base.yaml ...   (full training on the captions)
    5  evaluate it          vidlab eval run ... captions
    6  blind control        the base model on the same captions, every video replaced by a blank one
    7  before LoRA          vidlab eval run ... direction question
    8  LoRA                 vidlab train DIR/configs/lora.yaml ...   (the direction question)
    9  after LoRA           vidlab eval run --adapter ... direction question
    10 report               DIR/summary.json, DIR/report.md, DIR/report.png and a table on stdout

Layout of DIR:

    quickstart.json          settings, model sizes and config texts of the run, seconds per step
    configs/                 copies of configs/quickstart/{base,lora}.yaml, used by the commands
    data/                    the synthetic data set, plus blank.mp4 and test.caption.blind.jsonl
    models/init/             the untrained tiny model
    runs/base/, runs/lora/   the training runs (whole model; LoRA adapter)
    eval/<name>/             one `vidlab eval run` folder per evaluation (predictions, metrics, report)
    summary.json, report.md, report.png

Running it again on the same DIR skips every finished step (a training run resumes from its newest
checkpoint, an evaluation from its last written prediction); `overwrite` starts over.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from vidlab.errors import VidlabError
from vidlab.files import read_jsonl, write_atomic, write_json, write_jsonl
from vidlab.models.tiny import TinySpec
from vidlab.quickstart import report

# Metrics of every evaluation: those of `vidlab eval run` but METEOR, which starts a 2 GB Java
# process (about 9 s per evaluation) and adds nothing to these checks.
EVAL_METRICS = ("bleu1", "bleu2", "bleu3", "bleu4", "sacrebleu", "rouge_l", "cider", "exact_match")
STATE_FILE = "quickstart.json"
CONFIG_NAMES = ("base.yaml", "lora.yaml")
BLANK_GREY = 128  # the blind control's video: every pixel this grey

STEP_TITLES = {
    "data": "generate the synthetic data set",
    "model": "build the untrained tiny VideoLLaMA3",
    "init_caption": "evaluate the untrained model on the test captions (before)",
    "base": "train the base model on the captions (full training from random weights)",
    "base_caption": "evaluate the base model on the test captions (after)",
    "blind_caption": "blind control: the base model on the test captions with a blank video",
    "base_direction": "evaluate the base model on the direction question (before LoRA)",
    "lora": "LoRA-fine-tune the base model on the direction question",
    "lora_direction": "evaluate the LoRA model on the direction question (after)",
    "report": "write the report",
}


@dataclass(frozen=True)
class QuickstartSettings:
    """What `run_quickstart` does. The defaults are the real quickstart.

    Recipe settings (learning rates, batch size, steps, LoRA rank, ...) live in
    configs/quickstart/{base,lora}.yaml; these only set what a run needs on top (the data set's size)
    or shortens (steps), and each value that changes a config is passed as a `--set` override.

    Attributes:
        seed: seed of the data set, of the untrained model's weights and of training.
        train_videos: training videos (each gives a caption and a direction record, among others).
        test_videos: held-out test videos: every number of the report is on them.
        base_steps: optimiser steps of the base training (None: base.yaml's train.max_steps).
        lora_steps: optimiser steps of the LoRA training (None: lora.yaml's train.max_steps).
        base_overrides: more `section.key=value` overrides for base.yaml (as `vidlab train --set`).
        lora_overrides: the same for lora.yaml.
        eval_batch_size: records generated together in each evaluation.
        max_new_tokens: longest answer, in tokens (a caption takes about 8).
        progress: show the progress bars.
    """

    seed: int = 0
    # Steps cost time, videos hardly: 1,800 videos seen 8 times each taught the tiny model shapes
    # where 600 seen 24 times did not (87% against 61% of held-out captions naming the right shape,
    # seed 0, with the smaller shapes of an earlier data set).
    train_videos: int = 1800
    test_videos: int = 120
    base_steps: int | None = None
    lora_steps: int | None = None
    base_overrides: tuple[str, ...] = ()
    lora_overrides: tuple[str, ...] = ()
    eval_batch_size: int = 24
    max_new_tokens: int = 12
    progress: bool = True

    def __post_init__(self) -> None:
        problems = []
        if self.seed < 0:
            problems.append(f"seed must be 0 or more (got {self.seed})")
        if self.train_videos < 1 or self.test_videos < 1:
            problems.append(f"train_videos and test_videos must be at least 1 (got {self.train_videos}, "
                            f"{self.test_videos})")
        for name in ("base_steps", "lora_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be at least 1 or None (got {value})")
        if self.eval_batch_size < 1 or self.max_new_tokens < 1:
            problems.append(f"eval_batch_size and max_new_tokens must be at least 1 (got {self.eval_batch_size}, "
                            f"{self.max_new_tokens})")
        if problems:
            raise ValueError("; ".join(problems))

    def recorded(self) -> dict:
        """The settings that decide the results (not `progress`), as quickstart.json keeps them."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
                for f in fields(self) if f.name != "progress"}


# `vidlab quickstart --fast`: the same steps at a fraction of the cost; the pipeline runs and the
# numbers move the right way, but they fall short of the checks.
FAST = QuickstartSettings(train_videos=96, test_videos=24, base_steps=150, lora_steps=80)


def config_folder() -> Path:
    """configs/quickstart/ as installed with vidlab (package data)."""
    folder = Path(__file__).resolve().parents[1] / "configs" / "quickstart"
    missing = [name for name in CONFIG_NAMES if not (folder / name).is_file()]
    if missing:
        raise VidlabError(
            f"{folder}: no {', '.join(missing)}: this vidlab installation lacks its recipes. Reinstall it "
            "(pip install --force-reinstall vidlab, or pip install . in a checkout)."
        )
    return folder


@dataclass(frozen=True)
class Layout:
    """Where everything of a quickstart folder goes."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def init(self) -> Path:
        return self.root / "models" / "init"

    @property
    def configs(self) -> Path:
        return self.root / "configs"

    def run(self, name: str) -> Path:
        return self.root / "runs" / name

    def eval(self, name: str) -> Path:
        return self.root / "eval" / name

    @property
    def blank_video(self) -> Path:
        return self.data / "blank.mp4"

    @property
    def blind_data(self) -> Path:
        return self.data / "test.caption.blind.jsonl"


def _quote(path: Path | str) -> str:
    return shlex.quote(str(path))


def _yaml_value(path: Path | str) -> str:
    """A path as a --set value: bare when YAML reads it back as the same string, else quoted."""
    text = str(path)
    if re.fullmatch(r"[A-Za-z0-9_./~+-]+", text) and yaml.safe_load(text) == text:
        return text
    return json.dumps(text)


def _train_command(config: Path, overrides: list[str]) -> str:
    return " ".join(["vidlab train", _quote(config), *(f"--set {shlex.quote(o)}" for o in overrides)])


def _read_state(layout: Layout) -> dict | None:
    path = layout.root / STATE_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _prepare_folder(layout: Layout, settings: QuickstartSettings, configs: dict[str, str], overwrite: bool) -> dict:
    """Start DIR, or check that it holds this very quickstart; returns its state (quickstart.json)."""
    root = layout.root
    if root.exists() and not root.is_dir():
        raise VidlabError(f"{root}: is a file, not a folder. Choose a folder for the quickstart with --out.")
    state = _read_state(layout) if root.is_dir() else None
    if root.is_dir() and any(root.iterdir()) and state is None:
        raise VidlabError(f"{root}: folder holds files but no {STATE_FILE}, so it is not a quickstart folder. "
                          "Choose a new folder with --out.")
    wanted = {"settings": settings.recorded(), "spec": asdict(TinySpec()), "configs": configs}
    if state is not None and overwrite:
        shutil.rmtree(root)
        state = None
    if state is not None:
        changed = [f"settings.{k}" for k in wanted["settings"] if state["settings"].get(k) != wanted["settings"][k]]
        changed += ["the model's TinySpec"] if state.get("spec") != wanted["spec"] else []
        changed += [f"configs/quickstart/{n}" for n in CONFIG_NAMES if state["configs"].get(n) != configs[n]]
        if changed:
            raise VidlabError(f"{root}: holds a quickstart run with other settings ({', '.join(changed)} differ). "
                              "Pass --overwrite to start over, or choose another folder with --out.")
    else:
        state = {**wanted, "seconds": {}}
        write_json(root / STATE_FILE, state)
    for name, text in configs.items():  # the copies the printed commands name (equal to the checked ones)
        if not (layout.configs / name).is_file():
            write_atomic(layout.configs / name, text)
    return state


class _Steps:
    """Numbered step headers, skipping finished steps, and the time each step took."""

    def __init__(self, layout: Layout, state: dict, echo: Callable[[str], None]):
        self.layout, self.state, self.echo = layout, state, echo
        self.number = 0

    def run(self, key: str, command: str | None, done: bool, action: Callable[[], None]) -> None:
        self.number += 1
        self.echo(f"[{self.number}/{len(STEP_TITLES)}] {STEP_TITLES[key]}")
        for line in (command or "").splitlines():
            self.echo(f"    $ {line}")
        if done:
            self.echo("    already done: skipped")
            return
        started = time.monotonic()
        action()
        seconds = time.monotonic() - started
        self.state["seconds"][key] = round(seconds, 2)
        write_json(self.layout.root / STATE_FILE, self.state)
        self.echo(f"    done in {seconds:.1f} s")


def _eval_done(folder: Path) -> bool:
    return (folder / "metrics.json").is_file() and (folder / "report.md").is_file()


def _write_blind_data(layout: Layout, description: dict) -> None:
    """data/blank.mp4 (grey, the size, frame rate and length of the data set's videos) and the caption
    test records pointing at it (same ids, references and labels)."""
    import numpy as np

    from vidlab.media.writer import write_video

    size, frames = int(description["size"]), int(description["frames"])
    blank = np.full((size, size, 3), BLANK_GREY, dtype=np.uint8)
    write_video(layout.blank_video, [blank] * frames, fps=float(description["fps"]))
    records = read_jsonl(layout.data / "test.caption.jsonl")
    write_jsonl(layout.blind_data, [{**r, "video": [layout.blank_video.name]} for r in records])


def _loss_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, training loss) of each logged window of a run's log.jsonl."""
    return [(row["step"], row["loss"]) for row in read_jsonl(run_dir / "log.jsonl", torn_tail_ok=True) if "loss" in row]


def _training_numbers(
    run_dir: Path, losses: list[tuple[int, float]], seconds: float | None, steps_timed: int | None
) -> dict:
    result = json.loads((run_dir / "train_result.json").read_text())
    return {
        "folder": str(run_dir),
        "config": str(run_dir / "config.yaml"),
        "steps": result["steps"],
        "first_loss": losses[0][1] if losses else None,
        "final_loss": losses[-1][1] if losses else result.get("final_loss"),
        "seconds": seconds,
        "seconds_per_step": seconds / steps_timed if seconds is not None and steps_timed else None,
    }


@dataclass(frozen=True)
class QuickstartResult:
    """A finished quickstart: its folder, whether every check passed, and summary.json's content."""

    out_dir: Path
    passed: bool
    summary: dict
    report: Path


def run_quickstart(
    out_dir: str | Path,
    settings: QuickstartSettings = QuickstartSettings(),
    *,
    overwrite: bool = False,
    echo: Callable[[str], None] | None = None,
) -> QuickstartResult:
    """`vidlab quickstart`: run (or finish) the quickstart in `out_dir`; returns its folder, whether every check
    passed, and what summary.json holds.

    Args:
        out_dir: the quickstart folder (layout in the module docstring).
        settings: data set size, step counts and evaluation settings; see `QuickstartSettings`.
        overwrite: delete a previous quickstart in `out_dir` and start over.
        echo: prints the step headers and the final table (default: print, flushed).

    Raises:
        VidlabError: `out_dir` holds something else, or a quickstart with other settings; the
            configs are missing (not a source checkout); any step's own user errors.
    """
    from vidlab.data.synthetic_dataset import SynthSettings, write_synthetic_dataset
    from vidlab.evaluation.api import evaluate as evaluate_run
    from vidlab.evaluation.command_line import run_command_line
    from vidlab.evaluation.run import RunOptions
    from vidlab.models.tiny import build_tiny_model
    from vidlab.settings import GenerationOptions
    from vidlab.training.api import train
    from vidlab.training.checkpoint import STATE_FILE as CHECKPOINT_STATE
    from vidlab.training.checkpoint import latest_checkpoint
    from vidlab.training.config import load_config
    from vidlab.training.run_folder import RESULT_FILE

    echo = echo or (lambda text: print(text, flush=True))
    started = time.monotonic()
    layout = Layout(Path(out_dir))
    source = config_folder()
    configs = {name: (source / name).read_text(encoding="utf-8") for name in CONFIG_NAMES}
    state = _prepare_folder(layout, settings, configs, overwrite)
    steps = _Steps(layout, state, echo)
    commands: dict[str, str] = {}

    synth = SynthSettings(train=settings.train_videos, val=0, test=settings.test_videos, seed=settings.seed)
    commands["data"] = synth.command(_quote(layout.data))
    steps.run("data", commands["data"], (layout.data / "dataset.json").is_file(),
              lambda: write_synthetic_dataset(layout.data, synth, progress=settings.progress))
    description = json.loads((layout.data / "dataset.json").read_text(encoding="utf-8"))

    commands["model"] = f"vidlab model tiny {_quote(layout.init)} --seed {settings.seed}"
    steps.run("model", commands["model"], (layout.init / "config.json").is_file(),
              lambda: build_tiny_model(layout.init, seed=settings.seed))

    # The training configs, with this folder's paths (and shorter runs) as --set overrides.
    quiet = [] if settings.progress else ["output.progress=false"]
    overrides = {
        "base": [f"model.path={_yaml_value(layout.init)}",
                 f"data.train=[{_yaml_value(layout.data / 'train.caption.jsonl')}]",
                 f"output.dir={_yaml_value(layout.run('base'))}", f"train.seed={settings.seed}",
                 *([f"train.max_steps={settings.base_steps}"] if settings.base_steps else []),
                 *quiet, *settings.base_overrides],
        "lora": [f"model.path={_yaml_value(layout.run('base'))}",
                 f"data.train=[{_yaml_value(layout.data / 'train.direction.jsonl')}]",
                 f"output.dir={_yaml_value(layout.run('lora'))}", f"train.seed={settings.seed}",
                 *([f"train.max_steps={settings.lora_steps}"] if settings.lora_steps else []),
                 *quiet, *settings.lora_overrides],
    }
    recipe = {name: load_config(layout.configs / f"{name}.yaml", overrides[name], check_paths=False)
              for name in ("base", "lora")}

    def eval_options(run: str) -> RunOptions:
        """Media settings as the model was trained (the run's config), greedy decoding."""
        return RunOptions(
            batch_size=settings.eval_batch_size, settings=recipe[run].data.media_settings(),
            generation=GenerationOptions(max_new_tokens=settings.max_new_tokens), progress=settings.progress,
        )

    evals = {  # name -> (model, adapter, data file, the config whose data settings it uses)
        "init_caption": (layout.init, None, layout.data / "test.caption.jsonl", "base"),
        "base_caption": (layout.run("base"), None, layout.data / "test.caption.jsonl", "base"),
        "blind_caption": (layout.run("base"), None, layout.blind_data, "base"),
        "base_direction": (layout.run("base"), None, layout.data / "test.direction.jsonl", "lora"),
        "lora_direction": (layout.run("base"), layout.run("lora"), layout.data / "test.direction.jsonl", "lora"),
    }

    def eval_command(name: str) -> str:
        model, adapter, data, run = evals[name]
        return run_command_line(model, data, layout.eval(name), adapter=adapter, options=eval_options(run),
                                metrics=EVAL_METRICS)

    def evaluate(name: str) -> None:
        model, adapter, data, run = evals[name]
        result = evaluate_run(model, data, layout.eval(name), adapter=adapter, options=eval_options(run),
                              metrics=EVAL_METRICS)
        shown = ", ".join(f"{m} {result.metrics[m]:.1f}" for m in ("bleu4", "exact_match") if m in result.metrics)
        echo(f"    {shown} -> {result.out_dir}")

    def training(name: str) -> None:
        config = load_config(layout.configs / f"{name}.yaml", overrides[name])
        checkpoint = latest_checkpoint(Path(config.output.dir))
        before = json.loads((checkpoint / CHECKPOINT_STATE).read_text())["step"] if checkpoint else 0
        result = train(config)
        # The steps this call trained (all of them, unless it resumed), for seconds per step.
        state.setdefault("steps_timed", {})[name] = result.steps - before

    def eval_step(name: str) -> None:
        commands[name] = eval_command(name)
        steps.run(name, commands[name], _eval_done(layout.eval(name)), lambda: evaluate(name))

    def train_step(name: str) -> None:
        commands[name] = _train_command(layout.configs / f"{name}.yaml", overrides[name])
        steps.run(name, commands[name], (layout.run(name) / RESULT_FILE).is_file(), lambda: training(name))

    eval_step("init_caption")
    train_step("base")
    eval_step("base_caption")
    commands["blind_caption"] = (
        f"# quickstart writes {layout.blank_video} (grey, {description['frames']} frames at {description['fps']:g} "
        f"fps, {description['size']}x{description['size']}) and {layout.blind_data}\n"
        "# (the test caption records, every video replaced by the blank one), then:\n" + eval_command("blind_caption")
    )

    def blind() -> None:
        if not (layout.blank_video.is_file() and layout.blind_data.is_file()):
            _write_blind_data(layout, description)
        evaluate("blind_caption")

    steps.run("blind_caption", commands["blind_caption"], _eval_done(layout.eval("blind_caption")), blind)
    eval_step("base_direction")
    train_step("lora")
    eval_step("lora_direction")

    # The report.
    steps.number += 1
    echo(f"[{steps.number}/{len(STEP_TITLES)}] {STEP_TITLES['report']}")
    report_started = time.monotonic()
    summary, losses = _summarize(layout, settings, state, description, evals, commands)
    report.write_chart(summary, losses, layout.root / report.CHART_FILE)
    state["seconds"]["report"] = round(time.monotonic() - report_started, 2)  # all but the last two small files
    summary["total_seconds"] = round(sum(summary["seconds"].values()), 2)
    report.write_summary_and_report(layout.root, summary, STEP_TITLES)
    write_json(layout.root / STATE_FILE, state)
    echo(f"    wrote {layout.root / report.SUMMARY_FILE}, {layout.root / report.REPORT_FILE} and "
         f"{layout.root / report.CHART_FILE}")
    echo("")
    echo(report.render_table(summary))
    echo(f"{time.monotonic() - started:.0f} s in this call; {summary['total_seconds']:.0f} s for the whole "
         f"quickstart. Report: {layout.root / report.REPORT_FILE}")
    return QuickstartResult(layout.root, summary["passed"], {key: summary[key] for key in report.SUMMARY_KEYS},
                            layout.root / report.REPORT_FILE)


def _summarize(
    layout: Layout, settings: QuickstartSettings, state: dict, description: dict, evals: dict, commands: dict
) -> tuple[dict, dict[str, list[tuple[int, float]]]]:
    """summary.json's content (total_seconds still 0) and the loss curves, from the files the steps wrote."""
    from vidlab import __version__
    from vidlab.evaluation.run import PREDICTIONS
    from vidlab.models.info import model_info

    records = {str(r["id"]): r for r in read_jsonl(layout.data / "test.caption.jsonl")}
    vocabulary = {"colour": description["colours"], "shape": description["shapes"],
                  "direction": description["directions"]}
    eval_results = {}
    for name, (model, adapter, data, _) in evals.items():
        folder = layout.eval(name)
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        rows = read_jsonl(folder / PREDICTIONS)
        eval_results[name] = {
            "label": report.EVAL_LABELS[name], "folder": str(folder), "model": str(model),
            "adapter": str(adapter) if adapter else None, "data": str(data), "records": len(rows),
            "metrics": {m: metrics[m] for m in EVAL_METRICS if isinstance(metrics.get(m), (int, float))},
            "attributes": report.attribute_accuracy(rows, records, vocabulary)
            if name in report.CAPTION_EVALS else None,
        }
    base_bleu4 = eval_results["base_caption"]["metrics"].get("bleu4")
    blind_bleu4 = eval_results["blind_caption"]["metrics"].get("bleu4")
    blind_ratio = blind_bleu4 / base_bleu4 if base_bleu4 and blind_bleu4 is not None else None
    before = eval_results["base_direction"]["metrics"].get("exact_match")
    after = eval_results["lora_direction"]["metrics"].get("exact_match")
    lora_gain = after - before if before is not None and after is not None else None
    losses = {name: _loss_curve(layout.run(name)) for name in ("base", "lora")}
    training_results = {
        name: _training_numbers(layout.run(name), losses[name], state["seconds"].get(name),
                                state.get("steps_timed", {}).get(name))
        for name in ("base", "lora")
    }
    checks = report.run_checks(eval_results, blind_ratio, lora_gain)
    summary = {
        "passed": all(c["passed"] for c in checks),
        "checks": checks,
        "evals": eval_results,
        "training": training_results,
        "blind_bleu4_ratio": blind_ratio,
        "lora_gain": lora_gain,
        "model": {"spec": asdict(TinySpec()), "parameters": model_info(layout.init)["parameters"]},
        "data": {"folder": str(layout.data), "videos": description["videos"], "frames": description["frames"],
                 "fps": description["fps"], "size": description["size"]},
        "settings": settings.recorded(),
        "commands": commands,
        "seconds": state["seconds"],
        "total_seconds": 0.0,
        "out": str(layout.root),
        "vidlab_version": __version__,
    }
    return summary, losses
