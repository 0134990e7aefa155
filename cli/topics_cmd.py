"""``referral topics provision|list``: topics, message counts and consumer-group lag."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from broker.config import Settings
from broker.errors import BrokerError
from broker.kafka import clients
from broker.kafka.clients import admin_client, resolve_bootstrap
from broker.kafka.provision import describe_topics, provision
from cli.app import NETWORK_OPTION, App, cell, console, print_json, state
from cli.tables import WIDE_OPTION, is_narrow, new_table

__all__ = ["TopicStats", "app", "list_cmd", "provision_cmd", "topic_stats"]

app = App(help="Provision and list the network's topics.")


@app.command("provision")
def provision_cmd(
    ctx: typer.Context,
    network_file: Path | None = NETWORK_OPTION,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Create every topic the network needs; a second run changes nothing."""
    st = state(ctx)
    network = st.network(network_file)
    admin = admin_client(st.settings)
    try:
        report = provision(admin, network, st.settings.topic_names())
    finally:
        admin.close()
    if as_json:
        print_json(
            {"created": report.created, "existing": report.existing, "changed": report.changed}
        )
        return
    for name, parts in report.created.items():
        console.print(f"created  {name} ({parts} partitions)")
    for name, (want, have) in report.mismatched.items():
        console.print(f"[yellow]warning[/]: {name} has {have} partitions, network wants {want}")
    if report.changed:
        console.print(
            f"{len(report.created)} topic(s) created, {len(report.existing)} already present "
            f"on {resolve_bootstrap(st.settings)}"
        )
    else:
        console.print(
            f"nothing to do: all {len(report.existing)} topics already exist "
            f"on {resolve_bootstrap(st.settings)}"
        )


@app.command("list")
def list_cmd(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    counts: bool | None = typer.Option(
        None,
        "--counts/--no-counts",
        help="Message counts and consumer-group lag (default: on for the table; "
        "--json keeps its topic → partitions map unless --counts is given).",
    ),
    exact: bool = typer.Option(
        False, "--exact", help="Count every topic by reading it (small topics always are)."
    ),
    all_topics: bool = typer.Option(
        False, "--all", help="Every topic on the broker, not only this deployment's prefix."
    ),
    wide: bool = WIDE_OPTION,
) -> None:
    """List the broker's topics with partition counts, message counts and group lag."""
    st = state(ctx)
    settings = st.settings
    prefix = settings.topic_prefix
    admin = admin_client(settings)
    try:
        found = describe_topics(admin)
        if prefix and not all_topics:
            found = {name: n for name, n in found.items() if name.startswith(prefix)}
        with_counts = counts if counts is not None else not as_json
        stats = topic_stats(settings, admin, found, exact=exact) if with_counts else None
    finally:
        admin.close()
    where = resolve_bootstrap(settings)
    if as_json:
        if stats is None:
            print_json(found)
        else:
            print_json({"broker": where, "topics": {t: s.to_json() for t, s in stats.items()}})
        return
    narrow = is_narrow(wide)
    # Narrow: names without this deployment's prefix (the title names it once).
    cut = len(prefix) if narrow and prefix else 0

    def shown(name: str) -> str:
        return name[cut:] if cut and name.startswith(prefix or "") else name

    title = f"topics on {where}" + (f", prefix {prefix}" if cut else "")
    table = new_table(title, narrow)
    table.add_column("topic", overflow="fold")
    table.add_column("parts" if narrow else "partitions", justify="right")
    if stats is None:
        for name, parts in found.items():
            table.add_row(cell(shown(name)), str(parts))
        console.print(table)
        return
    cols = ("messages", "group lag") if narrow else ("messages", "counted by", "group lag")
    for col in cols:
        table.add_column(col, justify="right" if col == "messages" else "left", overflow="fold")
    for name, s in stats.items():
        lag = ", ".join(f"{g}: {n}" for g, n in sorted(s.lag.items())) or "-"
        if narrow:
            table.add_row(cell(shown(name)), str(s.partitions), str(s.messages), cell(lag))
        else:
            table.add_row(cell(name), str(s.partitions), str(s.messages), s.source_label, cell(lag))
    console.print(table)
    console.print(
        f"counts from {where}: 'read' = records a consumer read from the start; "
        "'ListOffsets' = the broker's reported offsets (the embedded broker's may omit "
        "the last batch; use --exact)"
    )
    if stats and any(s.lag_error for s in stats.values()):
        console.print(f"group lag unavailable: {next(s.lag_error for s in stats.values())}")


#: Topics whose broker-reported total is at most this are always counted by reading.
SMALL_TOPIC = 10_000


@dataclass
class TopicStats:
    """Message count and consumer-group lag of one topic, and how they were obtained."""

    partitions: int
    messages: int
    listed: int
    source: str  # "read" or "listoffsets"
    lag: dict[str, int] = field(default_factory=dict)
    lag_error: str | None = None

    @property
    def source_label(self) -> str:
        """Human label of the count's source (notes a ListOffsets shortfall)."""
        if self.source == "listoffsets":
            return "ListOffsets"
        if self.listed != self.messages:
            return f"read (ListOffsets said {self.listed})"
        return "read"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "partitions": self.partitions,
            "messages": self.messages,
            "source": self.source,
            "listoffsets_messages": self.listed,
            "group_lag": dict(sorted(self.lag.items())),
        }


def _read_ends(
    consumer: KafkaConsumer, tps: list[TopicPartition], listed_end: dict[TopicPartition, int]
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    """(records read, true end offset) per partition, reading from the start until idle."""
    counts = dict.fromkeys(tps, 0)
    ends = {tp: int(listed_end.get(tp, 0)) for tp in tps}
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    deadline = time.monotonic() + 30
    last_new = time.monotonic()
    while time.monotonic() < deadline:
        batch = consumer.poll(timeout_ms=200, max_records=5000)
        for tp, records in batch.items():
            counts[tp] += len(records)
            ends[tp] = max(ends[tp], records[-1].offset + 1)
        if batch:
            last_new = time.monotonic()
        elif time.monotonic() - last_new >= 0.5 and all(
            consumer.position(tp) >= listed_end.get(tp, 0) for tp in tps
        ):
            break
    return counts, ends


def topic_stats(
    settings: Settings, admin: KafkaAdminClient, topics: dict[str, int], *, exact: bool = False
) -> dict[str, TopicStats]:
    """Message counts (read, or ListOffsets for big topics) and committed-offset lag per group."""
    tps = [TopicPartition(t, p) for t, n in topics.items() for p in range(n)]
    consumer = clients.consumer(settings, group_id=None, role="topics-count")
    try:
        begin = consumer.beginning_offsets(tps) if tps else {}
        end = consumer.end_offsets(tps) if tps else {}
        listed = dict.fromkeys(topics, 0)
        for tp in tps:
            listed[tp.topic] += int(end.get(tp, 0)) - int(begin.get(tp, 0))
        to_read = [tp for tp in tps if exact or listed[tp.topic] <= SMALL_TOPIC]
        counts, true_end = _read_ends(consumer, to_read, end) if to_read else ({}, {})
    except KafkaError as exc:
        raise BrokerError(f"cannot count topic messages: {type(exc).__name__}") from exc
    finally:
        consumer.close()
    stats: dict[str, TopicStats] = {}
    read_topics = {tp.topic for tp in to_read}
    for name, parts in topics.items():
        if name in read_topics:
            n = sum(c for tp, c in counts.items() if tp.topic == name)
            stats[name] = TopicStats(parts, n, listed[name], "read")
        else:
            stats[name] = TopicStats(parts, listed[name], listed[name], "listoffsets")
    ends = {tp: true_end.get(tp, int(end.get(tp, 0))) for tp in tps}
    try:
        groups = [g["group_id"] for g in admin.list_groups()]
        groups = [g for g in groups if g.startswith(settings.topic_prefix)]
        committed = admin.list_group_offsets(groups) if groups else {}
    except (KafkaError, ValueError) as exc:
        for s in stats.values():
            s.lag_error = type(exc).__name__
        return stats
    for group, offsets in committed.items():
        for tp, meta in offsets.items():
            if tp.topic not in stats or meta.offset < 0:
                continue
            lag = max(ends.get(tp, 0) - meta.offset, 0)
            s = stats[tp.topic]
            s.lag[group] = s.lag.get(group, 0) + lag
    return stats
