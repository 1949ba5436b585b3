"""What every `vidlab` command group shares: quiet library logs, one-line user errors, the media options.

The media options are generated from `vidlab.settings.MediaSettings`' fields (`media_options`): their
flags, help texts and defaults are the schema's, and an option that is not given leaves the library
default in place. Adding a media setting is adding a field there.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import typer
from pydantic import BaseModel

from vidlab.errors import VidlabError
from vidlab.settings import GenerationOptions, MediaSettings, build, flag, option_help

Command = TypeVar("Command", bound=Callable[..., Any])


def quiet_transformers() -> None:
    """Hide transformers' info logs and loading bars; vidlab prints its own progress."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def run_app(app: typer.Typer) -> None:
    """Run a typer app; a user error prints one clear line (no traceback) and exits with status 2."""
    # transformers imports torchao when it is installed, and torch logs a deprecation about torchao's enums at
    # warning level: noise about library internals that would sit above every message of ours.
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    try:
        app()
    except VidlabError as err:
        typer.secho(f"error: {err}", fg="red", err=True)
        raise SystemExit(2) from None


MEDIA_PANEL = "Media settings (an option not given keeps the library default)"


@dataclass(frozen=True)
class MediaOptions:
    """The media options given on the command line (field -> value); every other setting keeps its default."""

    given: dict[str, Any] = field(default_factory=dict)

    def settings(self, base: MediaSettings | None = None, model: str | Path | None = None) -> MediaSettings:
        """`base` (default: the library defaults) with the given options applied; with `model`, the model folder's
        family frame rule first (`vidlab.models.frame_rules`), which the given options override."""
        if model is not None:
            from vidlab.models.frame_rules import family_defaults

            base = (base or MediaSettings()).model_copy(update=family_defaults(model, self.given))
        return media_settings(base, **self.given)


def _option_type(model: type[BaseModel], name: str) -> type:
    """The plain type a field's option parses (`int | None` -> int, `Literal["a", "b"]` -> str); the settings
    object itself checks the value, so a bad one is one `error:` line naming its flag."""
    annotation = model.model_fields[name].annotation
    kinds = [kind for kind in (get_args(annotation) if get_origin(annotation) in (Union, UnionType) else
                               (annotation,)) if kind is not type(None)]
    if len(kinds) == 1 and get_origin(kinds[0]) is Literal:
        kinds = list(dict.fromkeys(type(value) for value in get_args(kinds[0])))
    if len(kinds) != 1 or kinds[0] not in (bool, int, float, str, Path):
        raise TypeError(f"{model.__name__}.{name}: {annotation} has no command-line option; give the field a "
                        "bool, int, float, str or Literal type")
    return kinds[0]


def _option(model: type[BaseModel], name: str) -> inspect.Parameter:
    """The typer option of one field: its flag, its help and default from the schema, None when not given."""
    kind = _option_type(model, name)
    declared = f"{flag(name)}/{flag('no_' + name)}" if kind is bool else flag(name)
    option = typer.Option(declared, help=option_help(model, name), show_default=False, rich_help_panel=MEDIA_PANEL)
    return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                             annotation=Annotated[kind | None, option])


def media_option_names(only: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> list[str]:
    """The MediaSettings fields a command offers as options: all (or those in `only`) but those in `exclude`."""
    names = list(MediaSettings.model_fields) if only is None else list(only)
    unknown = [name for name in [*names, *exclude] if name not in MediaSettings.model_fields]
    if unknown:
        raise TypeError(f"not MediaSettings fields: {', '.join(unknown)}")
    return [name for name in names if name not in set(exclude)]


def media_options(only: Iterable[str] | None = None, exclude: Iterable[str] = ()) -> Callable[[Command], Command]:
    """Decorator of a typer command: one option per MediaSettings field (`media_option_names`), generated from the
    settings (flag, type, help, default), so a new field is an option of every command without touching it.

    The command declares `media_options: MediaOptions` where the options go in its signature, and gets the ones
    given there; `media_options.settings()` builds the MediaSettings. A true/false field is `--name/--no-name`.
    """
    names = media_option_names(only, exclude)

    def decorate(command: Command) -> Command:
        signature = inspect.signature(command, eval_str=True)
        params = list(signature.parameters.values())
        where = list(signature.parameters).index("media_options")
        params[where:where + 1] = [_option(MediaSettings, name) for name in names]

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            given = {name: value for name in names if (value := kwargs.pop(name, None)) is not None}
            return command(*args, media_options=MediaOptions(given), **kwargs)

        # typer reads the options from the signature and the annotations.
        run.__signature__ = signature.replace(parameters=params)
        run.__annotations__ = {p.name: p.annotation for p in params if p.annotation is not inspect.Parameter.empty}
        return run  # type: ignore[return-value]

    return decorate


QuantizeOption = Annotated[
    str | None,
    typer.Option(help="8bit or 4bit LLM weights (bitsandbytes on a GPU; on a CPU 8bit, through torchao).",
                 show_default=False),
]


def media_settings(base: MediaSettings | None = None, **given: Any) -> MediaSettings:
    """`base` (default: the library defaults) with the options given (None: not given). A bad value is one
    `error:` line naming its flag.

    Raises:
        typer.BadParameter: both --max-frames and --num-frames.
        SettingsError: a value the settings refuse, e.g. "--fps: input should be greater than 0 (got -1.0)".
    """
    given = {name: value for name, value in given.items() if value is not None}
    if "max_frames" in given and "num_frames" in given:
        raise typer.BadParameter("give --max-frames or --num-frames, not both")
    values = {**(base.model_dump() if base is not None else {}), **given}
    return build(MediaSettings, values, name=flag)


MaxNewTokensOption = Annotated[
    int | None, typer.Option(help=option_help(GenerationOptions, "max_new_tokens"), show_default=False)
]
TemperatureOption = Annotated[
    float | None, typer.Option(help=option_help(GenerationOptions, "temperature"), show_default=False)
]
TopPOption = Annotated[float | None, typer.Option(help=option_help(GenerationOptions, "top_p"), show_default=False)]


def generation_options(
    *, max_new_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None
) -> GenerationOptions:
    """GenerationOptions from CLI options (None: not given)."""
    values = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p}
    return build(GenerationOptions, values, name=flag)
