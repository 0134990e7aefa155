"""Routing checked where it is acted on: pure checks of a decision against what arrived.

The router's headers (``referral.route.*``) say where a record was meant to go,
but anyone who can write to a topic can write headers. The organisations that
act on a referral therefore recompute :func:`~broker.routing.decide.decide`
from the signed envelope and check the record against it:

* a **sink** delivers a referral only if the decision has a destination on the
  topic it arrived on (its jurisdiction and its lane: urgent only for URGENT)
  that names the sink's organisation (:func:`check_arrival`);
* an **origin** acts on a status update only from an organisation the decision
  sends the referral to (:func:`check_recipient`).
"""

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
