"""Every command of the ``referral`` app, given bad arguments, answers in one line.

The commands are found by walking the typer app, so a new command is covered
without editing this file. Each runs against a fresh state directory and no
broker: an unknown organisation, topic, schema or id, or a flag value of the
wrong kind, must give exit 2 (1 where a check is documented to fail with 1),
exactly one line on stderr, and no traceback.
"""

from __future__ import annotations

import enum
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from cli.main import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_NETWORK = ROOT / "examples" / "network.toml"
runner = CliRunner()

#: A value that names nothing in the example network, by parameter name.
UNKNOWN = {
    "org": "police-nope",
    "as_org": "hl-nope",
    "destination": "police-xx",
    "origin": "hl-nope",
    "referral_id": str(uuid.UUID(int=0x5EED)),
    "referral": str(uuid.UUID(int=0x5EED)),
    "topic": "referrals.nope",
    "name": "Nope",
    "kid": "nope-kid",
    "ids": "nope-id",
    "since": "yesterday-ish",
}
#: A value that names something real, by parameter name (to test one bad flag at a time).
KNOWN = {"org": "police-nl", "as_org": "hl-nl", "topic": "referrals.police-nl"}
#: Commands that cannot tell an unknown name without asking the broker (here: none is set up).
NEED_A_BROKER = {("tail",)}
#: Option types given a value of the wrong kind.
WRONG_KIND = {int: "many", float: "soon"}


def leaf_commands() -> Iterator[tuple[list[str], Any]]:
    """Every runnable command of the app as (words, click command)."""

    def walk(cmd: Any, words: list[str]) -> Iterator[tuple[list[str], Any]]:
        subs = getattr(cmd, "commands", None)
        if subs is None:
            yield words, cmd
            return
        for name, sub in sorted(subs.items()):
            yield from walk(sub, [*words, name])

    yield from walk(typer.main.get_command(app), [])


def annotation(param: Any) -> Any:
    """The Python type a parameter was declared with (the item type of a list)."""
    ann = param.type_descriptor.annotation
    args = getattr(ann, "__args__", None)
    return args[0] if args and getattr(ann, "__origin__", None) is list else ann


def is_enum(param: Any) -> bool:
    """True if the parameter takes one of an enumeration's values."""
    ann = annotation(param)
    return isinstance(ann, type) and issubclass(ann, enum.Enum)


def good_value(param: Any, tmp_path: Path) -> str:
    """A value that names something real where there is one (else still an unknown one)."""
    if is_enum(param):
        return str(next(iter(annotation(param))).value)
    if annotation(param) is Path:
        return str(tmp_path / "no-such-file.csv")
    return KNOWN.get(param.name) or UNKNOWN.get(param.name, "nope")


def bad_value(param: Any, tmp_path: Path) -> str:
    """A wrong value: of the wrong kind, not a member, no such file, or naming nothing."""
    ann = annotation(param)
    if ann in WRONG_KIND:
        return WRONG_KIND[ann]
    if is_enum(param):
        return "NOPE"
    if ann is Path and param.name in OUTPUTS:
        return str(tmp_path / "no-such-dir" / "out.json")  # written, so its folder must exist
    if ann is Path:
        return str(tmp_path / "no-such-file.toml")
    return UNKNOWN.get(param.name, "nope")


#: Path parameters that name a file to write, not one to read.
OUTPUTS = frozenset({"out"})


def invocation(words: list[str], cmd: Any, tmp_path: Path, bad: Any = None) -> list[str]:
    """The command line with its required parameters filled in.

    ``bad`` None: every argument names nothing (enumerations keep a valid member);
    else that one parameter gets a wrong value and the others real ones.
    """
    args: list[str] = [*words]
    for param in cmd.params:
        wrong = param is bad or (bad is None and not is_enum(param))
        value = bad_value(param, tmp_path) if wrong else good_value(param, tmp_path)
        if param.param_type_name == "argument" and (param.required or param is bad or bad is None):
            args.append(value)
        elif param.param_type_name == "option" and (param.required or param is bad):
            args += [param.opts[0], value]
    return args


def wrong_values(cmd: Any) -> list[Any]:
    """The parameters of ``cmd`` that have a wrong value to give (flags have none)."""
    return [
        p
        for p in cmd.params
        if not getattr(p, "is_flag", False)
        and (
            annotation(p) in WRONG_KIND
            or annotation(p) is Path
            or is_enum(p)
            or (p.param_type_name == "option" and p.name in UNKNOWN)
        )
    ]


def cases() -> Iterator[Any]:
    """One case per command with its arguments naming nothing, one per wrong value."""
    for words, cmd in leaf_commands():
        name = " ".join(words)
        if any(p.param_type_name == "argument" or p.required for p in cmd.params):
            yield pytest.param(words, None, id=f"{name}:unknown")
        for param in wrong_values(cmd):
            label = param.opts[0] if param.param_type_name == "option" else param.name
            yield pytest.param(words, param.name, id=f"{name}:{label}")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str | None]:
    """A fresh state directory, the example network and no broker."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("REFERRAL_")}
    env.update(
        {
            "REFERRAL_STATE_DIR": str(tmp_path / "state"),
            "REFERRAL_NETWORK_FILE": str(EXAMPLE_NETWORK),
            "COLUMNS": "80",
        }
    )
    return env


def command(words: list[str]) -> Any:
    """The click command named by ``words``."""
    return {tuple(w): c for w, c in leaf_commands()}[tuple(words)]


@pytest.mark.parametrize(("words", "param_name"), list(cases()))
def test_bad_arguments_get_one_line(
    words: list[str], param_name: str | None, env: dict[str, str | None], tmp_path: Path
) -> None:
    cmd = command(words)
    bad = next((p for p in cmd.params if p.name == param_name), None)
    args = invocation(words, cmd, tmp_path, bad)
    result = runner.invoke(app, args, env=env)
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything, (args, everything)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        args,
        repr(result.exception),
    )
    assert result.exit_code in (1, 2), (args, result.exit_code, everything)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, (args, result.stderr)
    line = lines[0]
    assert line.startswith("error: "), (args, line)
    # The line names what is wrong: the flag, or the value given (a file by its path).
    if bad is not None:
        named = [*bad.opts, bad.name, bad_value(bad, tmp_path)]
    else:
        named = [bad_value(p, tmp_path) for p in cmd.params if not is_enum(p)]
        if tuple(words) in NEED_A_BROKER:
            named.append("no bootstrap servers")
    assert any(n in line for n in named), (args, line)
