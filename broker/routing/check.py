"""Routing checked where it is acted on: pure checks of a decision against what arrived."""

from __future__ import annotations

from broker.errors import Misrouted, NotARecipient
from broker.routing.decide import Destination, RoutingDecision
from broker.wire.topics import TopicNames

__all__ = ["check_arrival", "check_recipient"]


def _lane(names: TopicNames, topic: str) -> str:
    if topic == names.unassigned:
        return "the unassigned topic"
    cc = names.jurisdiction_of(topic)
    if cc is None:
        return "a topic that is no referral lane"
    return f"the {'urgent' if names.is_urgent(topic) else 'normal'} lane of {cc}"


def check_arrival(
    decision: RoutingDecision, topic: str, org_id: str, names: TopicNames
) -> Destination:
    """The destination ``topic`` is in ``decision`` for ``org_id``; Misrouted if there is none."""
    here = [d for d in decision.destinations if d.topic == topic]
    if not here:
        lanes = "; ".join(_lane(names, d.topic) for d in decision.destinations) or "nowhere"
        raise Misrouted(
            f"misrouted: the signed envelope routes to {lanes}, not to {_lane(names, topic)}"
        )
    for dest in here:
        if org_id in dest.orgs:
            return dest
    raise Misrouted(
        f"misrouted: on {_lane(names, topic)} the signed envelope is for "
        f"{','.join(here[0].orgs)}, not {org_id}"
    )


def check_recipient(decision: RoutingDecision, emitter: str) -> None:
    """NotARecipient unless ``decision`` sends the referral to ``emitter``."""
    if emitter not in decision.orgs:
        raise NotARecipient(
            f"status from {emitter}, which the referral was not routed to "
            f"(recipients: {','.join(decision.orgs) or 'none'})"
        )
