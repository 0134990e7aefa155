"""The pure decisions of issue 11 without a broker: lifecycle, window, routing checks, statuses,
live trust, checkpoints."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.errors import (
    Misrouted,
    NotARecipient,
    SecurityError,
    SignatureInvalid,
    SignatureOutOfWindow,
)
from broker.ledger.checkpoint import Checkpoint, HeldHead
from broker.lifecycle import (
    FINAL,
    LIFECYCLE,
    STAGE,
    LifecycleError,
    advance,
    allowed_next,
    current_status,
)
from broker.routing.check import check_arrival, check_recipient
from broker.routing.decide import decide
from broker.security.keys import (
    ROUTER,
    LiveKeys,
    LiveTrust,
    OrgKeys,
    init_keys,
    key_dir,
    load_trust,
    revoke_in_trust_file,
)
from broker.security.rules import OriginSecurity, ReceiverSecurity, stage_of
from broker.security.signing import (
    CheckpointContext,
    LedgerContext,
    SignedContext,
    StatusContext,
    sign,
    verify_signed,
)
from broker.security.window import SignatureWindow
from broker.wire.codec import Codec
from broker.wire.models import ReferralStatus as S
from broker.wire.registry import STATUS_UPDATE, EmbeddedRegistry
from broker.wire.topics import TopicNames
from tests.support.factories import make_referral, make_status_update
from tests.support.security import give_keys, keyed_network

CODEC = Codec(EmbeddedRegistry())
ORGS = ("hl-a", "hl-b", "police-nl", "police-de", "police-fr", "secretariat")
NAMES = TopicNames()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    trust = tmp_path / "trust.toml"
    settings = Settings(state_dir=tmp_path / "state", network_file=tmp_path / "network.toml")
    give_keys(settings, trust, *ORGS, ROUTER)
    return {"settings": settings, "trust": trust, "network": keyed_network(trust)}


# -- lifecycle ----------------------------------------------------------------------------------


def test_the_documented_happy_path_and_no_transition_goes_back_a_stage() -> None:
    state = None
    for status in (S.RECEIVED, S.ACCEPTED, S.NTD_SENT, S.REMOVED, S.CLOSED):
        state = advance(state, status)
        assert state is status
    for current, following in LIFECYCLE.items():
        for nxt in following:
            if nxt is not S.DELAYED:
                assert STAGE[nxt] >= STAGE[current], (current, nxt)
    assert {S.CLOSED, S.REJECTED, S.REROUTED} == FINAL
    assert set(LIFECYCLE) | {S.DELAYED} == set(S)


def test_backwards_is_refused_in_one_line_naming_what_may_follow() -> None:
    with pytest.raises(LifecycleError) as closed:
        advance(S.CLOSED, S.ACCEPTED)
    assert (
        str(closed.value)
        == "ACCEPTED refused after CLOSED: allowed next are none (CLOSED is final)"
    )
    with pytest.raises(LifecycleError) as back:
        advance(S.NTD_SENT, S.ACCEPTED)
    assert str(back.value) == (
        "ACCEPTED refused after NTD_SENT: allowed next are NTD_SENT, STILL_ONLINE, REMOVED, "
        "CLOSED, DELAYED"
    )
    assert back.value.problems == [str(back.value)]
    assert S.RECEIVED not in allowed_next(S.RECEIVED), "a person does not send RECEIVED twice"


def test_delays_and_late_receipts_keep_the_stage() -> None:
    assert advance(S.ACCEPTED, S.DELAYED) is S.ACCEPTED
    assert advance(None, S.DELAYED) is S.RECEIVED
    assert advance(S.CLOSED, S.RECEIVED) is S.CLOSED, "a late receipt is no step back"
    assert advance(None, S.ACCEPTED) is S.ACCEPTED, "a status implies the receipt"
    with pytest.raises(LifecycleError):
        advance(S.CLOSED, S.DELAYED)


def test_current_status_is_by_lifecycle_not_by_arrival() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    at = [t0 + timedelta(minutes=i) for i in range(5)]
    assert current_status([]) is None
    got = current_status([(S.CLOSED, at[1]), (S.RECEIVED, at[3]), ("DELAYED", at[4])])
    assert got == (S.CLOSED, at[1])
    assert current_status([(S.NTD_SENT, at[0]), (S.STILL_ONLINE, at[2])]) == (S.STILL_ONLINE, at[2])


# -- the signature window -----------------------------------------------------------------------


def test_the_window_refuses_old_and_future_signatures() -> None:
    window = SignatureWindow(max_age_days=30, skew_seconds=300)
    now = 1_800_000_000_000
    window.check(now - 29 * 86_400_000, now)
    window.check(now + 299_000, now)
    with pytest.raises(SignatureOutOfWindow, match=r"expired: signed 31\.0 days ago"):
        window.check(now - 31 * 86_400_000, now, what="signature")
    with pytest.raises(SignatureOutOfWindow, match="from the future: signed 301 s ahead") as err:
        window.check(now + 301_000, now)
    assert stage_of(err.value) == "SIGNATURE_WINDOW"


def test_an_expired_referral_signature_is_refused_with_its_own_stage(env: dict[str, Any]) -> None:
    datum = make_referral(origin_org="hl-a", origin_country="NL").to_avro()
    origin = OriginSecurity.load(env["settings"], env["network"], "hl-a")
    keys = origin.keys
    assert keys is not None
    value, headers = origin.encode(CODEC, datum, ["police-de"])
    receiver = ReceiverSecurity.load(env["settings"], env["network"], "police-de")
    receiver.receive(CODEC, "referrals.to.DE", value, headers)
    old = time.time_ns() // 1_000_000 - 40 * 86_400_000
    schema = CODEC.schema_id_of(value)
    stale = sign(
        keys.signing,
        keys.signing_id,
        SignedContext.of(datum["envelope"], schema, ["police-de"], signed_at_ms=old),
        value,
    )
    with pytest.raises(SignatureOutOfWindow) as err:
        receiver.receive(CODEC, "referrals.to.DE", value, stale)
    assert stage_of(err.value) == "SIGNATURE_WINDOW"


# -- routing checked where it is acted on ------------------------------------------------------


def test_check_arrival_needs_the_topic_the_lane_and_the_organisation(env: dict[str, Any]) -> None:
    network = env["network"]
    two = make_referral(
        origin_org="hl-a",
        origin_country="NL",
        jurisdictions=[
            {"country": "DE", "basis": "HOSTING", "derived": False},
            {"country": "NL", "basis": "VICTIM_LOCATION", "derived": False},
        ],
    ).to_avro()["envelope"]
    decision = decide(two, network, NAMES)
    assert check_arrival(decision, NAMES.jurisdiction("DE"), "police-de", NAMES).orgs == (
        "police-de",
    )
    with pytest.raises(Misrouted, match="not to the urgent lane of DE"):
        check_arrival(decision, NAMES.urgent("DE"), "police-de", NAMES)
    with pytest.raises(Misrouted, match="not to the normal lane of FR"):
        check_arrival(decision, NAMES.jurisdiction("FR"), "police-fr", NAMES)
    with pytest.raises(Misrouted, match="is for police-nl, not police-de"):
        check_arrival(decision, NAMES.jurisdiction("NL"), "police-de", NAMES)
    urgent = decide({**two, "priority": "URGENT"}, network, NAMES)
    check_arrival(urgent, NAMES.urgent("DE"), "police-de", NAMES)
    with pytest.raises(Misrouted, match="routes to the urgent lane of DE; the urgent lane of NL"):
        check_arrival(urgent, NAMES.jurisdiction("DE"), "police-de", NAMES)
    check_recipient(decision, "police-nl")
    with pytest.raises(NotARecipient, match="recipients: police-de,police-nl"):
        check_recipient(decision, "police-fr")


# -- statuses at the origin ---------------------------------------------------------------------


def _status(env: dict[str, Any], emitter: str, **kw: Any) -> tuple[dict[str, Any], bytes]:
    datum = make_status_update(origin_org="hl-a", emitted_by=emitter, **kw).to_avro()
    return datum, CODEC.encode(STATUS_UPDATE, datum)


def test_the_origin_verifies_a_status_before_acting_on_it(env: dict[str, Any]) -> None:
    settings, network = env["settings"], env["network"]
    origin = OriginSecurity.load(settings, network, "hl-a")
    de = ReceiverSecurity.load(settings, network, "police-de")
    envelope = make_referral(origin_org="hl-a", origin_country="NL").to_avro()["envelope"]
    datum, value = _status(env, "police-de", referral_id=envelope["referral_id"])
    headers = de.sign_status(value, datum)
    got, context = origin.receive_status(CODEC, value, headers)
    assert context is not None
    assert (context.emitter, context.origin, context.status) == ("police-de", "hl-a", "RECEIVED")
    origin.check_status_sender(got, envelope)

    with pytest.raises(SignatureInvalid, match="missing signature on a status update"):
        origin.receive_status(CODEC, value, [])
    fr = ReceiverSecurity.load(settings, network, "police-fr")
    fr_keys = fr.keys
    assert fr_keys is not None
    by_fr = sign(fr_keys.signing, fr_keys.signing_id, StatusContext.of(datum), value)
    with pytest.raises(SignatureInvalid, match="not a trusted key of police-de"):
        origin.receive_status(CODEC, value, by_fr)
    _, other_value = _status(env, "police-de", referral_id=envelope["referral_id"])
    with pytest.raises(SignatureInvalid, match="bad signature"):
        origin.receive_status(CODEC, other_value, headers)  # the signature of another update
    fr_datum, fr_value = _status(env, "police-fr", referral_id=envelope["referral_id"])
    got_fr, _ = origin.receive_status(CODEC, fr_value, fr.sign_status(fr_value, fr_datum))
    with pytest.raises(NotARecipient, match="status from police-fr"):
        origin.check_status_sender(got_fr, envelope)
    with pytest.raises(NotARecipient, match="did not publish"):
        origin.check_status_sender(got, None)
    hl_b = OriginSecurity.load(settings, network, "hl-b")
    with pytest.raises(NotARecipient, match="not hl-b"):
        hl_b.receive_status(CODEC, value, headers)
    # Plain statuses only where plain referrals are allowed and the emitter has no key.
    assert stage_of(NotARecipient("x")) == "STATUS_VERIFY"
    bare = OriginSecurity(
        keyed_network(env["trust"], allow_plain=True), "police-de", None, load_trust(network)
    )
    with pytest.raises(SecurityError, match="plain status updates are not allowed"):
        OriginSecurity(network, "police-de", None, load_trust(network)).sign_status(value, datum)
    assert bare.sign_status(value, datum) == []


def test_trust_and_keys_follow_their_files_while_running(env: dict[str, Any]) -> None:
    settings, network, trust_file = env["settings"], env["network"], env["trust"]
    live = LiveTrust(network, settings.network_file, check_every=0.05)
    kid = OrgKeys.load(key_dir(settings, "hl-a"), "hl-a").signing_id  # type: ignore[union-attr]
    live.current().signing_key("hl-a", kid)
    revoke_in_trust_file(trust_file, "hl-a", kid)
    time.sleep(0.1)
    with pytest.raises(SignatureInvalid, match="revoked"):
        live.current().signing_key("hl-a", kid)
    assert live.reloads == 1
    trust_file.write_text("[orgs\nbroken")  # a bad file keeps the last good store
    time.sleep(0.1)
    with pytest.raises(SignatureInvalid, match="revoked"):
        live.current().signing_key("hl-a", kid)

    keys = LiveKeys(key_dir(settings, "hl-a"), "hl-a", check_every=0.05)
    first = keys.current()
    assert first is not None
    init_keys(key_dir(settings, "hl-a"), "hl-a", rotate=True)
    time.sleep(0.1)
    rotated = keys.current()
    assert rotated is not None
    assert rotated.signing_id != first.signing_id


# -- ledger records and checkpoints --------------------------------------------------------------


def test_contexts_are_canonical_and_domains_separate_the_kinds(env: dict[str, Any]) -> None:
    store = load_trust(env["network"])
    router = OrgKeys.load(key_dir(env["settings"], ROUTER), ROUTER)
    assert router is not None
    ledger = LedgerContext(ROUTER, 5, 2)
    assert ledger.encode() == b"ledger-v1;actor=router;signed=5;events=2"
    assert LedgerContext.parse(ledger.encode()) == ledger
    status = StatusContext("r-1", "hl-a", "police-de", "RECEIVED", 7)
    assert status.encode() == b"status-v1;id=r-1;origin=hl-a;by=police-de;status=RECEIVED;signed=7"
    headers = sign(router.signing, router.signing_id, ledger, b"batch")
    assert verify_signed(headers, b"batch", store, LedgerContext) == ledger
    # The same key and bytes as a checkpoint: the domain differs, the signature does not hold.
    as_checkpoint = [
        (k, CheckpointContext(ROUTER, 5).encode() if k == "referral.sig.ctx" else v)
        for k, v in headers
    ]
    with pytest.raises(SignatureInvalid, match="bad signature"):
        verify_signed(as_checkpoint, b"batch", store, CheckpointContext)
    with pytest.raises(SignatureInvalid, match="malformed"):
        LedgerContext.parse(b"ledger-v1;actor=router;signed=5")

    head = Checkpoint(3, "a" * 64, 9, ROUTER, 11)
    assert (
        head.encode() == b"checkpoint-v1;count=3;head=" + b"a" * 64 + b";offset=9;by=router;at=11"
    )
    assert Checkpoint.parse(head.encode()) == head
    held = HeldHead(head.encode(), tuple(head.signed(router)), "police-de")
    assert held.checkpoint(store) == head
    police = OrgKeys.load(key_dir(env["settings"], "police-de"), "police-de")
    assert police is not None
    by_police = HeldHead(head.encode(), tuple(head.signed(police)), "x")
    with pytest.raises(SignatureInvalid, match="not a trusted key of router"):
        by_police.checkpoint(store)
    with pytest.raises(SignatureInvalid, match="unsigned checkpoint"):
        HeldHead(head.encode(), (), "x").checkpoint(store)
