"""The versions of an amended referral that an organisation's sinks keep (metadata only)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.config import Settings
from broker.network import Organisation
from connectors.base import resolve_path
from connectors.inbox_folder import InboxFolderConfig
from connectors.runtime import parse_connector_settings
from connectors.sqlite_sink import SqliteCaseConfig

__all__ = ["KeptVersion", "kept_versions"]


@dataclass(frozen=True)
class KeptVersion:
    """One version of a referral kept by the organisation's sinks."""

    version: int
    #: When the version arrived (the earliest a sink recorded; None if none did).
    received_at: datetime | None
    #: The sink kinds that keep it (``inbox_folder``, ``sqlite``).
    sinks: tuple[str, ...]


def kept_versions(
    settings: Settings, org: Organisation, origin_org: str, referral_id: str
) -> list[KeptVersion]:
    """Every version of ``origin_org``'s ``referral_id`` the sinks of ``org`` keep, oldest first.

    Read-only; a sink whose files or table cannot be read contributes nothing.
    """
    found: dict[int, tuple[datetime | None, set[str]]] = {}

    def add(version: int, at: datetime | None, sink: str) -> None:
        seen, sinks = found.get(version, (None, set()))
        earliest = min((t for t in (seen, at) if t is not None), default=None)
        found[version] = (earliest, sinks | {sink})

    configs, _ = parse_connector_settings(org)
    folder = configs.get("inbox_folder")
    if isinstance(folder, InboxFolderConfig):
        for version, at in _folder_versions(
            resolve_path(settings, folder.path), origin_org, referral_id
        ):
            add(version, at, "inbox_folder")
    table = configs.get("sqlite")
    if isinstance(table, SqliteCaseConfig):
        for version, at in _table_versions(
            resolve_path(settings, table.path), table.table, origin_org, referral_id
        ):
            add(version, at, "sqlite")
    return [KeptVersion(v, at, tuple(sorted(sinks))) for v, (at, sinks) in sorted(found.items())]


def _folder_versions(
    path: Path, origin_org: str, referral_id: str
) -> list[tuple[int, datetime | None]]:
    """(version, arrival) of the inbox folder's kept and current files of the referral."""
    out = []
    candidates = [path / f"{referral_id}.json", path / f"{referral_id}.{origin_org}.json"]
    for stem in (referral_id, f"{referral_id}.{origin_org}"):
        candidates.extend(sorted((path / "history").glob(f"{stem}.v*.json")))
    for file in candidates:
        delivery = _delivery_of(file)
        if delivery is None or delivery.get("origin_org") != origin_org:
            continue
        at = _time(delivery.get("delivered_at"))
        out.append((int(delivery.get("version") or 1), at))
    return out


def _delivery_of(file: Path) -> dict[str, Any] | None:
    """The ``delivery`` part of an inbox file (where and when; the referral is not kept)."""
    try:
        delivery = json.loads(file.read_bytes()).get("delivery")
    except (OSError, ValueError, AttributeError):
        return None
    return delivery if isinstance(delivery, dict) else None


def _table_versions(
    path: Path, table: str, origin_org: str, referral_id: str
) -> list[tuple[int, datetime | None]]:
    """(version, arrival) of the rows of ``<table>_versions`` of the referral."""
    if not path.is_file():
        return []
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute(
                f"SELECT version, received_at FROM {table}_versions"  # the table name is validated
                " WHERE origin_org = ? AND referral_id = ?",
                (origin_org, referral_id),
            ).fetchall()
    except sqlite3.Error:
        return []
    return [(int(v), _time(at)) for v, at in rows]


def _time(value: object) -> datetime | None:
    """An ISO 8601 or SQLite UTC text time as an aware datetime (None if unreadable)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
