"""An erasure in the current period: the key goes a grace after the rotation, not before.

Senders seal to the new period key only once they re-read the trust file; a body
sealed to the old key in that time must still open, and its content key be kept.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from broker.config import Settings
from broker.errors import SealError
from broker.receiver.erasure import ReceiverEraser
from broker.receiver.inbox import Inbox
from broker.security.keys import OrgKeys, add_to_trust_file, init_keys, key_dir
from broker.security.sealing import open_sealed, seal
from broker.security.shredding import Held, Shredder

ORG = "police-nl"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _sealed(directory: Path, rid: str) -> Held:
    keys = OrgKeys.load(directory, ORG)
    assert keys is not None
    kid, private = list(keys.encryption.items())[-1]
    body = seal(
        os.urandom(64),
        referral_id=rid,
        origin="hl-a",
        recipients={ORG: (kid, private.public_key())},
    )
    return Held("hl-a", rid, body)


def _opens(shredder: Shredder, held: Held) -> bool:
    try:
        open_sealed(
            held.body,
            referral_id=held.referral_id,
            origin=held.origin_org,
            org_id=ORG,
            private_keys=shredder.keys().encryption,
            cached=shredder.cache.lookup(held.origin_org, held.referral_id),
        )
        return True
    except SealError:
        return False


def test_a_body_sealed_to_the_old_key_within_the_grace_still_opens_after_the_shred(
    tmp_path: Path,
) -> None:
    directory, trust = tmp_path / "keys", tmp_path / "trust.toml"
    add_to_trust_file(trust, init_keys(directory, ORG))
    clock = Clock()
    shredder = Shredder(directory, ORG, trust, clock, grace=60)
    try:
        x, y = _sealed(directory, "x"), _sealed(directory, "y")
        for h in (x, y):
            shredder.hold(h)
        old = list(shredder.keys().encryption)[-1]
        assert shredder.erase_referral("hl-a", "x") == [old]
        assert list(shredder.keys().encryption)[-1] != old  # rotated at once
        clock.now += 30  # a sender that had not re-read the trust file seals to the old key
        late = _sealed_under(directory, "z", old)
        shredder.hold(late)
        assert shredder.destroy_due() == []
        assert old in shredder.keys().encryption
        clock.now += 31
        assert shredder.destroy_due() == [old]
        assert not (directory / f"enc-{old}.pem").exists()
        assert not _opens(shredder, x)
        assert _opens(shredder, y)
        assert _opens(shredder, late)
        assert shredder.destroy_due() == []
    finally:
        shredder.close()


def _sealed_under(directory: Path, rid: str, kid: str) -> Held:
    keys = OrgKeys.load(directory, ORG)
    assert keys is not None
    body = seal(
        os.urandom(64),
        referral_id=rid,
        origin="hl-a",
        recipients={ORG: (kid, keys.encryption[kid].public_key())},
    )
    return Held("hl-a", rid, body)


def test_without_a_grace_the_key_goes_at_once(tmp_path: Path) -> None:
    directory, trust = tmp_path / "keys", tmp_path / "trust.toml"
    add_to_trust_file(trust, init_keys(directory, ORG))
    shredder = Shredder(directory, ORG, trust)
    try:
        x = _sealed(directory, "x")
        shredder.hold(x)
        old = list(shredder.keys().encryption)[-1]
        shredder.erase_referral("hl-a", "x")
        assert old not in shredder.keys().encryption
        with pytest.raises(SealError):
            open_sealed(
                x.body, referral_id="x", origin="hl-a", org_id=ORG,
                private_keys=shredder.keys().encryption,
            )  # fmt: skip
    finally:
        shredder.close()


def test_an_erasure_that_cannot_rotate_the_current_key_still_erases_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = Settings(state_dir=tmp_path / "state")
    directory = key_dir(settings, ORG)
    init_keys(directory, ORG)
    shredder = Shredder(directory, ORG, trust_file=None)  # keys in the network file, no trust file
    inbox = Inbox.for_org(settings, ORG)
    try:
        shredder.hold(_sealed(directory, "x"))
        eraser = ReceiverEraser(settings, ORG, [], inbox, shredder)
        with caplog.at_level("WARNING", logger="referral.receiver.erasure"):
            erased = eraser.erase("hl-a", "x", "request:INCORRECT")
        assert erased.removed["period_keys"] == 0
        assert inbox.state("hl-a", "x").erased
        assert "its period key not shredded" in caplog.text
    finally:
        inbox.close()
        shredder.close()
