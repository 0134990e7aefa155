"""``referral route`` and ``referral dlq list|replay``."""

from __future__ import annotations

import getpass
import re
from pathlib import Path

import typer

from broker.config import Settings
from broker.errors import ConfigError
from broker.ids import short_id
from broker.kafka import clients
from broker.ledger.store import LedgerStore
from broker.metrics import setup_metrics
from broker.operator.deadletters import DeadLetters, with_resolved
from broker.routing.router import Router
from broker.tracing import setup_tracing
from broker.wire.codec import Codec
from cli.app import (
    NETWORK_OPTION,
    App,
    cell,
    console,
    escape,
    print_json,
    service_stop_event,
    state,
)
from cli.tables import WIDE_OPTION, is_narrow, new_table, print_table

__all__ = ["dlq_app", "dlq_list", "dlq_replay", "route"]

dlq_app = App(help="Inspect and replay dead letters.")


def route(
    ctx: typer.Context,
    network_file: Path | None = NETWORK_OPTION,
    group: str = typer.Option("router", "--group", help="Consumer group of the routers."),
    idle_exit: float | None = typer.Option(
        None, "--idle-exit", help="Exit after this many seconds without records."
    ),
    checkpoint_every: float = typer.Option(
        30.0,
        "--checkpoint-every",
        min=0,
        help="Seconds between signed ledger checkpoints (0: none; needs the router's key).",
    ),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        min=0,
        max=65535,
        help="Serve Prometheus /metrics on 127.0.0.1 at this port (REFERRAL_METRICS_PORT).",
    ),
) -> None:
    """Run a router (join the group; SIGTERM or Ctrl-C finishes the batch and exits 0)."""
    st = state(ctx)
    network = st.network(network_file)
    settings = st.settings
    stop = service_stop_event()
    codec = Codec.from_settings(settings)
    tracing = setup_tracing(settings, "router")
    metrics = setup_metrics(
        metrics_port if metrics_port is not None else settings.metrics_port, "router", settings
    )
    router = Router(
        settings,
        network,
        codec,
        group_id=group,
        tracing=tracing,
        metrics=metrics,
        checkpoint_every=checkpoint_every or None,
    )
    console.print(
        f"router joined group {settings.topic_prefix}{group} on "
        f"{clients.resolve_bootstrap(settings)}"
    )
    if metrics.port is not None:
        console.print(f"metrics on http://127.0.0.1:{metrics.port}/metrics")
    try:
        stats = router.run(stop, idle_exit_s=idle_exit)
    finally:
        try:
            tracing.shutdown()
        finally:
            metrics.shutdown()
    console.print(
        f"router stopped: {stats.referrals} referrals, {stats.statuses} statuses, "
        f"{stats.published} published, {stats.dead_lettered} dead-lettered"
    )


@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    sync: bool = typer.Option(
        True, "--sync/--no-sync", help="Sync the ledger store to mark resolved dead letters."
    ),
    wide: bool = WIDE_OPTION,
) -> None:
    """Show every dead letter with where it came from and why (and if it was resolved since).

    On a narrow terminal the referral id is shortened, the error class dropped
    (the reason names it) and the reason folds onto further lines.
    """
    settings = state(ctx).settings
    letters = _dead_letters(settings).read()
    with LedgerStore.for_settings(settings) as store:
        if sync:
            store.sync(settings, Codec.from_settings(settings))
        resolved = {r.letter.id for r in with_resolved(letters, store.records()) if r.resolved}
    if as_json:
        print_json([{**d.to_json(), "resolved": d.id in resolved} for d in letters])
        return
    narrow = is_narrow(wide)
    title = f"dead letters ({len(letters)}, {len(resolved)} resolved since)"
    table = new_table(title, narrow)
    if narrow:
        # An 80-column terminal: the key columns in the table, where from and why below it.
        for col in ("id", "stage", "referral", "resolved"):
            table.add_column(col, overflow="fold")
        for d in letters:
            referral = short_id(d.referral_id) if d.referral_id else ""
            resolved_mark = "yes" if d.id in resolved else ""
            table.add_row(cell(d.id), cell(d.stage), cell(referral), resolved_mark)
        console.print(table)
        for d in letters:
            where = f"{d.original_topic}[{d.original_partition}]@{d.original_offset}"
            console.print(f"{cell(d.id)}  from {cell(where)}", soft_wrap=False)
            console.print(f"    {cell(d.message)}")
        return
    for col in ("id", "from", "stage", "error", "reason", "referral", "resolved"):
        table.add_column(col, overflow="fold")
    for d in letters:
        table.add_row(
            cell(d.id),
            cell(f"{d.original_topic}[{d.original_partition}]@{d.original_offset}"),
            cell(d.stage),
            cell(d.error_class.rsplit(".", 1)[-1]),
            cell(d.message),
            cell(d.referral_id),
            "yes" if d.id in resolved else "",
        )
    print_table(table, whole=True)


@dlq_app.command("replay")
def dlq_replay(
    ctx: typer.Context,
    ids: list[str] = typer.Option([], "--id", help="Dead letter id (partition:offset); repeat."),
    all_: bool = typer.Option(False, "--all", help="Replay every dead letter."),
    by: str = typer.Option(
        "", "--by", help="Who replays, as recorded (default: the login name).", show_default=False
    ),
) -> None:
    """Send chosen dead letters back to their original topic, headers cleaned; each replay is
    recorded with who replayed it, as the console records it."""
    if not ids and not all_:
        raise ConfigError("name dead letters with --id PARTITION:OFFSET, or pass --all")
    malformed = [i for i in ids if not re.fullmatch(r"\d+:\d+", i.strip())]
    if malformed:
        raise ConfigError(f"--id {malformed[0]!r}: expected PARTITION:OFFSET, e.g. 0:42")
    desk = _dead_letters(state(ctx).settings)
    letters = desk.chosen(ids, every=all_)
    done = desk.replay(letters, by or _login_name())
    for r in done:
        if not r.sent:
            console.print(escape(f"skipped {r.letter_id}: {r.skipped}"), markup=False)
    console.print(f"replayed {sum(r.sent for r in done)} dead letter(s)")


def _dead_letters(settings: Settings) -> DeadLetters:
    return DeadLetters(
        settings,
        consumer=lambda: clients.consumer(settings, group_id=None, role="dlq"),
        producer=lambda: clients.producer(settings, role="dlq"),
    )


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name: ``--by`` must say who
        return ""
