"""Drop folder source: a hotline drops export files into a directory; each referral is published."""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field, model_validator

from broker.config import Settings
from broker.contracts import Source
from broker.errors import ConfigError
from broker.origin.publisher import BatchResult, Publisher
from broker.private import private_dir, write_private
from broker.terminal import escape
from connectors.base import ConnectorConfig, resolve_path
from connectors.formats import SUFFIXES, incomplete, name_fields, parse_referrals, receipt_csv

__all__ = ["DropFolderConfig", "DropFolderSource", "FileReport"]

log = logging.getLogger("referral.connectors.drop_folder")


class DropFolderConfig(ConnectorConfig):
    """Settings of a drop folder."""

    path: str = Field(min_length=1)
    poll_interval: float = Field(default=1.0, gt=0, le=3600)
    settle_seconds: float = Field(default=1.0, ge=0, le=3600)
    settle_limit: float = Field(default=60.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _limit_after_settle(self) -> DropFolderConfig:
        if self.settle_limit < self.settle_seconds:
            raise ValueError("settle_limit must not be shorter than settle_seconds")
        return self


# -- the source --------------------------------------------------------------------------------


@dataclass
class FileReport:
    """What happened to one dropped file (or other entry) the folder took or refused."""

    source: Path
    moved_to: Path
    result: BatchResult = field(default_factory=BatchResult)
    errors_file: Path | None = None
    #: Why the whole file was refused or rejected unread (None: it was read row by row).
    refused: str | None = None
    #: True if the file changed after it was read: published as read, left in the folder.
    left_in_place: bool = False

    @property
    def rejected(self) -> bool:
        """True if the file went to ``rejected/``."""
        return self.errors_file is not None


def _free_name(directory: Path, name: str) -> Path:
    target = directory / name
    n = 1
    while os.path.lexists(target):
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
        lines.extend(
            f"  {p.label}: referral {p.referral_id}"
            + (" (a repeat: already published, not sent again)" if p.repeat else "")
            for p in result.published
        )
    else:
        lines.append("Nothing from this file was published.")
    return "\n".join(escape(line) for line in lines) + "\n"


def refusal_report(name: str, reason: str) -> str:
    """The text of ``<name>.errors.txt`` for a file refused or rejected whole."""
    return f"{name}: refused, nothing of it was published\n\nReason: {escape(reason)}\n"


def _kind_of(mode: int) -> str | None:
    """Why an entry of this mode is not read (None for a regular file)."""
    kinds = (
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a directory"),
    )
    for test, kind in kinds:
        if test(mode):
            return f"{kind}: only regular files inside the drop folder are read"
    return None if stat.S_ISREG(mode) else "not a regular file"


class _Refused(Exception):
    """An entry is not read; the message says why (never its content)."""


@dataclass
class _Watch:
    """How long an entry has looked the same (device, inode, size, modification time)."""

    key: tuple[int, int, int, int]
    since: float


def _key(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


class DropFolderSource(Source):
    """Watches a directory and publishes every referral dropped into it."""

    kind = "drop_folder"

    def __init__(
        self,
        config: DropFolderConfig,
        settings: Settings,
        publisher: Publisher,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.path = resolve_path(settings, config.path)
        self.done = self.path / "done"
        self.rejected = self.path / "rejected"
        self.publisher = publisher
        self.poll_interval = config.poll_interval
        self._clock = clock
        self._watch: dict[str, _Watch] = {}
        #: Entries refused but not movable (logged once, then left alone).
        self._stuck: set[tuple[str, str]] = set()
        self._dir_fd: int | None = None
        self.reports: list[FileReport] = []

    def open(self) -> None:
        """Create the folder and its ``done/`` and ``rejected/`` subfolders (``0700``)."""
        for d in (self.path, self.done, self.rejected):
            private_dir(d, f"{self.kind}.path")
        try:
            self._dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise ConfigError(f"{self.kind}.path: cannot open {self.path}: {exc.strerror}") from exc

    def close(self) -> None:
        """Release the folder."""
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    # -- scanning ------------------------------------------------------------------------------

    def _entries(self) -> list[tuple[str, os.stat_result]]:
        """Accepted, visible entries with their ``lstat`` (links are not followed)."""
        out = []
        with os.scandir(self.path) as it:
            for entry in it:
                name = entry.name
                if name.startswith(".") or os.path.splitext(name)[1].lower() not in SUFFIXES:
                    continue
                try:
                    out.append((name, entry.stat(follow_symlinks=False)))
                except OSError:
                    continue  # gone meanwhile
        return sorted(out)

    def poll(self) -> int:
        """Take every complete file, refuse what is not a regular file; how many were published."""
        if self._dir_fd is None:
            self.open()
        now = self._clock()
        count = 0
        present = set()
        for name, st in self._entries():
            present.add(name)
            why = _kind_of(st.st_mode) or (
                "it has other hard links (it may be a file from outside the folder)"
                if st.st_nlink != 1
                else None
            )
            if why is not None:
                self._refuse(name, why)
                continue
            watch = self._watch.get(name)
            if watch is None or watch.key != _key(st):
                watch = self._watch[name] = _Watch(_key(st), now)
            unchanged = now - watch.since
            if unchanged >= self.config.settle_seconds:
                report = self._take(name, watch, unchanged)
                if report is not None:
                    count += sum(1 for p in report.result.published if not p.repeat)
        for gone in set(self._watch) - present:
            del self._watch[gone]
        return count

    # -- reading -------------------------------------------------------------------------------

    def _read(self, name: str, key: tuple[int, int, int, int]) -> bytes | None:
        """The bytes of ``name`` if it is still the regular file seen (None if it changed)."""
        try:
            fd = os.open(
                name,
                os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                dir_fd=self._dir_fd,
            )
        except OSError as exc:
            if exc.errno == errno.ENOENT:
                return None
            if exc.errno == errno.ELOOP:
                raise _Refused(_kind_of(stat.S_IFLNK) or "a symbolic link") from None
            code = errno.errorcode.get(exc.errno or 0, "error")
            raise _Refused(f"cannot be opened ({code})") from None
        try:
            before = os.fstat(fd)
            why = _kind_of(before.st_mode)
            if why is not None:
                raise _Refused(why)
            if _key(before) != key:
                return None  # replaced or changed since it was seen: watch it again
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            if _key(os.fstat(fd)) != key:
                return None  # written to while being read
        finally:
            os.close(fd)
        return b"".join(chunks)

    def _take(self, name: str, watch: _Watch, unchanged: float) -> FileReport | None:
        """Publish a settled file, or refuse it; None while it must wait."""
        try:
            raw = self._read(name, watch.key)
        except _Refused as exc:
            self._refuse(name, str(exc))
            return None
        if raw is None:
            self._watch.pop(name, None)
            return None
        suffix = os.path.splitext(name)[1]
        unfinished = incomplete(raw, suffix)
        if unfinished is not None:
            if unchanged < self.config.settle_limit:
                return None
            return self._refuse(
                name,
                f"incomplete after {unchanged:.0f}s unchanged: {unfinished} "
                "(write the file under a dot-name and rename it when it is complete)",
            )
        self._watch.pop(name, None)
        return self._publish(name, raw, suffix, watch.key)

    # -- outcomes ------------------------------------------------------------------------------

    def _changed(self, name: str, key: tuple[int, int, int, int]) -> bool:
        """True if ``name`` is no longer the file of ``key`` (same inode, size and mtime)."""
        try:
            st = os.stat(name, dir_fd=self._dir_fd, follow_symlinks=False)
        except OSError:
            return True
        return _key(st) != key

    def _publish(
        self, name: str, raw: bytes, suffix: str, key: tuple[int, int, int, int]
    ) -> FileReport:
        """Publish a file's valid referrals, then move it to done/ or rejected/ unless it
        changed since it was read (then it stays, to be read again whole once it settles)."""
        path = self.path / name
        result = name_fields(self.publisher.publish(parse_referrals(raw, suffix)), suffix)
        if self._changed(name, key):
            log.warning(
                "%s: changed while it was published (%d row(s) as read); left in the folder,"
                " read again once it settles (write under a dot-name and rename it instead)",
                name,
                len(result.published) + len(result.rejected),
            )
            return FileReport(path, path, result, left_in_place=True)
        if result.rejected:
            target = _free_name(self.rejected, name)
            path.rename(target)
            errors = target.with_name(target.name + ".errors.txt")
            write_private(errors, error_report(escape(name), result).encode())
            report = FileReport(path, target, result, errors)
            log.warning(
                "%s: %d rejected, %d published",
                name,
                len(result.rejected),
                len(result.published),
            )
        else:
            target = _free_name(self.done, name)
            path.rename(target)
            report = FileReport(path, target, result)
        # The analyst's receipt: which referral id each input row became (labels, ids and
        # problems only: never input content).
        write_private(target.with_name(target.name + ".receipt.csv"), receipt_csv(result).encode())
        repeats = sum(1 for p in result.published if p.repeat)
        if repeats:
            log.info(
                "%s: %d repeat(s) of referrals already published, not sent again", name, repeats
            )
        self.reports.append(report)
        return report

    def _refuse(self, name: str, reason: str) -> FileReport | None:
        """Move an entry to rejected/ unread, with the reason beside it; one log line."""
        self._watch.pop(name, None)
        path = self.path / name
        target = _free_name(self.rejected, name)
        try:
            path.rename(target)
        except OSError as exc:
            if (name, reason) not in self._stuck:
                self._stuck.add((name, reason))
                log.warning("%s: refused (%s) but not moved: %s", name, reason, exc.strerror)
            return None
        errors = target.with_name(target.name + ".errors.txt")
        write_private(errors, refusal_report(escape(name), reason).encode())
        log.warning("%s: refused: %s", name, reason)
        report = FileReport(path, target, BatchResult(), errors, refused=reason)
        self.reports.append(report)
        return report
