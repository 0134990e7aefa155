"""Per-item outcomes and the re-referral rule: pure functions, no Kafka, no files."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from broker.errors import ConfigError
from broker.ids import resolve_id
from broker.wire.models import HostingEvidence, ItemOutcome, ItemOutcomeKind

__all__ = [
    "CHILD_REFERRAL_NAMESPACE",
    "OUTCOMES_SEPARATOR",
    "ItemRef",
    "Reroute",
    "child_reason",
    "child_referral_id",
    "counts",
    "parent_reason",
    "parse_item_specs",
    "parse_reroute",
    "reroutes",
    "split_status_reason",
    "status_reason",
    "summarise",
]

#: Namespace of child referral ids: ``uuid5(NAMESPACE_URL, "urn:referral-broker:reroute")``.
CHILD_REFERRAL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:referral-broker:reroute")

_KINDS = {k.value: k for k in ItemOutcomeKind}
_RANK = {
    ItemOutcomeKind.REMOVED: 0,
    ItemOutcomeKind.STILL_ONLINE: 2,
    ItemOutcomeKind.NOT_FOUND: 3,
    ItemOutcomeKind.NOT_ILLEGAL: 4,
}
_KEYS = {"ip", "country", "provider", "under"}


@dataclass(frozen=True)
class ItemRef:
    """What the origin keeps of one item it referred: its id and hosting country."""

    item_id: str
    country: str | None = None


@dataclass(frozen=True)
class Reroute:
    """One moved item to re-refer: from ``parent`` to the hosting ``country`` as ``child``."""

    parent_referral_id: str
    item_id: str
    country: str
    child_referral_id: str
    #: The new hosting IP the outcome named, if any.
    ip: str | None = None


def child_referral_id(parent_referral_id: str, item_id: str, country: str) -> str:
    """The id of the child referral of a moved item: UUIDv5(parent, item, country)."""
    return str(
        uuid.uuid5(CHILD_REFERRAL_NAMESPACE, f"{parent_referral_id}\n{item_id}\n{country.upper()}")
    )


def _fail(spec_no: int, message: str) -> ConfigError:
    return ConfigError(f"--item #{spec_no}: {message}")


def parse_item_specs(
    specs: Sequence[str],
    item_ids: Sequence[str],
    observed_at: datetime,
    *,
    new_ip: str | None = None,
    new_country: str | None = None,
    assessed_under: str | None = None,
) -> list[ItemOutcome]:
    """Outcomes from ``ID=KIND[:key=value,...]`` specifications (ConfigError on a bad one).

    ``ID`` is an item id of the referral or an unambiguous prefix of one; ``KIND``
    is REMOVED, STILL_ONLINE, NOT_FOUND or NOT_ILLEGAL (any case). Keys: ``ip``,
    ``country``, ``provider`` (where a STILL_ONLINE item is hosted now) and
    ``under`` (whose law, for NOT_ILLEGAL). ``new_ip`` / ``new_country`` apply to
    the one STILL_ONLINE item without its own, ``assessed_under`` to the one
    NOT_ILLEGAL item without its own.
    """
    from pydantic import ValidationError

    from broker.wire.models import problems_of

    parsed: list[dict[str, object]] = []
    for n, spec in enumerate(specs, 1):
        head, _, tail = spec.partition(":")
        given, eq, kind_text = head.partition("=")
        if not eq or not given.strip():
            raise _fail(n, "write ITEM_ID=OUTCOME, e.g. 3f2a9c1e=REMOVED")
        kind = _KINDS.get(kind_text.strip().upper())
        if kind is None:
            raise _fail(n, f"outcome must be one of {', '.join(_KINDS)}")
        item_id = resolve_id(given.strip(), item_ids, "item")
        if item_id not in item_ids:
            raise _fail(n, f"no item of the referral has an id starting with {given.strip()!r}")
        extra: dict[str, str] = {}
        for pair in filter(None, (p.strip() for p in tail.split(","))):
            key, eq, value = pair.partition("=")
            if not eq or key.strip().lower() not in _KEYS:
                raise _fail(n, "extras are key=value with key ip, country, provider or under")
            extra[key.strip().lower()] = value.strip()
        parsed.append({"item_id": item_id, "kind": kind, **extra})
    _apply_default(parsed, ItemOutcomeKind.STILL_ONLINE, ("ip", new_ip), ("country", new_country))
    _apply_default(parsed, ItemOutcomeKind.NOT_ILLEGAL, ("under", assessed_under))
    seen: set[object] = set()
    out = []
    for n, p in enumerate(parsed, 1):
        if p["item_id"] in seen:
            raise _fail(n, "the item has another outcome in this update")
        seen.add(p["item_id"])
        hosting = None
        if any(p.get(k) for k in ("ip", "country", "provider")):
            hosting = {
                "ip": p.get("ip") or None,
                "country": str(p["country"]).upper() if p.get("country") else None,
                "provider": p.get("provider") or None,
            }
        under = p.get("under")
        try:
            out.append(
                ItemOutcome(
                    item_id=str(p["item_id"]),
                    outcome=p["kind"],  # type: ignore[arg-type]
                    observed_at=observed_at,
                    hosting=HostingEvidence.model_validate(hosting) if hosting else None,
                    assessed_under=str(under).upper() if under else None,
                )
            )
        except ValidationError as exc:
            raise _fail(n, "; ".join(problems_of(exc))) from None
    return out


def _apply_default(
    parsed: list[dict[str, object]], kind: ItemOutcomeKind, *pairs: tuple[str, str | None]
) -> None:
    """Give the one ``kind`` outcome without the keys of ``pairs`` the values of the options."""
    given = [(k, v) for k, v in pairs if v]
    if not given:
        return
    open_ = [p for p in parsed if p["kind"] is kind and not any(p.get(k) for k, _ in pairs)]
    option = "/".join(f"--{'assessed-under' if k == 'under' else 'new-' + k}" for k, _ in given)
    if len(open_) != 1:
        raise ConfigError(
            f"{option}: applies to exactly one {kind.value} item without its own"
            f" (found {len(open_)}); use ITEM=...:key=value instead"
        )
    open_[0].update(given)


def counts(outcomes: Iterable[ItemOutcome], *, countries: bool = True) -> dict[str, int]:
    """``{"removed": n, "moved to FR": n, "still online": n, ...}``, in that order.

    Removed first, then moved (by country; without ``countries`` just "moved"), still
    online, not found, not illegal.
    """
    out: dict[tuple[int, str], int] = {}
    for o in outcomes:
        if o.outcome is ItemOutcomeKind.STILL_ONLINE and o.hosting is not None:
            where = o.hosting.country if countries else None
            key = (1, f"moved to {where}" if where else "moved")
        else:
            key = (_RANK[o.outcome], o.outcome.value.lower().replace("_", " "))
        out[key] = out.get(key, 0) + 1
    return {label: n for (_, label), n in sorted(out.items())}


def summarise(
    outcomes: Sequence[ItemOutcome], total: int | None = None, *, countries: bool = True
) -> str:
    """``3 items: 1 removed, 1 moved to FR, 1 still online`` (``total``: items of the referral;
    without ``countries``, "1 moved": the form the ledger carries, where anyone reads it)."""
    if not outcomes:
        return ""
    n = total if total is not None else len(outcomes)
    parts = ", ".join(f"{v} {k}" for k, v in counts(outcomes, countries=countries).items())
    reported = "" if n == len(outcomes) else f" ({len(outcomes)} reported)"
    return f"{n} item{'s' if n != 1 else ''}{reported}: {parts}"


def reroutes(
    parent_referral_id: str,
    outcomes: Iterable[ItemOutcome],
    items: Mapping[str, ItemRef],
    served: Iterable[str],
    routed_to: Iterable[str],
    country_of_ip: Callable[[str], str | None],
) -> list[Reroute]:
    """The moved items to re-refer under the module's rule (see the module docstring)."""
    served_set = set(served)
    routed = set(routed_to)
    out = []
    for o in outcomes:
        if o.outcome is not ItemOutcomeKind.STILL_ONLINE or o.hosting is None:
            continue
        ref = items.get(o.item_id)
        if ref is None:
            continue
        country = o.hosting.country or (country_of_ip(o.hosting.ip) if o.hosting.ip else None)
        if not country or country == ref.country or country in routed:
            continue
        if country not in served_set:
            continue
        out.append(
            Reroute(
                parent_referral_id,
                o.item_id,
                country,
                child_referral_id(parent_referral_id, o.item_id, country),
                o.hosting.ip,
            )
        )
    return out


# -- how re-referrals read in the ledger (REROUTED events' reasons) ----------------------------

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_TO_CHILD = re.compile(rf"^item ({_UUID}) moved to ([A-Z]{{2}}): referral ({_UUID})$")
_FROM_PARENT = re.compile(rf"^child of referral ({_UUID}) \(item ({_UUID})\)$")


def parent_reason(reroute: Reroute) -> str:
    """The REROUTED reason on the parent: ``item <id> moved to <CC>: referral <child id>``."""
    return (
        f"item {reroute.item_id} moved to {reroute.country}: referral {reroute.child_referral_id}"
    )


def child_reason(reroute: Reroute) -> str:
    """The REROUTED reason on the child: ``child of referral <parent id> (item <id>)``."""
    return f"child of referral {reroute.parent_referral_id} (item {reroute.item_id})"


def parse_reroute(referral_id: str, reason: str | None) -> Reroute | None:
    """The re-referral a REROUTED reason of ``referral_id`` names (None: not one of ours).

    On the parent the country is known; on the child it is ``""``.
    """
    text = reason or ""
    if m := _TO_CHILD.match(text):
        item, country, child = m.groups()
        return Reroute(referral_id, item, country, child)
    if m := _FROM_PARENT.match(text):
        parent, item = m.groups()
        return Reroute(parent, item, "", referral_id)
    return None


#: What separates a status from the item outcome summary in a ledger reason.
OUTCOMES_SEPARATOR = "; "


def status_reason(status: str, summary: str) -> str:
    """The origin's DELIVERED reason for a verified status: ``NTD_SENT; 3 items: ...``."""
    return f"{status}{OUTCOMES_SEPARATOR}{summary}" if summary else status


def split_status_reason(reason: str | None) -> tuple[str, str]:
    """``(status, outcome summary)`` of a DELIVERED reason written by :func:`status_reason`."""
    status, _, summary = (reason or "").partition(OUTCOMES_SEPARATOR)
    return status, summary
