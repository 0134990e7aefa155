"""Sealed status updates without a broker: what a status says opens for its origin alone."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.errors import SealError, SecurityError, SignatureInvalid
from broker.security.rules import OriginSecurity, ReceiverSecurity
from broker.security.status_seal import SEALED_FIELDS, open_status
from broker.wire import models as m
from broker.wire.codec import Codec
from broker.wire.registry import STATUS_UPDATE, EmbeddedRegistry
from tests.support.factories import make_status_update
from tests.support.security import give_keys, keyed_network

CODEC = Codec(EmbeddedRegistry())
ORGS = ("hl-a", "hl-b", "police-nl", "police-de")
ITEM = "00000000-0000-5000-8000-00000000000a"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    trust = tmp_path / "trust.toml"
    settings = Settings(state_dir=tmp_path / "state", network_file=tmp_path / "network.toml")
    give_keys(settings, trust, *ORGS)
    return {"settings": settings, "network": keyed_network(trust)}


def _canaries() -> dict[str, str]:
    tag = secrets.token_hex(6)
    return {
        "note": f"note-canary-{tag}",
        "reason": f"REASON_CANARY_{tag.upper()}",
        "ip": f"198.51.100.{secrets.randbelow(200) + 20}",
        "provider": f"provider-canary-{tag}",
    }


def _update(c: dict[str, str], emitter: str = "police-de") -> m.StatusUpdate:
    hosting = m.HostingEvidence(ip=c["ip"], provider=c["provider"])
    outcome = m.ItemOutcome(
        item_id=ITEM,
        outcome=m.ItemOutcomeKind.STILL_ONLINE,
        observed_at=datetime.now(UTC),
        hosting=hosting,
    )
    return make_status_update(
        origin_org="hl-a",
        emitted_by=emitter,
        status="DELAYED",
        note=c["note"],
        reason_code=c["reason"],
        item_outcomes=(outcome,),
    )


def _send(env: dict[str, Any], update: m.StatusUpdate) -> tuple[bytes, list[Any], dict[str, Any]]:
    """What StatusSender puts on the wire: sealed by the emitter, then signed."""
    emitter = ReceiverSecurity.load(env["settings"], env["network"], update.emitted_by)
    datum = emitter.seal_status(CODEC, update.to_avro())
    value = CODEC.encode(STATUS_UPDATE, datum)
    return value, emitter.sign_status(value, datum), datum


def test_what_a_status_says_is_sealed_and_opens_for_its_origin(env: dict[str, Any]) -> None:
    c = _canaries()
    update = _update(c)
    value, headers, outer = _send(env, update)
    for canary in c.values():
        assert canary.encode() not in value, "a canary readable in the status bytes"
        assert all(canary.encode() not in v for _, v in headers)
    assert {k: outer[k] for k in SEALED_FIELDS} == dict(SEALED_FIELDS)
    assert (outer["referral_id"], outer["emitted_by"], outer["origin_org"], outer["status"]) == (
        update.referral_id,
        "police-de",
        "hl-a",
        "DELAYED",
    )
    origin = OriginSecurity.load(env["settings"], env["network"], "hl-a")
    got, _ = origin.receive_status(CODEC, value, headers)
    assert m.StatusUpdate.from_avro(got) == update
    # Another member cannot open it, even one the update were addressed to on a copy.
    other = OriginSecurity.load(env["settings"], env["network"], "hl-b")
    keys = other.keys
    assert keys is not None
    with pytest.raises(SealError, match="not sealed for hl-b"):
        open_status(CODEC, outer, "hl-b", keys.encryption)


def test_a_receipt_with_nothing_to_say_goes_as_it_is(env: dict[str, Any]) -> None:
    receipt = make_status_update(origin_org="hl-a", emitted_by="police-de")
    value, _, outer = _send(env, receipt)
    assert outer["sealed"] is None
    assert value == CODEC.encode(STATUS_UPDATE, receipt.to_avro())


def test_a_sealed_status_that_says_otherwise_in_clear_is_refused(env: dict[str, Any]) -> None:
    c = _canaries()
    origin = OriginSecurity.load(env["settings"], env["network"], "hl-a")
    keys = origin.keys
    assert keys is not None
    _, _, outer = _send(env, _update(c))
    # The seal of police-de's update under police-nl's name: bound to its emitter.
    with pytest.raises(SealError, match="does not open"):
        open_status(CODEC, {**outer, "emitted_by": "police-nl"}, "hl-a", keys.encryption)
    # Another status in clear than the one sealed (re-signed by the emitter itself).
    with pytest.raises(SealError, match="differs from what it says in clear"):
        open_status(CODEC, {**outer, "status": "REMOVED"}, "hl-a", keys.encryption)
    with pytest.raises(SealError, match="both sealed and in clear"):
        open_status(CODEC, {**outer, "note": "in clear too"}, "hl-a", keys.encryption)
    # Bytes altered after signing fail the signature before the seal is looked at.
    value, headers, _ = _send(env, _update(c))
    altered = value[:-3] + bytes([value[-3] ^ 1]) + value[-2:]
    with pytest.raises(SignatureInvalid):
        origin.receive_status(CODEC, altered, headers)


def test_a_no_plain_network_refuses_to_send_a_status_its_origin_cannot_open(
    env: dict[str, Any], tmp_path: Path
) -> None:
    c = _canaries()
    update = _update(c).model_copy(update={"origin_org": "hl-z"})
    emitter = ReceiverSecurity.load(env["settings"], env["network"], "police-de")
    with pytest.raises(SecurityError, match="hl-z has no valid encryption key"):
        emitter.seal_status(CODEC, update.to_avro())
