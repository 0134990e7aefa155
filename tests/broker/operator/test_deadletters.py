"""A dead letter replayed from the CLI is recorded with who replayed it, as the console does."""

from __future__ import annotations

import dataclasses
import getpass
import os

from typer.testing import CliRunner

from broker.config import Settings
from broker.kafka import clients
from broker.kafka.deadletter import send_dead_letter
from broker.network import Network
from broker.wire.codec import Codec
from broker.wire.registry import EmbeddedRegistry
from broker.wire.topics import Headers
from cli.main import app
from console.operator import OperatorDesk
from tests.support.kafka import cli_env, publish, read_topic

BY = "Ann Operator (hl-nl)"


def _dead_letters(settings: Settings, n: int) -> list[str]:
    """``n`` records on the intake, each dead-lettered as the router does; their letter ids."""
    names = settings.topic_names()
    values = [(f"k{i}".encode(), os.urandom(16)) for i in range(n)]
    publish(settings, names.intake, values, [(Headers.ORIGIN, b"hl-nl")])
    originals = read_topic(settings, names.intake, at_least=n)
    producer = clients.producer(settings, role="test")
    try:
        for record in originals:
            send_dead_letter(
                producer, names.deadletter, record, "ROUTE_DECIDE", ValueError("x"), "r"
            )
        producer.flush(10)
    finally:
        producer.close()
    letters = read_topic(settings, names.deadletter, at_least=n)
    return [f"{r.partition}:{r.offset}" for r in letters]


def test_cli_replay_records_who_replayed_as_the_console_does(
    provisioned: Settings, network: Network
) -> None:
    names = provisioned.topic_names()
    a, b, c = _dead_letters(provisioned, 3)
    env = cli_env(provisioned)
    runner = CliRunner()
    named = runner.invoke(app, ["dlq", "replay", "--id", a, "--by", f"  {BY} "], env=env)
    assert named.exit_code == 0, named.output
    assert "replayed 1 dead letter(s)" in named.output
    unnamed = runner.invoke(app, ["dlq", "replay", "--id", b], env=env)
    assert unnamed.exit_code == 0, unnamed.output
    blank = runner.invoke(app, ["dlq", "replay", "--id", c, "--by", "   "], env=env)
    assert blank.exit_code == 2
    assert blank.output.strip() == "error: name who replays (it is recorded)"
    desk = OperatorDesk(provisioned, network, Codec(EmbeddedRegistry()))
    by_console = desk.replay(c, BY)
    # The console's list of replays holds the CLI's too, newest first, recorded alike.
    console_row, default_row, cli_row = desk.replays()
    assert [r.letter_id for r in (console_row, default_row, cli_row)] == [c, b, a]
    assert console_row == by_console
    assert cli_row.by == console_row.by == BY
    assert default_row.by == getpass.getuser()
    same = {f.name for f in dataclasses.fields(cli_row)} - {"at", "letter_id"}
    assert {k: getattr(cli_row, k) for k in same} == {k: getattr(console_row, k) for k in same}
    assert cli_row.sent
    assert cli_row.skipped is None
    assert cli_row.original_topic == names.intake
    # Three replays sent (the blank one was refused before anything was sent).
    intake = read_topic(provisioned, names.intake, at_least=6)
    assert len(intake) == 6
    values = sorted(r.value for r in intake)
    assert values[::2] == values[1::2]  # each original once more, byte for byte
    # The original's headers kept, the error headers gone.
    assert [list(r.headers) for r in intake] == [[(Headers.ORIGIN, b"hl-nl")]] * 6
