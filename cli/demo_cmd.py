"""``referral demo``: the whole network on one machine, end to end, in under two minutes."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import threading
import time
from collections import Counter
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from broker.config import Settings
from broker.errors import ConfigError, ReferralError
from broker.kafka import clients
from broker.kafka.embedded import EmbeddedBroker
from broker.kafka.provision import provision
from broker.kafka.reader import TopicReader
from broker.ledger.checkpoint import NOTE_KINDS, read_checkpoints
from broker.ledger.events import HandoverEventType
from broker.ledger.store import LedgerStore
from broker.ledger.views import flows, role_routes, trace
from broker.ledger.witness import HeadReport, witnessing
from broker.metrics import setup_metrics
from broker.network import Network, load_network
from broker.operator.heads import held_heads, topic_heads
from broker.private import exposure, private_dir
from broker.routing.router import Router
from broker.security.keys import (
    ROUTER,
    TrustStore,
    add_to_trust_file,
    init_keys,
    key_dir,
    load_trust,
)
from broker.synthetic import synthetic_batch
from broker.tracing import setup_tracing
from broker.wire.codec import Codec
from broker.wire.registry import REFERRAL
from broker.wire.topics import Headers, header
from cli.app import NETWORK_OPTION, console, err_console, escape, state
from cli.demo_requests import run_requests, start_request_router
from cli.operator_cmd import print_flows, print_role_routes, print_trace
from connectors.runtime import ConnectorRuntime
from console.auth import OPERATOR, token_env
from console.server import DEFAULT_PORT as CONSOLE_PORT
from console.server import ConsoleServer, make_console

__all__ = ["demo"]

TOKEN_ENV = "REFERRAL_TOKEN_HL_DE"
UNSERVED = ["US", "JP", "BR", "CA", "AU"]
#: The organisation whose view ``--keep``'s web console serves (besides the operator's).
CONSOLE_ORG = "police-nl"


class DemoFailed(ReferralError):
    """The demo could not account for every referral in time."""


def demo(
    ctx: typer.Context,
    network_file: Path | None = NETWORK_OPTION,
    count: int = typer.Option(1000, "--count", "-c", min=10, help="Referrals to publish."),
    keep: bool = typer.Option(False, "--keep", help="Leave everything running (Ctrl-C stops)."),
    plain: bool = typer.Option(
        False, "--plain", help="Do not seal and sign (only where the network allows it)."
    ),
    seed: int = typer.Option(7, "--seed", help="Seed of the synthetic batch."),
    timeout: float = typer.Option(100.0, "--timeout", help="Seconds to wait for every receipt."),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        min=0,
        max=65535,
        help="Serve Prometheus /metrics on 127.0.0.1 at this port (REFERRAL_METRICS_PORT).",
    ),
) -> None:
    """Run the whole referral network on a fresh embedded broker, end to end."""
    st = state(ctx)
    network = st.network(network_file)
    base = st.settings
    started = time.monotonic()
    run_dir = Path(base.state_dir) / f"demo-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    private_dir(run_dir, "state directory")
    exposed = exposure(run_dir)
    if exposed is not None:
        err_console.print(f"warning: state directory {escape(exposed)}", markup=False)
    network_path = Path(base.network_file)
    if not plain:
        run = base.model_copy(update={"state_dir": run_dir})
        network_path = _sealed_network(run, network_path, network)
        network = load_network(network_path)
    with ExitStack() as stack:
        broker = EmbeddedBroker(log_path=run_dir / "broker.log").start(detach=keep)
        stack.callback(broker.stop)
        settings = _run_settings(base, broker.bootstrap, run_dir, network_path, metrics_port)
        console.print(f"embedded broker at {broker.bootstrap}; state in {run_dir}")
        admin = clients.admin_client(settings)
        try:
            report = provision(admin, network, settings.topic_names())
        finally:
            admin.close()
        console.print(f"provisioned {len(report.created)} topics for {network.network.name}")
        codec = Codec.from_settings(settings)
        env = {**os.environ, TOKEN_ENV: os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)}
        router, runtimes = _start_everything(settings, network, codec, env, stack)
        requests = None if plain else start_request_router(settings, network, codec, stack)
        batch = synthetic_batch(
            count,
            [o.id for o in network.organisations if o.role == "hotline"],
            network.served(),
            [c for c in UNSERVED if c not in network.served()],
            seed=seed,
            red_recipient=_red_recipient(network),
            hosted=_hosted(network),
        )
        sent = _publish(settings, codec, runtimes, batch, env[TOKEN_ENV])
        _await_receipts(runtimes, network, sent, timeout)
        _checkpoint(settings, router, runtimes, plain, network)
        _report(settings, network, codec, batch, sent, runtimes)
        if requests is not None:
            run_requests(settings, network, codec)  # police to police (issue 26)
        if not plain:
            _check_raw_topics(settings, network, batch)
        console.print(f"demo finished in {time.monotonic() - started:.0f}s")
        if keep:
            broker.write_state(run_dir)
            _serve_console(settings, network, codec, stack)
            _print_intake(network, runtimes, env)
            _wait_for_interrupt(
                f"still running: try `referral --state-dir {run_dir} flows` or "
                f"`referral --state-dir {run_dir} trace ID`; Ctrl-C stops everything"
            )


def _sealed_network(run: Settings, source: Path, network: Network) -> Path:
    """A copy of the network for this run: plain referrals refused, keys for everyone."""
    run_dir = Path(run.state_dir)
    text = source.read_text(encoding="utf-8")
    settings_line = 'allow_plain = false\ntrust_file = "trust.toml"\n'
    if "[network]\n" in text:
        lines = [ln for ln in text.splitlines() if not ln.startswith(("allow_plain", "trust_file"))]
        text = "\n".join(lines).replace("[network]", "[network]\n" + settings_line.rstrip(), 1)
    else:
        text = "[network]\n" + settings_line + "\n" + text
    target = run_dir / "network.toml"
    target.write_text(text + "\n", encoding="utf-8")
    trust = run_dir / "trust.toml"
    for signer in [*(org.id for org in network.organisations), ROUTER]:
        add_to_trust_file(trust, init_keys(key_dir(run, signer), signer))
    console.print(
        f"keys made for {len(network.organisations)} organisations and the router; bodies "
        "sealed for their recipients and signed by their origin, statuses signed by their "
        "emitter, ledger records by their actor"
    )
    return target


def _check_raw_topics(
    settings: Settings, network: Network, batch: list[tuple[str, dict[str, Any], str]]
) -> None:
    """What the cluster operator sees: no URL or hash of any referral in the topics' bytes."""
    secrets_in_batch = [
        needle
        for _, ref, kind in batch
        if kind != "invalid"
        for item in ref["body"]["items"]
        for needle in (item["url"].encode(), *(h["value"].encode() for h in item["hashes"]))
    ]
    names = settings.topic_names()
    consumer = clients.consumer(settings, group_id=None, role="demo-auditor")
    seen = 0
    try:
        topics = [t for cc in network.served() for t in (names.jurisdiction(cc), names.urgent(cc))]
        for r in TopicReader(consumer, *topics, timeout=20, idle=0.5).records():
            seen += 1
            if any(n in (r.value or b"") for n in secrets_in_batch):
                raise DemoFailed(f"case content readable in {r.topic}")
    finally:
        consumer.close()
    console.print(
        f"raw topic bytes: none of {len(secrets_in_batch)} URLs and hashes readable "
        f"in {seen} routed records"
    )


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    )


def _hosted(network: Network) -> list[str]:
    """Where the demo's material is hosted: countries with a hotline, when routing is by role.

    A hotline passes material hosted abroad to that country's hotline; a country served by
    its police alone is named as a victim's location instead (few real referrals would go
    to the fallback). The unassigned kind still names a country nobody serves.
    """
    served = network.served()
    if not network.by_role:
        return served
    return [cc for cc in served if network.receivers(cc, "hotline")] or served


def _red_recipient(network: Network) -> tuple[str, str] | None:
    """A police point of contact that receives its own country's victim-location cases."""
    for org in network.organisations:
        if org.role == "police" and org.id in network.receivers(org.country, "police"):
            return org.id, org.country
    return None


def _run_settings(
    base: Settings, bootstrap: str, run_dir: Path, network_path: Path, metrics_port: int | None
) -> Settings:
    """The demo run's settings: its broker, state directory, network file and exporters."""
    return Settings(
        **{
            **base.model_dump(),
            "bootstrap_servers": bootstrap,
            "state_dir": run_dir,
            "network_file": network_path,
            "trace_exporter": "jsonl",
            "trace_file": run_dir / "traces.jsonl",
            "metrics_port": base.metrics_port if metrics_port is None else metrics_port,
            # Twelve components share this one process: short fetch waits while busy
            # would make its ~25 consumers fetch hundreds of times a second (the demo
            # took 160 s instead of 114 s). Deployed, each runs in its own process.
            "fetch_wait_busy_ms": (
                base.fetch_wait_busy_ms if "fetch_wait_busy_ms" in base.model_fields_set else 0
            ),
        }
    )


def _start_everything(
    settings: Settings, network: Network, codec: Codec, env: dict[str, str], stack: ExitStack
) -> tuple[Router, dict[str, ConnectorRuntime]]:
    # One process, one scrape endpoint: every component's meter is served on it.
    metrics = setup_metrics(settings.metrics_port, "demo", settings)
    stack.callback(metrics.shutdown)
    if metrics.port is not None:
        console.print(f"metrics on http://127.0.0.1:{metrics.port}/metrics")
    tracing = setup_tracing(settings, "router")
    stack.callback(tracing.shutdown)
    router = Router(
        settings, network, codec, tracing=tracing, metrics=metrics, checkpoint_every=5.0
    )
    stop = threading.Event()
    thread = threading.Thread(target=router.run, args=(stop,), name="router", daemon=True)
    thread.start()
    stack.callback(thread.join, 30)
    stack.callback(stop.set)
    runtimes = {}
    for org in network.organisations:
        if not org.connectors:
            continue
        runtime = ConnectorRuntime(settings, network, org.id, codec, env=env, metrics=metrics)
        stack.callback(runtime.stop)
        runtimes[org.id] = runtime.start()
    console.print(f"router and {len(runtimes)} organisations' connectors running")
    return router, runtimes


def _publish(
    settings: Settings,
    codec: Codec,
    runtimes: dict[str, ConnectorRuntime],
    batch: list[tuple[str, dict[str, Any], str]],
    token: str,
) -> dict[str, Any]:
    """Send the batch through each hotline's kind of source; what went where."""
    by_origin: dict[str, list[tuple[str, dict[str, Any], str]]] = {}
    for origin, ref, kind in batch:
        by_origin.setdefault(origin, []).append((origin, ref, kind))
    published: dict[str, str] = {}  # referral id -> kind
    rejected = 0
    with _progress() as progress:
        task = progress.add_task("publishing", total=len(batch))
        for origin, rows in by_origin.items():
            runtime = runtimes[origin]
            kinds = {s.kind for s in runtime.sources}
            if "drop_folder" in kinds:
                rejected += _via_drop_folder(runtime, rows, published)
            elif "http_intake" in kinds:
                rejected += _via_http(runtime, rows, published, token)
            else:
                rejected += _via_publisher(runtime, rows, published)
            progress.advance(task, len(rows))
    legacy = _legacy_client(settings, codec, batch)
    console.print(
        f"published {len(published)} referrals, {rejected} rejected at their source, "
        f"{legacy} broken records sent by a legacy client"
    )
    return {"published": published, "rejected": rejected, "legacy": legacy}


def _via_publisher(
    runtime: ConnectorRuntime, rows: list[tuple[str, dict[str, Any], str]], out: dict[str, str]
) -> int:
    result = runtime.publisher.publish(
        [(f"row {i + 1}", ref) for i, (_, ref, _) in enumerate(rows)]
    )
    kinds = {ref["envelope"]["referral_id"]: kind for _, ref, kind in rows}
    for p in result.published:
        out[p.referral_id] = kinds.get(p.referral_id, "normal")
    return len(result.rejected)


def _via_http(
    runtime: ConnectorRuntime,
    rows: list[tuple[str, dict[str, Any], str]],
    out: dict[str, str],
    token: str,
) -> int:
    url = f"http://127.0.0.1:{runtime.http_port}/referrals"
    auth = {"Authorization": f"Bearer {token}"}
    valid = [(ref, kind) for _, ref, kind in rows if kind != "invalid"]
    invalid = [ref for _, ref, kind in rows if kind == "invalid"]
    with httpx.Client(timeout=30) as client:
        for i in range(0, len(valid), 100):
            chunk = valid[i : i + 100]
            answer = client.post(url, json=[ref for ref, _ in chunk], headers=auth)
            if answer.status_code != 202:
                raise DemoFailed(f"HTTP intake answered {answer.status_code} to a valid batch")
            for ref, kind in chunk:
                out[ref["envelope"]["referral_id"]] = kind
        refused = sum(
            client.post(url, json=ref, headers=auth).status_code == 422 for ref in invalid
        )
    return refused


def _via_drop_folder(
    runtime: ConnectorRuntime, rows: list[tuple[str, dict[str, Any], str]], out: dict[str, str]
) -> int:
    import json

    source = runtime.source("drop_folder")
    folder = Path(source.path)  # type: ignore[attr-defined]
    tmp = folder.parent / "export.jsonl.part"
    tmp.write_text("".join(json.dumps(ref) + "\n" for _, ref, _ in rows), encoding="utf-8")
    tmp.replace(folder / "export.jsonl")
    deadline = time.monotonic() + 60
    while (folder / "export.jsonl").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    for _, ref, kind in rows:
        if kind != "invalid":
            out[ref["envelope"]["referral_id"]] = kind
    return sum(kind == "invalid" for _, _, kind in rows)


def _legacy_client(
    settings: Settings, codec: Codec, batch: list[tuple[str, dict[str, Any], str]]
) -> int:
    """A misbehaving client writes straight to the intake: these become dead letters."""
    from broker.wire.models import Referral

    names = settings.topic_names()
    _, ref, _ = next(b for b in batch if b[2] == "normal")
    datum = Referral.model_validate(
        {**ref, "envelope": {**ref["envelope"], "origin_country": "NL"}}
    ).to_avro()
    bad_code = dict(datum["envelope"])
    bad_code["jurisdictions"] = [{"country": "XX", "basis": "HOSTING", "derived": False}]
    bad_code["referral_id"] = "5f1d1c5e-0000-4000-8000-00000000dead"
    records = [
        (b"legacy-1", b"not avro, not framed"),
        (b"legacy-2", b"\x00\x00\x00\x03\xe7" + b"\x01" * 40),  # unknown schema id
        (bad_code["referral_id"].encode(), codec.encode(REFERRAL, {**datum, "envelope": bad_code})),
    ]
    producer = clients.producer(settings, role="legacy-client")
    try:
        for key, value in records:
            producer.send(names.intake, key=key, value=value)
        producer.flush(30)
    finally:
        producer.close()
    return len(records)


def _await_receipts(
    runtimes: dict[str, ConnectorRuntime], network: Network, sent: dict[str, Any], timeout: float
) -> None:
    hotlines = [o.id for o in network.organisations if o.role == "hotline" and o.id in runtimes]
    total = len(sent["published"])
    deadline = time.monotonic() + timeout
    with _progress() as progress:
        task = progress.add_task("receipts from every destination", total=total)
        while True:
            waiting = 0
            for org in hotlines:
                waiting += len(runtimes[org].outbox.pending())
            progress.update(task, completed=total - waiting)
            if waiting == 0:
                return
            if time.monotonic() > deadline:
                raise DemoFailed(
                    f"{waiting} referral(s) still wait for a RECEIVED after {timeout:.0f}s"
                )
            time.sleep(0.5)


def _checkpoint(
    settings: Settings,
    router: Router,
    runtimes: dict[str, ConnectorRuntime],
    plain: bool,
    network: Network,
) -> None:
    """The router publishes a signed head now; wait until every connector holds it."""
    if plain:
        return
    checkpoint = router.checkpoint()
    if checkpoint is None:
        raise DemoFailed("the router has no key to sign a checkpoint with")
    deadline = time.monotonic() + 20
    holding: list[str] = []
    while len(holding) < len(runtimes) and time.monotonic() < deadline:
        time.sleep(0.5)
        holding = [org for org, rt in runtimes.items() if _holds(rt, checkpoint.count)]
    records = [(v, h) for _, v, h in read_checkpoints(settings, timeout=10)]
    published = sum(1 for _, h in records if header(h, Headers.RECORD_KIND) not in NOTE_KINDS)
    console.print(
        f"checkpoints: {published} signed by the router on the topic, the latest "
        f"({checkpoint.count} entries) held by {len(holding)} of {len(runtimes)} organisations",
        markup=False,
    )
    trust = load_trust(network, settings.network_file)
    latest = _witnessed(settings, trust, checkpoint.count)
    while (latest is None or len(latest.cosigners) < len(runtimes)) and time.monotonic() < deadline:
        time.sleep(0.5)
        latest = _witnessed(settings, trust, checkpoint.count)
    cosigners = len(latest.cosigners) if latest is not None else 0
    console.print(
        f"tree head of {checkpoint.count} entries cosigned by {cosigners} of {len(runtimes)}"
        " organisations (each checked it against its own copy of the ledger)",
        markup=False,
    )


def _witnessed(settings: Settings, trust: TrustStore, size: int) -> HeadReport | None:
    """The router's tree head of ``size`` entries on the topic, with who cosigned it."""
    records = [(v, h) for _, v, h in read_checkpoints(settings, timeout=5, idle=0.2)]
    heads = [h for h in witnessing(records, trust).heads if h.size == size]
    return max(heads, key=lambda h: len(h.cosigners)) if heads else None


def _holds(runtime: ConnectorRuntime, count: int) -> bool:
    if runtime.heads is None:
        return False
    return any(f";count={count};".encode() in h.value for h in runtime.heads.store.heads())


def _report(
    settings: Settings,
    network: Network,
    codec: Codec,
    batch: list[tuple[str, dict[str, Any], str]],
    sent: dict[str, Any],
    runtimes: dict[str, ConnectorRuntime],
) -> None:
    now = datetime.now(UTC)
    names = settings.topic_names()
    deadline = time.monotonic() + 30
    with LedgerStore.for_settings(settings) as store:
        while True:
            store.sync(settings, codec)
            f = flows(store.records(), network.deadlines, names, now=datetime.now(UTC))
            if f.totals.pending == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        multi = [rid for rid, kind in sent["published"].items() if kind == "multi"]
        t = (
            trace(store.records(multi[0]), multi[0], network.deadlines, names, now)
            if multi
            else None
        )
        verdict = store.verify(
            load_trust(network, settings.network_file),
            codec=codec,
            allow_plain=network.network.allow_plain,
            heads=held_heads(settings) + topic_heads(settings),
            reference=LedgerStore.reference(settings, codec),
        )
        by_role = role_routes(store.records(), network.role_of)
        accepted = sum(
            1
            for r in store.records()
            if r.event == HandoverEventType.DELIVERED
            and names.is_status(r.topic or "")
            and r.actor == r.to_party
        )
    print_flows(f, now, "the demo")
    print_role_routes(by_role)
    totals = f.totals
    kinds = Counter(sent["published"].values())
    console.print(
        "published by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
        markup=False,
    )
    console.print(
        f"accounted: {totals.delivered} delivered + {totals.dead_lettered} dead-lettered + "
        f"{totals.unassigned} unassigned = {totals.published} published "
        f"({totals.pending} pending); {sent['rejected']} more refused at their source",
        markup=False,
    )
    refused: Counter[str] = Counter()
    for rt in runtimes.values():
        refused.update(rt.status_log.refused_statuses())
    console.print(
        f"statuses: {accepted} verified and acted on by their origins (signature, window, "
        f"sender among the recipients, lifecycle); refused: "
        + (", ".join(f"{s} {n}" for s, n in sorted(refused.items())) or "none"),
        markup=False,
    )
    if t is not None:
        console.print(f"\ntrace of multi-jurisdiction referral {t.referral_id}:", markup=False)
        print_trace(t, now)
    console.print(str(verdict), markup=False)
    if not verdict.intact:
        raise DemoFailed(f"the ledger does not verify: {verdict}")
    expected = len(sent["published"]) + sent["legacy"]
    balanced = totals.delivered + totals.dead_lettered + totals.unassigned == totals.published
    if not balanced or totals.pending or totals.published != expected:
        raise DemoFailed(
            f"the flows do not account for every referral: {totals.to_json()}, "
            f"expected {expected} published"
        )


def _serve_console(settings: Settings, network: Network, codec: Codec, stack: ExitStack) -> None:
    """Serve the web console (police-nl's view and the operator's) and print how to log in.

    Tokens come from ``REFERRAL_CONSOLE_TOKEN_POLICE_NL`` / ``..._OPERATOR`` if set, else
    fresh random ones for this run (printed: they open a demo of synthetic data).
    """
    org = CONSOLE_ORG if network.has_organisation(CONSOLE_ORG) else None
    env = {
        token_env(who): os.environ.get(token_env(who)) or secrets.token_urlsafe(32)
        for who in ([org] if org else []) + [OPERATOR]
    }
    web = make_console(settings, network, org, env=env, codec=codec)
    try:
        # The usual port only if free: uvicorn would log a bind error before the fallback.
        server = ConsoleServer(web, port=CONSOLE_PORT if _free(CONSOLE_PORT) else 0).start()
    except ConfigError:  # the usual port is taken: any free one
        server = ConsoleServer(web, port=0).start()
    stack.callback(server.stop)
    console.print(f"web console at {server.url}", markup=False)
    for who in ([org] if org else []) + [OPERATOR]:
        console.print(f"  token of {who}: {env[token_env(who)]}", markup=False)


def _free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` on ``host`` can be bound now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _print_intake(
    network: Network, runtimes: dict[str, ConnectorRuntime], env: dict[str, str]
) -> None:
    """Where each HTTP intake of the run listens, and the token it takes (synthetic run only)."""
    for org, runtime in runtimes.items():
        config = network.organisation(org).connectors.get("http_intake")
        if runtime.http_port is not None and config is not None:
            token_env, host = config["token_env"], config.get("host", "127.0.0.1")
            token = env.get(token_env, f"${token_env}")
            console.print(
                f"http intake of {org} at http://{host}:{runtime.http_port}/referrals"
                f" (POST JSON; header Authorization: Bearer {token})",
                markup=False,
                soft_wrap=True,
            )


def _wait_for_interrupt(hint: str) -> None:
    """Print ``hint``, then wait for Ctrl-C, SIGTERM (``timeout``, a service manager) or SIGHUP
    (the terminal closed): each stops everything, the broker included, instead of orphaning it.

    The handlers are in place before the hint is printed: whoever acts on it may signal at once.
    """
    stop = threading.Event()
    caught = (signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, lambda signum, frame: stop.set()) for s in caught}
    console.print(hint)
    try:
        while not stop.wait(1):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    console.print("stopping")
