"""The network benchmark's worker processes: ``python -m bench.workers ROLE ...``.

Each role runs the library's own objects the way a deployed process does, in its
own process so that its CPU time and memory are its own:

* ``source`` — one hotline: a :class:`~connectors.runtime.ConnectorRuntime` (status
  driver and outbox republisher in threads, as ``referral connector run``) whose
  publisher is fed referral files in chunks (as the drop folder and
  ``referral publish`` do): phase A as fast as it goes, phase B at a steady rate;
* ``router`` — :class:`~broker.routing.router.Router`, as ``referral route`` builds it;
* ``sink`` — one police organisation's :class:`~connectors.delivery.SinkDriver` with
  its configured sinks, inbox and receiver security, built as the runtime builds
  it but run on the main thread (so ``--profile`` sees it);
* ``floor`` — the cryptography and Avro work alone, in a tight loop over the same
  referrals: the origin's seal-for-two + sign + encode, the router's envelope
  decode, the sink's verify + decode + open.

Workers talk to the benchmark with JSON lines on stdout (``ready``, ``published``,
``result``), stop on SIGTERM, and stop by themselves after ``--deadline`` seconds.
``--profile FILE`` writes a cProfile of the worker's main thread (``FILE`` and a
text summary ``FILE.txt``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from bench.sealed_net import avro_datum
from broker.config import Settings
from broker.kafka.loop import ConsumeLoop
from broker.network import Network, load_network
from broker.receiver.sink_driver import SinkDriver
from broker.routing.router import Router
from broker.security.keys import OrgKeys, key_dir, load_trust
from broker.security.rules import BodyCodec, OriginSecurity, ReceiverSecurity
from broker.security.sealing import open_sealed, seal
from broker.security.signing import SignedContext, sign, verify
from broker.tracing import setup_tracing
from broker.wire.codec import Codec
from broker.wire.registry import REFERRAL
from connectors.runtime import ConnectorRuntime

__all__ = ["main"]


def emit(event: str, **fields: Any) -> None:
    """One JSON line to the benchmark."""
    print(json.dumps({"event": event, **fields}), flush=True)


def stop_event(deadline_s: float) -> threading.Event:
    """Set by SIGTERM/SIGINT, or after ``deadline_s`` seconds whatever happens."""
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    timer = threading.Timer(deadline_s, stop.set)
    timer.daemon = True
    timer.start()
    return stop


@contextmanager
def profiled(path: str | None) -> Iterator[None]:
    """cProfile the calling thread into ``path`` (and ``path.txt``); nothing without a path."""
    if not path:
        yield
        return
    prof = cProfile.Profile()
    prof.enable()
    try:
        yield
    finally:
        prof.disable()
        prof.dump_stats(path)
        with open(path + ".txt", "w", encoding="utf-8") as out:
            stats = pstats.Stats(prof, stream=out).strip_dirs()
            out.write("== by own time (tottime) ==\n")
            stats.sort_stats("tottime").print_stats(30)
            out.write("\n== by cumulative time ==\n")
            stats.sort_stats("cumulative").print_stats(30)


def wait_for(check: Callable[[], bool], stop: threading.Event, every: float = 0.01) -> bool:
    """Poll ``check`` until true; False if ``stop`` came first."""
    while not check():
        if stop.wait(every):
            return False
    return True


def join_group(loop: ConsumeLoop, stop: threading.Event) -> None:
    """Step the loop until its consumer owns partitions (records polled meanwhile are handled)."""
    while not stop.is_set():
        loop.step(stop)
        if loop.consumer is not None and loop.consumer.assignment():
            return


def read_feed(path: str) -> list[dict[str, Any]]:
    """The referrals of a JSON Lines feed file."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# -- source ------------------------------------------------------------------------------------
def _publish(runtime: ConnectorRuntime, rows: list[dict[str, Any]], label: str) -> dict[str, int]:
    result = runtime.publisher.publish([(f"{label} {i}", r) for i, r in enumerate(rows)])
    return {
        "published": sum(p.sent for p in result.published),
        "unsent": sum(not p.sent for p in result.published),
        "rejected": len(result.rejected),
    }


def _add(total: dict[str, int], part: dict[str, int]) -> None:
    for key, value in part.items():
        total[key] = total.get(key, 0) + value


def run_source(args: argparse.Namespace, settings: Settings, network: Network) -> None:
    """One hotline: status driver + republisher running; its publisher fed from files."""
    stop = stop_event(args.deadline)
    runtime = ConnectorRuntime(settings, network, args.org, Codec.from_settings(settings))
    runtime.start()
    feed_a, feed_b = read_feed(args.feed_a), read_feed(args.feed_b)
    driver = runtime.status_feed
    assert driver is not None
    wait_for(lambda: bool(driver.loop.consumer and driver.loop.consumer.assignment()), stop, 0.1)
    emit("ready", org=args.org)
    try:
        if not wait_for(lambda: Path(args.go_a).exists(), stop):
            return
        counts: dict[str, int] = dict.fromkeys(("published", "unsent", "rejected"), 0)
        started, cpu0 = time.time(), time.thread_time()
        with profiled(args.profile):
            for i in range(0, len(feed_a), args.chunk):
                if stop.is_set():
                    break
                _add(counts, _publish(runtime, feed_a[i : i + args.chunk], "A"))
        emit(
            "published",
            phase="A",
            started=started,
            finished=time.time(),
            thread_cpu_s=time.thread_time() - cpu0,
            **counts,
        )
        if not wait_for(lambda: Path(args.go_b).exists(), stop):
            return
        counts, sent = dict.fromkeys(("published", "unsent", "rejected"), 0), 0
        started = time.time()
        while sent < len(feed_b) and not stop.is_set():
            # Everything due by now goes out in one call: a steady rate, small batches.
            due = min(len(feed_b), int((time.time() - started) * args.rate) + 1)
            if due > sent:
                _add(counts, _publish(runtime, feed_b[sent:due], "B"))
                sent = due
            stop.wait(max(0.0, started + sent / args.rate - time.time()))
        emit("published", phase="B", started=started, finished=time.time(), **counts)
        stop.wait()
    finally:
        runtime.stop()
        emit("result", org=args.org, errors=runtime.errors[:5])


# -- router ------------------------------------------------------------------------------------
def run_router(args: argparse.Namespace, settings: Settings, network: Network) -> None:
    """The router as ``referral route`` builds it; progress sampled every 20 ms."""
    stop = stop_event(args.deadline)
    codec = Codec.from_settings(settings)
    tracing = setup_tracing(settings, "router")
    router = Router(settings, network, codec, tracing=tracing)
    router.open()
    join_group(router.loop, stop)
    samples: list[tuple[float, int, int]] = []

    def sample() -> None:
        last = (-1, -1)
        while not stop.wait(0.02):
            now = (router.stats.referrals, router.stats.statuses)
            if now != last:
                samples.append((time.time(), *now))
                last = now

    threading.Thread(target=sample, daemon=True).start()
    emit("ready")
    with profiled(args.profile):
        stats = router.run(stop)
    tracing.shutdown()
    emit(
        "result",
        samples=samples,
        referrals=stats.referrals,
        statuses=stats.statuses,
        published=stats.published,
        dead_lettered=stats.dead_lettered,
    )


# -- sink --------------------------------------------------------------------------------------
def run_sink(args: argparse.Namespace, settings: Settings, network: Network) -> None:
    """One police organisation's sink driver, built as the connector runtime builds it."""
    stop = stop_event(args.deadline)
    codec = Codec.from_settings(settings)
    runtime = ConnectorRuntime(settings, network, args.org, codec)
    driver = SinkDriver(
        settings,
        args.org,
        codec,
        runtime.topics,
        runtime.built.sinks,
        runtime.inbox,
        producer=runtime.producer,
        tracing=runtime.tracing,
        security=ReceiverSecurity.load(settings, network, args.org),
    )
    driver.open()
    try:
        join_group(driver.loop, stop)
        emit("ready", org=args.org)
        with profiled(args.profile):
            while not stop.is_set():
                driver.step(stop)
    finally:
        driver.close()
        runtime.stop()
    s = driver.stats
    emit(
        "result",
        org=args.org,
        delivered=s.delivered,
        duplicates=s.duplicates,
        skipped=s.skipped,
        dead_lettered=s.dead_lettered,
    )


# -- floor -------------------------------------------------------------------------------------
class _Clock:
    """Accumulates thread CPU time per named step."""

    def __init__(self) -> None:
        self.ns: dict[str, int] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t = time.thread_time_ns()
        yield
        self.ns[name] = self.ns.get(name, 0) + time.thread_time_ns() - t

    def us(self, count: int) -> dict[str, float]:
        return {k: round(v / 1000 / count, 2) for k, v in self.ns.items()}


def _keys(settings: Settings, org: str) -> OrgKeys:
    keys = OrgKeys.load(key_dir(settings, org), org)
    if keys is None:
        raise SystemExit(f"{org} has no keys in the benchmark's state directory")
    return keys


def _breakdown(codec: Codec, trust: Any, keys: dict[str, Any], work: list[Any]) -> _Clock:
    """The floor's work one library call at a time, each timed on its own."""
    parts = _Clock()
    bodies = BodyCodec(codec.registry)
    schema_id = bodies.current_id()
    for origin, datum, recipients in work:
        env = datum["envelope"]
        to = sorted(recipients)
        with parts.step("source: body Avro encode"):
            plaintext = bodies.encode(schema_id, datum["body"])
        with parts.step("source: seal for recipients"):
            body = seal(
                plaintext,
                referral_id=str(env["referral_id"]),
                origin=origin,
                recipients={org: trust.encryption_key(org) for org in to},
            )
        with parts.step("source: referral Avro encode"):
            value = codec.encode(REFERRAL, {**datum, "body": body})
        with parts.step("source: sign"):
            headers = sign(
                keys[origin].signing,
                keys[origin].signing_id,
                SignedContext.of(env, schema_id, to),
                value,
            )
        for org in to:
            with parts.step("sink: verify signature"):
                verify(headers, value, trust)
            with parts.step("sink: referral Avro decode"):
                _, got = codec.decode(value, expected=REFERRAL)
            with parts.step("sink: open sealed body"):
                opened = open_sealed(
                    got["body"],
                    referral_id=str(env["referral_id"]),
                    origin=origin,
                    org_id=org,
                    private_keys=keys[org].encryption,
                )
            with parts.step("sink: body Avro decode"):
                bodies.decode(schema_id, opened)
    return parts


def run_floor(args: argparse.Namespace, settings: Settings, network: Network) -> None:
    """CPU µs per referral of the cryptography and Avro work alone, in a tight loop."""
    codec = Codec.from_settings(settings)
    names = settings.topic_names()
    trust = load_trust(network, settings.network_file)
    rows = [json.loads(line) for line in Path(args.feed).read_text("utf-8").splitlines()]
    rows = rows[: args.n]
    orgs = {o for origin, _, recipients in rows for o in (origin, *recipients)}
    keys = {org: _keys(settings, org) for org in orgs}
    origins = {o: OriginSecurity(network, o, keys[o], trust) for o, _, _ in rows}
    receivers = {
        org: ReceiverSecurity(network, org, names, keys[org], trust)
        for _, _, recipients in rows
        for org in recipients
    }
    lane = {org: names.jurisdiction(network.organisation(org).country) for org in receivers}
    work = [(origin, avro_datum(network, ref), tuple(to)) for origin, ref, to in rows]

    # Warm-up, then the floor exactly as the publisher, router and sink call it.
    for origin, datum, recipients in work[:20]:
        value, headers = origins[origin].encode(codec, datum, recipients)
        receivers[recipients[0]].receive(codec, lane[recipients[0]], value, headers)
    whole = _Clock()
    sealed = []
    for origin, datum, recipients in work:
        with whole.step("source"):
            value, headers = origins[origin].encode(codec, datum, recipients)
        sealed.append((value, headers, recipients))
    for value, _, _ in sealed:
        with whole.step("router"):
            codec.decode_routing(value)
    for value, headers, recipients in sealed:
        for org in recipients:
            with whole.step("sink"):
                receivers[org].receive(codec, lane[org], value, headers)
    deliveries = sum(len(r) for _, _, r in sealed)

    # The same again, one library call at a time: where the floor's time goes.
    parts = _breakdown(codec, trust, keys, work)
    per_ref = parts.us(len(work))
    per_delivery = {
        k: round(v / 1000 / deliveries, 2) for k, v in parts.ns.items() if k.startswith("sink")
    }
    emit(
        "result",
        referrals=len(work),
        deliveries=deliveries,
        source_us=round(whole.ns["source"] / 1000 / len(work), 2),
        router_us=round(whole.ns["router"] / 1000 / len(work), 2),
        sink_us=round(whole.ns["sink"] / 1000 / deliveries, 2),
        breakdown={**{k: v for k, v in per_ref.items() if k.startswith("source")}, **per_delivery},
    )


def main(argv: list[str] | None = None) -> None:
    """Run one worker role."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("role", choices=["source", "router", "sink", "floor"])
    ap.add_argument("--org")
    ap.add_argument("--feed", help="floor: referrals as JSON lines [origin, referral, recipients]")
    ap.add_argument("--feed-a")
    ap.add_argument("--feed-b")
    ap.add_argument("--go-a")
    ap.add_argument("--go-b")
    ap.add_argument("--rate", type=float, default=100.0, help="source: phase B referrals/s")
    ap.add_argument("--chunk", type=int, default=200, help="source: referrals per publish call")
    ap.add_argument("--n", type=int, default=1000, help="floor: referrals to time")
    ap.add_argument("--profile", help="cProfile the main thread into this file")
    ap.add_argument("--deadline", type=float, default=1800.0, help="stop after this many s")
    args = ap.parse_args(argv)
    settings = Settings()  # REFERRAL_* from the benchmark's environment
    network = load_network(settings.network_file)
    {"source": run_source, "router": run_router, "sink": run_sink, "floor": run_floor}[args.role](
        args, settings, network
    )


if __name__ == "__main__":
    main()
