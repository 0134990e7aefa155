"""The routing decision: a pure function of a referral envelope and the network.

Input is the envelope as the codec decodes it (a plain dict in Avro form), so the
router never builds models or touches the case body. Rules, in order:

1. Every jurisdiction's country code is normalised (case, whitespace); an
   unknown code is a :class:`~broker.errors.RoutingError`, never a new topic.
2. Each served jurisdiction goes to its topic; an ``URGENT`` referral to that
   jurisdiction's urgent lane.
3. A jurisdiction nobody serves goes to the unassigned topic, for the fallback
   recipient.
4. TLP ``RED`` goes only to its named recipients: destinations without one are
   dropped, and each destination names only the recipients it may reach.
5. No derivable jurisdiction at all is a ``RoutingError`` (→ dead letter).

Every destination says why (the basis of each jurisdiction, ``(derived)`` where
the country came from a hosting IP); :attr:`RoutingDecision.reason` is the
header-safe summary that travels with the record and into the ledger.

Hosting countries reach the envelope at the source: :func:`add_hosting_jurisdictions`
turns each reported item's hosting country (or its IP, resolved offline with
``iptocc``) into a ``HOSTING`` jurisdiction, so routing never needs the body —
which may be sealed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.errors import RoutingError
from broker.network import Network
from broker.wire.countries import is_country
from broker.wire.topics import TopicNames

__all__ = [
    "DecisionCache",
    "Destination",
    "RoutingDecision",
    "add_hosting_jurisdictions",
    "country_of_ip",
    "decide",
    "status_destination",
]


@dataclass(frozen=True)
class Destination:
    """One topic a referral is published to, for whom and why."""

    topic: str
    #: The jurisdictions this destination covers (several for the unassigned topic).
    countries: tuple[str, ...]
    #: Organisation ids meant to receive it here.
    orgs: tuple[str, ...]
    #: ``CC:BASIS[,BASIS...]`` per country, e.g. ``DE:HOSTING(derived)``.
    basis: str
    urgent: bool = False
    unassigned: bool = False


@dataclass(frozen=True)
class RoutingDecision:
    """Where a referral goes; ``reason`` is the header/ledger summary."""

    destinations: tuple[Destination, ...]
    dropped_for_red: tuple[str, ...] = field(default=())

    @property
    def reason(self) -> str:
        """Header-safe summary: ``DE:HOSTING->referrals.to.DE; US:HOSTING->unassigned``."""
        parts = []
        for d in self.destinations:
            target = "unassigned" if d.unassigned else ("urgent" if d.urgent else "lane")
            parts.append(f"{d.basis}->{target}")
        if self.dropped_for_red:
            parts.append("RED-excluded:" + ",".join(self.dropped_for_red))
        return "; ".join(parts)

    @property
    def orgs(self) -> tuple[str, ...]:
        """Every organisation meant to receive the referral, in destination order."""
        seen: dict[str, None] = {}
        for d in self.destinations:
            for org in d.orgs:
                seen.setdefault(org)
        return tuple(seen)


def _safe_code(raw: object) -> str:
    """A printable rendering of a bad code for error messages (never long payload text)."""
    text = str(raw)
    if len(text) <= 8 and text.isascii() and text.isprintable():
        return repr(text)
    return "(not a country code)"


def _normalise(raw: object, index: int) -> str:
    if not isinstance(raw, str):
        raise RoutingError(f"jurisdictions[{index}].country: not a string")
    code = raw.strip().upper()
    if not is_country(code):
        raise RoutingError(
            f"jurisdictions[{index}].country: unknown country code {_safe_code(raw.strip())}"
        )
    return code


def _bases(items: Sequence[tuple[str, bool]]) -> str:
    labels = dict.fromkeys(f"{b}(derived)" if derived else b for b, derived in items)
    return ",".join(labels)


def decide(
    envelope: Mapping[str, Any], network: Network, names: TopicNames | None = None
) -> RoutingDecision:
    """Decide the destinations of a referral from its envelope alone."""
    names = names or TopicNames()
    by_country: dict[str, list[tuple[str, bool]]] = {}
    for i, j in enumerate(envelope.get("jurisdictions") or ()):
        code = _normalise(j.get("country"), i)
        by_country.setdefault(code, []).append(
            (str(j.get("basis", "UNSPECIFIED")), bool(j.get("derived", False)))
        )
    if not by_country:
        raise RoutingError("no derivable jurisdiction: the referral names none")

    urgent = envelope.get("priority") == "URGENT"
    handling = envelope.get("handling") or {}
    red = handling.get("tlp") == "RED"
    named = tuple(handling.get("recipients") or ())
    if red:
        if not named:
            raise RoutingError("TLP RED without named recipients")
        unknown = [org for org in named if not network.has_organisation(org)]
        if unknown:
            raise RoutingError(f"TLP RED names {len(unknown)} recipient(s) not in the network")

    destinations: list[Destination] = []
    unassigned: list[str] = []
    dropped: list[str] = []
    for code, items in by_country.items():
        orgs = network.receivers(code)
        if not orgs:
            unassigned.append(code)
            continue
        if red:
            orgs = [o for o in orgs if o in named]
            if not orgs:
                dropped.append(code)
                continue
        topic = names.urgent(code) if urgent else names.jurisdiction(code)
        destinations.append(
            Destination(topic, (code,), tuple(orgs), f"{code}:{_bases(items)}", urgent=urgent)
        )
    if unassigned:
        fallback = network.routing.fallback
        if red and fallback not in named:
            dropped.extend(unassigned)
        else:
            basis = "+".join(f"{cc}:{_bases(by_country[cc])}" for cc in unassigned)
            destinations.append(
                Destination(
                    names.unassigned, tuple(unassigned), (fallback,), basis, unassigned=True
                )
            )
    if not destinations:
        raise RoutingError(
            "TLP RED: none of the named recipients serves the referral's jurisdictions"
        )
    return RoutingDecision(tuple(destinations), tuple(dropped))


class DecisionCache:
    """Memoises :func:`decide` by what it reads of an envelope (bounded).

    Referrals repeat a small set of jurisdiction/priority/handling shapes, so the
    router decides each shape once. Errors are not cached.
    """

    def __init__(self, network: Network, names: TopicNames, max_size: int = 4096) -> None:
        self.network = network
        self.names = names
        self.max_size = max_size
        self._cache: dict[tuple[Any, ...], RoutingDecision] = {}

    def decide(self, envelope: Mapping[str, Any]) -> RoutingDecision:
        """The decision for ``envelope`` (computed once per shape)."""
        handling = envelope.get("handling") or {}
        key = (
            tuple(
                (j.get("country"), j.get("basis"), j.get("derived"))
                for j in envelope.get("jurisdictions") or ()
            ),
            envelope.get("priority"),
            handling.get("tlp"),
            tuple(handling.get("recipients") or ()),
        )
        found = self._cache.get(key)
        if found is None:
            found = decide(envelope, self.network, self.names)
            if len(self._cache) >= self.max_size:
                self._cache.clear()
            self._cache[key] = found
        return found


def status_destination(status: Mapping[str, Any], network: Network, names: TopicNames) -> str:
    """The status topic of the organisation a status update goes back to."""
    origin = status.get("origin_org")
    if not isinstance(origin, str) or not network.has_organisation(origin):
        raise RoutingError("status update for an organisation that is not in the network")
    return names.status(origin)


def country_of_ip(ip: str) -> str | None:
    """The country of an IP address from the offline ``iptocc`` tables, if any."""
    import iptocc

    try:
        code = iptocc.country_code(ip.strip())
    except Exception:  # malformed address: no country
        return None
    return code if isinstance(code, str) and is_country(code) else None


def add_hosting_jurisdictions(
    jurisdictions: Iterable[Mapping[str, Any]], items: Iterable[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """The envelope's jurisdictions plus a HOSTING one per item's hosting country.

    An item with a hosting country adds it as given; one with only an IP adds
    the country ``iptocc`` resolves offline, marked ``derived``. Duplicates are
    not repeated; an IP that resolves to no country adds nothing.
    """
    out = [dict(j) for j in jurisdictions]
    seen = {(str(j.get("country", "")).strip().upper(), j.get("basis")) for j in out}
    for item in items:
        hosting = item.get("hosting") or {}
        country, derived = hosting.get("country"), False
        if not country and hosting.get("ip"):
            country, derived = country_of_ip(str(hosting["ip"])), True
        if not country:
            continue
        code = str(country).strip().upper()
        if (code, "HOSTING") in seen:
            continue
        seen.add((code, "HOSTING"))
        out.append({"country": code, "basis": "HOSTING", "derived": derived})
    return out
