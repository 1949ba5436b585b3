"""The `vidlab eval run` command line that does what a `vidlab.evaluate(...)` call does (the quickstart prints it
before each evaluation), spelled from the settings' own fields so that it follows them."""

from __future__ import annotations

import shlex
from pathlib import Path

from vidlab.evaluation.run import RunOptions
from vidlab.settings import GenerationOptions, changed_flags


def run_command_line(model: str | Path, data: str | Path, out: str | Path, *, adapter: str | Path | None = None,
                     options: RunOptions | None = None, metrics: list[str] | tuple[str, ...] | None = None) -> str:
    """The `vidlab eval run` command that does what `vidlab.evaluate(model, data, out, ...)` does with these
    arguments: each setting that differs from its default becomes its flag."""
    options = options or RunOptions()
    args = ["vidlab", "eval", "run", "--model", str(model), *(["--adapter", str(adapter)] if adapter else []),
            "--data", str(data), "--out", str(out)]
    defaults = RunOptions()
    for name in ("batch_size", "limit", "workers"):
        if getattr(options, name) != getattr(defaults, name):
            args += [f"--{name.replace('_', '-')}", str(getattr(options, name))]
    args += changed_flags(options.settings)
    if options.generation.max_new_tokens != GenerationOptions().max_new_tokens:
        args += ["--max-new-tokens", str(options.generation.max_new_tokens)]
    if metrics:
        args += ["--metrics", ",".join(metrics)]
    if not options.progress:
        args.append("--no-progress")
    return " ".join(shlex.quote(a) for a in args)
