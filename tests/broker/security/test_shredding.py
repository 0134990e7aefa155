"""Crypto-shredding on the test broker: erased or expired copies on the topic stop opening."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.errors import SealError
from broker.security.keys import OrgKeys, key_dir
from broker.security.sealing import open_sealed, sealed_key_id
from broker.security.shredding import ContentKeyCache, Held, Shredder, rotate_period_key
from broker.wire.registry import REFERRAL
from connectors.runtime import ConnectorRuntime
from console.liaison import LiaisonDesk
from tests.support.connectors import ENV, codec_for, inbox_files, referral_json, wait_for
from tests.support.kafka import provision_network, read_topic, start_router
from tests.support.security import give_keys, keyed_network

pytestmark = pytest.mark.slow

ORG = "police-nl"


def _send(settings: Settings, trust: Path, referrals: list[dict[str, Any]], total: int) -> None:
    network = keyed_network(trust)
    codec = codec_for(settings)
    with ExitStack() as stack:
        stack.callback(start_router(settings, network, codec).stop)
        for org in ("hl-a", ORG):
            rt = ConnectorRuntime(settings, network, org, codec, env=ENV)
            stack.callback(rt.stop)
            rt.start()
        drop = Path(settings.state_dir) / "orgs" / "hl-a" / "drop"
        (drop / f"batch-{total}.json").write_text(json.dumps(referrals))
        wait_for(lambda: len(inbox_files(settings, ORG)) == total, 60, "the deliveries")


def _on_topic(settings: Settings) -> dict[str, Held]:
    """What the NL topic still holds: referral id → its sealed copy."""
    codec = codec_for(settings)
    out = {}
    for r in read_topic(settings, settings.topic_names().jurisdiction("NL"), timeout=5):
        _, datum = codec.decode(r.value, expected=REFERRAL)
        env = datum["envelope"]
        out[env["referral_id"]] = Held(env["origin_org"], env["referral_id"], datum["body"])
    return out


def _always(key: bytes) -> Callable[[str], bytes | None]:
    return lambda _kid: key


def _opens(settings: Settings, held: Held) -> bool:
    """Whether anything the recipient holds (every key, the whole cache) opens ``held``."""
    directory = key_dir(settings, ORG)
    keys = OrgKeys.load(directory, ORG)
    assert keys is not None
    cache = ContentKeyCache.in_key_dir(directory)
    try:
        rows = cache.db.query("SELECT content_key FROM content_keys")
        kept = [bytes(r["content_key"]) for r in rows]
        candidates: list[Callable[[str], bytes | None]] = [
            lambda _kid: None,
            cache.lookup(held.origin_org, held.referral_id),
            *(_always(k) for k in kept),
        ]
        for cached in candidates:
            try:
                open_sealed(
                    held.body,
                    referral_id=held.referral_id,
                    origin=held.origin_org,
                    org_id=ORG,
                    private_keys=keys.encryption,
                    cached=cached,
                )
                return True
            except SealError:
                continue
        return False
    finally:
        cache.close()


def test_an_erased_or_expired_copy_on_the_topic_opens_with_nothing_the_recipient_holds(
    settings: Settings, tmp_path: Path
) -> None:
    trust = tmp_path / "trust.toml"
    give_keys(settings, trust, "hl-a", ORG)
    provision_network(settings, keyed_network(trust))
    first = [referral_json("hl-a", "NL") for _ in range(3)]
    _send(settings, trust, first, 3)
    a, b, c = (_on_topic(settings)[r["envelope"]["referral_id"]] for r in first)
    period = sealed_key_id(a.body, ORG)
    assert {sealed_key_id(h.body, ORG) for h in (a, b, c)} == {period}
    assert all(_opens(settings, h) for h in (a, b, c))

    shredder = Shredder(key_dir(settings, ORG), ORG, trust)
    try:
        assert shredder.erase(a, [b, c]) == period  # one erasure: the period's others kept
    finally:
        shredder.close()
    keys = OrgKeys.load(key_dir(settings, ORG), ORG)
    assert keys is not None
    assert period not in keys.encryption
    assert not (key_dir(settings, ORG) / f"enc-{period}.pem").exists()
    assert not _opens(settings, a), "the erased referral's copy on the topic still opens"
    assert _opens(settings, b)
    assert _opens(settings, c)
    # The recipient's own reads (the console, `referral show`) open the others from the cache.
    desk = LiaisonDesk(settings, keyed_network(trust), ORG, codec_for(settings))
    try:
        assert desk.reveal(b.referral_id, "shred check").summary == first[1]["body"]["summary"]
        with pytest.raises(SealError):
            desk.referral(a.referral_id)
    finally:
        desk.close()

    # The erasure rotated to a new period key; the next referral is sealed under it.
    later = [referral_json("hl-a", "NL")]
    _send(settings, trust, later, 4)
    d = _on_topic(settings)[later[0]["envelope"]["referral_id"]]
    second = sealed_key_id(d.body, ORG)
    assert second not in (None, period)
    assert _opens(settings, d)
    rotate_period_key(key_dir(settings, ORG), ORG)  # the next period starts ...
    shredder = Shredder(key_dir(settings, ORG), ORG, trust)
    try:
        shredder.expire(str(second))  # ... and the second one's retention is over
    finally:
        shredder.close()
    assert not _opens(settings, d), "an expired period's copy still opens"
    assert _opens(settings, b)
    assert not _opens(settings, a)
