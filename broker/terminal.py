"""Text that is safe for a terminal: control characters escaped, never passed through."""

from __future__ import annotations

import logging
import re
from types import TracebackType

__all__ = ["EscapingFormatter", "escape"]

ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]

_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff\ufff9-\ufffb]"
)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(value: object) -> str:
    """``str(value)`` with every control and invisible formatting character escaped."""
    return _UNSAFE.sub(_escaped, str(value))


class EscapingFormatter(logging.Formatter):
    """A log formatter whose lines carry no raw control characters.

    The message (with its arguments) is escaped whole, line breaks included, so
    a logged value can neither forge a log line nor reach the terminal raw; a
    traceback keeps its line breaks, every other control character escaped.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        """The record's line, escaped."""
        return escape(super().formatMessage(record))

    def formatException(self, ei: ExcInfo) -> str:
        """The traceback, each line escaped."""
        text = super().formatException(ei)
        return "\n".join(escape(line) for line in text.split("\n"))

    def formatStack(self, stack_info: str) -> str:
        """The stack, each line escaped."""
        return "\n".join(escape(line) for line in stack_info.split("\n"))
