"""Flat memory: the router over many referrals, a sink over many, RSS sampled from outside.

``python -m bench.memory --router 1000000`` and/or ``--sink 200000 [--sink-kind KIND]``:

* **router** — a fresh embedded broker; N sealed and signed referrals (two recipients
  each, made from a few sealed templates with fresh referral ids: the router reads
  only the envelope) preloaded into the intake; then ``referral route`` (the deployed
  command, its own process) routes them all. Progress = the router group's committed
  offsets on the intake.
* **sink** — a fresh broker; N referrals sealed and signed one by one for one police
  organisation (the publisher's own path), routed by ``referral route``; then
  ``referral connector run <org>`` (the deployed command) verifies, opens and
  delivers them all. Progress = rows in its inbox.

Every ``--interval`` seconds the process's VmRSS (``/proc/<pid>/status``) and its
progress are sampled. Printed: RSS after warm-up (past ``--warmup`` of N) and at
the end of the work (medians of a tenth of the samples each), the growth between
them, the least-squares slope
over the samples after warm-up (MB per 100,000 referrals), peak (VmHWM), and a small
curve; the samples go to ``bench/out/memory-<role>-<N>.csv``. The embedded broker is
memory-only: it holds every topic (about 0.4 GB per 100,000 routed referrals).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path
from typing import Any

from bench.procstat import Sample, Sampler, rss_mb, status_mb
from bench.sealed_net import (
    HOTLINES,
    PAIRS,
    SINKS,
    WebhookReceiver,
    avro_datum,
    bench_env,
    bench_settings,
    make_referrals,
    write_network,
)
from broker.config import Settings
from broker.kafka import clients
from broker.kafka.embedded import EmbeddedBroker
from broker.kafka.provision import provision
from broker.network import Network, load_network
from broker.origin.outbox import Outbox
from broker.origin.publisher import Publisher
from broker.routing.decide import decide
from broker.security.rules import OriginSecurity
from broker.wire.codec import Codec
from broker.wire.registry import REFERRAL
from broker.wire.topics import Headers

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
ORIGIN = HOTLINES[0][0]
CHUNK = 1000


# -- preloading --------------------------------------------------------------------------------
def preload_templates(settings: Settings, network: Network, n: int) -> int:
    """N referrals from sealed templates with fresh ids into the intake; returns N."""
    codec = Codec.from_settings(settings)
    security = OriginSecurity.load(settings, network, ORIGIN)
    names = settings.topic_names()
    templates = []
    for _, raw, _ in make_referrals(30, [ORIGIN], seed=3, pairs=PAIRS):
        datum = avro_datum(network, raw)
        orgs = decide(datum["envelope"], network, names).orgs
        value, signed = security.encode(codec, datum, orgs)
        templates.append((codec.decode(value, expected=REFERRAL)[1], signed))
    security.close()
    producer = clients.producer(settings, role="bench-preload")
    try:
        for i in range(n):
            datum, signed = templates[i % len(templates)]
            rid = str(uuid.uuid4())
            datum["envelope"]["referral_id"] = rid
            headers = [
                (Headers.REFERRAL_ID, rid.encode()),
                (Headers.ORIGIN, ORIGIN.encode()),
                *signed,
            ]
            value = codec.encode(REFERRAL, datum)
            producer.send(names.intake, key=rid.encode(), value=value, headers=headers)
            if i % 10_000 == 9_999:
                producer.flush()
        producer.flush()
    finally:
        producer.close()
    return n


def preload_sealed(settings: Settings, network: Network, n: int, org: str) -> int:
    """N referrals for ``org`` (and no one else), sealed and signed by the publisher."""
    codec = Codec.from_settings(settings)
    _, country = next(v for v in SINKS.values() if v[0] == org)
    producer = clients.producer(settings, role="bench-preload")
    outbox = Outbox.for_org(settings, ORIGIN)
    publisher = Publisher(settings, network, ORIGIN, codec, producer, outbox)
    sent = 0
    try:
        for start in range(0, n, CHUNK):
            rows = make_referrals(
                min(CHUNK, n - start), [ORIGIN], seed=start, pairs=[(country, country)]
            )
            result = publisher.publish([(str(i), raw) for i, (_, raw, _) in enumerate(rows)])
            sent += sum(p.sent for p in result.published)
    finally:
        publisher.close()
        outbox.close()
        producer.close()
    return sent


# -- progress read from outside ----------------------------------------------------------------
def committed(settings: Settings, group: str) -> int:
    """Sum of a group's committed offsets on the intake (records it has finished)."""
    admin = clients.admin_client(settings)
    try:
        offsets = admin.list_group_offsets([group]).get(group, {})
    finally:
        admin.close()
    intake = settings.topic_names().intake
    return sum(max(m.offset, 0) for tp, m in offsets.items() if tp.topic == intake)


def inbox_rows(settings: Settings, org: str) -> int:
    """Referrals an organisation's sinks have delivered (rows of its inbox)."""
    path = settings.org_dir(org) / "inbox.sqlite3"
    if not path.exists():
        return 0
    try:
        with closing(sqlite3.connect(path, timeout=30)) as conn:
            row = conn.execute("SELECT COUNT(DISTINCT referral_id) FROM deliveries").fetchone()
    except sqlite3.OperationalError:  # the connector has not created its tables yet
        return 0
    return int(row[0])


# -- the runs --------------------------------------------------------------------------------
def _cli(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", *args], cwd=ROOT, env=env, stdout=fh, stderr=fh
        )


def _watch(
    name: str, proc: subprocess.Popen[bytes], progress: Any, n: int, a: argparse.Namespace
) -> tuple[list[Sample], float]:
    """Sample ``proc`` until ``progress()`` reaches ``n`` (or the deadline); its samples, VmHWM."""
    sampler = Sampler({name: proc.pid}, a.interval, {name: progress}, a.timeout).start()
    deadline = time.monotonic() + a.timeout
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            got = sampler.samples.get(name, [])
            if got and got[-1].progress >= n:
                break
            time.sleep(a.interval / 2)
    finally:
        peak = status_mb(proc.pid, "VmHWM")
        sampler.stop()
        proc.terminate()
        proc.wait(60)
    return sampler.samples.get(name, []), peak


def run_router(a: argparse.Namespace, n: int) -> dict[str, Any]:
    """Preload ``n`` referrals, then route them with ``referral route``; RSS sampled."""
    with Fresh(a.keep) as run:
        t = time.monotonic()
        preload_templates(run.settings, run.network, n)
        preload_s = time.monotonic() - t
        router = _cli(["route"], run.env, run.run_dir / "router.log")
        group = run.settings.topic_prefix + "router"
        samples, peak = _watch("router", router, lambda: committed(run.settings, group), n, a)
        return summarise("router", n, samples, peak, a.warmup, preload_s, run.broker_rss_mb())


def run_sink(a: argparse.Namespace, n: int) -> dict[str, Any]:
    """Seal ``n`` referrals for one sink, route them, then deliver with ``connector run``."""
    org = SINKS[a.sink_kind][0]
    role = f"sink-{a.sink_kind}"
    with Fresh(a.keep) as run:
        router = _cli(["route"], run.env, run.run_dir / "router.log")
        try:
            t = time.monotonic()
            preload_sealed(run.settings, run.network, n, org)
            group = run.settings.topic_prefix + "router"
            deadline = time.monotonic() + a.timeout
            while committed(run.settings, group) < n and time.monotonic() < deadline:
                time.sleep(1)
            preload_s = time.monotonic() - t
            sink = _cli(["connector", "run", org], run.env, run.run_dir / "sink.log")
            samples, peak = _watch(role, sink, lambda: inbox_rows(run.settings, org), n, a)
        finally:
            router.terminate()
            router.wait(60)
        return summarise(role, n, samples, peak, a.warmup, preload_s, run.broker_rss_mb())


class Fresh:
    """A run directory with the benchmark network, a loopback webhook and a fresh broker."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self.run_dir = Path(tempfile.mkdtemp(prefix="membench-"))
        self.receiver = WebhookReceiver()
        self.broker = EmbeddedBroker(log_path=self.run_dir / "broker.log")

    def __enter__(self) -> Fresh:
        self.receiver.start()
        write_network(self.run_dir, self.receiver.url)
        self.network = load_network(self.run_dir / "network.toml")
        self.broker.start()
        self.settings = bench_settings(self.broker.bootstrap, self.run_dir)
        self.env = {**os.environ, **bench_env(self.settings)}
        admin = clients.admin_client(self.settings)
        try:
            provision(admin, self.network, self.settings.topic_names())
        finally:
            admin.close()
        return self

    def broker_rss_mb(self) -> float:
        """The embedded broker's resident memory now (it holds every topic)."""
        return rss_mb(self.broker.pid) if self.broker.pid else math.nan

    def __exit__(self, *exc: object) -> None:
        self.broker.stop()
        self.receiver.stop()
        if self.keep:
            print(f"state kept in {self.run_dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.run_dir, ignore_errors=True)


# -- the figures -------------------------------------------------------------------------------
def slope_per_100k(points: list[Sample]) -> float:
    """Least-squares slope of RSS over progress, in MB per 100,000 referrals."""
    if len(points) < 2:
        return math.nan
    xs = [p.progress for p in points]
    ys = [p.rss_mb for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    if var == 0:
        return math.nan
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 100_000


def summarise(
    role: str,
    n: int,
    samples: list[Sample],
    peak: float,
    warmup: float,
    preload_s: float,
    broker_mb: float,
) -> dict[str, Any]:
    """Start (after warm-up) and end of the RSS curve, its slope; the CSV written."""
    OUT.mkdir(exist_ok=True)
    path = OUT / f"memory-{role}-{n}.csv"
    t0 = samples[0].at if samples else 0.0
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["elapsed_s", "processed", "rss_mb"])
        for s in samples:
            out.writerow([round(s.at - t0, 2), s.progress, round(s.rss_mb, 2)])
    valid = [s for s in samples if not math.isnan(s.rss_mb)]
    after = [s for s in valid if s.progress >= warmup * n]
    # The end is while the process still had work: once idle, buffers are given back.
    working = [s for s in after if s.progress < n] or after
    # One sample swings with the batch in hand: start and end are medians of a tenth each.
    k = max(1, len(working) // 10)
    start = _median_at(after[:k])
    end = _median_at(working[-k:])
    done = valid[-1].progress if valid else 0
    moving = [s for s in valid if s.progress > 0]
    seconds = moving[-1].at - moving[0].at if len(moving) > 1 else math.nan
    return {
        "role": role,
        "n": n,
        "processed": done,
        "preload_s": round(preload_s, 1),
        "seconds": round(seconds, 1),
        "per_s": round(done / seconds) if seconds and not math.isnan(seconds) else None,
        "samples": len(samples),
        "rss_start_mb": start[0],
        "rss_start_at": start[1],
        "rss_end_mb": end[0],
        "rss_end_at": end[1],
        "window_samples": k,
        "growth_mb": round(end[0] - start[0], 1)
        if start[0] is not None and end[0] is not None
        else None,
        "slope_mb_per_100k": round(slope_per_100k(after), 2) if after else None,
        "rss_max_mb": round(max(s.rss_mb for s in valid), 1) if valid else None,
        "peak_hwm_mb": round(peak, 1),
        "broker_rss_mb": None if math.isnan(broker_mb) else round(broker_mb),
        "csv": str(path.relative_to(ROOT)),
        "rss_first_work_mb": round(moving[0].rss_mb, 1) if moving else None,
        "curve": [(s.progress, round(s.rss_mb, 1)) for s in _evenly(moving, 12)],
    }


def _median_at(window: list[Sample]) -> tuple[float | None, int | None]:
    """Median RSS of a few samples and the progress at the middle one."""
    if not window:
        return None, None
    mid = window[len(window) // 2]
    return round(statistics.median(s.rss_mb for s in window), 1), mid.progress


def _evenly(samples: list[Sample], k: int) -> list[Sample]:
    if len(samples) <= k:
        return samples
    return [samples[round(i * (len(samples) - 1) / (k - 1))] for i in range(k)]


def print_summary(r: dict[str, Any]) -> None:
    """One run for people: the figures and an ASCII curve (bars from zero)."""
    print(
        f"\n{r['role']}: {r['processed']:,}/{r['n']:,} referrals in {r['seconds']} s "
        f"({r['per_s']}/s; preload {r['preload_s']} s), {r['samples']} RSS samples"
    )
    print(
        f"  RSS after warm-up {r['rss_start_mb']} MB (around {r['rss_start_at']:,}), "
        f"at the end of the work {r['rss_end_mb']} MB (around {r['rss_end_at']:,}; medians "
        f"of {r['window_samples']} samples each): "
        f"growth {r['growth_mb']} MB, "
        f"slope {r['slope_mb_per_100k']} MB per 100k; max {r['rss_max_mb']} MB, "
        f"VmHWM {r['peak_hwm_mb']} MB; the broker held {r['broker_rss_mb']} MB"
        if r["rss_start_mb"] is not None
        else "  no sample after warm-up"
    )
    print(f"  RSS curve from the first referral processed ({r['rss_first_work_mb']} MB) on:")
    top = max((mb for _, mb in r["curve"]), default=1.0) or 1.0
    for done, mb in r["curve"]:
        print(f"  {done:>11,} {mb:8.1f} MB |{'#' * round(50 * mb / top)}")
    print(f"  samples: {r['csv']}")


def main(argv: list[str] | None = None) -> None:
    """Run the router and/or sink memory benchmark."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--router", type=int, metavar="N", help="route N referrals (e.g. 1000000)")
    ap.add_argument("--sink", type=int, metavar="N", help="deliver N referrals (e.g. 200000)")
    ap.add_argument("--sink-kind", choices=sorted(SINKS), default="inbox_folder")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=0.1, help="share of N before the start")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds per run at most")
    ap.add_argument("--keep", action="store_true", help="keep each run's state directory")
    ap.add_argument("--json", action="store_true", help="print only JSON")
    a = ap.parse_args(argv)
    if not a.router and not a.sink:
        ap.error("give --router N and/or --sink N")
    results = []
    if a.router:
        results.append(run_router(a, a.router))
    if a.sink:
        results.append(run_sink(a, a.sink))
    if not a.json:
        for r in results:
            print_summary(r)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
