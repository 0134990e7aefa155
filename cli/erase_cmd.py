"""``referral erase ID… --as ORIGIN --reason CODE``: ask every recipient to erase, or withdraw."""

from __future__ import annotations

import typer

from broker.errors import ConfigError
from broker.ids import resolve_id, short_id
from broker.kafka import clients
from broker.origin.erase_request import EraseRequester, ErasureBook, erase_code, recipients_of
from broker.origin.outbox import Outbox, OutboxEntry
from broker.origin.publisher import Publisher
from broker.wire.codec import Codec
from cli.app import console, print_json, state
from cli.connector_cmd import known_org

__all__ = ["erase_cmd"]


def erase_cmd(
    ctx: typer.Context,
    referral_ids: list[str] = typer.Argument(..., help="Referral ids (or unique prefixes)."),
    as_org: str = typer.Option(..., "--as", help="The origin that published them."),
    reason: str = typer.Option(
        ..., "--reason", help="A reason code, e.g. INCORRECT, UNLAWFUL, RETENTION."
    ),
    withdraw: bool = typer.Option(
        False, "--withdraw", help="Withdraw as incorrect (recipients mark it) instead of erasing."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Send a signed ERASE (or, with --withdraw, a withdrawal) to every recipient of each referral.

    Each recipient erases every copy and answers ERASED; once all have, the
    origin erases its own. ``referral outbox ORIGIN`` shows who has and has not.
    """
    st = state(ctx)
    network = st.network()
    settings = st.settings
    known_org(network, as_org, "--as")
    if erase_code(reason) != reason:
        raise ConfigError(f"--reason {reason!r}: a code in capitals, e.g. INCORRECT")
    outbox = Outbox.for_org(settings, as_org)
    book = ErasureBook.for_org(settings, as_org)
    publisher = None
    producer = None
    rows = []
    try:
        entries = _entries(outbox, as_org, referral_ids)
        producer = clients.producer(settings, role=f"erase-{as_org}")
        codec = Codec.from_settings(settings)
        publisher = Publisher(settings, network, as_org, codec, producer, outbox)
        names = settings.topic_names()
        requester = EraseRequester(
            producer, codec, names, publisher.security, publisher.ledger, book
        )
        for entry in entries:
            earlier = outbox.earlier_values(entry.referral_id)
            to = recipients_of(entry, codec, network, names, earlier)
            if withdraw:
                sent = publisher.withdrawer.withdraw(entry, to)
            else:
                sent = requester.request(entry.referral_id, entry.case_id, to, reason)
            not_sent = [o for o in to if o not in sent]
            rows.append({"referral_id": entry.referral_id, "asked": sent, "not_sent": not_sent})
        producer.flush(30)
    finally:
        try:
            if producer is not None:
                producer.close(10)
        finally:
            if publisher is not None:
                publisher.close()
            outbox.close()
            book.close()
    if as_json:
        print_json(rows)
        return
    verb = "withdrawn from" if withdraw else "erase asked of"
    for r in rows:
        asked = ", ".join(r["asked"]) or "nobody"
        line = f"referral {short_id(str(r['referral_id']))}: {verb} {asked}"
        if r["not_sent"]:
            line += f" (not sent to {', '.join(r['not_sent'])}: run again)"
        console.print(line, markup=False, soft_wrap=True)


def _entries(outbox: Outbox, as_org: str, given: list[str]) -> list[OutboxEntry]:
    """The outbox entries ``given`` names (ConfigError, one line, for one it does not hold)."""
    known = [p.referral_id for p in outbox.all()]
    entries = []
    for name in given:
        entry = outbox.get(resolve_id(name, known))
        if entry is None:
            raise ConfigError(f"{as_org} holds no referral {name} (never published, or erased)")
        entries.append(entry)
    return entries
