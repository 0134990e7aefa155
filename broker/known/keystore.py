"""The evaluator's OPRF keys on disk: ``<state_dir>/orgs/<evaluator>/keys/oprf/``.

One 32-byte secret seed per key (``<key id>.seed``, mode 0600) and a manifest
(``keys.json``: each key id with its creation time, current last). A key is
rotated when it is older than the network's ``known.rotate_days``; the previous
key keeps answering requests that name it until the next rotation retires it.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from broker.config import Settings
from broker.errors import ConfigError
from broker.known.tokens import EvaluatorKey, KeyRing
from broker.private import private_dir, write_private
from broker.security.keys import key_dir

__all__ = ["OprfKeys", "oprf_dir"]

_MANIFEST = "keys.json"
_DAY = 86400.0


def oprf_dir(settings: Settings, evaluator: str) -> Path:
    """Where the evaluator's OPRF key seeds live."""
    return key_dir(settings, evaluator) / "oprf"


@dataclass(frozen=True)
class _Entry:
    key_id: str
    created: float


class OprfKeys:
    """The evaluator's OPRF keys in one directory: create, load as a ring, rotate when due."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def _entries(self) -> list[_Entry]:
        path = self.directory / _MANIFEST
        if not path.is_file():
            return []
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
            return [_Entry(str(r["id"]), float(r["created"])) for r in rows]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{path}: not a readable OPRF key manifest") from exc

    def exists(self) -> bool:
        """True if at least one OPRF key is there."""
        return bool(self._entries())

    def create(self, now: float | None = None) -> str:
        """Add a new key and make it current; its key id (``m<date>-<random>``)."""
        at = time.time() if now is None else now
        private_dir(self.directory, "OPRF keys")
        entries = self._entries()
        key_id = time.strftime("m%Y%m%d", time.gmtime(at)) + "-" + os.urandom(3).hex()
        write_private(self.directory / f"{key_id}.seed", os.urandom(32))
        rows = [{"id": e.key_id, "created": e.created} for e in entries]
        rows.append({"id": key_id, "created": at})
        write_private(self.directory / _MANIFEST, (json.dumps(rows, indent=2) + "\n").encode())
        return key_id

    def _key(self, key_id: str) -> EvaluatorKey:
        path = self.directory / f"{key_id}.seed"
        try:
            if os.stat(path).st_mode & 0o077:
                raise ConfigError(f"OPRF key file {path} is accessible by others; chmod 600 it")
            seed = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"OPRF key file missing: {path}") from exc
        return EvaluatorKey.derive(key_id, seed)

    def ring(self) -> KeyRing:
        """The current key and the one before it (older keys are retired)."""
        entries = self._entries()
        if not entries:
            raise ConfigError(
                f"no OPRF key in {self.directory}: run `referral keys init` for the evaluator"
            )
        ring = KeyRing(
            self._key(entries[-2].key_id) if len(entries) > 1 else self._key(entries[-1].key_id)
        )
        if len(entries) > 1:
            ring.rotate(self._key(entries[-1].key_id))
        return ring

    def current_created(self) -> float:
        """When the current key was made (seconds since the epoch)."""
        entries = self._entries()
        if not entries:
            raise ConfigError(f"no OPRF key in {self.directory}")
        return entries[-1].created

    def rotate_if_due(self, ring: KeyRing, rotate_days: float, now: float) -> str | None:
        """Make a new current key if the current one is older than ``rotate_days``; its id.

        A key made meanwhile by ``referral keys init --rotate`` is taken on the same way.
        """
        entries = self._entries()
        previous = ring.current.key_id
        if entries and entries[-1].key_id != previous:
            key_id = entries[-1].key_id  # rotated by hand
        elif now - self.current_created() < rotate_days * _DAY:
            return None
        else:
            key_id = self.create(now)
        ring.rotate(self._key(key_id))
        for old in list(ring.key_ids()):
            if old not in (previous, key_id):
                ring.retire(old)
        return key_id
