"""The whole network, end to end: ``python -m bench.network [--n N] [--json] [--profile]``.

On a fresh embedded broker, every organisation with keys (plain referrals refused):

* hotline **sources** (one process each, ``bench.workers source``) seal every referral
  for its two recipients, sign it and publish it through the outbox;
* the **router** (its own process) forwards it to two jurisdiction topics;
* three police **sinks** (one process each: inbox folder, SQLite case table, webhook
  to a loopback HTTP server run here) verify, open and deliver it and answer RECEIVED;
* the router forwards each RECEIVED to the origin, whose outbox clears it.

Phase A publishes ``--n`` referrals as fast as the sources go: referrals/s at each
stage, CPU per referral of each process (``/proc/<pid>/stat`` between the start and
the end of the phase) and how busy it was. Phase B publishes at a steady ``--rate``
for ``--latency-seconds``: publish → delivered and publish → RECEIVED at the origin,
p50/p99. Before both, the **floor**: the cryptography and Avro work alone over the
same referrals (``bench.workers floor``); every stage's rate is printed as a ratio to
its floor. Times are read from outside the library: the outboxes (published, RECEIVED),
the inbox folder's file times, the case table's rows, the webhook server's arrivals.

``--profile`` writes a cProfile of each worker's main thread under ``bench/out/`` and
prints where each process's time goes (profiled figures are not measurements).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import pstats
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.procstat import Sample, Sampler, percentile, status_mb
from bench.sealed_net import (
    HOTLINES,
    SINKS,
    BenchReferral,
    WebhookReceiver,
    bench_env,
    bench_settings,
    make_referrals,
    write_network,
)
from broker.config import Settings
from broker.kafka import clients
from broker.kafka.embedded import EmbeddedBroker
from broker.kafka.provision import provision
from broker.network import load_network

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


# -- worker processes --------------------------------------------------------------------------
@dataclass
class Worker:
    """A ``bench.workers`` process and the JSON events it printed."""

    name: str
    proc: subprocess.Popen[str]
    events: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def read(self) -> None:
        """Collect the worker's JSON lines until its stdout closes."""
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def wait(self, kind: str, timeout: float, **match: Any) -> dict[str, Any]:
        """The first event of ``kind`` (with ``match``ing fields); RuntimeError after timeout."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if event["event"] == kind and all(event.get(k) == v for k, v in match.items()):
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise RuntimeError(f"{self.name}: no {kind} event (see its log)")
                self._changed.wait(min(left, 0.5))

    def stop(self) -> None:
        """SIGTERM the worker (it finishes what it holds and prints its result)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)


def start_worker(name: str, role: str, argv: list[str], env: dict[str, str], logs: Path) -> Worker:
    """Start ``python -m bench.workers ROLE`` with its stderr in ``logs/<name>.log``."""
    with open(logs / f"{name}.log", "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.workers", role, *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    worker = Worker(name, proc)
    threading.Thread(target=worker.read, daemon=True).start()
    return worker


# -- state read from outside ------------------------------------------------------------------
def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    if not path.exists():
        return []
    with closing(sqlite3.connect(path, timeout=30)) as conn:
        return list(conn.execute(sql))


def outbox_counts(run_dir: Path, origins: Iterable[str]) -> tuple[int, int]:
    """(referrals stored, referrals still waiting for a RECEIVED) over every origin's outbox."""
    stored = pending = 0
    for org in origins:
        path = run_dir / "orgs" / org / "outbox.sqlite3"
        for total, waiting in _rows(
            path, "SELECT COUNT(*), COUNT(*) - COUNT(completed_at) FROM referrals"
        ):
            stored, pending = stored + int(total), pending + int(waiting)
    return stored, pending


@dataclass
class Times:
    """When each referral reached each stage (``time.time()`` seconds)."""

    published: dict[str, float] = field(default_factory=dict)
    received: dict[tuple[str, str], float] = field(default_factory=dict)
    completed: dict[str, float] = field(default_factory=dict)
    delivered: dict[str, dict[str, float]] = field(default_factory=dict)


def read_times(run_dir: Path, origins: Iterable[str], receiver: WebhookReceiver) -> Times:
    """Every stage's times: outboxes, inbox folder files, case table rows, webhook arrivals."""
    t = Times()
    for org in origins:
        path = run_dir / "orgs" / org / "outbox.sqlite3"
        for rid, at, done in _rows(
            path, "SELECT referral_id, published_at, completed_at FROM referrals"
        ):
            t.published[rid] = at
            if done is not None:
                t.completed[rid] = done
        for rid, to, at in _rows(
            path,
            "SELECT referral_id, org_id, received_at FROM expected WHERE received_at IS NOT NULL",
        ):
            t.received[(rid, to)] = at
    folder, _ = SINKS["inbox_folder"]
    t.delivered["inbox_folder"] = {
        f.stem: f.stat().st_mtime for f in (run_dir / "orgs" / folder / "inbox").glob("*.json")
    }
    table, _ = SINKS["sqlite"]
    # The case table keeps ISO 8601 UTC text (SQL date functions read it); here: epoch seconds.
    t.delivered["sqlite"] = {
        rid: datetime.fromisoformat(str(at)).timestamp()
        for rid, at in _rows(
            run_dir / "orgs" / table / "cases.sqlite3", "SELECT referral_id, received_at FROM cases"
        )
    }
    t.delivered["webhook"] = dict(receiver.arrivals)
    return t


# -- figures -----------------------------------------------------------------------------------
def rate(times: Iterable[float]) -> float:
    """Events per second between the first and the last event."""
    ordered = sorted(times)
    if len(ordered) < 2 or ordered[-1] <= ordered[0]:
        return math.nan
    return (len(ordered) - 1) / (ordered[-1] - ordered[0])


def ms_quantiles(values: list[float]) -> dict[str, float]:
    """p50/p99 of seconds, in ms, and how many values."""
    return {
        "p50_ms": round(percentile(values, 50) * 1000, 1),
        "p99_ms": round(percentile(values, 99) * 1000, 1),
        "count": len(values),
    }


def router_rate(samples: list[list[float]], n: int) -> float:
    """Referrals/s of the router from its progress samples, up to the ``n``-th referral."""
    started = next((s for s in samples if s[1] > 0), None)
    done = next((s for s in samples if s[1] >= n), None)
    if started is None or done is None or done[0] <= started[0]:
        return math.nan
    return (done[1] - started[1]) / (done[0] - started[0])


def cpu_use(before: dict[str, Sample], after: dict[str, Sample]) -> dict[str, dict[str, float]]:
    """CPU seconds and share of one core of each process between two snapshots."""
    out = {}
    for name, a in before.items():
        b = after[name]
        cpu, wall = b.cpu_s - a.cpu_s, b.at - a.at
        out[name] = {"cpu_s": cpu, "busy": cpu / wall if wall > 0 else math.nan}
    return out


def _r(x: float, digits: int = 0) -> float | None:
    return None if math.isnan(x) else round(x, digits)


def stage(
    name: str, per_s: float, floor_us: float | None, cpu: dict[str, float] | None, count: int
) -> dict[str, Any]:
    """One row: rate, its floor and ratio, CPU per referral and how busy the process was."""
    floor_rate = 1e6 / floor_us if floor_us else math.nan
    cpu_us = cpu["cpu_s"] * 1e6 / count if cpu and count else math.nan
    return {
        "stage": name,
        "per_s": _r(per_s),
        "floor_per_s": _r(floor_rate),
        "ratio_to_floor": _r(per_s / floor_rate, 3),
        "cpu_us_per_referral": _r(cpu_us),
        "floor_us": floor_us,
        "busy": _r(cpu["busy"], 2) if cpu else None,
        "count": count,
    }


def profile_top(path: Path, lines: int = 8) -> list[str]:
    """The functions with the most own time in a cProfile file, as short lines."""
    stats = pstats.Stats(str(path))
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in table.values()) or 1.0
    top = sorted(table.items(), key=lambda kv: kv[1][2], reverse=True)[:lines]
    return [
        f"{v[2] / total:6.1%} {v[2]:6.2f}s own {v[3]:7.2f}s cum  {func} ({Path(file).name}:{line})"
        for (file, line, func), v in top
    ]


# -- the run -----------------------------------------------------------------------------------
def _feed(path: Path, rows: Iterable[Any]) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")
    return str(path)


def _wait_complete(
    sources: list[Worker], run_dir: Path, origins: list[str], phases: str, timeout: float
) -> int:
    """Block until every referral of ``phases`` (e.g. "AB") has every RECEIVED; how many."""
    deadline = time.monotonic() + timeout
    published = 0
    for w in sources:
        for phase in phases:
            published += int(w.wait("published", timeout, phase=phase)["published"])
    stored, pending = outbox_counts(run_dir, origins)
    while stored < published or pending > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"phase {phases[-1]}: {pending} referral(s) still wait for RECEIVED")
        time.sleep(0.2)
        stored, pending = outbox_counts(run_dir, origins)
    return published


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run both phases and the floor on a fresh broker; every figure as a dict."""
    run_dir = Path(tempfile.mkdtemp(prefix="netbench-"))
    logs = run_dir / "logs"
    logs.mkdir()
    OUT.mkdir(exist_ok=True)
    receiver = WebhookReceiver().start()
    workers: list[Worker] = []
    origins = [org for org, _ in HOTLINES[: args.hotlines]]
    try:
        write_network(run_dir, receiver.url)
        network = load_network(run_dir / "network.toml")
        with EmbeddedBroker(log_path=run_dir / "broker.log") as broker:
            settings = bench_settings(broker.bootstrap, run_dir)
            admin = clients.admin_client(settings)
            try:
                provision(admin, network, settings.topic_names())
            finally:
                admin.close()
            env = {**os.environ, **bench_env(settings)}
            phase_a = make_referrals(args.n, origins, seed=1)
            phase_b = make_referrals(int(args.rate * args.latency_seconds), origins, seed=2)
            floor = _floor(env, run_dir, phase_a[: args.floor_n], logs)
            return _network(
                args, settings, env, origins, phase_a, phase_b, floor, receiver, workers
            )
    finally:
        for w in workers:
            w.stop()
        for w in workers:
            try:
                w.proc.wait(30)
            except subprocess.TimeoutExpired:
                w.proc.kill()
        receiver.stop()
        if args.keep:
            print(f"state kept in {run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


def _floor(
    env: dict[str, str], run_dir: Path, rows: list[BenchReferral], logs: Path
) -> dict[str, Any]:
    feed = _feed(run_dir / "floor.jsonl", ([o, r, list(to)] for o, r, to in rows))
    w = start_worker("floor", "floor", ["--feed", feed, "--n", str(len(rows))], env, logs)
    result = w.wait("result", 600)
    w.proc.wait(30)
    return result


def _network(
    args: argparse.Namespace,
    settings: Settings,
    env: dict[str, str],
    origins: list[str],
    phase_a: list[BenchReferral],
    phase_b: list[BenchReferral],
    floor: dict[str, Any],
    receiver: WebhookReceiver,
    workers: list[Worker],
) -> dict[str, Any]:
    run_dir = Path(settings.state_dir)
    logs = run_dir / "logs"
    common = ["--deadline", str(args.timeout + 300)]

    def prof(name: str) -> list[str]:
        return ["--profile", str(OUT / f"profile-{name}.prof")] if args.profile else []

    router = start_worker("router", "router", [*common, *prof("router")], env, logs)
    sinks = {
        kind: start_worker(kind, "sink", ["--org", org, *common, *prof(f"sink-{kind}")], env, logs)
        for kind, (org, _) in SINKS.items()
    }
    workers += [router, *sinks.values()]
    for w in workers:
        w.wait("ready", 120)
    sources = []
    for org in origins:
        mine_a = (r for o, r, _ in phase_a if o == org)
        mine_b = (r for o, r, _ in phase_b if o == org)
        argv = [
            "--org", org,
            "--feed-a", _feed(run_dir / f"feed-{org}-A.jsonl", mine_a),
            "--feed-b", _feed(run_dir / f"feed-{org}-B.jsonl", mine_b),
            "--go-a", str(run_dir / "go-A"),
            "--go-b", str(run_dir / "go-B"),
            "--rate", str(args.rate / len(origins)),
            "--chunk", str(args.chunk),
            *common,
            *prof(f"source-{org}"),
        ]  # fmt: skip
        sources.append(start_worker(f"source-{org}", "source", argv, env, logs))
    workers += sources
    for w in sources:
        w.wait("ready", 120)

    sampler = Sampler({w.name: w.proc.pid for w in workers})
    snap_a0 = sampler.snapshot()
    (run_dir / "go-A").touch()
    published_a = _wait_complete(sources, run_dir, origins, "A", args.timeout)
    snap_a1 = sampler.snapshot()
    (run_dir / "go-B").touch()
    _wait_complete(sources, run_dir, origins, "AB", args.timeout)
    peak = {w.name: status_mb(w.proc.pid, "VmHWM") for w in workers}
    for w in workers:
        w.stop()
    results = {w.name: w.wait("result", 60) for w in workers}
    times = read_times(run_dir, origins, receiver)
    return _figures(
        args, origins, phase_a, phase_b, published_a, floor, times, sources,
        results, cpu_use(snap_a0, snap_a1), peak, receiver,
    )  # fmt: skip


def _stages(
    origins: list[str],
    phase_a: list[BenchReferral],
    phase_b: list[BenchReferral],
    published_a: int,
    floor: dict[str, Any],
    times: Times,
    sources: list[Worker],
    results: dict[str, dict[str, Any]],
    cpu: dict[str, dict[str, float]],
) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any], dict[str, list[float]], int]:
    """Phase A's rate per stage, and what phase B's latencies and the accounting need."""
    src_us, router_us, sink_us = floor["source_us"], floor["router_us"], floor["sink_us"]
    network_us = round(src_us + router_us + 2 * sink_us, 2)
    rows: list[dict[str, Any]] = []
    starts, ends = [], []
    for org, w in zip(origins, sources, strict=True):
        ev = w.wait("published", 0, phase="A")
        starts.append(ev["started"])
        ends.append(ev["finished"])
        row = stage(
            f"publish at source {org}",
            ev["published"] / (ev["finished"] - ev["started"]),
            src_us,
            cpu[w.name],
            ev["published"],
        )
        row["publishing_thread_cpu_us"] = _r(ev["thread_cpu_s"] * 1e6 / max(ev["published"], 1))
        rows.append(row)
    rows.append(
        stage(
            "publish, all sources", published_a / (max(ends) - min(starts)), None, None, published_a
        )
    )
    n_a = len(phase_a)
    rows.append(
        stage(
            "routed (router)",
            router_rate(results["router"]["samples"], n_a),
            router_us,
            cpu["router"],
            n_a,
        )
    )
    ids_a = {r["envelope"]["referral_id"]: to for _, r, to in phase_a}
    ids_b = {r["envelope"]["referral_id"]: to for _, r, to in phase_b}
    delivered_lat: dict[str, list[float]] = {}
    missing = 0
    for kind, (org, _) in SINKS.items():
        got = times.delivered[kind]
        want_a = [rid for rid, to in ids_a.items() if org in to]
        want_b = [rid for rid, to in ids_b.items() if org in to]
        missing += sum(rid not in got for rid in want_a + want_b)
        a_times = [got[rid] for rid in want_a if rid in got]
        rows.append(
            stage(f"delivered {kind} ({org})", rate(a_times), sink_us, cpu[kind], len(a_times))
        )
        delivered_lat[kind] = [
            got[rid] - times.published[rid]
            for rid in want_b
            if rid in got and rid in times.published
        ]
    done_a = [times.completed[rid] for rid in ids_a if rid in times.completed]
    rows.append(
        stage("RECEIVED at origin (all recipients)", rate(done_a), network_us, None, len(done_a))
    )
    pub_a = [times.published[rid] for rid in ids_a if rid in times.published]
    e2e = len(done_a) / (max(done_a) - min(pub_a)) if done_a and pub_a else math.nan
    rows.append(
        stage("end to end (first publish to last RECEIVED)", e2e, network_us, None, len(done_a))
    )

    return rows, ids_a, ids_b, delivered_lat, missing


def _latency_figures(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    ids_b: dict[str, Any],
    delivered_lat: dict[str, list[float]],
    times: Times,
) -> dict[str, Any]:
    """Phase B's latencies at the steady rate (with a warning where sinks were saturated)."""
    pub_b = [times.published[rid] for rid in ids_b if rid in times.published]
    received_b = [
        at - times.published[rid] for (rid, _), at in times.received.items() if rid in ids_b
    ]
    complete_b = [
        times.completed[rid] - times.published[rid] for rid in ids_b if rid in times.completed
    ]
    all_delivered = [x for v in delivered_lat.values() for x in v]
    slowest = min((r["per_s"] or 0.0) for r in rows if r["stage"].startswith("delivered"))
    offered = args.rate * 2 / len(SINKS)  # every referral goes to two of the sinks
    latency = {
        "warning": (
            f"phase B offers each sink {offered:.0f} deliveries/s; the slowest managed "
            f"{slowest:.0f}/s in phase A, so these latencies include queueing"
            if offered > 0.8 * slowest
            else None
        ),
        "rate": args.rate,
        "achieved_per_s": _r(rate(pub_b)),
        "referrals": len(pub_b),
        "publish_to_delivered": ms_quantiles(all_delivered),
        "publish_to_delivered_by_sink": {k: ms_quantiles(v) for k, v in delivered_lat.items()},
        "publish_to_received_at_origin": ms_quantiles(received_b),
        "publish_to_all_received": ms_quantiles(complete_b),
    }
    return latency


def _figures(
    args: argparse.Namespace,
    origins: list[str],
    phase_a: list[BenchReferral],
    phase_b: list[BenchReferral],
    published_a: int,
    floor: dict[str, Any],
    times: Times,
    sources: list[Worker],
    results: dict[str, dict[str, Any]],
    cpu: dict[str, dict[str, float]],
    peak: dict[str, float],
    receiver: WebhookReceiver,
) -> dict[str, Any]:
    src_us, router_us, sink_us = floor["source_us"], floor["router_us"], floor["sink_us"]
    network_us = round(src_us + router_us + 2 * sink_us, 2)
    rows, ids_a, ids_b, delivered_lat, missing = _stages(
        origins, phase_a, phase_b, published_a, floor, times, sources, results, cpu
    )
    latency = _latency_figures(args, rows, ids_b, delivered_lat, times)
    expected_deliveries = sum(len(to) for to in [*ids_a.values(), *ids_b.values()])
    accounting = {
        "published": len(times.published),
        "expected": len(phase_a) + len(phase_b),
        "deliveries_expected": expected_deliveries,
        "deliveries_missing": missing,
        "receipts": len(times.received),
        "dead_lettered": sum(int(r.get("dead_lettered", 0)) for r in results.values()),
        "duplicates": sum(int(r.get("duplicates", 0)) for r in results.values()),
        "webhook_bad_signatures": receiver.bad_signatures,
    }
    profiles = {}
    if args.profile:
        for path in sorted(OUT.glob("profile-*.prof")):
            profiles[path.stem.removeprefix("profile-")] = profile_top(path)
    return {
        "machine": (
            f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}"
        ),
        "n": len(phase_a),
        "hotlines": len(origins),
        "settings": {
            "rate": args.rate,
            "latency_seconds": args.latency_seconds,
            "chunk": args.chunk,
            "floor_n": args.floor_n,
        },
        "profiled": bool(args.profile),
        "floor": {
            "referrals": floor["referrals"],
            "source_us": src_us,
            "router_us": router_us,
            "sink_us_per_delivery": sink_us,
            "network_us_per_referral": network_us,
            "breakdown_us": floor["breakdown"],
        },
        "stages": rows,
        "latency": latency,
        "peak_rss_mb": {k: _r(v, 1) for k, v in peak.items()},
        "accounting": accounting,
        "profiles": profiles,
    }


# -- output ------------------------------------------------------------------------------------
def _fmt(x: Any, spec: str = ",.0f") -> str:
    return "–" if x is None else format(x, spec)


def print_report(result: dict[str, Any]) -> None:
    """The figures as a table for people."""
    f = result["floor"]
    print(f"machine: {result['machine']}")
    print(
        f"referrals: {result['n']} from {result['hotlines']} hotline source(s), "
        "each sealed for two recipients and signed"
    )
    if result["profiled"]:
        print("PROFILED RUN: cProfile slows every worker; these figures are not measurements")
    print(
        f"floor (CPU µs, {f['referrals']} referrals): source seal-for-two + sign + Avro "
        f"{f['source_us']:.0f}, router envelope decode {f['router_us']:.0f}, sink verify + open "
        f"+ Avro {f['sink_us_per_delivery']:.0f} per delivery; network "
        f"{f['network_us_per_referral']:.0f} per referral"
    )
    for step, us in f["breakdown_us"].items():
        print(f"    {step:32s} {us:8.1f} µs")
    head = (
        f"{'stage':46s} {'ref/s':>8s} {'floor/s':>8s} {'ratio':>6s} "
        f"{'CPU µs/ref':>10s} {'busy':>5s}"
    )
    print("\nphase A: as fast as the sources go\n" + head)
    for row in result["stages"]:
        print(
            f"{row['stage']:46s} {_fmt(row['per_s']):>8s} {_fmt(row['floor_per_s']):>8s} "
            f"{_fmt(row['ratio_to_floor'], '.3f'):>6s} {_fmt(row['cpu_us_per_referral']):>10s} "
            f"{_fmt(row['busy'], '.0%'):>5s}"
        )
        if row.get("publishing_thread_cpu_us") is not None:
            print(f"{'  of which the publishing thread':46s} {'':>8s} {'':>8s} {'':>6s} "
                  f"{_fmt(row['publishing_thread_cpu_us']):>10s}")  # fmt: skip
    lat = result["latency"]
    if not lat["referrals"]:
        print("\nphase B: not run (--latency-seconds 0)")
    else:
        print(
            f"\nphase B: latency at {lat['rate']:.0f} referrals/s "
            f"(achieved {_fmt(lat['achieved_per_s'])}/s, {lat['referrals']} referrals)"
        )
    if lat["warning"]:
        print(f"  NOTE: {lat['warning']}")

    def line(label: str, q: dict[str, Any]) -> None:
        print(
            f"  {label:40s} p50 {q['p50_ms']:8.1f} ms   p99 {q['p99_ms']:8.1f} ms   ({q['count']})"
        )

    if lat["referrals"]:
        line("publish → delivered (every delivery)", lat["publish_to_delivered"])
        for kind, q in lat["publish_to_delivered_by_sink"].items():
            line(f"  {kind}", q)
        line("publish → RECEIVED at origin (each)", lat["publish_to_received_at_origin"])
        line("publish → both RECEIVED at origin", lat["publish_to_all_received"])
    print("\npeak RSS MB: " + ", ".join(f"{k} {v}" for k, v in result["peak_rss_mb"].items()))
    a = result["accounting"]
    print(
        f"accounted: {a['published']}/{a['expected']} published, "
        f"{a['deliveries_expected'] - a['deliveries_missing']}/{a['deliveries_expected']} "
        f"delivered, {a['receipts']} RECEIVED at origins, {a['dead_lettered']} dead-lettered, "
        f"{a['duplicates']} duplicates, {a['webhook_bad_signatures']} bad webhook signatures"
    )
    for name, top in result["profiles"].items():
        print(f"\nwhere the time goes: {name} (bench/out/profile-{name}.prof)")
        for entry in top:
            print("  " + entry)


def main(argv: list[str] | None = None) -> None:
    """Run the network benchmark."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000, help="referrals in phase A (throughput)")
    ap.add_argument("--hotlines", type=int, default=2, choices=range(1, len(HOTLINES) + 1))
    ap.add_argument(
        "--rate",
        type=float,
        default=40.0,
        help="phase B referrals/s (latency; keep each sink's share below its phase A rate)",
    )
    ap.add_argument("--latency-seconds", type=float, default=15.0)
    ap.add_argument("--chunk", type=int, default=200, help="referrals per publish call (phase A)")
    ap.add_argument("--floor-n", type=int, default=2000, help="referrals timed for the floor")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for a phase")
    ap.add_argument("--profile", action="store_true", help="cProfile each worker (bench/out/)")
    ap.add_argument("--keep", action="store_true", help="keep the run's state directory")
    ap.add_argument("--json", action="store_true", help="print only JSON")
    args = ap.parse_args(argv)
    if args.profile:
        for old in OUT.glob("profile-*.prof*"):
            old.unlink()
    result = run(args)
    if not args.json:
        print_report(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
