"""Organisation keys: private keys on disk, public keys in a trust store."""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import logging
import os
import stat
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from broker.errors import ConfigError, SealError, SignatureInvalid
from broker.private import open_private, private_dir

if TYPE_CHECKING:
    from broker.config import Settings
    from broker.network import Network

__all__ = [
    "RELOAD_CHECK_SECONDS",
    "ROUTER",
    "KeyUse",
    "LiveKeys",
    "LiveTrust",
    "OrgKeys",
    "PublicKey",
    "TrustStore",
    "add_encryption_key",
    "add_to_trust_file",
    "init_keys",
    "key_dir",
    "key_id",
    "load_trust",
    "revoke_in_trust_file",
    "trust_file_path",
]

KeyUse = Literal["sign", "enc"]
_MANIFEST = "keys.json"
#: How often a running component looks at its key files for a change (seconds).
RELOAD_CHECK_SECONDS = 1.0
#: The signer id of the routers: not an organisation, but it signs its ledger batches and
#: checkpoints (keys in ``<state_dir>/orgs/router/keys``, public keys in the trust file).
ROUTER = "router"

log = logging.getLogger("referral.security")


def key_id(raw_public: bytes) -> str:
    """The id of a public key: first 16 hex digits of SHA-256 of its raw bytes."""
    return hashlib.sha256(raw_public).hexdigest()[:16]


def _raw(public: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class PublicKey:
    """One organisation's public key as the trust store holds it."""

    org: str
    id: str
    use: KeyUse
    raw: bytes = field(repr=False)

    def to_table(self) -> dict[str, str]:
        """The trust-file entry (``id``, ``use``, ``public``)."""
        return {"id": self.id, "use": self.use, "public": base64.b64encode(self.raw).decode()}


def key_dir(settings: Settings, org_id: str) -> Path:
    """``<state_dir>/orgs/<org>/keys``: where an organisation's private keys live."""
    return settings.org_dir(org_id) / "keys"


# -- private keys ------------------------------------------------------------------------------


class OrgKeys:
    """The private keys of one organisation (its current signing key, all its encryption keys)."""

    def __init__(
        self,
        org_id: str,
        signing: Ed25519PrivateKey,
        encryption: Mapping[str, X25519PrivateKey],
    ) -> None:
        self.org_id = org_id
        self.signing = signing
        self.signing_id = key_id(_raw(signing.public_key()))
        #: Every encryption key this organisation holds, by key id (old ones open old bodies).
        self.encryption = dict(encryption)

    def __repr__(self) -> str:
        enc = ",".join(self.encryption)
        return f"OrgKeys({self.org_id!r}, signing={self.signing_id}, encryption={enc})"

    @classmethod
    def load(cls, directory: Path, org_id: str) -> OrgKeys | None:
        """The keys in ``directory``; None if it holds none. ConfigError if they are unsafe."""
        manifest = directory / _MANIFEST
        if not manifest.is_file():
            return None
        try:
            ids = json.loads(manifest.read_text(encoding="utf-8"))
            sign_ids, enc_ids = list(ids["sign"]), list(ids["enc"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{manifest}: not a readable key manifest") from exc
        if not sign_ids or not enc_ids:
            raise ConfigError(f"{manifest}: no signing or no encryption key listed")
        signing = _load_private(directory / f"sign-{sign_ids[-1]}.pem", Ed25519PrivateKey)
        encryption = {
            kid: _load_private(directory / f"enc-{kid}.pem", X25519PrivateKey) for kid in enc_ids
        }
        return cls(org_id, signing, encryption)

    def public_keys(self) -> list[PublicKey]:
        """The public halves: the signing key and every encryption key."""
        out = [PublicKey(self.org_id, self.signing_id, "sign", _raw(self.signing.public_key()))]
        for kid, private in self.encryption.items():
            out.append(PublicKey(self.org_id, kid, "enc", _raw(private.public_key())))
        return out


def _load_private(path: Path, kind: type[Any]) -> Any:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise ConfigError(f"private key file missing: {path}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"private key file {path} is accessible by others (mode {stat.S_IMODE(mode):o}); "
            "chmod 600 it"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a readable private key") from exc
    if not isinstance(key, kind):
        raise ConfigError(f"{path}: not a {kind.__name__.removesuffix('PrivateKey')} key")
    return key


def _write_private(path: Path, key: Ed25519PrivateKey | X25519PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = open_private(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)


def init_keys(directory: Path, org_id: str, *, rotate: bool = False) -> list[PublicKey]:
    """Create a signing and an encryption key in ``directory``; their public keys.

    With keys already there, ConfigError unless ``rotate``: then the new keys are
    added and become current (the old encryption keys stay, to open old bodies).
    """
    manifest = directory / _MANIFEST
    existing: dict[str, list[str]] = {"sign": [], "enc": []}
    if manifest.is_file():
        if not rotate:
            raise ConfigError(
                f"{org_id} already has keys in {directory}; use --rotate to add new ones"
            )
        existing = json.loads(manifest.read_text(encoding="utf-8"))
    private_dir(directory, "keys")
    os.chmod(directory, 0o700)
    signing = Ed25519PrivateKey.generate()
    encryption = X25519PrivateKey.generate()
    sign_id = key_id(_raw(signing.public_key()))
    enc_id = key_id(_raw(encryption.public_key()))
    _write_private(directory / f"sign-{sign_id}.pem", signing)
    _write_private(directory / f"enc-{enc_id}.pem", encryption)
    ids = {"sign": [*existing["sign"], sign_id], "enc": [*existing["enc"], enc_id]}
    tmp = directory / (_MANIFEST + ".tmp")
    tmp.write_text(json.dumps(ids, indent=2) + "\n", encoding="utf-8")
    tmp.replace(manifest)
    return [
        PublicKey(org_id, sign_id, "sign", _raw(signing.public_key())),
        PublicKey(org_id, enc_id, "enc", _raw(encryption.public_key())),
    ]


def add_encryption_key(directory: Path, org_id: str) -> PublicKey:
    """Add a new encryption key to existing keys and make it current; its public key.

    The signing key stays (a period key rotation must not make signatures unverifiable).
    """
    manifest = directory / _MANIFEST
    if not manifest.is_file():
        raise ConfigError(f"{org_id} has no keys in {directory}")
    ids = json.loads(manifest.read_text(encoding="utf-8"))
    encryption = X25519PrivateKey.generate()
    enc_id = key_id(_raw(encryption.public_key()))
    _write_private(directory / f"enc-{enc_id}.pem", encryption)
    ids["enc"] = [*ids["enc"], enc_id]
    tmp = directory / (_MANIFEST + ".tmp")
    tmp.write_text(json.dumps(ids, indent=2) + "\n", encoding="utf-8")
    tmp.replace(manifest)
    return PublicKey(org_id, enc_id, "enc", _raw(encryption.public_key()))


# -- the trust store ---------------------------------------------------------------------------


class TrustStore:
    """Every organisation's valid public keys, and the revoked key ids."""

    def __init__(self, keys: Iterable[PublicKey], revoked: Iterable[str] = ()) -> None:
        self.revoked = frozenset(revoked)
        self._keys: dict[str, list[PublicKey]] = {}
        for k in keys:
            known = self._keys.setdefault(k.org, [])
            if all(other.id != k.id for other in known):
                known.append(k)

    def keys_of(self, org_id: str) -> list[PublicKey]:
        """The organisation's public keys that are not revoked, in listed order."""
        return [k for k in self._keys.get(org_id, []) if k.id not in self.revoked]

    def revoked_keys(self, org_id: str) -> list[PublicKey]:
        """The organisation's public keys on record that are revoked."""
        return [k for k in self._keys.get(org_id, []) if k.id in self.revoked]

    def has_signing_keys(self, org_id: str) -> bool:
        """True if the organisation has (or had: revoked counts) a signing key on record."""
        return any(k.use == "sign" for k in self._keys.get(org_id, []))

    def signing_key(
        self, org_id: str, kid: str, *, allow_revoked: bool = False
    ) -> Ed25519PublicKey:
        """The signer's signing key ``kid``; SignatureInvalid if unknown, revoked or not its own.

        ``allow_revoked`` accepts a key revoked since (to check records kept as history).
        """
        if kid in self.revoked and not allow_revoked:
            raise SignatureInvalid(f"signing key {kid} of {org_id} is revoked")
        for k in self._keys.get(org_id, []):
            if k.id == kid and k.use == "sign":
                return Ed25519PublicKey.from_public_bytes(k.raw)
        raise SignatureInvalid(f"signing key {kid} is not a trusted key of {org_id}")

    def encryption_key(self, org_id: str) -> tuple[str, X25519PublicKey]:
        """The key id and key a body is sealed for: the organisation's last valid one."""
        valid = [k for k in self.keys_of(org_id) if k.use == "enc"]
        if not valid:
            raise SealError(
                f"recipient {org_id} has no valid encryption key in the trust store "
                f"(run `referral keys init {org_id}`)"
            )
        return valid[-1].id, X25519PublicKey.from_public_bytes(valid[-1].raw)


def _entries(org_id: str, table: Any, where: str) -> tuple[list[PublicKey], list[str]]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table")
    keys: list[PublicKey] = []
    problems: list[str] = []
    for i, entry in enumerate(table.get("public") or []):
        at = f"{where}.public[{i}]"
        if not isinstance(entry, Mapping):
            problems.append(f"{at}: must be a table with id, use and public")
            continue
        use, kid = entry.get("use"), str(entry.get("id", ""))
        try:
            raw = base64.b64decode(str(entry.get("public", "")), validate=True)
        except (binascii.Error, ValueError):
            problems.append(f"{at}.public: not base64")
            continue
        if use not in ("sign", "enc"):
            problems.append(f"{at}.use: must be sign or enc")
        elif len(raw) != 32:
            problems.append(f"{at}.public: a raw public key has 32 bytes, not {len(raw)}")
        elif key_id(raw) != kid:
            problems.append(f"{at}.id: does not match the key (its id is {key_id(raw)})")
        else:
            keys.append(PublicKey(org_id, kid, use, raw))
    if problems:
        raise ConfigError("\n".join(problems))
    revoked = [str(r) for r in table.get("revoked") or []]
    return keys, revoked


def trust_file_path(network: Network, network_file: Path | None) -> Path | None:
    """The trust file the network names, resolved relative to the network file."""
    name = network.network.trust_file
    if not name:
        return None
    path = Path(name).expanduser()
    if not path.is_absolute() and network_file is not None:
        path = Path(network_file).resolve().parent / path
    return path


def _read_trust_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable trust file: {exc}") from exc
    orgs = data.get("orgs", {})
    if not isinstance(orgs, dict):
        raise ConfigError(f"{path}: [orgs] must be a table")
    return orgs


def load_trust(network: Network, network_file: Path | None = None) -> TrustStore:
    """The trust store of ``network``: its organisations' ``keys`` tables and its trust file."""
    keys: list[PublicKey] = []
    revoked: list[str] = []
    problems: list[str] = []
    for org in network.organisations:
        if org.keys:
            try:
                found, gone = _entries(org.id, org.keys, f"organisations ({org.id}).keys")
            except ConfigError as exc:
                problems.extend(str(exc).splitlines())
                continue
            keys += found
            revoked += gone
    path = trust_file_path(network, network_file)
    if path is not None:
        for org_id, table in _read_trust_file(path).items():
            try:
                found, gone = _entries(org_id, table, f"{path.name}: orgs.{org_id}")
            except ConfigError as exc:
                problems.extend(str(exc).splitlines())
                continue
            keys += found
            revoked += gone
    if problems:
        raise ConfigError("\n".join(problems))
    return TrustStore(keys, revoked)


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string for these values


def _write_trust_file(path: Path, orgs: Mapping[str, Any]) -> None:
    lines = [
        "# Public keys of the network's organisations (written by `referral keys`).",
        "# Private keys are never here: they stay in each organisation's key directory.",
        "",
    ]
    for org_id in sorted(orgs):
        table = orgs[org_id]
        lines.append(f"[orgs.{_toml_str(org_id)}]")
        revoked = ", ".join(_toml_str(r) for r in table.get("revoked") or [])
        lines.append(f"revoked = [{revoked}]")
        for entry in table.get("public") or []:
            lines.append(f"[[orgs.{_toml_str(org_id)}.public]]")
            for name in ("id", "use", "public"):
                lines.append(f"{name} = {_toml_str(str(entry[name]))}")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)


_TRUST_LOCK = threading.Lock()


@contextmanager
def _trust_file_lock(path: Path) -> Iterator[None]:
    """One writer of the trust file at a time: threads here, processes by ``flock``
    (connectors rotating their period keys at once must not lose each other's keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _TRUST_LOCK, path.with_name(path.name + ".lock").open("a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def add_to_trust_file(path: Path, keys: Iterable[PublicKey]) -> None:
    """Add public keys to the trust file (created if missing); known ids are not repeated."""
    with _trust_file_lock(path):
        orgs = {k: dict(v) for k, v in _read_trust_file(path).items()}
        for key in keys:
            table = orgs.setdefault(key.org, {"revoked": [], "public": []})
            public = list(table.get("public") or [])
            if all(e.get("id") != key.id for e in public):
                public.append(key.to_table())
            table["public"] = public
        _write_trust_file(path, orgs)


def revoke_in_trust_file(path: Path, org_id: str, kid: str) -> None:
    """Mark key ``kid`` of ``org_id`` revoked in the trust file."""
    with _trust_file_lock(path):
        orgs = {k: dict(v) for k, v in _read_trust_file(path).items()}
        table = orgs.setdefault(org_id, {"revoked": [], "public": []})
        revoked = list(table.get("revoked") or [])
        if kid not in revoked:
            revoked.append(kid)
        table["revoked"] = revoked
        _write_trust_file(path, orgs)


# -- keys that follow their files while running --------------------------------------------------


def _stamp(paths: Sequence[Path]) -> tuple[tuple[int, int, int], ...]:
    out = []
    for path in paths:
        try:
            st = path.stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((0, -1, 0))
    return tuple(out)


class _Live:
    """A value loaded from files and loaded again when they change.

    The files are looked at (one ``stat`` each) at most every ``check_every``
    seconds, on the first use after that; a change is re-read at once. A
    reload that fails keeps the last good value (and says so in the log) until
    the files are fixed.
    """

    def __init__(
        self, load: Callable[[], Any], paths: Sequence[Path], check_every: float, what: str
    ) -> None:
        self._load = load
        self._paths = [Path(p) for p in paths]
        self.check_every = check_every
        self._what = what
        self._lock = threading.Lock()
        self._stamp = _stamp(self._paths)
        self._value = load()
        self._checked = time.monotonic()
        #: How many times the files changed and were read again.
        self.reloads = 0

    def refresh(self) -> None:
        """Look at the files on the next use whatever the time (after a change made here)."""
        with self._lock:
            self._checked = float("-inf")

    def _current(self) -> Any:
        if time.monotonic() - self._checked < self.check_every:
            return self._value
        with self._lock:
            self._checked = time.monotonic()
            stamp = _stamp(self._paths)
            if stamp != self._stamp:
                try:
                    self._value = self._load()
                except ConfigError as exc:
                    log.warning(
                        "%s changed but cannot be read, keeping the last good one: %s",
                        self._what,
                        str(exc).splitlines()[0],
                    )
                    return self._value
                self._stamp = stamp
                self.reloads += 1
                log.info("%s re-read after a change", self._what)
            return self._value


class LiveTrust(_Live):
    """The network's trust store, re-read when the trust file changes.

    Revocation and rotation reach a running connector or router this way,
    without a restart: the file is looked at every :data:`RELOAD_CHECK_SECONDS`
    (on the next record after that), so a change is in force within that time
    plus one batch in hand.
    """

    def __init__(
        self,
        network: Network,
        network_file: Path | None = None,
        *,
        check_every: float = RELOAD_CHECK_SECONDS,
    ) -> None:
        path = trust_file_path(network, network_file)
        super().__init__(
            lambda: load_trust(network, network_file),
            [path] if path is not None else [],
            check_every,
            "trust file",
        )

    @classmethod
    def fixed(cls, store: TrustStore) -> LiveTrust:
        """A trust store that never changes (tests, one-off commands)."""
        live = cls.__new__(cls)
        _Live.__init__(live, lambda: store, [], float("inf"), "trust store")
        return live

    def current(self) -> TrustStore:
        """The trust store as the file says now."""
        value: TrustStore = self._current()
        return value


class LiveKeys(_Live):
    """An organisation's own private keys, re-read when its key manifest changes (rotation)."""

    def __init__(
        self, directory: Path, org_id: str, *, check_every: float = RELOAD_CHECK_SECONDS
    ) -> None:
        self.org_id = org_id
        #: Where the keys live (None for fixed keys); content keys kept after a shred too.
        self.directory: Path | None = directory
        super().__init__(
            lambda: OrgKeys.load(directory, org_id),
            [directory / _MANIFEST],
            check_every,
            f"keys of {org_id}",
        )

    @classmethod
    def fixed(cls, keys: OrgKeys | None, org_id: str = "") -> LiveKeys:
        """Keys that never change."""
        live = cls.__new__(cls)
        live.org_id = keys.org_id if keys is not None else org_id
        live.directory = None
        _Live.__init__(live, lambda: keys, [], float("inf"), "keys")
        return live

    def current(self) -> OrgKeys | None:
        """The organisation's keys as its key directory holds them now (None: it has none)."""
        value: OrgKeys | None = self._current()
        return value
