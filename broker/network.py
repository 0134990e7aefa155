"""The network file: organisations, the routing table and topic layout."""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from broker.errors import NetworkFileError, UnknownName
from broker.retention import Retention
from broker.validation import validation_errors
from broker.wire import topics
from broker.wire.countries import is_country
from broker.wire.models import JurisdictionBasis
from broker.wire.topics import TopicNames

__all__ = [
    "ROLES",
    "KnownContent",
    "Network",
    "Organisation",
    "Role",
    "Routing",
    "RoutingRule",
    "Scope",
    "Sender",
    "TopicLayout",
    "broker_section",
    "load_network",
    "parse_network",
]

Role = Literal["hotline", "police", "fallback"]
#: Where a jurisdiction lies for a rule: the sender's own country, another one, or either.
Scope = Literal["home", "abroad", "any"]
#: The sender a rule is for: a role, or any sender (also one that is not in the network).
Sender = Literal["hotline", "police", "fallback", "any"]
ROLES: tuple[Role, ...] = ("hotline", "police", "fallback")


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
    #: The country's single point of contact for police requests (:mod:`broker.requests`).
    spoc: bool = False


class RoutingRule(_Frozen):
    """One row of the routing table: which roles receive what, by sender role and basis.

    A rule matches a jurisdiction of a referral when the sender's role is ``sender``
    (or ``sender`` is ``any``), the jurisdiction's basis is in ``basis`` (or
    ``basis`` is empty) and its country is the sender's own (``home``), another
    (``abroad``) or either (``any``). ``to`` lists the receiving roles in order of
    preference: the first role with an organisation serving the country receives.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    sender: Sender = Field(alias="from")
    basis: tuple[JurisdictionBasis, ...] = ()
    where: Scope = "any"
    to: tuple[Role, ...] = Field(min_length=1)

    def matches(self, role: str | None, basis: str, home: bool) -> bool:
        """True if this rule applies to a sender of ``role`` (None: not in the network)."""
        if self.sender != "any" and self.sender != role:
            return False
        if self.basis and basis not in self.basis:
            return False
        return self.where == "any" or (self.where == "home") == home

    def covers(self, other: RoutingRule) -> bool:
        """True if this rule matches everything ``other`` matches (``other`` is then unused)."""
        return (
            (self.sender == "any" or self.sender == other.sender)
            and (not self.basis or (bool(other.basis) and set(other.basis) <= set(self.basis)))
            and (self.where == "any" or self.where == other.where)
        )

    def label(self) -> str:
        """``hotline/HOSTING,SERVICE_PROVIDER/abroad -> hotline`` (for tables and messages)."""
        basis = ",".join(b.value for b in self.basis) or "any"
        return f"{self.sender}/{basis}/{self.where} -> {','.join(self.to)}"


class Routing(_Frozen):
    """Who serves each jurisdiction (by role), the role rules, and the fallback recipient."""

    fallback: str
    #: Country → organisation ids (each under its own role) or role → organisation ids.
    jurisdictions: dict[str, list[str] | dict[Role, list[str]]] = Field(default_factory=dict)
    #: The role rules in order (None: flat routing, every receiver gets everything).
    rules: tuple[RoutingRule, ...] | None = None


class TopicLayout(_Frozen):
    """Partition counts: a default plus per-topic overrides."""

    partitions: int = Field(default=3, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1, le=10)
    overrides: dict[str, int] = Field(default_factory=dict)

    def partitions_for(self, topic: str) -> int:
        """Partitions for ``topic`` (the ledger and its checkpoints have one: a total order)."""
        if topic in self.overrides:
            return self.overrides[topic]
        if topic in (topics.LEDGER, topics.CHECKPOINTS):
            return 1
        return self.partitions


class Deadlines(_Frozen):
    """How long a destination may take to return RECEIVED (and to answer) before it is overdue."""

    receipt_hours: float = Field(default=72.0, gt=0)
    urgent_receipt_hours: float = Field(default=8.0, gt=0)
    #: How long a recipient may take to answer beyond RECEIVED (``referral inbox`` overdue);
    #: the defaults are the SIENA answer times (EU Directive 2023/977): 7 days, urgent 3 days.
    answer_hours: float = Field(default=168.0, gt=0)
    urgent_answer_hours: float = Field(default=72.0, gt=0)


class NetworkInfo(_Frozen):
    """The ``[network]`` table."""

    name: str = "referral network"
    allow_plain: bool = True
    #: Public keys of the organisations (:mod:`broker.security.keys`), relative to the file.
    trust_file: str | None = None
    #: Signatures older than this are refused (:mod:`broker.security.window`).
    signature_max_age_days: float = Field(default=30.0, gt=0)
    #: Signatures further in the future than this are refused (clock skew).
    signature_clock_skew_seconds: float = Field(default=300.0, ge=0)


class KnownContent(_Frozen):
    """The ``[known]`` table: who evaluates match tokens (:mod:`broker.known`), and how often."""

    #: The organisation holding the OPRF key (e.g. the secretariat).
    evaluator: str
    #: A new OPRF key every so many days (tokens are re-derived under it).
    rotate_days: float = Field(default=90.0, gt=0)
    #: At most ``rate_items`` evaluated elements per organisation per ``rate_seconds``.
    rate_items: int = Field(default=40_000, ge=1)
    rate_seconds: float = Field(default=3600.0, gt=0)


class Network(_Frozen):
    """A validated network: who is in it and where referrals go."""

    network: NetworkInfo = Field(default_factory=NetworkInfo)
    broker: dict[str, Any] = Field(default_factory=dict)
    topics: TopicLayout = Field(default_factory=TopicLayout)
    deadlines: Deadlines = Field(default_factory=Deadlines)
    retention: Retention = Field(default_factory=Retention)
    organisations: list[Organisation]
    routing: Routing
    #: Known-content matching (None: off).
    known: KnownContent | None = None

    def organisation(self, org_id: str) -> Organisation:
        """The organisation with id ``org_id`` (UnknownName, a KeyError, if there is none)."""
        for org in self.organisations:
            if org.id == org_id:
                return org
        raise UnknownName("organisation", org_id, (o.id for o in self.organisations))

    def has_organisation(self, org_id: str) -> bool:
        """True if an organisation with that id is in the network."""
        return any(org.id == org_id for org in self.organisations)

    @property
    def fallback(self) -> Organisation:
        """The fallback recipient of referrals for unserved jurisdictions."""
        return self.organisation(self.routing.fallback)

    def role_of(self, org_id: str) -> Role | None:
        """The role of ``org_id``, or None if it is not in the network."""
        for org in self.organisations:
            if org.id == org_id:
                return org.role
        return None

    @property
    def by_role(self) -> bool:
        """True if ``[[routing.rules]]`` route by role; False for flat routing."""
        return self.routing.rules is not None

    def served(self) -> list[str]:
        """The jurisdictions that have at least one receiving organisation, sorted."""
        return sorted(cc for cc in self.routing.jurisdictions if self.receivers(cc))

    def receivers(self, country: str, role: Role | None = None) -> list[str]:
        """Organisation ids serving ``country`` (as ``role``, or in any role); may be empty."""
        entry = self.routing.jurisdictions.get(country)
        if entry is None:
            return []
        if isinstance(entry, dict):
            if role is not None:
                return list(entry.get(role, ()))
            return list(dict.fromkeys(org for orgs in entry.values() for org in orgs))
        if role is None:
            return list(entry)
        return [org for org in entry if self.role_of(org) == role]

    def topic_config(self, name: str) -> dict[str, str]:
        """Topic-level settings of a bare topic name: ``match.tokens`` is compacted."""
        return {"cleanup.policy": "compact"} if name == topics.MATCH_TOKENS else {}

    def subscriptions(self, org_id: str, names: TopicNames | None = None) -> list[str]:
        """The referral topics an organisation's sink consumes."""
        names = names or TopicNames()
        subs = [
            t
            for cc in sorted(self.routing.jurisdictions)
            if org_id in self.receivers(cc)
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
            topics.CHECKPOINTS,
        ]
        for cc in self.served():
            bare += [topics.jurisdiction_topic(cc), topics.urgent_topic(cc)]
        bare += [topics.status_topic(org.id) for org in self.organisations]
        if self.known is not None:
            bare += [topics.EVALUATE, topics.EVALUATED, topics.MATCH_TOKENS]
        out = {names.prefix + name: self.topics.partitions_for(name) for name in bare}
        # Police requests (issue 26) once two countries have a point of contact.
        from broker.requests.routes import request_topics  # (it imports this module)

        return {**out, **request_topics(self, names)}


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
    own = _problems(data)
    problems = [f"{source}: {p}" for p in own]
    network: Network | None = None
    try:
        network = Network.model_validate(data)
    except ValidationError as exc:
        problems[:0] = [f"{source}: {p}" for p in _pydantic_problems(exc, data, own)]
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


#: What a ``[routing.jurisdictions]`` entry must be (one line instead of pydantic's union noise).
_RECEIVERS_SHAPE = "must be a list of organisation ids or a table of role = [organisation ids]"


def _pydantic_problems(exc: ValidationError, data: dict[str, Any], own: list[str]) -> list[str]:
    """One line per pydantic error; ``own`` are the cross-check lines already found."""
    out = []
    for parts, msg in validation_errors(exc, unknown_key="unknown key"):
        loc = list(parts)
        if len(loc) >= 2 and loc[0] == "organisations" and isinstance(loc[1], int):
            where = ".".join([_org_label(data, loc[1]), *map(str, loc[2:])])
        elif loc[:2] == ["routing", "jurisdictions"] and len(loc) >= 3:
            # A union of list and table: say once what the entry must be, unless the
            # cross-checks already named the problem of this entry.
            where = f"routing.jurisdictions.{loc[2]}"
            if any(line.startswith(where + ":") or line.startswith(where + ".") for line in own):
                continue
            msg = _RECEIVERS_SHAPE
        elif loc[:2] == ["routing", "rules"] and len(loc) >= 3 and isinstance(loc[2], int):
            where = ".".join([f"routing.rules[{loc[2]}]", *map(str, loc[3:])])
            if len(loc) > 4 and loc[3] in ("basis", "to"):  # one line per list, not per item
                where = f"routing.rules[{loc[2]}].{loc[3]}"
        else:
            where = ".".join(str(x) for x in loc) or "(top level)"
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
    known = data.get("known")
    evaluator = known.get("evaluator") if isinstance(known, dict) else None
    if isinstance(evaluator, str) and evaluator not in org_ids:
        out.append(f"known.evaluator: unknown organisation {evaluator!r}")
    roles = _roles(orgs)
    juris = routing.get("jurisdictions", {})
    if isinstance(juris, dict):
        for cc, receivers in juris.items():
            out += _jurisdiction_problems(str(cc), receivers, org_ids, roles)
    rules = routing.get("rules")
    if rules is not None:
        out += _rule_problems(rules, juris if isinstance(juris, dict) else {}, roles)
    layout = data.get("topics", {})
    if isinstance(layout, dict):
        for name in (
            (layout.get("overrides") or {}) if isinstance(layout.get("overrides"), dict) else {}
        ):
            if not _known_topic_name(name, org_ids):
                out.append(f"topics.overrides.{name}: not a topic of this network")
    return out


def _roles(orgs: list[Any]) -> dict[str, str]:
    """Organisation id → role, for the organisations whose id and role are strings."""
    return {
        org["id"]: org["role"]
        for org in orgs
        if isinstance(org, dict)
        and isinstance(org.get("id"), str)
        and isinstance(org.get("role"), str)
    }


def _jurisdiction_problems(
    cc: str, receivers: Any, org_ids: dict[str, int], roles: dict[str, str]
) -> list[str]:
    """Problems of one ``[routing.jurisdictions]`` entry (a list, or a role table)."""
    where = f"routing.jurisdictions.{cc}"
    out = []
    if not is_country(cc):
        out.append(f"{where}: unknown ISO 3166-1 alpha-2 country code {cc!r}")
    groups: list[tuple[str, str | None, list[Any]]] = []
    if isinstance(receivers, list):
        groups.append((where, None, receivers))
    elif isinstance(receivers, dict):
        for role, listed in receivers.items():
            if role not in ROLES:
                out.append(f"{where}.{role}: unknown role (known: {', '.join(ROLES)})")
            elif not isinstance(listed, list):
                out.append(f"{where}.{role}: must be a list of organisation ids")
            else:
                groups.append((f"{where}.{role}", str(role), listed))
    else:
        out.append(f"{where}: {_RECEIVERS_SHAPE}")
    seen: list[str] = []
    for place, role, listed in groups:
        for receiver in listed:
            if not isinstance(receiver, str):
                out.append(f"{place}: organisation ids are strings")
            elif receiver not in org_ids:
                out.append(f"{place}: unknown organisation {receiver!r}")
            elif role is not None and roles.get(receiver) not in (None, role):
                out.append(f"{place}: {receiver!r} has role {roles[receiver]}, not {role}")
        seen += [str(r) for r in listed]
    if len(set(seen)) != len(seen):
        out.append(f"{where}: an organisation is listed twice")
    return out


def _rule_problems(rules: Any, juris: dict[str, Any], roles: dict[str, str]) -> list[str]:
    """Cross-checks of ``[[routing.rules]]``: not empty, no rule hidden by an earlier one,
    no duplicates in a list, and no listed receiver left without a rule reaching its role."""
    if not isinstance(rules, list):
        return []  # pydantic names the shape
    if not rules:
        return ["routing.rules: empty: every referral would go to the fallback"]
    out = []
    parsed: list[tuple[int, RoutingRule]] = []
    for i, raw in enumerate(rules):
        if not isinstance(raw, dict):
            continue
        for key in ("basis", "to"):
            listed = raw.get(key)
            if isinstance(listed, list) and len(set(map(str, listed))) != len(listed):
                out.append(f"routing.rules[{i}].{key}: a value is listed twice")
        try:
            parsed.append((i, RoutingRule.model_validate(raw)))
        except ValidationError:
            continue  # pydantic names it
    for j, (i, rule) in enumerate(parsed):
        earlier = next((k for k, r in parsed[:j] if r.covers(rule)), None)
        if earlier is not None:
            out.append(
                f"routing.rules[{i}]: never used: routing.rules[{earlier}] already matches "
                "every referral it matches"
            )
    if len(parsed) == len(rules):
        reached = {role for _, rule in parsed for role in rule.to}
        for cc, receivers in juris.items():
            if isinstance(receivers, list):
                listed = [r for r in receivers if isinstance(r, str)]
            elif isinstance(receivers, dict):
                listed = [r for v in receivers.values() if isinstance(v, list) for r in v]
            else:
                continue
            for org in listed:
                role = roles.get(org)
                if role is not None and role not in reached:
                    out.append(
                        f"routing.jurisdictions.{cc}: {org!r} never receives anything: "
                        f"no rule routes to role {role}"
                    )
    return out


def _known_topic_name(name: str, org_ids: dict[str, int]) -> bool:
    fixed = {
        topics.INTAKE,
        topics.UNASSIGNED,
        topics.DEADLETTER,
        topics.STATUS_INTAKE,
        topics.LEDGER,
        topics.CHECKPOINTS,
    }
    if name in fixed or topics.is_jurisdiction_topic(name):
        return True
    return any(name == topics.status_topic(org_id) for org_id in org_ids)
