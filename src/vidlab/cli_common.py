"""What every `vidlab` command group shares: quiet library logs, one-line user errors."""

from __future__ import annotations

import typer

from vidlab.errors import VidlabError


def quiet_transformers() -> None:
    """Hide transformers' info logs and loading bars; vidlab prints its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def run_app(app: typer.Typer) -> None:
    """Run a typer app; a user error prints one clear line (no traceback) and exits with status 2."""
    try:
        app()
    except VidlabError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise SystemExit(2) from None
