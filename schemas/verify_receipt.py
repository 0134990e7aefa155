#!/usr/bin/env python3
"""Verify a referral-broker ledger receipt offline: ``verify_receipt.py RECEIPT.json [TRUST_FILE]``.

Standalone on purpose: only the standard library and ``cryptography``, nothing of
the project (the format is in ``schemas/README.md``). Exit 0 and one line when
the receipt holds; exit 1 and the reason when it does not. With ``TRUST_FILE``
(the network's trust file, TOML) the keys come from there, not from the receipt.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import struct
import sys
import tomllib
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = ["FORMAT", "Invalid", "main", "root_from_inclusion", "verify"]

FORMAT = "referral-broker/receipt/v1"
LEDGER_DOMAIN = b"referral-broker/v1/ledger\n"
_TOP = {"format", "entry", "index", "size", "proof", "log", "checkpoint", "record", "keys"}
_DASH = "\u2014 "


class Invalid(Exception):
    """Why the receipt does not hold."""


def _b64(text: object, what: str, size: int | None = None) -> bytes:
    """Strict base64: canonical padding and bits, optionally an exact length."""
    try:
        raw = base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{what} is not base64") from None
    if base64.b64encode(raw).decode() != text or (size is not None and len(raw) != size):
        raise Invalid(f"{what} is not {size or 'canonical'} base64 bytes")
    return raw


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes]) -> bytes:
    """RFC 9162 §2.1.3.2: the root an inclusion proof leads to."""
    if not 0 <= index < size:
        raise Invalid(f"no entry {index} in a tree of {size}")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise Invalid("the inclusion proof is too long")
        if fn & 1 or fn == sn:
            r = _node(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _node(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise Invalid("the inclusion proof is too short")
    return r


def _key_hash(name: str, raw: bytes, alg: int) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + raw).digest()[:4]


def _trusted(path: Path) -> dict[str, list[bytes]]:
    """Signing keys by organisation from a trust file (revoked ones left out)."""
    try:
        orgs = tomllib.loads(path.read_text(encoding="utf-8")).get("orgs", {})
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise Invalid(f"the trust file cannot be read: {type(exc).__name__}") from None
    out: dict[str, list[bytes]] = {}
    for org, table in orgs.items():
        revoked = set(table.get("revoked") or [])
        for k in table.get("public") or []:
            if k.get("use") == "sign" and k.get("id") not in revoked:
                out.setdefault(org, []).append(_b64(k.get("public"), f"a key of {org}", 32))
    return out


def _checkpoint(note: str, log: str, keys: dict[str, bytes]) -> tuple[str, int, bytes, list[str]]:
    """(origin, size, root, cosigners) of a signed checkpoint note; Invalid if any line fails."""
    body, sep, sigs = note.rpartition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise Invalid("the checkpoint is not a signed note")
    text = (body + "\n").encode()
    lines = body.split("\n")
    if len(lines) != 3 or not lines[1].isdigit() or str(int(lines[1])) != lines[1]:
        raise Invalid("the checkpoint is not origin, size and root")
    root = _b64(lines[2], "the checkpoint root", 32)
    logged, cosigners = False, []
    for line in sigs[:-1].split("\n"):
        if not line.startswith(_DASH) or line.count(" ") != 2:
            raise Invalid("a checkpoint signature line is malformed")
        name, data = line[len(_DASH) :].split(" ")
        raw = _b64(data, f"the signature of {name}")
        if name not in keys:
            raise Invalid(f"the checkpoint has a signature of {name}, whose key is not given")
        public = Ed25519PublicKey.from_public_bytes(keys[name])
        try:
            if name == log and len(raw) == 68 and raw[:4] == _key_hash(name, keys[name], 1):
                public.verify(raw[4:], text)
                logged = True
            elif len(raw) == 76 and raw[:4] == _key_hash(name, keys[name], 4):
                (ts,) = struct.unpack(">Q", raw[4:12])
                public.verify(raw[12:], b"cosignature/v1\ntime %d\n" % ts + text)
                cosigners.append(name)
            else:
                raise Invalid(f"the signature of {name} is not by its key")
        except InvalidSignature:
            raise Invalid(f"the checkpoint signature of {name} does not hold") from None
    if not logged:
        raise Invalid(f"the checkpoint is not signed by the log ({log})")
    return lines[0], int(lines[1]), root, cosigners


def _record(record: Any, entry: dict[str, Any], keys: dict[str, bytes]) -> None:
    """The entry's ledger record must be the one the leaf names, signed by the entry's actor."""
    if not isinstance(record, dict) or set(record) != {"value", "sig", "key", "ctx"}:
        raise Invalid("the record is not value, sig, key and ctx")
    value = _b64(record["value"], "the record")
    if hashlib.sha256(value).hexdigest() != entry.get("record_sha256"):
        raise Invalid("the record is not the one the entry names")
    ctx = str(record["ctx"]).encode("ascii", "replace")
    fields = dict(p.split("=", 1) for p in ctx.decode().split(";")[1:] if "=" in p)
    actor = entry.get("actor")
    if not ctx.startswith(b"ledger-v1;") or fields.get("actor") != actor:
        raise Invalid(f"the record is not signed as {actor}")
    raw = keys.get(str(actor))
    if raw is None or hashlib.sha256(raw).hexdigest()[:16] != record["key"]:
        raise Invalid(f"the record's key {record['key']} is not a key of {actor}")
    message = b"".join(
        (LEDGER_DOMAIN, struct.pack(">I", len(ctx)), ctx, struct.pack(">I", len(value)), value)
    )
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(
            _b64(record["sig"], "its signature"), message
        )
    except InvalidSignature:
        raise Invalid(f"the record is not what {actor} signed") from None


def verify(data: bytes, trust: dict[str, list[bytes]] | None = None) -> str:
    """The one-line summary of a receipt that holds; Invalid saying why one does not."""
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise Invalid("not a JSON document") from None
    if not isinstance(doc, dict) or set(doc) != _TOP or doc["format"] != FORMAT:
        raise Invalid(f"not a {FORMAT} receipt")
    if _canonical(doc) + b"\n" != data:
        raise Invalid("not in canonical form (sorted keys, no spaces, one final newline)")
    entry, log = doc["entry"], str(doc["log"])
    index, size = doc["index"], doc["size"]
    if not isinstance(entry, dict) or not isinstance(index, int) or not isinstance(size, int):
        raise Invalid("entry, index or size has the wrong type")
    given = {str(n): _b64(k, f"the key of {n}", 32) for n, k in dict(doc["keys"]).items()}
    keys = dict(given)
    if trust is not None:
        for name, raw in given.items():
            if raw not in trust.get(name, []):
                raise Invalid(f"the key given for {name} is not in the trust file")
    origin, signed_size, root, cosigners = _checkpoint(str(doc["checkpoint"]), log, keys)
    if signed_size != size:
        raise Invalid(f"the checkpoint is of {signed_size} entries, the proof of {size}")
    signers = {log, *cosigners}
    if doc["record"] is not None:
        _record(doc["record"], entry, keys)
        signers.add(str(entry.get("actor")))
    if set(given) != signers:
        raise Invalid("the keys given are not exactly those of the log, the actor and witnesses")
    proof_bytes = _b64(doc["proof"], "the proof")
    if len(proof_bytes) % 32:
        raise Invalid("the proof is not whole hashes")
    proof = [proof_bytes[i : i + 32] for i in range(0, len(proof_bytes), 32)]
    leaf = hashlib.sha256(b"\x00" + _canonical(entry)).digest()
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise Invalid("the entry is not in the signed tree: the proof leads to another root")
    source = "keys from the trust file" if trust is not None else "keys from the receipt itself"
    witnessed = f", cosigned by {len(cosigners)} ({', '.join(cosigners)})" if cosigners else ""
    if doc["record"] is None:
        witnessed += "; record not included (the entry names its SHA-256)"
    return (
        f"receipt holds: {entry.get('event')} of referral {entry.get('referral_id')} "
        f"by {entry.get('actor')}, entry {index} of {size} in {origin}, "
        f"signed by {log}{witnessed}; {source}"
    )


def main(argv: list[str]) -> int:
    """Run the command line; the exit code."""
    if len(argv) not in (1, 2):
        print("usage: verify_receipt.py RECEIPT.json [TRUST_FILE]", file=sys.stderr)
        return 2
    try:
        data = Path(argv[0]).read_bytes()
        trust = _trusted(Path(argv[1])) if len(argv) == 2 else None
        print(verify(data, trust))
        return 0
    except OSError as exc:
        print(f"receipt does not hold: cannot read {argv[0]}: {exc.strerror}", file=sys.stderr)
    except (Invalid, KeyError, TypeError, ValueError, AttributeError) as exc:
        print(f"receipt does not hold: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
