"""The routing decision: a pure function of a referral envelope and the network."""

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
    #: Numbers (1-based) of the ``[[routing.rules]]`` that chose the receivers (flat: none).
    rules: tuple[int, ...] = ()


@dataclass(frozen=True)
class RoutingDecision:
    """Where a referral goes; ``reason`` is the header/ledger summary."""

    destinations: tuple[Destination, ...]
    dropped_for_red: tuple[str, ...] = field(default=())
    #: Countries whose only receiver is the sender itself (nothing sent for them).
    kept_by_sender: tuple[str, ...] = field(default=())

    @property
    def reason(self) -> str:
        """Header-safe summary: ``DE:HOSTING->lane (rule 2); US:HOSTING->unassigned``."""
        parts = []
        for d in self.destinations:
            target = "unassigned" if d.unassigned else ("urgent" if d.urgent else "lane")
            rules = f" (rule {','.join(map(str, d.rules))})" if d.rules else ""
            parts.append(f"{d.basis}->{target}{rules}")
        if self.kept_by_sender:
            parts.append("sender-kept:" + ",".join(self.kept_by_sender))
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


@dataclass(frozen=True)
class _Part:
    """One (country, basis) of a referral and who receives it (rule 3)."""

    country: str
    label: str  # ``HOSTING`` or ``HOSTING(derived)``
    orgs: tuple[str, ...]  # empty: nobody (→ the fallback) unless kept
    rule: int | None = None
    kept: bool = False  # the sender itself is the receiver


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


def _labels(parts: Sequence[_Part]) -> str:
    return ",".join(dict.fromkeys(p.label for p in parts))


def _receivers(
    network: Network, role: str | None, home: bool, code: str, basis: str
) -> tuple[list[str], int | None]:
    """Rule 3: the receivers of one (country, basis) and the number of the rule used."""
    rules = network.routing.rules
    if rules is None:
        return network.receivers(code), None
    for number, rule in enumerate(rules, start=1):
        if rule.matches(role, basis, home):
            for wanted in rule.to:
                found = network.receivers(code, wanted)
                if found:
                    return found, number
            return [], number
    return [], None


def _parts(envelope: Mapping[str, Any], network: Network) -> list[_Part]:
    """Rules 1-4: every (country, basis) of the envelope with its receivers."""
    sender = str(envelope.get("origin_org") or "")
    role = network.role_of(sender)
    home = (
        network.organisation(sender).country
        if role is not None
        else str(envelope.get("origin_country") or "").strip().upper()
    )
    parts: list[_Part] = []
    for i, j in enumerate(envelope.get("jurisdictions") or ()):
        code = _normalise(j.get("country"), i)
        basis = str(j.get("basis", "UNSPECIFIED"))
        label = f"{basis}(derived)" if j.get("derived", False) else basis
        orgs, rule = _receivers(network, role, code == home, code, basis)
        others = tuple(o for o in orgs if o != sender)
        parts.append(_Part(code, label, others, rule, kept=bool(orgs) and not others))
    return parts


def _red_named(envelope: Mapping[str, Any], network: Network) -> tuple[str, ...] | None:
    """Rule 7: the named recipients of a TLP RED referral (None: not RED)."""
    handling = envelope.get("handling") or {}
    if handling.get("tlp") != "RED":
        return None
    named = tuple(handling.get("recipients") or ())
    if not named:
        raise RoutingError("TLP RED without named recipients")
    unknown = [org for org in named if not network.has_organisation(org)]
    if unknown:
        raise RoutingError(f"TLP RED names {len(unknown)} recipient(s) not in the network")
    return named


def _rules(parts: Iterable[_Part]) -> tuple[int, ...]:
    return tuple(sorted({p.rule for p in parts if p.rule is not None}))


def _fallback(
    unassigned: Mapping[str, Sequence[_Part]], org: str, names: TopicNames
) -> Destination:
    """Rule 5: the unassigned topic, for the fallback, with every part nobody receives."""
    basis = "+".join(f"{cc}:{_labels(ps)}" for cc, ps in unassigned.items())
    rules = _rules(p for ps in unassigned.values() for p in ps)
    return Destination(
        names.unassigned, tuple(unassigned), (org,), basis, unassigned=True, rules=rules
    )


def decide(
    envelope: Mapping[str, Any], network: Network, names: TopicNames | None = None
) -> RoutingDecision:
    """Decide the destinations of a referral from its envelope alone (rules 1-8 above)."""
    names = names or TopicNames()
    parts = _parts(envelope, network)
    if not parts:
        raise RoutingError("no derivable jurisdiction: the referral names none")
    named = _red_named(envelope, network)
    urgent = envelope.get("priority") == "URGENT"
    by_country: dict[str, list[_Part]] = {}
    for part in parts:
        by_country.setdefault(part.country, []).append(part)

    destinations: list[Destination] = []
    unassigned: dict[str, list[_Part]] = {}
    kept = list(dict.fromkeys(p.country for p in parts if p.kept))
    dropped: list[str] = []
    for code, mine in by_country.items():
        served = [p for p in mine if p.orgs]
        nobody = [p for p in mine if not p.orgs and not p.kept]
        if nobody:
            unassigned[code] = nobody
        orgs = list(dict.fromkeys(o for p in served for o in p.orgs))
        if named is not None and orgs:
            orgs = [o for o in orgs if o in named]
            if not orgs:
                dropped.append(code)
        if orgs:
            topic = names.urgent(code) if urgent else names.jurisdiction(code)
            label = f"{code}:{_labels(served)}"
            destinations.append(
                Destination(topic, (code,), tuple(orgs), label, urgent=urgent, rules=_rules(served))
            )
    fallback = network.routing.fallback
    if unassigned and fallback == envelope.get("origin_org"):
        kept += [cc for cc in unassigned if cc not in kept]  # nobody else to hand it to
    elif unassigned and named is not None and fallback not in named:
        dropped += [cc for cc in unassigned if cc not in dropped]
    elif unassigned:
        destinations.append(_fallback(unassigned, fallback, names))
    if not destinations:
        if dropped:
            raise RoutingError(
                "TLP RED: none of the named recipients serves the referral's jurisdictions"
            )
        raise RoutingError(
            "every jurisdiction of the referral is served by its sender: nothing to route"
        )
    return RoutingDecision(tuple(destinations), tuple(dropped), tuple(kept))


class DecisionCache:
    """Memoises :func:`decide` by what it reads of an envelope (bounded).

    Referrals repeat a small set of origin/jurisdiction/priority/handling shapes, so
    the router decides each shape once. Errors are not cached.
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
            envelope.get("origin_org"),
            envelope.get("origin_country"),
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
