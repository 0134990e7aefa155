"""Synthetic referrals for the demo and the benchmark (never real data).

Hosts are under ``example.org`` or ``.invalid``, hashes are random hex, text is
neutral placeholder text. Hosting IPs are documentation addresses (which
resolve to no country) or, where a test of offline IP resolution needs one, a
well-known public resolver address.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["DemoMix", "synthetic_batch", "synthetic_referral"]

_ALGORITHM_HEX = {"MD5": 32, "SHA1": 40, "SHA256": 64, "PDQ": 64}


def _ms(dt: datetime) -> str:
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000).isoformat()


def synthetic_referral(
    rng: random.Random,
    origin: str,
    countries: list[tuple[str, str]],
    *,
    priority: str = "NORMAL",
    tlp: str = "AMBER",
    recipients: list[str] | None = None,
    hosting_ip: str | None = None,
) -> dict[str, Any]:
    """One valid referral as JSON (the shape sources accept): ``countries`` = (code, basis)."""
    now = datetime.now(UTC) - timedelta(seconds=5)
    n = rng.randrange(10**9)
    host_country = next((c for c, b in countries if b == "HOSTING"), None)
    hosting: dict[str, Any] = {
        "ip": hosting_ip or f"192.0.2.{rng.randrange(1, 255)}",
        "asn": 64496 + rng.randrange(16),
        "provider": f"Example Hosting {rng.randrange(100)}",
        "country": None if hosting_ip else host_country,
    }
    algorithm = rng.choice(list(_ALGORITHM_HEX))
    digits = _ALGORITHM_HEX[algorithm]
    digest = f"{rng.getrandbits(4 * digits):0{digits}x}"
    return {
        "envelope": {
            "referral_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "case_id": f"case-{rng.getrandbits(48):012x}",
            "origin_org": origin,
            "jurisdictions": [
                {"country": c, "basis": b, "derived": False}
                for c, b in countries
                if not (hosting_ip and b == "HOSTING")
            ],
            "priority": priority,
            "urgency_reason": "ONGOING_ABUSE" if priority == "URGENT" else None,
            "handling": {"tlp": tlp, "recipients": recipients or [], "handling_code": "H0"},
            "created_at": _ms(now),
            "external_refs": [{"system": "ICCAM", "id": f"iccam-demo-{n}"}],
        },
        "body": {
            "items": [
                {
                    "url": f"https://host-{n % 997}.example.org/gallery/{n}",
                    "media_type": rng.choice(["IMAGE", "VIDEO"]),
                    "hashes": [{"algorithm": algorithm, "value": digest}],
                    "hosting": hosting,
                }
            ],
            "classification": {
                "legal_status": "BASELINE",
                "incident_type": "CSAM_IMAGERY",
                "annotations": [],
                "victim_age_group": "PREPUBESCENT",
            },
            "timeline": {"received_at": _ms(now), "assessed_at": _ms(now)},
            "prior_actions": {},
            "summary": "Synthetic demo referral; neutral placeholder text.",
        },
    }


@dataclass(frozen=True)
class DemoMix:
    """Shares of the demo batch (the rest are ordinary single-jurisdiction referrals)."""

    urgent: float = 0.10
    multi: float = 0.15
    unassigned: float = 0.08
    derived: float = 0.04
    red: float = 0.02
    invalid: float = 0.03


def synthetic_batch(
    n: int,
    origins: list[str],
    served: list[str],
    unserved: list[str],
    *,
    seed: int = 7,
    mix: DemoMix | None = None,
    red_recipient: tuple[str, str] | None = None,
    hosted: list[str] | None = None,
) -> list[tuple[str, dict[str, Any], str]]:
    """``n`` referrals as ``(origin, referral JSON, kind)``; kind names what it shows.

    Material is hosted in ``hosted`` (default: ``served``), the countries whose hosted
    material has a receiver; the other served countries are named as a victim's location.

    Kinds: ``normal``, ``urgent``, ``multi``, ``unassigned``, ``derived`` (hosting
    country only from an IP), ``red`` (TLP RED to ``red_recipient`` = (org, country),
    the police of the victim's country), ``invalid`` (fails validation at the source).
    """
    mix = mix or DemoMix()
    hosts = hosted or served
    rng = random.Random(seed)
    out = []
    for i in range(n):
        origin = origins[i % len(origins)]
        r = rng.random()
        cc = rng.choice(hosts)
        if r < mix.invalid:
            ref = synthetic_referral(rng, origin, [(cc, "HOSTING")])
            ref["body"]["items"][0]["url"] = "not a url"
            kind = "invalid"
        elif r < mix.invalid + mix.red and red_recipient is not None:
            org, country = red_recipient
            other = rng.choice([c for c in hosts if c != country] or hosts)
            # The victim's country's police is named; the hosting country is left out.
            ref = synthetic_referral(
                rng,
                origin,
                [(country, "VICTIM_LOCATION"), (other, "HOSTING")],
                tlp="RED",
                recipients=[org],
            )
            kind = "red"
        elif r < mix.invalid + mix.red + mix.unassigned:
            ref = synthetic_referral(rng, origin, [(rng.choice(unserved), "HOSTING")])
            kind = "unassigned"
        elif r < mix.invalid + mix.red + mix.unassigned + mix.derived:
            victim = rng.choice(served)
            ref = synthetic_referral(
                rng, origin, [(victim, "VICTIM_LOCATION"), ("US", "HOSTING")], hosting_ip="8.8.8.8"
            )
            kind = "derived"
        elif r < mix.invalid + mix.red + mix.unassigned + mix.derived + mix.multi:
            second = rng.choice([c for c in served if c != cc])
            ref = synthetic_referral(rng, origin, [(cc, "HOSTING"), (second, "VICTIM_LOCATION")])
            kind = "multi"
        elif r < mix.invalid + mix.red + mix.unassigned + mix.derived + mix.multi + mix.urgent:
            ref = synthetic_referral(rng, origin, [(cc, "HOSTING")], priority="URGENT")
            kind = "urgent"
        else:
            ref = synthetic_referral(rng, origin, [(cc, "HOSTING")])
            kind = "normal"
        out.append((origin, ref, kind))
    return out
