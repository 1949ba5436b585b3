"""`vidlab train CONFIG`: thin: read the config, run the loop, say where the results are."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vidlab.cli_common import quiet_transformers


def help_epilog() -> str:
    """The config's sections and keys and the shipped recipes, for `vidlab train --help`."""
    from vidlab.training.config import TrainConfig, recipes_folder

    lines = ["Config sections and keys (`--check` prints the resolved config with every default; "
             "docs/train.md says what each key means):"]
    top = []
    for name, field in TrainConfig.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and hasattr(section, "model_fields"):
            lines.append(f"{name}: {', '.join(section.model_fields)}")
        else:
            top.append(name)
    lines.append(f"top level: {', '.join(top)}")
    recipes = sorted(str(p.relative_to(recipes_folder())) for p in recipes_folder().rglob("*.yaml")
                     if "accelerate" not in p.parts)
    lines.append(f"Recipes to copy ({recipes_folder()}): {', '.join(recipes)}.")
    return "\n\n".join(lines)


def train_command(
    config: Annotated[Path, typer.Argument(help="Training config (YAML); copy one from configs/.")],
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config key, e.g. --set train.max_steps=100 (repeatable)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the newest complete checkpoint in output.dir (same as resume: true).")
    ] = False,
    check: Annotated[bool, typer.Option(help="Only validate the config and print it resolved; train nothing.")] = False,
) -> None:
    """Fine-tune VideoLLaMA3 (LoRA, QLoRA, full; GRPO or DPO) as CONFIG says; accelerate launch for several GPUs."""
    from vidlab.training.config import load_config

    settings = load_config(config, set_ or [])
    if check:
        typer.echo(settings.to_yaml(), nl=False)
        return
    quiet_transformers()
    from vidlab.training.api import train

    result = train(settings, resume=True if resume else None)
    if not result.is_main:
        return  # process 0 reports for the run
    loss = f"{result.final_loss:.4f}" if result.final_loss is not None else "n/a"
    typer.echo(f"trained {result.steps} steps, last logged loss {loss}; skipped {result.skipped} sample(s)")
    typer.echo(f"results in {result.run_dir} (log.jsonl, checkpoints/, skipped.jsonl)")
