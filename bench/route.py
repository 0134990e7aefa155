"""Router benchmark: throughput against a raw kafka-python baseline, latency, peak RSS.

``make bench`` (or ``python -m bench.route [--n 100000]``):

1. starts a fresh embedded broker and preloads N synthetic referrals into the intake;
2. (a) baseline: a raw kafka-python consume → produce of the same bytes to a topic
   picked by a header field, with the same client tuning and the same
   commit-after-ack batching as the router (run once as written, and once more
   with the collector tuned as every consume loop tunes it, ``tune_gc``);
3. (b) the router (``broker.routing.router.Router``, ledger events on, as deployed);
4. latency: the router as a ``referral route`` process while referrals are published
   at a steady rate (default 1,000/s); end-to-end p50/p99 from publish to arrival —
   and the same through the baseline's raw consume → produce loop run as a process
   (the floor a router's latency is compared with), split into publish → forwarded
   and forwarded → arrival, with the CPU share of the broker, the router (or pipe),
   the publisher and the reader (a process of its own, :func:`worker_reader`);
5. with ``--metrics``, the router once more with its metrics on (served on loopback and
   scraped every second, far more often than Prometheus would; ``--scrape-every``), run
   twice around a second metrics-off run (off, on, …, on, off) so drift cancels; the ratio
   of referrals/s and of CPU per referral;
6. prints referrals/s for both, the ratio router/baseline, CPU per referral (every
   thread, and the consume loop's thread alone), latency and peak RSS of each
   worker process, as a table and as JSON (``--json``).

Each side runs in its own process, so peak RSS is that side's alone and the
numbers are comparable within one run. No test asserts on these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from bench.procstat import cpu_seconds
from broker.config import Settings
from broker.kafka import clients
from broker.kafka.embedded import EmbeddedBroker
from broker.kafka.provision import provision
from broker.metrics import Metrics, setup_metrics
from broker.network import load_network
from broker.routing.router import Router
from broker.wire.codec import Codec
from broker.wire.registry import EmbeddedRegistry

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NETWORK = os.path.join(ROOT, "examples", "network.toml")
REFERRAL = "org.referralbroker.v1.Referral"
COUNTRIES = ["DE", "FR", "NL", "SE", "US"]
CC_HEADER = "bench.cc"
SENT_HEADER = "bench.sent_ns"
MAX_POLL = 2000


def _settings(bootstrap: str, prefix: str) -> Settings:
    return Settings(bootstrap_servers=bootstrap, topic_prefix=prefix, network_file=NETWORK)  # type: ignore[arg-type]


def _synthetic(codec: Codec, n: int, seed: int = 0) -> list[tuple[bytes, bytes, str]]:
    """``n`` encoded referrals (~1 KB each) spread over five jurisdictions."""
    sys.path.insert(0, ROOT)
    from tests.support.factories import make_referral

    template = make_referral().to_avro()
    out = []
    for i in range(n):
        cc = COUNTRIES[(i + seed) % len(COUNTRIES)]
        env = {
            **template["envelope"],
            "referral_id": str(uuid.uuid4()),
            "priority": "NORMAL",
            "handling": {**template["envelope"]["handling"], "tlp": "GREEN", "recipients": []},
            "jurisdictions": [{"country": cc, "basis": "HOSTING", "derived": False}],
        }
        value = codec.encode(REFERRAL, {**template, "envelope": env})
        out.append((env["referral_id"].encode(), value, cc))
    return out


def _preload(settings: Settings, records: list[tuple[bytes, bytes, str]]) -> None:
    producer = clients.producer(settings, role="bench-preload")
    topic = settings.topic_names().intake
    for key, value, cc in records:
        producer.send(topic, key=key, value=value, headers=[(CC_HEADER, cc.encode())])
    producer.flush()
    producer.close()


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss survives exec on Linux)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        status = ""
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# -- workers (run in their own process) ----------------------------------------------------
def worker_baseline(
    bootstrap: str, prefix: str, n: int, *, gc_tuned: bool = False
) -> dict[str, Any]:
    """Raw consume → produce of the same bytes, topic picked by a header field.

    ``gc_tuned``: with the collector tuned as every consume loop tunes it
    (:func:`broker.kafka.loop.tune_gc`), so the router's ratio can be read against a
    raw pipe that got the same process tuning too.
    """
    settings = _settings(bootstrap, prefix)
    names = settings.topic_names()
    group = "bench-baseline-gc" if gc_tuned else "bench-baseline"
    consumer: KafkaConsumer = clients.consumer(
        settings, names.intake, group_id=group, max_poll_records=MAX_POLL
    )
    producer = clients.producer(settings, role="bench-baseline")
    if gc_tuned:
        from broker.kafka.loop import tune_gc

        tune_gc()
    done, first, cpu0, main0 = 0, None, 0.0, 0.0
    while done < n:
        batch = consumer.poll(timeout_ms=200)
        if not batch:
            continue
        if first is None:
            first, cpu0, main0 = time.monotonic(), time.process_time(), time.thread_time()
        offsets = {}
        futures = []
        for tp, records in batch.items():
            for r in records:
                cc = next(v for k, v in r.headers if k == CC_HEADER).decode()
                futures.append(
                    producer.send(
                        prefix + "bench.to." + cc, key=r.key, value=r.value, headers=r.headers
                    )
                )
            offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
            done += len(records)
        producer.flush()
        assert not any(f.failed() for f in futures)
        consumer.commit(offsets)
    seconds = time.monotonic() - (first or time.monotonic())
    cpu = time.process_time() - cpu0
    main_cpu = time.thread_time() - main0
    consumer.close()
    producer.close()
    return {
        "count": done,
        "seconds": seconds,
        "cpu_s": cpu,
        "main_cpu_s": main_cpu,
        "rss_mb": _peak_rss_mb(),
    }


def worker_pipe(bootstrap: str, prefix: str) -> None:
    """The baseline's consume → produce loop as a long-running process, for the latency run.

    Forwards each intake record to the topic the router would pick for it
    (``bench.cc`` header), until SIGTERM.
    """
    settings = _settings(bootstrap, prefix)
    names = settings.topic_names()
    consumer: KafkaConsumer = clients.consumer(
        settings, names.intake, group_id="bench-pipe", max_poll_records=MAX_POLL
    )
    producer = clients.producer(settings, role="bench-pipe")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    topic = {cc: names.jurisdiction(cc) if cc != "US" else names.unassigned for cc in COUNTRIES}
    while not stop.is_set():
        batch = consumer.poll(timeout_ms=200)
        if not batch:
            continue
        offsets = {}
        for tp, records in batch.items():
            for r in records:
                cc = next(v for k, v in r.headers if k == CC_HEADER).decode()
                producer.send(topic[cc], key=r.key, value=r.value, headers=r.headers)
            offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
        producer.flush()
        consumer.commit(offsets)
    consumer.close()
    producer.close()


def _scrape_every(metrics: Metrics, stop: threading.Event, every_s: float = 1.0) -> list[int]:
    """Scrape ``/metrics`` every ``every_s`` until ``stop``, in a thread; the scrape count."""
    import urllib.request

    count = [0]

    def scrape() -> None:
        while not stop.wait(every_s):
            url = f"http://127.0.0.1:{metrics.port}/metrics"
            with urllib.request.urlopen(url, timeout=10) as answer:
                answer.read()
            count[0] += 1

    threading.Thread(target=scrape, daemon=True).start()
    return count


def worker_router(
    bootstrap: str,
    prefix: str,
    n: int,
    *,
    ledger: bool = True,
    metrics: bool = False,
    run: str = "",
    scrape_every: float = 1.0,
) -> dict[str, Any]:
    """The real router until it has routed ``n`` referrals (``ledger=False``: no events;
    ``metrics``: its metrics served and scraped every ``scrape_every`` seconds, 0: never)."""
    settings = _settings(bootstrap, prefix)
    served = setup_metrics(0, "router") if metrics else None
    group = "router" if ledger else "router-noledger"
    router = Router(
        settings,
        load_network(NETWORK),
        Codec(EmbeddedRegistry()),
        max_records=MAX_POLL,
        emit_ledger=ledger,
        group_id=group + ("-metrics" if metrics else "") + run,
        metrics=served,
    )
    stop = threading.Event()
    scraped = served is not None and scrape_every > 0
    scrapes = _scrape_every(served, stop, scrape_every) if scraped else [0]  # type: ignore[arg-type]
    cpu0 = [0.0, 0.0]
    main_clock = time.pthread_getcpuclockid(threading.get_ident())

    def watch() -> None:
        while router.stats.first_batch_at is None:
            time.sleep(0.005)
        cpu0[0] = time.process_time()  # CPU of every thread of the process from here
        cpu0[1] = time.clock_gettime(main_clock)  # and of the loop's thread alone
        while router.stats.referrals < n or router.stats.last_batch_at is None:
            time.sleep(0.05)
        stop.set()

    threading.Thread(target=watch, daemon=True).start()
    stats = router.run(stop)
    cpu = time.process_time() - cpu0[0]
    main_cpu = time.thread_time() - cpu0[1]
    if served is not None:
        served.shutdown()
    assert stats.first_batch_at is not None
    assert stats.last_batch_at is not None
    return {
        "count": stats.referrals,
        "seconds": stats.last_batch_at - stats.first_batch_at,
        "cpu_s": cpu,
        "main_cpu_s": main_cpu,
        "rss_mb": _peak_rss_mb(),
        "dead_lettered": stats.dead_lettered,
        # where the loop's time went (seconds, summed over the run)
        "loop_s": {
            k: round(getattr(stats, k), 3)
            for k in ("poll_s", "handle_s", "durable_s", "ack_wait_s", "commit_s")
        },
        "batches": stats.batches,
        "scrapes": scrapes[0],
    }


def _run_worker(
    kind: str, bootstrap: str, prefix: str, n: int, scrape_every: float = 1.0
) -> dict[str, Any]:
    kind, _, run = kind.partition("#")  # "router#2": a second run, in a group of its own
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.route",
            "--worker",
            kind,
            "--bootstrap",
            bootstrap,
            "--prefix",
            prefix,
            "--n",
            str(n),
            *(["--run", f"-{run}"] if run else []),
            "--scrape-every",
            str(scrape_every),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def worker_reader(bootstrap: str, prefix: str, n: int, deadline_s: float = 60.0) -> None:
    """The latency run's reader, a process of its own: every destination partition.

    Prints ``ready`` once positioned at the ends, then (after ``n`` records or the
    deadline) one JSON line: publish → arrival, publish → forwarded and forwarded →
    arrival percentiles (ms). Its own process, so its polls never wait on the
    publisher's share of a GIL.
    """
    settings = _settings(bootstrap, prefix)
    names = settings.topic_names()
    consumer: KafkaConsumer = clients.consumer(settings, group_id=None, role="bench-latency")
    tps = [
        TopicPartition(names.jurisdiction(cc) if cc != "US" else names.unassigned, p)
        for cc in COUNTRIES
        for p in range(3)
    ]
    consumer.assign(tps)
    consumer.seek_to_end(*tps)
    for tp in tps:
        consumer.position(tp)
    print("ready", flush=True)
    latencies: list[float] = []
    #: publish → the router's (or pipe's) send of it, and that send → arrival (ms)
    first_hop: list[float] = []
    second_hop: list[float] = []
    deadline = time.monotonic() + deadline_s
    while len(latencies) < n and time.monotonic() < deadline:
        for recs in consumer.poll(timeout_ms=100).values():
            now = time.time_ns()
            for r in recs:
                sent = next((v for k, v in r.headers if k == SENT_HEADER), None)
                if sent is not None:
                    latencies.append((now - int(sent)) / 1e6)
                    # The forwarded record's timestamp: when the router appended it.
                    first_hop.append(r.timestamp - int(sent) / 1e6)
                    second_hop.append(now / 1e6 - r.timestamp)
    consumer.close()
    q, q1, q2 = _quantiles(latencies), _quantiles(first_hop), _quantiles(second_hop)
    out = {
        "received": len(latencies),
        "p50_ms": q[49],
        "p99_ms": q[98],
        # where the time goes: publish → forwarded (intake hop, the router's fetch and
        # handling), forwarded → arrival (destination hop); ms resolution (record timestamps)
        "publish_to_forward_p50_ms": q1[49],
        "publish_to_forward_p99_ms": q1[98],
        "forward_to_arrival_p50_ms": q2[49],
        "forward_to_arrival_p99_ms": q2[98],
    }
    print(json.dumps(out), flush=True)


def _latency(
    settings: Settings, rate: int, seconds: float, *, pipe: bool = False, broker_pid: int = 0
) -> dict[str, Any]:
    """Publish at ``rate``/s for ``seconds`` through a ``referral route`` process.

    ``pipe``: through the baseline's raw consume → produce loop instead (same
    client tuning, same flush-then-commit per batch), the floor the router's
    latency is compared with. The reader is a process of its own
    (:func:`worker_reader`).
    """
    names = settings.topic_names()
    codec = Codec(EmbeddedRegistry())
    records = _synthetic(codec, int(rate * seconds), seed=1)
    env = dict(os.environ)
    env.update(
        {
            "REFERRAL_BOOTSTRAP_SERVERS": str(settings.bootstrap_servers),
            "REFERRAL_TOPIC_PREFIX": settings.topic_prefix,
            "REFERRAL_NETWORK_FILE": NETWORK,
        }
    )
    where = ["--bootstrap", str(settings.bootstrap_servers), "--prefix", settings.topic_prefix]
    command = [sys.executable, "-m", "cli", "route"]
    if pipe:
        command = [sys.executable, "-m", "bench.route", "--worker", "pipe", *where]
    router = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # Let the router join its group before the clock starts.
    time.sleep(5)
    reader = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.route",
            "--worker",
            "reader",
            *where,
            "--n",
            str(len(records)),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert reader.stdout is not None
    reader.stdout.readline()  # "ready": positioned at the end of every destination
    producer = clients.producer(settings, role="bench-latency")
    pids = {"broker": broker_pid, "router": router.pid, "bench": os.getpid(), "reader": reader.pid}
    cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items() if pid}
    start = time.monotonic()
    for i, (key, value, cc) in enumerate(records):
        target = start + i / rate
        delay = target - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        producer.send(
            names.intake,
            key=key,
            value=value,
            headers=[(SENT_HEADER, str(time.time_ns()).encode()), (CC_HEADER, cc.encode())],
        )
    producer.flush()
    busy = time.monotonic() - start
    cpu_share = {name: round((cpu_seconds(pids[name]) - cpu0[name]) / busy * 100) for name in cpu0}
    out, _ = reader.communicate(timeout=90)
    router.send_signal(signal.SIGTERM)
    router.wait(30)
    producer.close()
    figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return {
        "rate": rate,
        "sent": len(records),
        **figures,
        # CPU of each process while publishing, % of one core (bench: the publisher)
        "cpu_percent": cpu_share,
    }


def _quantiles(values: list[float]) -> list[float]:
    """The 99 percentiles of ``values`` (NaN for fewer than two)."""
    if len(values) < 2:
        return [float("nan")] * 99
    return statistics.quantiles(sorted(values), n=100)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="referrals to preload")
    ap.add_argument("--rate", type=int, default=1000, help="steady rate for the latency run")
    ap.add_argument("--latency-seconds", type=float, default=10.0)
    ap.add_argument("--json", action="store_true", help="print only JSON")
    ap.add_argument(
        "--router-first",
        action="store_true",
        help="run the routers before the baseline (alternate runs to cancel drift)",
    )
    ap.add_argument(
        "--worker",
        choices=[
            "baseline",
            "baseline-gc",
            "router",
            "router-metrics",
            "router-noledger",
            "pipe",
            "reader",
        ],
        help=argparse.SUPPRESS,
    )
    ap.add_argument(
        "--metrics",
        action="store_true",
        help="also run the router with its metrics on (served, scraped every second); the ratio",
    )
    ap.add_argument(
        "--scrape-every",
        type=float,
        default=1.0,
        help="with --metrics: seconds between scrapes (0: never; Prometheus's default is 15)",
    )
    ap.add_argument("--run", default="", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--prefix", default="", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def _run_as_worker(args: argparse.Namespace) -> bool:
    """Run one worker if ``--worker`` names one (its figures on stdout); True if it did."""
    if args.worker == "pipe":
        worker_pipe(args.bootstrap, args.prefix)
        return True
    if args.worker == "reader":
        worker_reader(args.bootstrap, args.prefix, args.n)
        return True
    if args.worker:
        if args.worker in ("baseline", "baseline-gc"):
            out = worker_baseline(
                args.bootstrap, args.prefix, args.n, gc_tuned=args.worker == "baseline-gc"
            )
        else:
            out = worker_router(
                args.bootstrap,
                args.prefix,
                args.n,
                ledger=args.worker != "router-noledger",
                metrics=args.worker == "router-metrics",
                run=args.run,
                scrape_every=args.scrape_every,
            )
        print(json.dumps(out))
        return True

    return False


def _latency_runs(
    args: argparse.Namespace, network: Any, broker: EmbeddedBroker
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The steady-rate latency through the router and through the raw pipe (in turn)."""
    lat: dict[str, Any] = {}
    pipe_lat: dict[str, Any] = {}
    if args.latency_seconds <= 0:
        return lat, pipe_lat
    for name in ("latpipe.", "lat.") if not args.router_first else ("lat.", "latpipe."):
        lat_settings = _settings(broker.bootstrap, name)
        admin = clients.admin_client(lat_settings)
        provision(admin, network, lat_settings.topic_names())
        admin.close()
        pid = broker._proc.pid if broker._proc else 0
        if name == "lat.":
            lat = _latency(lat_settings, args.rate, args.latency_seconds, broker_pid=pid)
        else:
            pipe_lat = _latency(
                lat_settings, args.rate, args.latency_seconds, pipe=True, broker_pid=pid
            )
    return lat, pipe_lat


def _measure(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Preload the broker, run every side and the latency runs; the figures as one dict,
    and each side's own."""
    network = load_network(NETWORK)
    with EmbeddedBroker() as broker:
        prefix = "bench."
        settings = _settings(broker.bootstrap, prefix)
        admin = clients.admin_client(settings)
        provision(admin, network, settings.topic_names())
        from kafka.admin import NewTopic

        admin.create_topics([NewTopic(prefix + "bench.to." + cc, 3, 1) for cc in COUNTRIES])
        admin.close()
        codec = Codec(EmbeddedRegistry())
        t = time.monotonic()
        records = _synthetic(codec, args.n)
        encode_s = time.monotonic() - t
        t = time.monotonic()
        _preload(settings, records)
        preload_s = time.monotonic() - t
        size = sum(len(v) for _, v, _ in records) / len(records)
        del records
        order = ["baseline", "router", "router-noledger", "baseline-gc"]
        if args.router_first:
            order.reverse()
        if args.metrics:
            # off, on … on, off: a drift over the run weighs on both alike
            at = order.index("router")
            order[at + 1 : at + 1] = ["router-metrics"]
            order += ["router-metrics#2", "router#2"]
        side = {
            kind: _run_worker(kind, broker.bootstrap, prefix, args.n, args.scrape_every)
            for kind in order
        }
        baseline, router, bare = side["baseline"], side["router"], side["router-noledger"]
        tuned = side["baseline-gc"]
        lat, pipe_lat = _latency_runs(args, network, broker)

    b_rate = baseline["count"] / baseline["seconds"]
    r_rate = router["count"] / router["seconds"]
    bare_rate = bare["count"] / bare["seconds"]
    tuned_rate = tuned["count"] / tuned["seconds"]
    return {
        "machine": (
            f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "n": args.n,
        "avg_record_bytes": round(size),
        "encode_s": round(encode_s, 2),
        "preload_s": round(preload_s, 2),
        "baseline_per_s": round(b_rate),
        "router_per_s": round(r_rate),
        "ratio": round(r_rate / b_rate, 3),
        # the same raw pipe with the collector tuned as the router's loop tunes it
        "baseline_gc_tuned_per_s": round(tuned_rate),
        "ratio_vs_gc_tuned_baseline": round(r_rate / tuned_rate, 3),
        # CPU per referral (every thread of the worker): steadier than rates on a shared machine
        "baseline_cpu_us": round(baseline["cpu_s"] / baseline["count"] * 1e6, 1),
        "router_cpu_us": round(router["cpu_s"] / router["count"] * 1e6, 1),
        "router_without_ledger_cpu_us": round(bare["cpu_s"] / bare["count"] * 1e6, 1),
        # the consume loop's own thread (kafka-python's I/O threads excluded)
        "baseline_loop_cpu_us": round(baseline["main_cpu_s"] / baseline["count"] * 1e6, 1),
        "router_loop_cpu_us": round(router["main_cpu_s"] / router["count"] * 1e6, 1),
        "cpu_ratio": round(
            baseline["cpu_s"] / baseline["count"] / (router["cpu_s"] / router["count"]), 3
        ),
        "router_without_ledger_per_s": round(bare_rate),
        "baseline_rss_mb": round(baseline["rss_mb"], 1),
        "router_rss_mb": round(router["rss_mb"], 1),
        "router_loop_s": router["loop_s"],
        "router_batches": router["batches"],
        "order": order,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "latency": lat,
        "baseline_latency": pipe_lat,
        **(_metrics_cost(side) if args.metrics else {}),
        **({"scrape_every_s": args.scrape_every} if args.metrics else {}),
    }, side


def _metrics_cost(side: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The router with metrics on against off (two runs each): rates, CPU, their ratios."""
    off = [side["router"], side["router#2"]]
    on = [side["router-metrics"], side["router-metrics#2"]]

    def rate(runs: list[dict[str, Any]]) -> float:
        return sum(r["count"] for r in runs) / sum(r["seconds"] for r in runs)

    def cpu_us(runs: list[dict[str, Any]], key: str = "cpu_s") -> float:
        return sum(r[key] for r in runs) / sum(r["count"] for r in runs) * 1e6

    return {
        "metrics_off_per_s": [round(r["count"] / r["seconds"]) for r in off],
        "metrics_on_per_s": [round(r["count"] / r["seconds"]) for r in on],
        "metrics_ratio": round(rate(on) / rate(off), 3),
        "metrics_off_cpu_us": round(cpu_us(off), 1),
        "metrics_on_cpu_us": round(cpu_us(on), 1),
        "metrics_cpu_ratio": round(cpu_us(on) / cpu_us(off), 3),
        # the consume loop's own thread (the scrapes' and kafka-python's threads excluded)
        "metrics_off_loop_cpu_us": round(cpu_us(off, "main_cpu_s"), 1),
        "metrics_on_loop_cpu_us": round(cpu_us(on, "main_cpu_s"), 1),
        "metrics_scrapes": [r["scrapes"] for r in on],
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (or one worker, with ``--worker``)."""
    args = _parse(argv)
    if _run_as_worker(args):
        return
    result, side = _measure(args)
    preload_s, lat, pipe_lat = result["preload_s"], result["latency"], result["baseline_latency"]
    baseline, router, bare = side["baseline"], side["router"], side["router-noledger"]
    tuned = side["baseline-gc"]
    b_rate = baseline["count"] / baseline["seconds"]
    r_rate = router["count"] / router["seconds"]
    bare_rate = bare["count"] / bare["seconds"]
    tuned_rate = tuned["count"] / tuned["seconds"]
    if args.json:
        print(json.dumps(result))
        return
    print(f"machine: {result['machine']}")
    print(f"referrals: {args.n} (avg {result['avg_record_bytes']} bytes), preload {preload_s:.1f}s")
    rows = (
        ("baseline", b_rate, baseline),
        ("router", r_rate, router),
        ("router without ledger events", bare_rate, bare),
        ("baseline, router's GC tuning", tuned_rate, tuned),
    )
    for label, rate, figures in rows:
        print(f"{label:29s} {rate:>10,.0f} referrals/s   peak RSS {figures['rss_mb']:.0f} MB")
    print(
        f"ratio router/baseline: {r_rate / b_rate:.2f} "
        f"(against the baseline with the router's GC tuning: {r_rate / tuned_rate:.2f})"
    )
    print(
        f"CPU per referral: baseline {result['baseline_cpu_us']} µs, router "
        f"{result['router_cpu_us']} µs (ratio {result['cpu_ratio']:.2f}); the loop's thread "
        f"alone: baseline {result['baseline_loop_cpu_us']} µs, "
        f"router {result['router_loop_cpu_us']} µs"
    )
    if args.metrics:
        print(
            f"metrics on/off: {result['metrics_ratio']:.3f} in referrals/s "
            f"(off {result['metrics_off_per_s']}, on {result['metrics_on_per_s']}), "
            f"{result['metrics_cpu_ratio']:.3f} in CPU per referral "
            f"({result['metrics_off_cpu_us']} / {result['metrics_on_cpu_us']} µs; the loop's "
            f"thread {result['metrics_off_loop_cpu_us']} / {result['metrics_on_loop_cpu_us']} µs)"
        )
    for label, figures in (("baseline pipe latency", pipe_lat), ("latency", lat)):
        if figures:
            _print_latency(label, figures)
    print(json.dumps(result))


def _print_latency(label: str, f: dict[str, Any]) -> None:
    print(
        f"{label} at {f['rate']}/s: p50 {f['p50_ms']:.1f} ms, p99 {f['p99_ms']:.1f} ms "
        f"({f['received']}/{f['sent']} received); CPU % {f['cpu_percent']}"
    )
    print(
        f"  publish → forwarded p50 {f['publish_to_forward_p50_ms']:.1f} / p99 "
        f"{f['publish_to_forward_p99_ms']:.1f} ms; forwarded → arrival p50 "
        f"{f['forward_to_arrival_p50_ms']:.1f} / p99 {f['forward_to_arrival_p99_ms']:.1f} ms"
    )


if __name__ == "__main__":
    main()
