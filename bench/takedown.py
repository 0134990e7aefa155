"""Takedown figures at scale: 1,000,000 trail events in a ledger store, summarised.

``python -m bench.takedown [--events N] [--store FILE]``: writes ~N synthetic
``TAKEDOWN`` events (200,000 items of five steps each: opened, police informed,
notice, answer, removed; one in five silent with two repeats) into a fresh
:class:`~broker.ledger.store.LedgerStore` (hash-chained, as ``ledger sync``
writes it; not timed), then times :func:`broker.takedown.stats.store_figures`
(read every entry, parse, group, medians) and the DSA Art. 22 report, each in wall and
CPU seconds (CPU: what an idle machine's wall would be, near enough). One JSON line out.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from broker.ledger.events import handover_event
from broker.ledger.store import LedgerStore
from broker.takedown.figures import art22_report
from broker.takedown.stats import read_facts, store_figures
from broker.takedown.trail import TakedownStep, TrailItem, trail_reason

_HOUR = 3_600_000
_T0 = 1_767_571_200_000


def _events(rng: random.Random, k: int) -> list[dict[str, Any]]:
    provider = f"host-{rng.randrange(50):02d}"
    item = TrailItem(
        str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        f"case-{k}",
        str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        provider,
        ("NL", "DE", "FR", "US", "GB")[rng.randrange(5)],
        "fallback" if rng.random() < 0.1 else "network",
    )
    hotline = f"hl-{rng.randrange(8)}"
    opened = _T0 + rng.randrange(365 * 24 * _HOUR)
    police = opened + rng.randrange(96 * _HOUR)
    steps: list[tuple[TakedownStep, int, str | None, int]] = [
        (TakedownStep.OPENED, 0, None, opened),
        (TakedownStep.POLICE_INFORMED, 0, "police", police),
        (TakedownStep.NOTICE_SENT, 0, provider, police + 30_000),
    ]
    if rng.random() < 0.2:
        steps += [
            (TakedownStep.NOTICE_REPEATED, n, provider, police + n * 24 * _HOUR) for n in (1, 2)
        ]
    else:
        removed = police + rng.randrange(240 * _HOUR)
        steps += [
            (TakedownStep.PROVIDER_ANSWERED, 0, provider, removed + _HOUR),
            (TakedownStep.REMOVED, 0, provider, removed),
        ]
    return [
        handover_event(
            "TAKEDOWN",
            referral_id=item.referral_id,
            case_id=item.case_id,
            actor=hotline,
            from_party=hotline,
            to_party=to,
            reason=trail_reason(step, item, n),
            at_ms=at,
        )
        for step, n, to, at in steps
    ]


def build(path: Path, events: int, seed: int = 25) -> int:
    """Write about ``events`` trail events into a fresh store at ``path``; how many were."""
    rng = random.Random(seed)
    written = k = 0
    with LedgerStore(path) as store:
        while written < events:
            batch: list[dict[str, Any]] = []
            while len(batch) < 10_000 and written + len(batch) < events:
                batch += _events(rng, k)
                k += 1
            store.append(batch, ledger_offset=k)
            written += len(batch)
    return written


def main() -> None:
    """Run the benchmark; print one JSON line."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--store", type=Path, default=None, help="Reuse (or keep) this store.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-takedown-") as scratch:
        path = args.store or Path(scratch) / "ledger.sqlite3"
        started = time.perf_counter()
        written = build(path, args.events) if not path.exists() else -1
        built = time.perf_counter() - started
        started, cpu = time.perf_counter(), time.process_time()
        figures = store_figures(path)
        summarised, summarised_cpu = time.perf_counter() - started, time.process_time() - cpu
        started, cpu = time.perf_counter(), time.process_time()
        report = art22_report(read_facts(path))
        art22, art22_cpu = time.perf_counter() - started, time.process_time() - cpu
    print(
        json.dumps(
            {
                "events": written,
                "items": figures["overall"]["items"],
                "build_s": round(built, 1),
                "summarise_s": round(summarised, 2),
                "summarise_cpu_s": round(summarised_cpu, 2),
                "art22_s": round(art22, 2),
                "art22_cpu_s": round(art22_cpu, 2),
                # wall over CPU: how much of the wall time the machine's load took
                "load_factor": round(summarised / summarised_cpu, 2) if summarised_cpu else None,
                "providers": len(report["providers"]),
                "median_hours": figures["overall"]["median_hours"],
            }
        )
    )


if __name__ == "__main__":
    main()
