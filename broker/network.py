"""The network file: organisations, the routing table and topic layout.

A network file is TOML::

    [network]
    name = "Demo network"
    allow_plain = false       # every referral must be sealed and signed
    trust_file = "trust.toml" # public keys (broker.security.keys), relative to this file

    [topics]
    partitions = 3            # per topic unless overridden below
    [topics.overrides]
    "referrals.intake" = 6

    [[organisations]]
    id = "police-de"
    name = "Bundes Demo Kontaktstelle"
    role = "police"           # hotline | police | fallback
    country = "DE"
    [organisations.connectors.inbox_folder]
    path = "demo/police-de/inbox"

    [routing]
    fallback = "secretariat"
    [routing.jurisdictions]
    DE = ["police-de"]

:func:`load_network` validates the whole file and reports *every* problem with
its location in one :class:`~broker.errors.NetworkFileError`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from broker.errors import NetworkFileError
from broker.wire import topics
from broker.wire.countries import is_country
from broker.wire.topics import TopicNames

__all__ = [
    "Network",
    "Organisation",
    "Role",
    "Routing",
    "TopicLayout",
    "broker_section",
    "load_network",
    "parse_network",
]

Role = Literal["hotline", "police", "fallback"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Organisation(_Frozen):
    """One member of the network and its connector settings."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,62}$")
    name: str = Field(min_length=1)
    role: Role
    country: str
    connectors: dict[str, dict[str, Any]] = Field(default_factory=dict)
    keys: dict[str, Any] = Field(default_factory=dict)


class Routing(_Frozen):
    """Jurisdiction → receiving organisations, and the fallback recipient."""

    fallback: str
    jurisdictions: dict[str, list[str]] = Field(default_factory=dict)


class TopicLayout(_Frozen):
    """Partition counts: a default plus per-topic overrides."""

    partitions: int = Field(default=3, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1, le=10)
    overrides: dict[str, int] = Field(default_factory=dict)

    def partitions_for(self, topic: str) -> int:
        """Partitions for ``topic`` (the ledger has one, so its order is total)."""
        if topic in self.overrides:
            return self.overrides[topic]
        if topic == topics.LEDGER:
            return 1
        return self.partitions


class Deadlines(_Frozen):
    """How long a destination may take to return RECEIVED before it is overdue."""

    receipt_hours: float = Field(default=72.0, gt=0)
    urgent_receipt_hours: float = Field(default=8.0, gt=0)


class NetworkInfo(_Frozen):
    """The ``[network]`` table."""

    name: str = "referral network"
    allow_plain: bool = True
    #: Public keys of the organisations (:mod:`broker.security.keys`), relative to the file.
    trust_file: str | None = None


class Network(_Frozen):
    """A validated network: who is in it and where referrals go."""

    network: NetworkInfo = Field(default_factory=NetworkInfo)
    broker: dict[str, Any] = Field(default_factory=dict)
    topics: TopicLayout = Field(default_factory=TopicLayout)
    deadlines: Deadlines = Field(default_factory=Deadlines)
    organisations: list[Organisation]
    routing: Routing

    def organisation(self, org_id: str) -> Organisation:
        """The organisation with id ``org_id`` (KeyError if there is none)."""
        for org in self.organisations:
            if org.id == org_id:
                return org
        raise KeyError(org_id)

    def has_organisation(self, org_id: str) -> bool:
        """True if an organisation with that id is in the network."""
        return any(org.id == org_id for org in self.organisations)

    @property
    def fallback(self) -> Organisation:
        """The fallback recipient of referrals for unserved jurisdictions."""
        return self.organisation(self.routing.fallback)

    def served(self) -> list[str]:
        """The jurisdictions that have at least one receiving organisation, sorted."""
        return sorted(cc for cc, orgs in self.routing.jurisdictions.items() if orgs)

    def receivers(self, country: str) -> list[str]:
        """Organisation ids that receive referrals for ``country`` (may be empty)."""
        return list(self.routing.jurisdictions.get(country, []))

    def subscriptions(self, org_id: str, names: TopicNames | None = None) -> list[str]:
        """The referral topics an organisation's sink consumes."""
        names = names or TopicNames()
        subs = [
            t
            for cc, orgs in sorted(self.routing.jurisdictions.items())
            if org_id in orgs
            for t in (names.jurisdiction(cc), names.urgent(cc))
        ]
        if org_id == self.routing.fallback:
            subs.append(names.unassigned)
        return subs

    def required_topics(self, names: TopicNames | None = None) -> dict[str, int]:
        """Every topic the network needs, with its partition count."""
        names = names or TopicNames()
        bare = [
            topics.INTAKE,
            topics.UNASSIGNED,
            topics.DEADLETTER,
            topics.STATUS_INTAKE,
            topics.LEDGER,
        ]
        for cc in self.served():
            bare += [topics.jurisdiction_topic(cc), topics.urgent_topic(cc)]
        bare += [topics.status_topic(org.id) for org in self.organisations]
        return {names.prefix + name: self.topics.partitions_for(name) for name in bare}


def broker_section(path: Path) -> dict[str, Any]:
    """The ``[broker]`` table of a network file (empty if the file is absent)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    section = data.get("broker", {})
    return dict(section) if isinstance(section, dict) else {}


def load_network(path: str | Path) -> Network:
    """Read and validate a network file; raise NetworkFileError listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise NetworkFileError(str(p), [f"{p}: cannot read: {exc.strerror}"]) from exc
    return parse_network(text, str(p))


def parse_network(text: str, source: str = "<network>") -> Network:
    """Validate network TOML text; ``source`` names it in problem locations."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise NetworkFileError(source, [f"{source}: not valid TOML: {exc}"]) from exc
    problems = [f"{source}: {p}" for p in _problems(data)]
    network: Network | None = None
    try:
        network = Network.model_validate(data)
    except ValidationError as exc:
        problems[:0] = [f"{source}: {p}" for p in _pydantic_problems(exc, data)]
    if problems or network is None:
        raise NetworkFileError(source, _dedupe(problems))
    return network


def _dedupe(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _org_label(data: dict[str, Any], index: int) -> str:
    orgs = data.get("organisations")
    if isinstance(orgs, list) and index < len(orgs) and isinstance(orgs[index], dict):
        org_id = orgs[index].get("id")
        if isinstance(org_id, str):
            return f"organisations[{index}] ({org_id})"
    return f"organisations[{index}]"


def _pydantic_problems(exc: ValidationError, data: dict[str, Any]) -> list[str]:
    out = []
    for err in exc.errors():
        loc = list(err["loc"])
        if len(loc) >= 2 and loc[0] == "organisations" and isinstance(loc[1], int):
            where = ".".join([_org_label(data, loc[1]), *map(str, loc[2:])])
        else:
            where = ".".join(str(x) for x in loc) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        out.append(f"{where}: {msg}")
    return out


def _problems(data: dict[str, Any]) -> list[str]:
    """Cross-checks pydantic cannot express; tolerant of a partly broken file."""
    out: list[str] = []
    orgs = data.get("organisations")
    org_ids: dict[str, int] = {}
    if not isinstance(orgs, list) or not orgs:
        out.append("organisations: the network has no organisations")
        orgs = []
    for i, org in enumerate(orgs):
        if not isinstance(org, dict):
            continue
        label = _org_label(data, i)
        org_id = org.get("id")
        if isinstance(org_id, str):
            if org_id in org_ids:
                out.append(
                    f"{label}.id: duplicate organisation id {org_id!r} "
                    f"(first at organisations[{org_ids[org_id]}])"
                )
            else:
                org_ids[org_id] = i
        country = org.get("country")
        if isinstance(country, str) and not is_country(country):
            out.append(f"{label}.country: unknown ISO 3166-1 alpha-2 country code {country!r}")
    routing = data.get("routing")
    if not isinstance(routing, dict):
        out.append("routing: missing [routing] table")
        return out
    fallback = routing.get("fallback")
    if not fallback:
        out.append("routing.fallback: no fallback organisation for unserved jurisdictions")
    elif isinstance(fallback, str) and fallback not in org_ids:
        out.append(f"routing.fallback: unknown organisation {fallback!r}")
    juris = routing.get("jurisdictions", {})
    if isinstance(juris, dict):
        for cc, receivers in juris.items():
            where = f"routing.jurisdictions.{cc}"
            if not is_country(cc):
                out.append(f"{where}: unknown ISO 3166-1 alpha-2 country code {cc!r}")
            if not isinstance(receivers, list):
                continue
            for receiver in receivers:
                if isinstance(receiver, str) and receiver not in org_ids:
                    out.append(f"{where}: unknown organisation {receiver!r}")
            if isinstance(receivers, list) and len(set(map(str, receivers))) != len(receivers):
                out.append(f"{where}: an organisation is listed twice")
    layout = data.get("topics", {})
    if isinstance(layout, dict):
        for name in (
            (layout.get("overrides") or {}) if isinstance(layout.get("overrides"), dict) else {}
        ):
            if not _known_topic_name(name, org_ids):
                out.append(f"topics.overrides.{name}: not a topic of this network")
    return out


def _known_topic_name(name: str, org_ids: dict[str, int]) -> bool:
    fixed = {
        topics.INTAKE,
        topics.UNASSIGNED,
        topics.DEADLETTER,
        topics.STATUS_INTAKE,
        topics.LEDGER,
    }
    if name in fixed or topics.is_jurisdiction_topic(name):
        return True
    return any(name == topics.status_topic(org_id) for org_id in org_ids)
