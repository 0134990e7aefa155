"""The demo's police requests (issue 26): a few between the Nordic points of contact.

Urgent and not, one refused, one clarified first; the Art. 18 figures counted
from the signed ledger afterwards. Sealed runs only (police messages need keys).
"""

from __future__ import annotations

import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from typing import Any

from broker.config import Settings
from broker.ledger.store import LedgerStore
from broker.network import Network
from broker.requests.codes import RefusalGround
from broker.requests.desk import Desk
from broker.requests.router import RequestRouter
from broker.requests.stats import art18
from broker.security.keys import LiveKeys, OrgKeys, key_dir, load_trust
from broker.security.signing import ledger_signer
from broker.wire.codec import Codec
from cli.app import console

__all__ = ["NORDIC", "run_requests", "start_request_router"]

NORDIC = ("police-se", "police-no", "police-dk", "police-fi")
_CODES = {"handling": "H1", "reliability": "B", "assessment": "2", "language": "en"}


def start_request_router(
    settings: Settings, network: Network, codec: Codec, stack: ExitStack
) -> RequestRouter | None:
    """Start the request router in a thread (early: its group join overlaps the referrals)."""
    keys = OrgKeys.load(key_dir(settings, "router"), "router")
    if keys is None or not all(network.has_organisation(o) for o in NORDIC):
        return None
    trust = load_trust(network, settings.network_file)
    signer = ledger_signer(LiveKeys.fixed(keys, "router"), "router")
    router = RequestRouter(settings, network, codec, trust, signer=signer)
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), name="requests", daemon=True)
    thread.start()
    stack.callback(thread.join, 30)
    stack.callback(stop.set)
    return router


def _ask(urgent: bool, access: str, what: str) -> dict[str, Any]:
    return {"urgent": urgent, "access": access, "purpose": what, "items": [what], **_CODES}


def run_requests(settings: Settings, network: Network, codec: Codec) -> None:
    """Four requests round the Nordic SPOCs, then their Art. 18 figures from the ledger."""
    started = time.monotonic()
    trust = load_trust(network, settings.network_file)
    desks: dict[str, Desk] = {}
    try:
        for org in NORDIC:
            keys = OrgKeys.load(key_dir(settings, org), org)
            if keys is None:
                return
            desks[org] = Desk(settings, network, codec, keys, trust)
        ground = _play(desks)
    finally:
        for desk in desks.values():
            desk.close()
    console.print(
        "police requests: 4 between the Nordic points of contact (2 urgent): 3 answered,"
        f" 1 clarified first, 1 refused ({ground}) in {time.monotonic() - started:.1f}s;"
        " Art. 18 from the signed ledger:",
        markup=False,
    )
    year = datetime.now(UTC).year
    with LedgerStore.for_settings(settings) as store:
        store.sync(settings, codec)
        tables = [t for t in art18(store.records(), network, year) if t.spoc in NORDIC]
    for t in tables:
        refused = ", ".join(f"{g} {n}" for g, n in sorted(t.refusals.items())) or "none"
        console.print(
            f"  {t.state}: sent {sum(t.sent.values())}, received {sum(t.received.values())},"
            f" answered within the limit {sum(t.within.values())}, late"
            f" {sum(t.late.values())}, refused: {refused}",
            markup=False,
        )


def _play(desks: dict[str, Desk]) -> str:
    se, no, dk, fi = (desks[o] for o in NORDIC)
    ground = next(iter(RefusalGround)).value
    r1 = se.request("police-no", "demo-case-1", _ask(True, "DIRECT", "who holds account 1"))
    r2 = no.request("police-dk", "demo-case-2", _ask(False, "DIRECT", "who hosts site 2"))
    r3 = dk.request("police-fi", "demo-case-3", _ask(True, "INDIRECT", "records of case 3"))
    r4 = fi.request("police-se", "demo-case-4", _ask(False, "INDIRECT", "owner of number 4"))
    _settle(desks, [no, dk, fi, se])
    no.answer(r1, {"text": "account holder known", "attachments": [], **_CODES})
    dk.ask_clarification(r2, {"question": "which period?"})
    fi.refuse(r3, {"ground": ground})
    se.answer(r4, {"text": "number owner known", "attachments": [], **_CODES})
    _settle(desks, [se, no, dk, fi])
    no.give_clarification(r2, {"text": "the last month"})
    _settle(desks, [dk])
    dk.answer(r2, {"text": "hosting company known", "attachments": [], **_CODES})
    _settle(desks, [no])
    return ground


def _settle(desks: dict[str, Desk], readers: list[Desk]) -> None:
    for desk in desks.values():
        desk.flush()
    for desk in readers:
        desk.receive(expect=1, timeout=30, idle=0.0)
