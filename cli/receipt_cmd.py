"""``referral receipt``: a portable proof of one handover (see schemas/verify_receipt.py)."""

from __future__ import annotations

from pathlib import Path

import typer

from broker.errors import ConfigError
from broker.ids import resolve_id
from broker.ledger.receipt import canonical, ledger_origin, receipt
from broker.ledger.store import LedgerStore
from broker.security.keys import ROUTER, LiveKeys, key_dir, load_trust
from cli.app import console, escape, state

__all__ = ["receipt_cmd"]


def receipt_cmd(
    ctx: typer.Context,
    referral_id: str = typer.Argument(..., help="The referral (a unique prefix will do)."),
    event: str = typer.Option(
        "DELIVERED", "--event", help="Which of its events (the last of that kind)."
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
        rid = resolve_id(referral_id, store.referral_ids())
        found = [e for e in store.entries(rid) if e.record.event == kind]
        if not found:
            raise ConfigError(f"the local ledger holds no {kind} event of referral {referral_id}")
        keys = LiveKeys(key_dir(settings, ROUTER), ROUTER).current()
        if keys is None:
            where = key_dir(settings, ROUTER)
            raise ConfigError(f"no router key in {where}: the log signs its heads")
        doc = receipt(
            store,
            found[-1].index,
            origin=ledger_origin(settings.topic_names().ledger),
            log_name=ROUTER,
            log_key=keys.signing,
            trust=trust,
            with_record=record,
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
