"""The ``known`` connector kind on the real broker: runtimes tokenise what they send and get."""

from __future__ import annotations

import random
from contextlib import ExitStack

from bench.known_net import RECEIVER, _document, plan
from broker.config import Settings
from broker.known.views import inbox_marks
from broker.wire.codec import Codec
from connectors.runtime import ConnectorRuntime
from tests.support.connectors import wait_for
from tests.support.kafka import start_router
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
        assert mark["matched_on"] == ["sha256", "md5"]
        assert one.published[0].referral_id not in inbox_marks(
            settings, RECEIVER, inbox, inbox.received()
        )
