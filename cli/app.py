"""Shared CLI plumbing: error mapping, settings from the context, output helpers."""

from __future__ import annotations

import functools
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup

from broker.config import Settings, load_settings
from broker.errors import ConfigError, ReferralError
from broker.network import Network, load_network
from broker.terminal import EscapingFormatter, escape

__all__ = [
    "NETWORK_OPTION",
    "App",
    "CliState",
    "cell",
    "configure_logging",
    "console",
    "err_console",
    "escape",
    "print_json",
    "service_stop_event",
    "state",
]

#: ``--network FILE`` on a subcommand (same meaning as the global option).
NETWORK_OPTION: Any = typer.Option(
    None, "--network", "-n", help="Network file (TOML); overrides the global setting."
)

F = TypeVar("F", bound=Callable[..., Any])

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def fit_consoles() -> None:
    """Size the consoles for this invocation: ``COLUMNS`` if set, else the terminal's.

    Rich fixes a console's width from ``COLUMNS`` when the console is built (at
    import); a command run later in the same process (tests, the console, a
    long-lived shell) must see the width of its own environment.
    """
    columns = os.environ.get("COLUMNS", "")
    width = int(columns) if columns.isdigit() and int(columns) > 0 else None
    for c in (console, err_console):
        c._width = width  # rich's own per-console override; None: ask the terminal


def cell(value: object) -> Text:
    """A table cell showing ``value`` escaped (never interpreted as rich markup)."""
    return Text(escape("" if value is None else value))


#: Exit codes by error class (the nearest class in the error's MRO wins; else 1).
EXIT_CODES: dict[type[ReferralError], int] = {ConfigError: 2}


def exit_code(exc: ReferralError) -> int:
    """The exit code of a library error: 2 for what the user gave wrong, else 1."""
    for kind in type(exc).__mro__:
        if kind in EXIT_CODES:
            return EXIT_CODES[kind]
    return 1


def _fail(exc: ReferralError) -> typer.Exit:
    for line in str(exc).splitlines() or [type(exc).__name__]:
        err_console.print(f"error: {escape(line)}", markup=False, soft_wrap=True)
    return typer.Exit(exit_code(exc))


def _usage_line(exc: typer.TyperException) -> typer.Exit:
    """Print a usage error (bad flag, bad value, unknown command) as one line."""
    message = " ".join(exc.format_message().replace("Value error, ", "").split())
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:  # the command as typed (the root's name is always `referral`)
        words = ["referral", *ctx.command_path.split()[1:]]
        message += f" (see `{' '.join(words)} --help`)"
    err_console.print(f"error: {escape(message)}", markup=False, soft_wrap=True)
    return typer.Exit(getattr(exc, "exit_code", 2))


class OneLineErrors(TyperGroup):
    """A command group that reports usage errors in one line instead of a usage panel."""

    def make_context(self, *args: Any, **kwargs: Any) -> Any:
        """Parse the group's own options; a usage error becomes one line."""
        try:
            return super().make_context(*args, **kwargs)
        except typer.TyperException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # the help itself, shown as usual
                raise
            raise _usage_line(exc) from None

    def invoke(self, ctx: Any) -> Any:
        """Run the chosen subcommand; a usage error in its parsing becomes one line."""
        try:
            return super().invoke(ctx)
        except typer.TyperException as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":
                raise
            raise _usage_line(exc) from None


class App(typer.Typer):
    """A Typer whose commands map library errors to one-line messages and exit codes."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("no_args_is_help", True)
        kwargs.setdefault("cls", OneLineErrors)
        kwargs.setdefault("pretty_exceptions_show_locals", False)
        super().__init__(**kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:  # type: ignore[override]
        register = super().command(*args, **kwargs)

        def decorator(func: F) -> F:
            @functools.wraps(func)
            def wrapper(*a: Any, **kw: Any) -> Any:
                try:
                    return func(*a, **kw)
                except ReferralError as exc:
                    raise _fail(exc) from None

            register(wrapper)
            return func

        return decorator


@dataclass
class CliState:
    """Global options given on the command line (None = not given)."""

    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        """Effective settings: flags over environment over the network file."""
        if self._settings is None:
            self._settings = load_settings(**self.overrides)
        return self._settings

    def network(self, path: Path | None = None) -> Network:
        """The validated network file: ``path`` if given, else the configured one."""
        if path is not None:
            self.overrides["network_file"] = path
            self._settings = None
        return load_network(self.settings.network_file)


def state(ctx: typer.Context) -> CliState:
    """The CliState of the root command (created empty if absent)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        root.obj = CliState()
    return root.obj


def print_json(data: Any) -> None:
    """Print ``data`` as JSON on stdout (for machines)."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted (as logging's last resort)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        """The current standard error."""
        return sys.stderr


_HANDLER = _StderrHandler()


def configure_logging(
    level: int = logging.WARNING, fmt: str = "%(levelname)s %(name)s: %(message)s"
) -> None:
    """Log to stderr at ``level`` through the escaping formatter (idempotent)."""
    _HANDLER.setFormatter(EscapingFormatter(fmt))
    _HANDLER.setLevel(level)  # records of chattier loggers (kafka: INFO) reach it too
    root = logging.getLogger()
    if _HANDLER not in root.handlers:
        root.addHandler(_HANDLER)
    root.setLevel(level)


def service_stop_event() -> threading.Event:
    """Set up a long-running command: INFO logging, and an Event set by SIGTERM or Ctrl-C.

    kafka-python logs at WARNING only (its INFO lines were 69 of the router's 74 at start-up);
    ``REFERRAL_DEBUG_LOGGERS=kafka`` brings them back.
    """
    configure_logging(logging.INFO, "%(asctime)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    debug = os.environ.get("REFERRAL_DEBUG_LOGGERS", "")
    for name in filter(None, (n.strip() for n in debug.split(","))):
        # For a maintainer chasing a client's behaviour: DEBUG for the named loggers only.
        logging.getLogger(name).setLevel(logging.DEBUG)
    if debug:
        _HANDLER.setLevel(logging.DEBUG)
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return stop
