"""Inbox folder sink: one JSON file per referral, named by referral id."""

from __future__ import annotations

import glob
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from broker.config import Settings
from broker.contracts import Delivery, Sink, Withdrawal
from broker.errors import DeliveryError
from broker.private import private_dir, write_private
from connectors.base import ConnectorConfig, resolve_path

__all__ = ["InboxFolderConfig", "InboxFolderSink"]


class InboxFolderConfig(ConnectorConfig):
    """Settings of an inbox folder."""

    path: str = Field(min_length=1)


def delivery_document(delivery: Delivery) -> dict[str, Any]:
    """What a sink hands over: the referral plus where and when it arrived."""
    meta = delivery.metadata()
    meta["delivered_at"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    return {"referral": delivery.document, "delivery": meta}


class InboxFolderSink(Sink):
    """Writes each referral as ``<referral_id>.json`` into a folder."""

    kind = "inbox_folder"

    def __init__(self, config: InboxFolderConfig, settings: Settings) -> None:
        self.config = config
        self.path = resolve_path(settings, config.path)
        #: Folders with a file renamed into them since the last flush.
        self._renamed: set[Path] = set()

    def open(self) -> None:
        """Create the folder if it is missing."""
        private_dir(self.path, f"{self.kind}.path")

    def flush(self) -> None:
        """Make the renames so far durable: one fsync of each folder written to."""
        renamed, self._renamed = self._renamed, set()
        for folder in sorted(renamed):
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def file_for(self, referral_id: str, origin_org: str | None = None) -> Path:
        """Where a referral's file goes (another origin's under the same id: its own name)."""
        plain = self.path / f"{referral_id}.json"
        if origin_org is None or _origin_of(plain) in (None, origin_org):
            return plain
        return self.path / f"{referral_id}.{origin_org}.json"

    def history_dir(self) -> Path:
        """Where the versions an amendment replaced are kept."""
        return self.path / "history"

    def deliver(self, delivery: Delivery) -> None:
        """Write the referral's file atomically (an amendment keeps the replaced one)."""
        data = json.dumps(delivery_document(delivery), indent=2, sort_keys=True).encode()
        target = self.file_for(delivery.referral_id, delivery.origin_org)
        try:
            if delivery.is_amendment and target.is_file():
                current = target.read_bytes()
                # Handled again (its batch was not committed): the file is this version
                # already and the replaced one is in the history; keep that one.
                if _version_of(current) != delivery.version:
                    history = private_dir(self.history_dir(), f"{self.kind}.path/history")
                    old = history / f"{target.stem}.v{delivery.previous_version}.json"
                    write_private(old, current)
                    self._renamed.add(history)
            write_private(target, data)
            self._renamed.add(self.path)
        except OSError as exc:
            raise DeliveryError(
                f"inbox folder: cannot write referral {delivery.referral_id}: {exc.strerror}"
            ) from exc

    def erase(self, origin_org: str, referral_id: str) -> int:
        """Delete the referral's file of ``origin_org`` and the versions kept in the history."""
        stems = [f"{referral_id}.{origin_org}"]
        history = self.history_dir()
        if origin_org in self._owners(referral_id):
            stems.append(referral_id)
        doomed = [self.path / f"{stem}.json" for stem in stems]
        doomed += [self.path / "withdrawn" / f"{stem}.json" for stem in stems]
        if history.is_dir():
            doomed += [p for stem in stems for p in history.glob(f"{glob.escape(stem)}.v*.json")]
        gone = 0
        for path in doomed:
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise DeliveryError(
                    f"inbox folder: cannot erase referral {referral_id}: {exc.strerror}"
                ) from exc
            self._renamed.add(path.parent)
            gone += 1
        self.flush()
        return gone

    def _owners(self, referral_id: str) -> set[str | None]:
        """The origins the bare ``<referral_id>`` files name: the current file, the
        withdrawal note and the history (a withdrawn referral has no current file)."""
        history = self.history_dir()
        kept = history.glob(f"{glob.escape(referral_id)}.v*.json") if history.is_dir() else []
        note = _origin_of(self.path / "withdrawn" / f"{referral_id}.json", "withdrawal")
        return {_origin_of(self.path / f"{referral_id}.json"), note, *map(_origin_of, kept)}

    def withdraw(self, withdrawal: Withdrawal) -> None:
        """Move the withdrawn referral's file to the history; leave a withdrawal note."""
        target = self.file_for(withdrawal.referral_id, withdrawal.origin_org)
        note = json.dumps({"withdrawal": withdrawal.metadata()}, indent=2, sort_keys=True)
        try:
            if target.is_file():
                current = target.read_bytes()
                history = private_dir(self.history_dir(), f"{self.kind}.path/history")
                version = _version_of(current) or withdrawal.version
                write_private(history / f"{target.stem}.v{version}.json", current)
                self._renamed.add(history)
            folder = private_dir(self.path / "withdrawn", f"{self.kind}.path/withdrawn")
            write_private(folder / f"{target.stem}.json", note.encode())
            self._renamed.add(folder)
            if target.is_file():
                target.unlink()
                self._renamed.add(self.path)
        except OSError as exc:
            raise DeliveryError(
                f"inbox folder: cannot withdraw referral {withdrawal.referral_id}: {exc.strerror}"
            ) from exc


def _version_of(data: bytes) -> int | None:
    """The version of the referral in an inbox file's bytes (None if unreadable)."""
    try:
        return int(json.loads(data)["delivery"].get("version") or 1)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _origin_of(path: Path, part: str = "delivery") -> str | None:
    """The origin of the referral in an inbox file (None if there is no readable file)."""
    try:
        doc = json.loads(path.read_bytes())
        return str(doc[part]["origin_org"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
