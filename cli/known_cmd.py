"""``referral known evaluate|sync|rederive``: known content (blind match tokens, issue 24)."""

from __future__ import annotations

from pathlib import Path

import typer

from broker.kafka import clients
from broker.known.client import EvaluationClient
from broker.known.index import MatchIndex
from broker.known.publish import KnownPublisher
from broker.known.service import EvaluationService, known_settings
from broker.origin.outbox import Outbox
from broker.origin.status_log import StatusLog
from broker.security.keys import LiveKeys, key_dir, load_trust
from broker.wire.codec import Codec
from cli.app import NETWORK_OPTION, App, console, service_stop_event, state

__all__ = ["app"]

app = App(help="Known content: the match-token evaluator and each member's match index.")


@app.command("evaluate")
def evaluate_cmd(
    ctx: typer.Context,
    network_file: Path | None = NETWORK_OPTION,
    idle_exit: float | None = typer.Option(
        None, "--idle-exit", help="Exit after this many seconds without requests."
    ),
) -> None:
    """Run the evaluator (known.evaluator of the network file): answer blinded batches."""
    st = state(ctx)
    network = st.network(network_file)
    settings = st.settings
    known = known_settings(network)
    service = EvaluationService(settings, network, Codec.from_settings(settings))
    console.print(
        f"evaluator {known.evaluator}: key {service.ring.current.key_id}, at most"
        f" {known.rate_items} elements per organisation per {known.rate_seconds:g} s"
    )
    service.run(service_stop_event(), idle_exit_s=idle_exit)
    console.print(f"evaluator stopped: {service.evaluated} elements, {service.refused} refusals")


@app.command("sync")
def sync_cmd(
    ctx: typer.Context,
    org: str = typer.Argument(..., help="Organisation id from the network file."),
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """Read match.tokens into ORG's local match index."""
    st = state(ctx)
    network = st.network(network_file)
    network.organisation(org)
    settings = st.settings
    known_settings(network)
    trust = load_trust(network, settings.network_file)
    index = MatchIndex.for_org(settings, org)
    consumer = clients.consumer(settings, group_id=None, role=f"known-sync-{org}")
    try:
        taken = index.sync(
            consumer, settings.topic_names().match_tokens, trust, network.network.allow_plain
        )
        console.print(f"{taken} match-token entries taken; {len(index)} in the index of {org}")
    finally:
        consumer.close()
        index.close()


@app.command("rederive")
def rederive_cmd(
    ctx: typer.Context,
    org: str = typer.Argument(..., help="The origin organisation."),
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """Re-derive ORG's tokens of everything it published (after a key rotation), each with
    its current case status (the latest outcome reported for the item)."""
    st = state(ctx)
    network = st.network(network_file)
    network.organisation(org)
    settings = st.settings
    known_settings(network)
    producer = clients.producer(settings, role=f"known-{org}")
    client = EvaluationClient(settings, network, org, producer)
    index = MatchIndex.for_org(settings, org)
    outbox = Outbox.for_org(settings, org)
    status_log = StatusLog.for_org(settings, org)
    try:
        publisher = KnownPublisher(client, index, producer, LiveKeys(key_dir(settings, org), org))
        done = publisher.rederive(outbox, status_log)
        console.print(
            f"{org}: tokens of {done} referral(s) re-derived and published with their case status"
        )
    finally:
        client.close()
        index.close()
        outbox.close()
        status_log.close()
        producer.close()
