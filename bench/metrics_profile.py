"""Where the router's metrics cost goes: the loop's thread under cProfile, every thread's CPU.

``python -m bench.metrics_profile [--n 30000] [--off]`` preloads N referrals into a fresh
embedded broker and routes them in this process with metrics on (served, scraped every
second, as ``bench.route --metrics`` does). Prints the CPU of each thread of the process
(from ``/proc/self/task``) and the loop thread's cProfile entries that are the metrics'
(``broker/metrics.py``, the OpenTelemetry SDK and the loop's own metric steps).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import threading
import time
from pathlib import Path
from typing import Any

from bench.route import MAX_POLL, NETWORK, _preload, _scrape_every, _settings, _synthetic
from broker.config import Settings
from broker.kafka import clients
from broker.kafka.embedded import EmbeddedBroker
from broker.kafka.provision import provision
from broker.metrics import setup_metrics
from broker.network import load_network
from broker.routing.router import Router
from broker.wire.codec import Codec
from broker.wire.registry import EmbeddedRegistry

_TICKS = os.sysconf("SC_CLK_TCK")
#: Run each scrape under cProfile (``--profile-scrapes``; its figures then include the profiler).
PROFILE_SCRAPES = False
#: What counts as the metrics' own in the loop thread's profile (printed).
_METRIC_PARTS = ("opentelemetry", "broker/metrics.py", "_note_read", "_count_batch")
#: The loop's calls into the metrics: their cumulative time is the metrics' share of the loop.
_ENTRY_POINTS = frozenset({"_note_read", "_count_batch", "record_batch", "record_dead_lettered"})


def thread_cpu() -> dict[int, float]:
    """CPU seconds of each thread of this process, by native thread id."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(task.name)] = (int(fields[11]) + int(fields[12])) / _TICKS
    return out


def _names() -> dict[int, str]:
    return {t.native_id or 0: t.name for t in threading.enumerate()}


#: CPU seconds spent in each scrape (its handler thread exits: /proc no longer shows it).
SCRAPES: list[float] = []
#: The scrapes' threads under cProfile, one profile each (merged when printed).
SCRAPE_PROFILES: list[cProfile.Profile] = []


def _time_scrapes() -> None:
    from prometheus_client import exposition

    bake = exposition._bake_output

    def timed(*args: Any) -> Any:
        t = time.thread_time()
        try:
            if not PROFILE_SCRAPES:
                return bake(*args)
            profile = cProfile.Profile()
            SCRAPE_PROFILES.append(profile)
            return profile.runcall(bake, *args)
        finally:
            SCRAPES.append(time.thread_time() - t)

    exposition._bake_output = timed


def route(settings: Settings, n: int, metrics_on: bool) -> dict[str, Any]:
    """Route ``n`` preloaded referrals in this thread under cProfile; the figures."""
    SCRAPES.clear()
    served = setup_metrics(0, "router") if metrics_on else None
    router = Router(
        settings,
        load_network(NETWORK),
        Codec(EmbeddedRegistry()),
        max_records=MAX_POLL,
        group_id="router-profile" + ("-on" if metrics_on else "-off"),
        metrics=served,
    )
    stop = threading.Event()
    scrapes = _scrape_every(served, stop) if served is not None else [0]
    before: dict[int, float] = {}

    def watch() -> None:
        while router.stats.first_batch_at is None:
            time.sleep(0.005)
        before.update(thread_cpu())
        before[-1] = time.process_time()
        while router.stats.referrals < n or router.stats.last_batch_at is None:
            time.sleep(0.05)
        stop.set()

    threading.Thread(target=watch, name="bench-watch", daemon=True).start()
    profile = cProfile.Profile()
    profile.enable()
    stats = router.run(stop)
    profile.disable()
    after, names = thread_cpu(), _names()
    process = time.process_time() - before[-1]
    idle = {}
    if served is not None:
        # The probe consumer's I/O thread while nothing is routed: what it costs between scrapes.
        stop_probe = thread_cpu()
        time.sleep(5)
        idle = {
            names.get(tid, f"tid {tid}"): round(cpu - stop_probe.get(tid, 0.0), 4)
            for tid, cpu in thread_cpu().items()
            if tid != threading.get_native_id()
        }
    if served is not None:
        served.shutdown()
    per_thread = {
        names.get(tid, f"tid {tid}"): round(cpu - before.get(tid, 0.0), 3)
        for tid, cpu in after.items()
        if cpu - before.get(tid, 0.0) > 0
    }
    main = threading.main_thread().native_id or 0
    return {
        "referrals": stats.referrals,
        "batches": stats.batches,
        "seconds": round((stats.last_batch_at or 0) - (stats.first_batch_at or 0), 2),
        "scrapes": scrapes[0],
        "threads_cpu_s": per_thread,
        "loop_cpu_s": round(after.get(main, 0) - before.get(main, 0), 3),
        "process_cpu_s": round(process, 3),
        "scrape_cpu_ms": [round(x * 1000, 2) for x in SCRAPES],
        "idle_5s_cpu_s": idle,
        "profile": profile,
    }


def loop_metric_share(profile: cProfile.Profile) -> float:
    """The share of the profiled loop thread's time spent in the metrics' entry points."""
    st = pstats.Stats(profile)
    entries = st.stats  # type: ignore[attr-defined]
    spent = sum(
        v[3] for (path, _, fn), v in entries.items() if fn in _ENTRY_POINTS and "broker" in path
    )
    total = st.total_tt  # type: ignore[attr-defined]
    return float(spent / total) if total else 0.0


def metrics_share(result: dict[str, Any], profile: cProfile.Profile) -> dict[str, float]:
    """CPU seconds of the metrics by where they run, and their share of the process's CPU."""
    loop = result["loop_cpu_s"] * loop_metric_share(profile)
    scrapes = sum(result["scrape_cpu_ms"]) / 1000
    probe = sum(v for k, v in result["threads_cpu_s"].items() if "metrics-lag" in k)
    total = loop + scrapes + probe
    return {
        "loop_s": round(loop, 4),
        "scrapes_s": round(scrapes, 4),
        "probe_io_s": round(probe, 4),
        "share_of_process": round(total / result["process_cpu_s"], 4),
    }


def metric_entries(profile: cProfile.Profile, top: int = 25) -> str:
    """The profile's metric entries by own time, as pstats prints them."""
    out = io.StringIO()
    st = pstats.Stats(profile, stream=out)
    st.sort_stats("tottime").print_stats("|".join(_METRIC_PARTS), top)
    return out.getvalue()


def main() -> None:
    """Preload, route with metrics on (and off with ``--off``), print where the CPU went."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30_000)
    ap.add_argument("--off", action="store_true", help="also route once with metrics off")
    ap.add_argument("--profile-scrapes", action="store_true", help="each scrape under cProfile")
    args = ap.parse_args()
    global PROFILE_SCRAPES
    PROFILE_SCRAPES = args.profile_scrapes
    _time_scrapes()
    with EmbeddedBroker() as broker:
        settings = _settings(broker.bootstrap, "bench.")
        admin = clients.admin_client(settings)
        provision(admin, load_network(NETWORK), settings.topic_names())
        admin.close()
        _preload(settings, _synthetic(Codec(EmbeddedRegistry()), args.n))
        for on in (True, False) if args.off else (True,):
            result = route(settings, args.n, on)
            profile = result.pop("profile")
            print("metrics", "on" if on else "off", result)
            total = pstats.Stats(profile).total_tt  # type: ignore[attr-defined]
            print(f"loop thread profiled: {total:.3f} s")
            if on:
                print(metric_entries(profile))
                print("metrics' CPU:", metrics_share(result, profile))
            if on and SCRAPE_PROFILES:
                out = io.StringIO()
                merged = pstats.Stats(SCRAPE_PROFILES[0], stream=out)
                for more in SCRAPE_PROFILES[1:]:
                    merged.add(more)
                merged.sort_stats("cumulative").print_stats(40)
                print(out.getvalue())


if __name__ == "__main__":
    main()
