"""Drop folder source: a hotline drops export files into a directory; each referral is published.

Settings (``[organisations.connectors.drop_folder]``)::

    path = "orgs/hl-nl/drop"   # relative to the state directory; created if missing
    poll_interval = 1.0        # seconds between scans
    settle_seconds = 1.0       # a file must be unchanged this long before it is read

Accepted files (others, and hidden files, are left alone): ``*.json``,
``*.jsonl`` and ``*.csv`` as :mod:`connectors.formats` describes them (the CSV
columns are listed there).

A file whose every referral was published moves to ``done/``. A file with any
problem moves to ``rejected/`` with ``<name>.errors.txt`` beside it, naming the
row and field of every problem and listing which rows *were* published (valid
rows are never held back by invalid ones). Input files are never deleted; a
name already taken in ``done/`` or ``rejected/`` gets a numeric suffix. Error
texts never quote URLs, hashes or free text.

A referral without an id gets one derived from the file's content and the row,
so a file that is processed twice (say, after a crash before the move)
republishes the same referral ids instead of creating new referrals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field

from broker.config import Settings
from connectors.base import ConnectorConfig, Source, ensure_dir, resolve_path
from connectors.formats import SUFFIXES, name_fields, read_referral_file
from connectors.publisher import BatchResult, Publisher

__all__ = ["DropFolderConfig", "DropFolderSource", "FileReport"]

log = logging.getLogger("referral.connectors.drop_folder")


class DropFolderConfig(ConnectorConfig):
    """Settings of a drop folder."""

    path: str = Field(min_length=1)
    poll_interval: float = Field(default=1.0, gt=0, le=3600)
    settle_seconds: float = Field(default=1.0, ge=0, le=3600)


# -- the source --------------------------------------------------------------------------------


@dataclass
class FileReport:
    """What happened to one dropped file."""

    source: Path
    moved_to: Path
    result: BatchResult = field(default_factory=BatchResult)
    errors_file: Path | None = None

    @property
    def rejected(self) -> bool:
        """True if the file went to ``rejected/``."""
        return self.errors_file is not None


def _free_name(directory: Path, name: str) -> Path:
    target = directory / name
    n = 1
    while target.exists():
        stem, dot, ext = name.partition(".")
        target = directory / f"{stem}.{n}{dot}{ext}"
        n += 1
    return target


def error_report(name: str, result: BatchResult) -> str:
    """The text of ``<name>.errors.txt``: every problem by row and field, and what was published."""
    total = len(result.published) + len(result.rejected)
    lines = [
        f"{name}: {len(result.rejected)} of {total} input(s) rejected, "
        f"{len(result.published)} published",
        "",
        "Problems (row: field: message):",
    ]
    for rej in result.rejected:
        lines.extend(f"  {rej.label}: {problem}" for problem in rej.problems)
    lines.append("")
    if result.published:
        lines.append("Published anyway (valid rows are not held back):")
        lines.extend(f"  {p.label}: referral {p.referral_id}" for p in result.published)
    else:
        lines.append("Nothing from this file was published.")
    return "\n".join(lines) + "\n"


class DropFolderSource(Source):
    """Watches a directory and publishes every referral dropped into it."""

    kind = "drop_folder"

    def __init__(
        self,
        config: DropFolderConfig,
        settings: Settings,
        publisher: Publisher,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.path = resolve_path(settings, config.path)
        self.done = self.path / "done"
        self.rejected = self.path / "rejected"
        self.publisher = publisher
        self.poll_interval = config.poll_interval
        self._clock = clock
        self.reports: list[FileReport] = []

    def open(self) -> None:
        """Create the folder and its ``done/`` and ``rejected/`` subfolders."""
        for d in (self.path, self.done, self.rejected):
            ensure_dir(d, f"{self.kind}.path")

    def candidates(self) -> list[Path]:
        """Files ready to read: accepted suffix, not hidden, unchanged for ``settle_seconds``."""
        now = self._clock()
        out = []
        for p in sorted(self.path.iterdir()):
            if p.name.startswith(".") or p.suffix.lower() not in SUFFIXES or not p.is_file():
                continue
            try:
                if now - p.stat().st_mtime < self.config.settle_seconds:
                    continue
            except OSError:
                continue
            out.append(p)
        return out

    def poll(self) -> int:
        """Process every ready file; return how many referrals were published."""
        count = 0
        for path in self.candidates():
            report = self.process_file(path)
            count += len(report.result.published)
        return count

    def process_file(self, path: Path) -> FileReport:
        """Publish a file's valid referrals, then move it to done/ or rejected/."""
        result = name_fields(self.publisher.publish(read_referral_file(path)), path.suffix)
        if result.rejected:
            target = _free_name(self.rejected, path.name)
            path.rename(target)
            errors = target.with_name(target.name + ".errors.txt")
            errors.write_text(error_report(path.name, result), encoding="utf-8")
            report = FileReport(path, target, result, errors)
            log.warning(
                "%s: %d rejected, %d published",
                path.name,
                len(result.rejected),
                len(result.published),
            )
        else:
            target = _free_name(self.done, path.name)
            path.rename(target)
            report = FileReport(path, target, result)
        self.reports.append(report)
        return report
