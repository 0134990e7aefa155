"""Reading a process from the outside: CPU seconds, resident memory, and a sampler.

The benchmarks measure their worker processes through ``/proc/<pid>/stat`` and
``/proc/<pid>/status`` (Linux), so no hook is needed inside the library and each
process's figures are its own (``ru_maxrss`` would carry across ``exec``).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Sample",
    "Sampler",
    "cpu_seconds",
    "percentile",
    "rss_mb",
    "status_mb",
]

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of every thread of ``pid`` so far (NaN once it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return math.nan
    # Fields after the command name in parentheses: state is the first, utime the 12th.
    fields = text.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def status_mb(pid: int, key: str) -> float:
    """A ``kB`` line of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``) in MB; NaN if absent."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines()
    except OSError:
        return math.nan
    for line in lines:
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024.0
    return math.nan


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` now, in MB."""
    return status_mb(pid, "VmRSS")


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class Sample:
    """One reading of one process: wall time, CPU seconds, RSS, and a progress count."""

    at: float
    cpu_s: float
    rss_mb: float
    progress: int


@dataclass
class Sampler:
    """Reads CPU, RSS and a progress counter of some processes every ``interval`` seconds.

    ``progress`` maps a process name to a callable returning how much it has done
    (e.g. rows in its inbox); names without one record 0. Stops by itself after
    ``max_seconds``.
    """

    pids: dict[str, int]
    interval: float = 1.0
    progress: dict[str, Callable[[], int]] = field(default_factory=dict)
    max_seconds: float = 3600.0
    samples: dict[str, list[Sample]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def snapshot(self) -> dict[str, Sample]:
        """Read every process once now (and keep the readings)."""
        now = time.time()
        out = {}
        for name, pid in self.pids.items():
            count = self._progress(name)
            sample = Sample(now, cpu_seconds(pid), rss_mb(pid), count)
            self.samples.setdefault(name, []).append(sample)
            out[name] = sample
        return out

    def _progress(self, name: str) -> int:
        """The progress of ``name`` now; its last reading if the counter failed this time."""
        if name not in self.progress:
            return 0
        try:
            return self.progress[name]()
        except Exception:  # a counter that cannot read now must not stop the sampling
            last = self.samples.get(name)
            return last[-1].progress if last else 0

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            self.snapshot()
            self._stop.wait(self.interval)

    def start(self) -> Sampler:
        """Sample in a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (waits for the thread)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
