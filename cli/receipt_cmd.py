"""``referral receipt``: a portable proof of one handover (see schemas/verify_receipt.py)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.errors import ConfigError, KafkaBrokerError
from broker.ids import resolve_id
from broker.ledger.receipt import canonical, ledger_origin, receipt
from broker.ledger.store import LedgerEntry, LedgerStore
from broker.ledger.treehead import NoteError, SignedNote, verify_cosignature, verify_tree_head
from broker.ledger.witness import cosigned_note, member_key, router_keys, witnessing
from broker.security.keys import ROUTER, LiveKeys, TrustStore, key_dir, load_trust
from broker.wire.codec import Codec
from broker.wire.topics import TopicNames
from cli.app import console, escape, state

__all__ = ["receipt_cmd"]

#: A receipt's tree head is cosigned by at least this many other members.
MIN_COSIGNERS = 2


def receipt_cmd(
    ctx: typer.Context,
    referral_id: str = typer.Argument(..., help="The referral (a unique prefix will do)."),
    event: str = typer.Option(
        "DELIVERED",
        "--event",
        help="Which of its events (the last of that kind; the referral's own first).",
    ),
    out: Path | None = typer.Option(None, "--out", help="Write it here (default: stdout)."),
    record: bool = typer.Option(
        True, "--record/--no-record", help="Include the signed ledger record (the default)."
    ),
) -> None:
    """Write a receipt of one handover: the event, its signed record, its inclusion proof and
    the router-signed tree head over the local ledger store, as one JSON document."""
    st = state(ctx)
    settings = st.settings
    trust = load_trust(st.network(), settings.network_file)
    if out is not None and not out.parent.is_dir():
        raise ConfigError(f"--out {out}: no such directory {out.parent}")
    kind = event.strip().upper()
    with LedgerStore.for_settings(settings) as store:
        with contextlib.suppress(KafkaBrokerError, ConfigError):  # no broker: the local store
            store.sync(settings, Codec.from_settings(settings), timeout=15)
        rid = resolve_id(referral_id, store.referral_ids())
        found = _handovers(store, rid, kind, settings.topic_names())
        if not found:
            raise ConfigError(f"the local ledger holds no {kind} event of referral {referral_id}")
        keys = LiveKeys(key_dir(settings, ROUTER), ROUTER).current()
        if keys is None:
            where = key_dir(settings, ROUTER)
            raise ConfigError(f"no router key in {where}: the log signs its heads")
        index = found[-1].index
        doc = receipt(
            store,
            index,
            origin=ledger_origin(settings.topic_names().ledger),
            log_name=ROUTER,
            log_key=keys.signing,
            trust=trust,
            with_record=record,
            published=_cosigned_head(store, index, trust, found[-1].record.actor),
        )
    data = canonical(doc) + b"\n"
    if out is None:
        typer.echo(data.decode("ascii"), nl=False)
        return
    try:
        out.write_bytes(data)
    except OSError as exc:
        raise ConfigError(f"cannot write the receipt to {out}: {exc.strerror}") from exc
    console.print(
        escape(f"receipt of entry {doc['index']} of {doc['size']} written to {out}"), markup=False
    )


def _handovers(store: LedgerStore, rid: str, kind: str, names: TopicNames) -> list[LedgerEntry]:
    """The ``kind`` events of ``rid``, those of the referral itself (on a jurisdiction lane)
    if it has any, else those of its statuses; oldest first."""
    found = [e for e in store.entries(rid) if e.record.event == kind]
    lanes = [e for e in found if names.jurisdiction_of(e.record.topic or "") is not None]
    return lanes or found


def _cosigned_head(
    store: LedgerStore, index: int, trust: TrustStore, actor: str
) -> tuple[SignedNote, int, dict[str, bytes]] | None:
    """The smallest published tree head covering ``index`` that two members other than
    ``actor`` cosigned (only those two kept: the receipt stays small), with the raw keys of
    its signers; None if there is none yet."""
    witnessed = witnessing(store.notes(), trust)
    for head in witnessed.heads:  # smallest first: the shortest proof
        others = sorted(head.cosigners - {actor})[:MIN_COSIGNERS]
        if head.size <= index or len(others) < MIN_COSIGNERS or head.size in witnessed.splits:
            continue
        full = cosigned_note(head, store.notes(), trust)
        note = SignedNote(
            full.body, tuple(s for s in full.signatures if s.name == ROUTER or s.name in others)
        )
        signers = {ROUTER: _raw(router_keys(trust), note, ROUTER)}
        for name in others:
            signers[name] = _raw(member_key(trust, name), note, name)
        return note, head.size, signers
    return None


def _raw(candidates: list[Ed25519PublicKey], note: SignedNote, name: str) -> bytes:
    """The raw public key among ``candidates`` that signed ``name``'s line of ``note``."""
    for key in candidates:
        try:
            verify_cosignature(note, name, key) if name != ROUTER else verify_tree_head(
                note, name, key
            )
        except NoteError:
            continue
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    raise ConfigError(f"no trusted key of {name} signed the tree head")
