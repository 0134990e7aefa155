"""The one formatter of pydantic validation errors: `where: message` lines, never quoting input."""

from __future__ import annotations

import re
from collections.abc import Collection

from pydantic import ValidationError

__all__ = ["validation_errors", "validation_problems"]

_PREFIXES = ("Value error, ", "Assertion failed, ")
#: A location part named as it is: field names and indices. Anything else came from input.
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")
#: How much of a (field-like) location part is shown.
_NAME_LENGTH = 32


def _part(part: object) -> str:
    if isinstance(part, int):
        return str(part)
    text = str(part)
    if not _NAME.match(text):
        return "(key)"
    return text if len(text) <= _NAME_LENGTH else text[:_NAME_LENGTH] + "..."


def _message(text: str) -> str:
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def validation_errors(
    exc: ValidationError, *, unknown_key: str | None = None
) -> list[tuple[tuple[int | str, ...], str]]:
    """``(location parts, message)`` of every error of ``exc``, input values left out.

    For callers that name locations their own way (the network file names an
    organisation by its id); :func:`validation_problems` is the common form.
    """
    out: list[tuple[tuple[int | str, ...], str]] = []
    for err in exc.errors(include_input=False, include_url=False):
        if unknown_key is not None and err["type"] == "extra_forbidden":
            message = unknown_key
        else:
            message = _message(str(err["msg"]))
        out.append((tuple(err["loc"]), message))
    return out


def validation_problems(
    exc: ValidationError,
    *,
    skip: Collection[str] = (),
    unknown_key: str | None = None,
) -> list[tuple[str, str]]:
    """``(location, message)`` of every error of ``exc``, in order, without repeats.

    ``skip`` names location parts left out (union tags); ``unknown_key`` replaces
    pydantic's message for a key the model does not have. The location is
    ``""`` for an error of the whole object; a part that does not look like a
    field name (a key someone sent) is shown as ``(key)``, a long one cut short.
    """
    out = [
        (".".join(_part(p) for p in loc if p not in skip), message)
        for loc, message in validation_errors(exc, unknown_key=unknown_key)
    ]
    return list(dict.fromkeys(out))
