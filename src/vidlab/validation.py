"""pydantic validation errors as short lines a user can act on, one per problem, naming each setting.

    fps: input should be a finite number (got inf)
    data.fpss: unknown key; did you mean 'fps'? known keys here: train, val, ...
    model.path: missing (the checkpoint folder or hub id). Add it.

Used for training configs, media settings from CLI options and server requests alike.
"""

from __future__ import annotations

import difflib
import typing
from collections.abc import Callable

from pydantic import BaseModel, ValidationError


def _section_type(annotation) -> type[BaseModel] | None:
    """The pydantic model a field holds (`X` or `X | None`), or None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The section model that holds the field at `loc` (its last part), or None where it is not a model."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        model = _section_type(field.annotation) if field is not None else None
        if model is None:
            return None
    return model


def _first_lower(text: str) -> str:
    return text[:1].lower() + text[1:]


def describe_error(error: dict, name: Callable[[str], str] = str, model: type[BaseModel] | None = None) -> str:
    """One pydantic error (an item of `ValidationError.errors()`) as `setting: what is wrong`.

    Args:
        name: spells a dotted field name as the user wrote it (a CLI flag, a config key).
        model: the validated model, for the known keys near an unknown one and a missing field's description.
    """
    loc = error["loc"]
    where = name(".".join(str(part) for part in loc)) if loc else ""
    section = _model_at(model, loc) if model is not None and loc else None
    if error["type"] == "value_error":
        message = str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
    elif error["type"] == "extra_forbidden":
        known = list(section.model_fields) if section is not None else []
        near = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f"did you mean {near[0]!r}? " if near else ""
        hint += f"known keys here: {', '.join(known)}." if known else ""
        message = f"unknown key; {hint}" if hint else "unknown key"
    elif error["type"] == "missing":
        field = section.model_fields.get(str(loc[-1])) if section is not None else None
        about = f" ({field.description})" if field is not None and field.description else ""
        message = f"missing{about}. Add it."
    else:
        message = f"{_first_lower(error['msg'])} (got {error.get('input')!r})"
    return f"{where}: {message}" if where else message


def describe_errors(err: ValidationError, name: Callable[[str], str] = str,
                    model: type[BaseModel] | None = None) -> list[str]:
    """One line per problem of a ValidationError (see `describe_error`)."""
    return [describe_error(error, name, model) for error in err.errors()]


__all__ = ["describe_error", "describe_errors"]
