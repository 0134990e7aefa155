"""The ``known`` connector kind on the real broker: runtimes tokenise what they send and get."""

from __future__ import annotations

import json
import random
from contextlib import ExitStack
from pathlib import Path

from typer.testing import CliRunner

from bench.known_net import RECEIVER, _document, plan
from broker.config import Settings
from broker.known.views import inbox_marks
from broker.wire.codec import Codec
from cli.main import app
from connectors.runtime import ConnectorRuntime
from tests.support.connectors import wait_for
from tests.support.kafka import cli_env, start_router
from tests.support.known import known_network, running_evaluator


def test_a_repeat_published_by_another_hotline_is_marked_in_the_receivers_inbox(
    settings: Settings,
) -> None:
    settings, network = known_network(settings, connectors=True)
    codec = Codec.from_settings(settings)
    first, again = plan(2, 1, random.Random(2))  # the second repeats the first
    with ExitStack() as stack:
        stack.enter_context(running_evaluator(settings, network))
        stack.callback(start_router(settings, network, codec).stop)
        runtimes = {
            org: stack.enter_context(ConnectorRuntime(settings, network, org, codec))
            for org in (first.org, again.org, RECEIVER)
        }
        one = runtimes[first.org].publisher.publish(
            [("1", _document(first.org, [(0, first)], "NATIONAL", False))]
        )
        assert one.ok
        assert one.known == {}
        two = runtimes[again.org].publisher.publish(
            [("2", _document(again.org, [(1, again)], "NOT_ILLEGAL", False))]
        )
        assert two.ok
        inbox = runtimes[RECEIVER].inbox
        rid = two.published[0].referral_id

        def marked() -> bool:  # the runtime's own index sync (every 5 s) takes the entries
            return bool(inbox_marks(settings, RECEIVER, inbox, inbox.received()).get(rid))

        wait_for(marked, 60, "the repeat marked in police-fr's inbox", step=0.5)
        (mark,) = inbox_marks(settings, RECEIVER, inbox, inbox.received())[rid]
        assert (mark["holder"], mark["classification"]) == (first.org, "NATIONAL")
        assert sorted(mark["matched_on"]) == ["md5", "sha256"]
        assert one.published[0].referral_id not in inbox_marks(
            settings, RECEIVER, inbox, inbox.received()
        )


def test_referral_publish_reports_what_was_previously_assessed(
    settings: Settings, tmp_path: Path
) -> None:
    settings, network = known_network(settings, connectors=True)
    first, again = plan(2, 1, random.Random(3))
    files = []
    for n, (item, legal) in enumerate(((first, "BASELINE"), (again, "NOT_ILLEGAL"))):
        path = tmp_path / f"r{n}.json"
        path.write_text(json.dumps(_document(item.org, [(n, item)], legal, False)))
        files.append(path)
    env = cli_env(settings)
    with running_evaluator(settings, network):
        one = CliRunner().invoke(app, ["publish", str(files[0]), "--as", first.org], env=env)
        assert one.exit_code == 0, one.output
        assert "previously assessed" not in one.output
        two = CliRunner().invoke(app, ["publish", str(files[1]), "--as", again.org], env=env)
    assert two.exit_code == 0, two.output
    assert f"previously assessed by {first.org} as BASELINE on " in two.output
