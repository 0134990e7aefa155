"""Crypto-shredding: the sealed copies on Kafka become unreadable once a recipient erases.

A body's content key is wrapped (HPKE) under the recipient's encryption key current
when it was sealed; rotating that key once a period (``rotate_period_key``, e.g.
monthly) makes each key a *period key*. To erase one referral, the recipient keeps
the content keys of the period's other referrals it still holds in a local cache
(:class:`ContentKeyCache`), then destroys the period key; the erased referral's key
is in neither. When a period expires (everything sealed under it is past the longest
retention rule), its key is destroyed outright.

The wrapped content keys of what the recipient received are kept as they arrived
(``held``: useless without the period key), so an erasure knows which referrals
share the period and can keep their content keys; :class:`PeriodKeys` rotates the
key once a period and expires the periods past the longest retention rule.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from broker.errors import ConfigError, SealError
from broker.security.keys import OrgKeys, PublicKey, add_encryption_key, add_to_trust_file
from broker.security.sealing import content_key, sealed_key_id
from broker.sqlite import Database

__all__ = [
    "CACHE_FILE",
    "ContentKeyCache",
    "Held",
    "PeriodKeys",
    "PeriodTick",
    "Shredder",
    "destroy_encryption_key",
    "rotate_period_key",
]

log = logging.getLogger("referral.security.shredding")

CACHE_FILE = "content-keys.sqlite3"
_MANIFEST = "keys.json"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS content_keys (
    origin_org TEXT NOT NULL,
    referral_id TEXT NOT NULL,
    key_id TEXT NOT NULL,
    content_key BLOB NOT NULL,
    version INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (origin_org, referral_id, key_id, version)
);
CREATE TABLE IF NOT EXISTS held (
    origin_org TEXT NOT NULL,
    referral_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    key_id TEXT NOT NULL,
    wrapping TEXT NOT NULL,
    PRIMARY KEY (origin_org, referral_id, version)
);
CREATE INDEX IF NOT EXISTS held_by_key ON held (key_id);
CREATE TABLE IF NOT EXISTS periods (
    key_id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    retired_at REAL
);
"""

#: Key files are changed by one thread at a time (the sink driver's erasures, the sweeps).
_KEY_LOCK = threading.RLock()


class ContentKeyCache:
    """Content keys kept after their period key was destroyed, the wrapped keys held and
    the periods (0600, secure delete)."""

    def __init__(self, path: Path) -> None:
        self.db = Database(path, _SCHEMA)
        self.db.add_columns("content_keys", {"version": "INTEGER NOT NULL DEFAULT 1"})
        self.db.add_columns("periods", {"destroy_at": "REAL"})

    @classmethod
    def in_key_dir(cls, directory: Path) -> ContentKeyCache:
        """The cache beside an organisation's private keys."""
        return cls(directory / CACHE_FILE)

    def put(
        self, origin_org: str, referral_id: str, key_id: str, key: bytes, version: int = 1
    ) -> None:
        """Keep one body's content key (of one version of the referral)."""
        self.put_many([(origin_org, referral_id, key_id, key, version)])

    def put_many(self, rows: Iterable[tuple[str, str, str, bytes, int]]) -> None:
        """Keep ``(origin, referral id, key id, content key, version)`` each, at once."""
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO content_keys (origin_org, referral_id, key_id,"
                " content_key, version) VALUES (?, ?, ?, ?, ?)",
                rows,
            )

    def lookup(
        self, origin_org: str, referral_id: str, version: int | None = None
    ) -> Callable[[str], bytes | None]:
        """What ``open_sealed(cached=...)`` takes for this referral (this version; None: the
        latest kept)."""

        def get(key_id: str) -> bytes | None:
            sql = (
                "SELECT content_key FROM content_keys"
                " WHERE origin_org = ? AND referral_id = ? AND key_id = ?"
            )
            params: tuple[object, ...] = (origin_org, referral_id, key_id)
            if version is not None:
                sql, params = sql + " AND version = ?", (*params, version)
            rows = self.db.query(sql + " ORDER BY version DESC LIMIT 1", params)
            return bytes(rows[0]["content_key"]) if rows else None

        return get

    def erase(self, origin_org: str, referral_id: str) -> int:
        """Forget a referral's content and wrapped keys (zeroed on disk, WAL truncated)."""
        key = (origin_org, referral_id)
        return self.db.erase(
            [
                ("DELETE FROM content_keys WHERE origin_org = ? AND referral_id = ?", key),
                ("DELETE FROM held WHERE origin_org = ? AND referral_id = ?", key),
            ]
        )

    def forget_key(self, key_id: str) -> int:
        """Forget everything kept for period key ``key_id`` (its period expired)."""
        return self.db.erase(
            [
                ("DELETE FROM content_keys WHERE key_id = ?", (key_id,)),
                ("DELETE FROM held WHERE key_id = ?", (key_id,)),
            ]
        )

    def hold(self, held: Held, kid: str) -> None:
        """Remember the wrapped keys of a sealed body received, wrapped under ``kid`` (no
        ciphertext)."""
        self.hold_many([(held, kid)])

    def hold_many(self, items: Iterable[tuple[Held, str]]) -> None:
        """:meth:`hold` for ``(held, kid)`` each, in one transaction."""
        rows = []
        for held, kid in items:
            recipients = [
                {
                    "org": str(r.get("org")),
                    "key_id": str(r.get("key_id")),
                    "wrapped_key": base64.b64encode(bytes(r.get("wrapped_key") or b"")).decode(),
                }
                for r in held.body.get("recipients") or ()
            ]
            wrapping = {"suite": held.body.get("suite"), "recipients": recipients}
            rows.append(
                (held.origin_org, held.referral_id, held.version, kid, json.dumps(wrapping))
            )
        if not rows:
            return
        with self.db.transaction() as conn:
            conn.executemany("INSERT OR REPLACE INTO held VALUES (?, ?, ?, ?, ?)", rows)

    def held_under(self, key_id: str) -> list[Held]:
        """The wrapped keys held of every body sealed under period key ``key_id``."""
        rows = self.db.query("SELECT * FROM held WHERE key_id = ?", (key_id,))
        return [_held(r) for r in rows]

    def held(self, origin_org: str | None = None, referral_id: str | None = None) -> list[Held]:
        """The wrapped keys held (of one referral, or every one)."""
        sql, params = "SELECT * FROM held", cast("tuple[object, ...]", ())
        if origin_org is not None:
            sql += " WHERE origin_org = ? AND referral_id = ?"
            params = (origin_org, referral_id)
        return [_held(r) for r in self.db.query(sql + " ORDER BY version", params)]

    def period(self, key_id: str) -> tuple[float, float | None] | None:
        """(started, retired) of period key ``key_id``; None if never seen."""
        rows = self.db.query("SELECT * FROM periods WHERE key_id = ?", (key_id,))
        if not rows:
            return None
        retired = rows[0]["retired_at"]
        return float(rows[0]["started_at"]), None if retired is None else float(retired)

    def retired(self) -> list[tuple[str, float]]:
        """(key id, when its period ended) of every ended period not yet expired."""
        rows = self.db.query(
            "SELECT key_id, retired_at FROM periods WHERE retired_at IS NOT NULL"
            " ORDER BY retired_at"
        )
        return [(str(r["key_id"]), float(r["retired_at"])) for r in rows]

    def schedule_destroy(self, key_id: str, at: float) -> None:
        """Destroy period key ``key_id`` at ``at`` (the earliest time asked for wins)."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO periods (key_id, started_at) VALUES (?, ?)", (key_id, at)
            )
            conn.execute(
                "UPDATE periods SET destroy_at = MIN(COALESCE(destroy_at, ?), ?) WHERE key_id = ?",
                (at, at, key_id),
            )

    def destroy_due(self, now: float) -> list[str]:
        """The period keys whose scheduled destruction is due at ``now``."""
        rows = self.db.query(
            "SELECT key_id FROM periods WHERE destroy_at IS NOT NULL AND destroy_at <= ?"
            " ORDER BY destroy_at",
            (now,),
        )
        return [str(r["key_id"]) for r in rows]

    def mark_period(self, key_id: str, started: float, retired: float | None = None) -> None:
        """Record when a period started (kept if known) and when it ended."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO periods (key_id, started_at) VALUES (?, ?)",
                (key_id, started),
            )
            if retired is not None:
                conn.execute(
                    "UPDATE periods SET retired_at = ? WHERE key_id = ? AND retired_at IS NULL",
                    (retired, key_id),
                )

    def close(self) -> None:
        """Close the database."""
        self.db.close()


def _held(row: Any) -> Held:
    wrapping = json.loads(row["wrapping"])
    for r in wrapping["recipients"]:
        r["wrapped_key"] = base64.b64decode(r["wrapped_key"])
    return Held(str(row["origin_org"]), str(row["referral_id"]), wrapping, int(row["version"]))


def rotate_period_key(directory: Path, org_id: str) -> list[PublicKey]:
    """Start a new period: a new encryption key becomes current (publish it to the trust file)."""
    with _KEY_LOCK:
        return [add_encryption_key(directory, org_id)]


def destroy_encryption_key(directory: Path, kid: str) -> None:
    """Destroy encryption key ``kid``: out of the manifest, its file overwritten and removed.

    The current key cannot be destroyed (bodies are still being sealed to it): rotate first.
    """
    with _KEY_LOCK:
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
    """A sealed body the recipient still holds: whose, which referral, the SealedBody datum
    (its ``suite`` and ``recipients`` are enough)."""

    origin_org: str
    referral_id: str
    body: Mapping[str, Any]
    #: The referral's version the body is of (an amendment is sealed again).
    version: int = 1


class Shredder:
    """Makes one organisation's sealed copies on the topics unreadable, per referral or period."""

    def __init__(
        self,
        directory: Path,
        org_id: str,
        trust_file: Path | None = None,
        clock: Callable[[], float] = time.time,
        grace: float = 0.0,
    ) -> None:
        self.directory = directory
        #: A period key is destroyed no sooner than this long after its period ended:
        #: senders seal to the new key only once they re-read the trust file.
        self.grace = grace
        self.org_id = org_id
        #: Where a new period key is published when erasure forces a rotation.
        self.trust_file = trust_file
        self.clock = clock
        self.cache = ContentKeyCache.in_key_dir(directory)
        self._pending: list[tuple[Held, str]] = []

    def keys(self) -> OrgKeys:
        """The organisation's private keys as they are on disk now."""
        keys = OrgKeys.load(self.directory, self.org_id)
        if keys is None:
            raise ConfigError(f"{self.org_id} has no keys in {self.directory}")
        return keys

    def hold(self, held: Held) -> None:
        """Remember a received body's wrapped keys (what :meth:`erase_referral` works from);
        written by :meth:`flush`, or before any erasure."""
        kid = sealed_key_id(held.body, self.org_id)
        if kid is not None:
            with _KEY_LOCK:
                self._pending.append((held, kid))

    def flush(self) -> None:
        """Write the wrapped keys :meth:`hold` was given (one transaction)."""
        with _KEY_LOCK:
            pending, self._pending = self._pending, []
            self.cache.hold_many(pending)

    def rotate(self) -> str:
        """Start a new period now: the new key is current and published; its id."""
        with _KEY_LOCK:
            now = self.clock()
            before = list(self.keys().encryption)[-1]
            if self.trust_file is None:
                raise ConfigError(f"{self.org_id}: rotating the period key needs the trust file")
            new = rotate_period_key(self.directory, self.org_id)
            add_to_trust_file(self.trust_file, new)
            self.cache.mark_period(before, now, retired=now)
            self.cache.mark_period(new[0].id, now)
            return new[0].id

    def erase_referral(self, origin_org: str, referral_id: str) -> list[str]:
        """Shred every version of one referral held here; the period keys destroyed."""
        with _KEY_LOCK:
            self.flush()
            destroyed = []
            for h in self.cache.held(origin_org, referral_id):
                kid = sealed_key_id(h.body, self.org_id)
                live = kid is not None and kid in self.keys().encryption
                others = self.cache.held_under(kid) if live and kid is not None else []
                if (gone := self.erase(h, others)) is not None:
                    destroyed.append(gone)
            self.cache.erase(origin_org, referral_id)
            return destroyed

    def erase(self, erased: Held, others: Iterable[Held]) -> str | None:
        """Shred ``erased``: keep the content keys of ``others`` of its period, destroy the
        period key (or schedule it, :attr:`grace` after the period ended); the key id
        (None if it was gone already)."""
        with _KEY_LOCK:
            self.cache.erase(erased.origin_org, erased.referral_id)
            kid = sealed_key_id(erased.body, self.org_id)
            keys = self.keys()
            if kid is None or kid not in keys.encryption:
                return None
            if list(keys.encryption)[-1] == kid:  # senders must seal to a new key from now on
                if self.trust_file is None:
                    raise ConfigError(
                        f"key {kid} is current: erasing needs the trust file to rotate"
                    )
                self.rotate()
            now = self.clock()
            ended = (self.cache.period(kid) or (now, now))[1]
            at = min(now if ended is None else ended, now) + self.grace
            if at > now:  # what senders sealed before re-reading the trust file still opens
                self.cache.schedule_destroy(kid, at)
                return kid
            self._destroy(kid, others, [(erased.origin_org, erased.referral_id)])
            return kid

    def destroy_due(self) -> list[str]:
        """Destroy the period keys whose scheduled time has come (keeping the content keys of
        what is still held under them); their ids."""
        with _KEY_LOCK:
            self.flush()
            done = []
            for kid in self.cache.destroy_due(self.clock()):
                if kid in self.keys().encryption:
                    self._destroy(kid, self.cache.held_under(kid), [])
                    done.append(kid)
                with self.cache.db.transaction() as conn:
                    conn.execute("UPDATE periods SET destroy_at = NULL WHERE key_id = ?", (kid,))
            return done

    def _destroy(self, kid: str, others: Iterable[Held], skip: list[tuple[str, str]]) -> None:
        """Keep the content keys of ``others`` sealed under ``kid`` (not those of ``skip``),
        then destroy ``kid``."""
        with _KEY_LOCK:
            keys = self.keys()
            kept = []
            for h in others:
                if (h.origin_org, h.referral_id) in skip:
                    continue
                if sealed_key_id(h.body, self.org_id) != kid:
                    continue
                try:
                    key = content_key(
                        h.body,
                        referral_id=h.referral_id,
                        origin=h.origin_org,
                        org_id=self.org_id,
                        private_keys=keys.encryption,
                    )
                except SealError:  # never opened here either: nothing to keep
                    log.warning("a held key of %s does not unwrap; not kept", h.referral_id)
                    continue
                kept.append((h.origin_org, h.referral_id, kid, key, h.version))
            self.cache.put_many(kept)  # all kept before the key goes
            destroy_encryption_key(self.directory, kid)

    def expire(self, kid: str) -> None:
        """The period of ``kid`` is over (past the longest retention rule): destroy its key
        and forget what was kept for it."""
        with _KEY_LOCK:
            destroy_encryption_key(self.directory, kid)
            self.cache.forget_key(kid)
            self.cache.db.erase([("DELETE FROM periods WHERE key_id = ?", (kid,))])

    def close(self) -> None:
        """Write what is held, close the content-key cache."""
        try:
            self.flush()
        finally:
            self.cache.close()


@dataclass(frozen=True)
class PeriodTick:
    """What one :meth:`PeriodKeys.tick` did: the new period key (if rotated), keys expired."""

    rotated: str | None
    expired: tuple[str, ...]


class PeriodKeys:
    """Rotates a recipient's encryption key once a period and destroys expired periods' keys.

    ``period_days`` 0: never rotates; ``keep_days`` (the longest retention rule) None:
    never expires. Times come from the shredder's clock (simulated in tests).
    """

    def __init__(self, shredder: Shredder, period_days: float, keep_days: float | None) -> None:
        self.shredder = shredder
        self.period_days = period_days
        self.keep_days = keep_days

    def tick(self) -> PeriodTick:
        """Rotate if the current period is over, expire what is past ``keep_days``."""
        sh = self.shredder
        with _KEY_LOCK:
            sh.destroy_due()
            now = sh.clock()
            enc = list(sh.keys().encryption)
            for kid in enc[:-1]:  # earlier keys seen first here: their period ends now
                sh.cache.mark_period(kid, now, retired=now)
            sh.cache.mark_period(enc[-1], now)
            rotated = None
            started = sh.cache.period(enc[-1])
            day = 86400.0
            if self.period_days > 0 and started and now >= started[0] + self.period_days * day:
                rotated = sh.rotate()
            expired = []
            if self.keep_days is not None:
                current = list(sh.keys().encryption)[-1]
                for kid, retired in sh.cache.retired():
                    if kid != current and now >= retired + self.keep_days * day:
                        sh.expire(kid)  # the key if still here, the content keys kept for it
                        expired.append(kid)
            return PeriodTick(rotated, tuple(expired))
