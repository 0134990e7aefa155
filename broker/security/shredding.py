"""Crypto-shredding: the sealed copies on Kafka become unreadable once a recipient erases.

A body's content key is wrapped (HPKE) under the recipient's encryption key current
when it was sealed; rotating that key once a period (``rotate_period_key``, e.g.
monthly) makes each key a *period key*. To erase one referral, the recipient keeps
the content keys of the period's other referrals it still holds in a local cache
(:class:`ContentKeyCache`), then destroys the period key; the erased referral's key
is in neither. When a period expires (everything sealed under it is past the longest
retention rule), its key is destroyed outright.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.errors import ConfigError
from broker.security.keys import OrgKeys, PublicKey, add_to_trust_file, init_keys
from broker.security.sealing import content_key, sealed_key_id
from broker.sqlite import Database

__all__ = [
    "CACHE_FILE",
    "ContentKeyCache",
    "Held",
    "Shredder",
    "destroy_encryption_key",
    "rotate_period_key",
]

CACHE_FILE = "content-keys.sqlite3"
_MANIFEST = "keys.json"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS content_keys (
    origin_org TEXT NOT NULL,
    referral_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    content_key BLOB NOT NULL,
    PRIMARY KEY (origin_org, referral_id, key_id)
);
"""


class ContentKeyCache:
    """Content keys kept after their period key was destroyed (0600, secure delete)."""

    def __init__(self, path: Path) -> None:
        self.db = Database(path, _SCHEMA)

    @classmethod
    def in_key_dir(cls, directory: Path) -> ContentKeyCache:
        """The cache beside an organisation's private keys."""
        return cls(directory / CACHE_FILE)

    def put(self, origin_org: str, referral_id: str, key_id: str, key: bytes) -> None:
        """Keep one body's content key."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO content_keys VALUES (?, ?, ?, ?)",
                (origin_org, referral_id, key_id, key),
            )

    def lookup(self, origin_org: str, referral_id: str) -> Callable[[str], bytes | None]:
        """What ``open_sealed(cached=...)`` takes for this referral."""

        def get(key_id: str) -> bytes | None:
            rows = self.db.query(
                "SELECT content_key FROM content_keys"
                " WHERE origin_org = ? AND referral_id = ? AND key_id = ?",
                (origin_org, referral_id, key_id),
            )
            return bytes(rows[0]["content_key"]) if rows else None

        return get

    def erase(self, origin_org: str, referral_id: str) -> int:
        """Forget a referral's content keys (zeroed on disk, WAL truncated); how many."""
        return self.db.erase(
            [
                (
                    "DELETE FROM content_keys WHERE origin_org = ? AND referral_id = ?",
                    (origin_org, referral_id),
                )
            ]
        )

    def close(self) -> None:
        """Close the database."""
        self.db.close()


def rotate_period_key(directory: Path, org_id: str) -> list[PublicKey]:
    """Start a new period: new keys become current (publish them to the trust file)."""
    return init_keys(directory, org_id, rotate=True)


def destroy_encryption_key(directory: Path, kid: str) -> None:
    """Destroy encryption key ``kid``: out of the manifest, its file overwritten and removed.

    The current key cannot be destroyed (bodies are still being sealed to it): rotate first.
    """
    manifest = directory / _MANIFEST
    ids = json.loads(manifest.read_text(encoding="utf-8"))
    enc = list(ids["enc"])
    if kid not in enc:
        return
    if enc[-1] == kid:
        raise ConfigError(f"key {kid} is the current encryption key: rotate it first")
    ids["enc"] = [k for k in enc if k != kid]
    tmp = directory / (_MANIFEST + ".tmp")
    tmp.write_text(json.dumps(ids, indent=2) + "\n", encoding="utf-8")
    tmp.replace(manifest)
    path = directory / f"enc-{kid}.pem"
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.write(os.urandom(size))
        f.flush()
        os.fsync(f.fileno())
    path.unlink()


@dataclass(frozen=True)
class Held:
    """A sealed body the recipient still holds: whose, which referral, the SealedBody datum."""

    origin_org: str
    referral_id: str
    body: Mapping[str, Any]


class Shredder:
    """Makes one organisation's sealed copies on the topics unreadable, per referral or period."""

    def __init__(self, directory: Path, org_id: str, trust_file: Path | None = None) -> None:
        self.directory = directory
        self.org_id = org_id
        #: Where a new period key is published when erasure forces a rotation.
        self.trust_file = trust_file
        self.cache = ContentKeyCache.in_key_dir(directory)

    def _keys(self) -> OrgKeys:
        keys = OrgKeys.load(self.directory, self.org_id)
        if keys is None:
            raise ConfigError(f"{self.org_id} has no keys in {self.directory}")
        return keys

    def erase(self, erased: Held, others: Iterable[Held]) -> str | None:
        """Shred ``erased``: keep the content keys of ``others`` of its period, destroy the
        period key; the key id destroyed (None if it was gone already)."""
        self.cache.erase(erased.origin_org, erased.referral_id)
        kid = sealed_key_id(erased.body, self.org_id)
        keys = self._keys()
        if kid is None or kid not in keys.encryption:
            return None
        if list(keys.encryption)[-1] == kid:  # senders must seal to a new key from now on
            if self.trust_file is None:
                raise ConfigError(f"key {kid} is current: erasing needs the trust file to rotate")
            add_to_trust_file(self.trust_file, rotate_period_key(self.directory, self.org_id))
        for h in others:
            if h.referral_id == erased.referral_id and h.origin_org == erased.origin_org:
                continue
            if sealed_key_id(h.body, self.org_id) != kid:
                continue
            key = content_key(
                h.body,
                referral_id=h.referral_id,
                origin=h.origin_org,
                org_id=self.org_id,
                private_keys=keys.encryption,
            )
            self.cache.put(h.origin_org, h.referral_id, kid, key)
        destroy_encryption_key(self.directory, kid)
        return kid

    def expire(self, kid: str) -> None:
        """The period of ``kid`` is over (past the longest retention rule): destroy its key."""
        destroy_encryption_key(self.directory, kid)

    def close(self) -> None:
        """Close the content-key cache."""
        self.cache.close()
