"""Keys, signatures, sealed bodies and the receiver's checks, without a broker."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.errors import ConfigError, Misrouted, SealError, SecurityError, SignatureInvalid
from broker.routing.decide import decide
from broker.security.keys import (
    OrgKeys,
    add_to_trust_file,
    init_keys,
    key_dir,
    key_id,
    load_trust,
    revoke_in_trust_file,
)
from broker.security.rules import HandlingLog, OriginSecurity, ReceiverSecurity, stage_of
from broker.security.sealing import SUITE, open_sealed, seal, sealed_for
from broker.security.signing import (
    CONTEXT_HEADER,
    SIGNATURE_HEADER,
    SignedContext,
    check_envelope,
    sign,
    verify,
)
from broker.wire import models as m
from broker.wire.codec import Codec
from broker.wire.registry import REFERRAL, EmbeddedRegistry
from tests.support.factories import make_referral
from tests.support.security import give_keys, keyed_network

CODEC = Codec(EmbeddedRegistry())
ORGS = ("hl-a", "hl-b", "police-nl", "police-de", "police-fr", "secretariat")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, Any]:
    """Settings, a keyed no-plain network and its trust file, keys for every organisation."""
    trust = tmp_path / "trust.toml"
    settings = Settings(state_dir=tmp_path / "state", network_file=tmp_path / "network.toml")
    give_keys(settings, trust, *ORGS)
    return {"settings": settings, "trust": trust, "network": keyed_network(trust)}


def _datum(**overrides: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"origin_org": "hl-a", "origin_country": "NL"}
    fields.update(overrides)
    return make_referral(**fields).to_avro()


def _two_jurisdictions() -> dict[str, Any]:
    return _datum(
        jurisdictions=[
            {"country": "DE", "basis": "HOSTING", "derived": False},
            {"country": "NL", "basis": "VICTIM_LOCATION", "derived": False},
        ]
    )


def _origin(env: dict[str, Any], org: str = "hl-a") -> OriginSecurity:
    return OriginSecurity.load(env["settings"], env["network"], org)


def _receiver(env: dict[str, Any], org: str) -> ReceiverSecurity:
    return ReceiverSecurity.load(env["settings"], env["network"], org)


def _published(env: dict[str, Any], datum: dict[str, Any]) -> tuple[bytes, list[Any]]:
    decision = decide(datum["envelope"], env["network"])
    return _origin(env).encode(CODEC, datum, decision.orgs)


# -- keys -------------------------------------------------------------------------------------


def test_init_keys_writes_private_files_0600_and_refuses_a_second_init(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    public = init_keys(directory, "police-de")
    assert [k.use for k in public] == ["sign", "enc"]
    assert all(k.id == key_id(k.raw) and len(k.id) == 16 for k in public)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    pems = sorted(directory.glob("*.pem"))
    assert [p.name for p in pems] == sorted(f"{k.use}-{k.id}.pem" for k in public)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in pems)
    with pytest.raises(ConfigError, match="already has keys"):
        init_keys(directory, "police-de")
    keys = OrgKeys.load(directory, "police-de")
    assert keys is not None
    assert keys.signing_id == public[0].id
    assert list(keys.encryption) == [public[1].id]
    assert "PRIVATE" not in repr(keys)
    assert [k.id for k in keys.public_keys()] == [k.id for k in public]


def test_rotation_keeps_old_encryption_keys_and_a_readable_key_file_is_refused(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "keys"
    first = init_keys(directory, "police-de")
    second = init_keys(directory, "police-de", rotate=True)
    keys = OrgKeys.load(directory, "police-de")
    assert keys is not None
    assert keys.signing_id == second[0].id
    assert list(keys.encryption) == [first[1].id, second[1].id]
    os.chmod(directory / f"sign-{second[0].id}.pem", 0o644)
    with pytest.raises(ConfigError, match="accessible by others"):
        OrgKeys.load(directory, "police-de")
    assert OrgKeys.load(tmp_path / "none", "police-de") is None


def test_trust_store_rotation_revocation_and_a_forged_key_id(tmp_path: Path) -> None:
    trust = tmp_path / "trust.toml"
    old = init_keys(tmp_path / "k", "police-de")
    new = init_keys(tmp_path / "k", "police-de", rotate=True)
    add_to_trust_file(trust, old + new)
    add_to_trust_file(trust, new)  # not repeated
    network = keyed_network(trust)
    store = load_trust(network)
    assert len(store.keys_of("police-de")) == 4
    assert store.encryption_key("police-de")[0] == new[1].id, "sealed for the newest key"
    store.signing_key("police-de", old[0].id)  # both signing keys valid during rotation
    store.signing_key("police-de", new[0].id)
    revoke_in_trust_file(trust, "police-de", old[0].id)
    revoke_in_trust_file(trust, "police-de", new[1].id)
    store = load_trust(network)
    with pytest.raises(SignatureInvalid, match="revoked"):
        store.signing_key("police-de", old[0].id)
    assert store.encryption_key("police-de")[0] == old[1].id, "the revoked key is skipped"
    with pytest.raises(SignatureInvalid, match="not a trusted key of police-nl"):
        store.signing_key("police-nl", new[0].id)
    with pytest.raises(SealError, match="police-nl has no valid encryption key"):
        store.encryption_key("police-nl")
    text = trust.read_text()
    trust.write_text(text.replace(f'id = "{new[0].id}"', 'id = "0000000000000000"'))
    with pytest.raises(ConfigError, match="does not match the key"):
        load_trust(network)


def test_keys_in_the_network_files_own_table(tmp_path: Path) -> None:
    [sign_key, enc_key] = init_keys(tmp_path / "k", "police-de")
    from broker.network import parse_network
    from tests.support.connectors import NETWORK_TOML

    table = (
        "\n[organisations.keys]\nrevoked = []\n[[organisations.keys.public]]\n"
        f'id = "{sign_key.id}"\nuse = "sign"\npublic = "{base64.b64encode(sign_key.raw).decode()}"'
        "\n"
    )
    text = NETWORK_TOML.replace("{webhook_url}", "http://127.0.0.1:9/h").replace(
        "{republish_after}", "300"
    )
    anchor = "[organisations.connectors.sqlite]"
    text = text.replace(f'country = "DE"\n{anchor}', f'country = "DE"{table}{anchor}')
    network = parse_network(text, "n.toml")
    store = load_trust(network)
    store.signing_key("police-de", sign_key.id)
    with pytest.raises(SealError):
        store.encryption_key("police-de")
    assert enc_key.id not in {k.id for k in store.keys_of("police-de")}


# -- signatures -------------------------------------------------------------------------------


def test_signature_round_trip_and_every_alteration_is_caught(env: dict[str, Any]) -> None:
    keys = OrgKeys.load(key_dir(env["settings"], "hl-a"), "hl-a")
    assert keys is not None
    store = load_trust(env["network"])
    datum = _datum()
    value = CODEC.encode(REFERRAL, datum)
    context = SignedContext.of(datum["envelope"], CODEC.schema_id_of(value), ["police-de"])
    headers = sign(keys.signing, keys.signing_id, context, value)
    assert verify(headers, value, store) == context
    check_envelope(context, CODEC.decode(value)[1]["envelope"], CODEC.schema_id_of(value))
    for i in (0, 7, len(value) // 2, len(value) - 1):
        altered = bytearray(value)
        altered[i] ^= 0x01
        with pytest.raises(SignatureInvalid, match="bad signature"):
            verify(headers, bytes(altered), store)
    other = SignedContext.of(datum["envelope"], CODEC.schema_id_of(value), ["police-fr"])
    forged = [(k, other.encode() if k == CONTEXT_HEADER else v) for k, v in headers]
    with pytest.raises(SignatureInvalid, match="bad signature"):
        verify(forged, value, store)
    with pytest.raises(SignatureInvalid, match="missing signature"):
        verify([h for h in headers if h[0] != SIGNATURE_HEADER], value, store)
    with pytest.raises(SignatureInvalid, match="appears 2 times"):
        verify([*headers, headers[0]], value, store)
    with pytest.raises(SignatureInvalid, match="malformed"):
        verify([(k, b"v2;x" if k == CONTEXT_HEADER else v) for k, v in headers], value, store)
    other_env = _datum()["envelope"]
    with pytest.raises(SignatureInvalid, match="does not match the signed context"):
        check_envelope(context, other_env, CODEC.schema_id_of(value))


def test_context_text_is_canonical() -> None:
    datum = _two_jurisdictions()
    env = datum["envelope"]
    ctx = SignedContext.of(env, 5, ["police-nl", "police-de", "police-nl"], signed_at_ms=1234)
    ms = int(env["created_at"].timestamp() * 1000)
    assert (
        ctx.encode()
        == (
            f"v2;id={env['referral_id']};origin=hl-a;schema=5;created={ms};signed=1234;"
            "to=police-de,police-nl;cc=DE,NL"
        ).encode()
    )
    assert SignedContext.parse(ctx.encode()) == ctx
    # A v1 context (no signing time) still reads: its creation time stands in.
    v1 = f"v1;id={env['referral_id']};origin=hl-a;schema=5;created={ms};to=police-de;cc=DE"
    old = SignedContext.parse(v1.encode())
    assert (old.signed_at_ms, old.recipients) == (ms, ("police-de",))
    with pytest.raises(SignatureInvalid, match="malformed"):
        SignedContext.parse(v1.replace("v1;", "v2;").encode())  # v2 needs signed=


# -- sealing ----------------------------------------------------------------------------------


def test_seal_opens_for_each_recipient_only(env: dict[str, Any]) -> None:
    store = load_trust(env["network"])
    keys = {o: OrgKeys.load(key_dir(env["settings"], o), o) for o in ORGS}
    recipients = {o: store.encryption_key(o) for o in ("police-de", "police-nl")}
    sealed = seal(b"plain bytes", referral_id="r-1", origin="hl-a", recipients=recipients)
    assert sealed["suite"] == SUITE
    assert sealed_for(sealed) == ["police-de", "police-nl"]
    assert all(len(r["wrapped_key"]) == 32 + 32 + 16 for r in sealed["recipients"])
    for org in ("police-de", "police-nl"):
        k = keys[org]
        assert k is not None
        assert (
            open_sealed(
                sealed, referral_id="r-1", origin="hl-a", org_id=org, private_keys=k.encryption
            )
            == b"plain bytes"
        )
    fr = keys["police-fr"]
    assert fr is not None
    with pytest.raises(SealError, match="not sealed for police-fr"):
        open_sealed(
            sealed, referral_id="r-1", origin="hl-a", org_id="police-fr", private_keys=fr.encryption
        )
    de = keys["police-de"]
    assert de is not None
    for changed in (
        {"ciphertext": bytes([sealed["ciphertext"][0] ^ 1]) + sealed["ciphertext"][1:]},
        {"recipients": sealed["recipients"][:1]},  # the recipient list is bound
    ):
        with pytest.raises(SealError, match="does not open"):
            open_sealed(
                {**sealed, **changed},
                referral_id="r-1",
                origin="hl-a",
                org_id="police-de",
                private_keys=de.encryption,
            )
    with pytest.raises(SealError, match="does not open"):
        open_sealed(
            sealed, referral_id="r-2", origin="hl-a", org_id="police-de", private_keys=de.encryption
        )


def test_sealed_referral_round_trips_through_models_and_codec(env: dict[str, Any]) -> None:
    value, _ = _published(env, _two_jurisdictions())
    assert CODEC.schema_id_of(value) == EmbeddedRegistry().latest(REFERRAL).id
    _, datum = CODEC.decode(value)
    model = m.Referral.from_avro(datum)
    assert model.sealed
    assert isinstance(model.body, m.SealedBody)
    assert CODEC.encode(REFERRAL, model.to_avro()) == value
    assert CODEC.decode_envelope(value) == datum["envelope"]


# -- origin and receiver ----------------------------------------------------------------------


def test_sealed_and_signed_referral_opens_for_recipients_and_not_for_others(
    env: dict[str, Any],
) -> None:
    datum = _two_jurisdictions()
    value, headers = _published(env, datum)
    assert b"example.org" not in value
    assert datum["body"]["summary"].encode() not in value
    de_topic = "referrals.to.DE"
    for org, topic in (("police-de", de_topic), ("police-nl", "referrals.to.NL")):
        got = _receiver(env, org).receive(CODEC, topic, value, headers)
        assert m.Referral.from_avro(got) == m.Referral.from_avro(datum)
    # Another organisation's lane, or a lane the envelope does not route to: misrouted.
    with pytest.raises(Misrouted, match="for police-de, not police-fr") as err:
        _receiver(env, "police-fr").receive(CODEC, de_topic, value, headers)
    assert stage_of(err.value) == "ROUTE_CHECK"
    with pytest.raises(Misrouted, match="not to the normal lane of FR") as sig:
        _receiver(env, "police-de").receive(CODEC, "referrals.to.FR", value, headers)
    assert stage_of(sig.value) == "ROUTE_CHECK"
    # Routed to police-fr, but its origin sealed the body for the other two only.
    three = _datum(
        jurisdictions=[
            {"country": c, "basis": "HOSTING", "derived": False} for c in ("DE", "FR", "NL")
        ]
    )
    v3, h3 = _origin(env).encode(CODEC, three, ["police-de", "police-nl"])
    with pytest.raises(SealError, match="not sealed for police-fr") as unseal:
        _receiver(env, "police-fr").receive(CODEC, "referrals.to.FR", v3, h3)
    assert stage_of(unseal.value) == "UNSEAL"
    altered = bytearray(value)
    altered[-3] ^= 0x01
    with pytest.raises(SignatureInvalid, match="bad signature"):
        _receiver(env, "police-de").receive(CODEC, de_topic, bytes(altered), headers)
    with pytest.raises(SignatureInvalid, match="missing signature"):
        _receiver(env, "police-de").receive(CODEC, de_topic, value, [])


def test_plain_referrals_only_where_the_network_allows_them(
    env: dict[str, Any], tmp_path: Path
) -> None:
    datum = _datum()
    no_keys = Settings(state_dir=tmp_path / "other", network_file=tmp_path / "network.toml")
    origin = OriginSecurity.load(no_keys, env["network"], "hl-a")
    with pytest.raises(SecurityError, match="plain referrals are not allowed"):
        origin.encode(CODEC, datum, ["police-de"])
    plain = CODEC.encode(REFERRAL, datum)
    with pytest.raises(SignatureInvalid, match="missing signature"):
        _receiver(env, "police-de").receive(CODEC, "referrals.to.DE", plain, [])
    # Signed but plain: refused at the body, for the network requires sealing.
    keys = OrgKeys.load(key_dir(env["settings"], "hl-a"), "hl-a")
    assert keys is not None
    ctx = SignedContext.of(datum["envelope"], CODEC.schema_id_of(plain), ["police-de"])
    signed = sign(keys.signing, keys.signing_id, ctx, plain)
    with pytest.raises(SealError, match="plain body refused") as err:
        _receiver(env, "police-de").receive(CODEC, "referrals.to.DE", plain, signed)
    assert stage_of(err.value) == "UNSEAL"
    # Where plain is allowed, a keyless origin's plain referral passes, a keyed one's not unsigned.
    open_net = keyed_network(env["trust"], allow_plain=True)
    receiver = ReceiverSecurity.load(env["settings"], open_net, "police-de")
    assert (
        receiver.receive(CODEC, "referrals.to.DE", plain, signed)["body"]
        == CODEC.decode(plain)[1]["body"]
    )
    with pytest.raises(SignatureInvalid, match="missing signature on a referral from hl-a"):
        receiver.receive(CODEC, "referrals.to.DE", plain, [])
    with pytest.raises(Misrouted):
        ReceiverSecurity.load(env["settings"], open_net, "police-nl").receive(
            CODEC, "referrals.to.DE", plain, signed
        )
    two = _two_jurisdictions()
    plain_two = CODEC.encode(REFERRAL, two)
    ctx_two = SignedContext.of(two["envelope"], CODEC.schema_id_of(plain_two), ["police-de"])
    signed_two = sign(keys.signing, keys.signing_id, ctx_two, plain_two)
    with pytest.raises(SignatureInvalid, match="not addressed to police-nl"):
        ReceiverSecurity.load(env["settings"], open_net, "police-nl").receive(
            CODEC, "referrals.to.NL", plain_two, signed_two
        )
    unknown = _datum(origin_org="hl-b", origin_country="DE")
    bare = OriginSecurity(open_net, "hl-b", None, load_trust(open_net))
    value, headers = bare.encode(CODEC, unknown, ["police-de"])
    assert headers == []
    # hl-b has keys on record, so its unsigned referral is refused even in an open network.
    with pytest.raises(SignatureInvalid):
        receiver.receive(CODEC, "referrals.to.DE", value, headers)


def test_red_goes_to_named_recipients_only_and_restricted_cases_are_not_forwarded(
    env: dict[str, Any],
) -> None:
    red = _two_jurisdictions()
    red["envelope"]["handling"] = {
        "tlp": "RED",
        "recipients": ["police-nl"],
        "handling_code": "H0",
    }
    value, headers = _published(env, red)
    # The router sends RED to police-nl only; a copy re-addressed to police-de is refused.
    assert decide(red["envelope"], env["network"]).orgs == ("police-nl",)
    with pytest.raises(Misrouted, match="routes to the normal lane of NL, not to"):
        _receiver(env, "police-de").receive(CODEC, "referrals.to.DE", value, headers)
    # Signed and sealed for police-de too, but RED names police-nl only: the sink refuses
    # (the routing decision drops DE; the handling rule would refuse it next).
    forged = OriginSecurity.load(env["settings"], env["network"], "hl-a")
    v2, h2 = forged.encode(CODEC, red, ["police-de", "police-nl"])
    with pytest.raises(Misrouted) as err:
        _receiver(env, "police-de").receive(CODEC, "referrals.to.DE", v2, h2)
    assert stage_of(err.value) == "ROUTE_CHECK"

    strict = _datum(
        jurisdictions=[{"country": "NL", "basis": "HOSTING", "derived": False}],
        handling={"tlp": "AMBER_STRICT", "recipients": [], "handling_code": "H0"},
    )
    value, headers = _published(env, strict)
    _receiver(env, "police-nl").receive(CODEC, "referrals.to.NL", value, headers)
    onward = _datum(
        origin_org="police-nl",
        case_id=strict["envelope"]["case_id"],
        handling={"tlp": "GREEN", "recipients": [], "handling_code": "H0"},
    )
    with pytest.raises(SecurityError, match=r"re-referral refused: .*TLP:AMBER\+STRICT"):
        _origin(env, "police-nl").check_onward(onward["envelope"])
    _origin(env, "police-nl").check_onward(_datum(origin_org="police-nl")["envelope"])
    log = HandlingLog.for_org(env["settings"], "police-nl")
    assert log.restrictions(strict["envelope"]["case_id"]) == [("hl-a", "AMBER_STRICT", "H0")]
    log.close()
