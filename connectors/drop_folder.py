"""Drop folder source: a hotline drops export files into a directory; each referral is published.

Settings (``[organisations.connectors.drop_folder]``)::

    path = "orgs/hl-nl/drop"   # relative to the state directory; created if missing
    poll_interval = 1.0        # seconds between scans
    settle_seconds = 1.0       # a file must be unchanged this long before it is read

Accepted files (others, and hidden files, are left alone):

``*.json``
    One referral object, or a list of them (rows are labelled ``[0]``, ``[1]``, …).
``*.jsonl``
    One referral object per line (labelled ``line N``; blank lines are skipped).
``*.csv``
    A header row, then **one referral per row with one reported item**
    (labelled ``row N``, the header being row 1). Columns, all optional except
    ``case_id`` and ``url``; empty cells mean "not given":

    =================  ==========================================================
    column             meaning (default)
    =================  ==========================================================
    referral_id        UUID (derived from the file content and row if empty)
    case_id            the case id
    priority           URGENT / HIGH / NORMAL (NORMAL)
    urgency_reason     why it is urgent
    tlp                CLEAR / GREEN / AMBER / AMBER_STRICT / RED (AMBER)
    recipients         named recipient org ids, ``;``-separated (needed for RED)
    handling_code      H0-H3 (H0)
    jurisdictions      ``CC:BASIS;CC:BASIS``, e.g. ``DE:HOSTING;FR:VICTIM_LOCATION``
    created_at         ISO 8601 with time zone (now)
    external_refs      ``SYSTEM:id;...``, e.g. ``ICCAM:12345``
    url                the reported http(s) URL
    media_type         IMAGE / VIDEO / WEBPAGE / ARCHIVE / STREAM / TEXT / OTHER (OTHER)
    hashes             ``ALGORITHM:hex;...``, e.g. ``SHA256:…;MD5:…``
    hosting_ip         hosting IP address (its country is derived offline)
    hosting_asn        hosting AS number
    hosting_provider   hosting provider name
    hosting_country    hosting country (ISO alpha-2)
    legal_status       BASELINE / NATIONAL / NOT_ILLEGAL / UNASSESSED (UNASSESSED)
    assessed_under     country whose law was applied (needed for NATIONAL)
    incident_type      CSAM_IMAGERY / CSAM_VIDEO / GROOMING / … (OTHER)
    annotations        ``;``-separated, e.g. ``GENERATIVE_AI;SELF_GENERATED``
    victim_age_group   INFANT_TODDLER / PREPUBESCENT / PUBESCENT / UNKNOWN (UNKNOWN)
    received_at        when the hotline received the report (now)
    incident_at        when the incident happened
    assessed_at        when it was assessed
    ntd_sent_at        when a notice and takedown was sent
    reported_to_le_at  when law enforcement was informed
    duplicate_of       referral id this one duplicates
    summary            free-text summary
    =================  ==========================================================

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

import csv
import hashlib
import io
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import Field

from broker.config import Settings
from broker.errors import ValidationFailed
from connectors.base import ConnectorConfig, Source, ensure_dir, resolve_path
from connectors.publisher import BatchResult, Publisher

__all__ = [
    "CSV_COLUMNS",
    "DropFolderConfig",
    "DropFolderSource",
    "FileReport",
    "Row",
    "read_referral_file",
]

log = logging.getLogger("referral.connectors.drop_folder")

Row = tuple[str, Mapping[str, Any] | ValidationFailed]

SUFFIXES = (".json", ".jsonl", ".csv")
_ID_NAMESPACE = uuid.UUID("6f1c1f0e-2d55-4f57-9a43-3a0c7e1b5d21")

#: The CSV columns, in the documented order.
CSV_COLUMNS: tuple[str, ...] = (
    "referral_id",
    "case_id",
    "priority",
    "urgency_reason",
    "tlp",
    "recipients",
    "handling_code",
    "jurisdictions",
    "created_at",
    "external_refs",
    "url",
    "media_type",
    "hashes",
    "hosting_ip",
    "hosting_asn",
    "hosting_provider",
    "hosting_country",
    "legal_status",
    "assessed_under",
    "incident_type",
    "annotations",
    "victim_age_group",
    "received_at",
    "incident_at",
    "assessed_at",
    "ntd_sent_at",
    "reported_to_le_at",
    "duplicate_of",
    "summary",
)


class DropFolderConfig(ConnectorConfig):
    """Settings of a drop folder."""

    path: str = Field(min_length=1)
    poll_interval: float = Field(default=1.0, gt=0, le=3600)
    settle_seconds: float = Field(default=1.0, ge=0, le=3600)


# -- reading files -----------------------------------------------------------------------------


def _fail(*problems: str) -> ValidationFailed:
    return ValidationFailed(problems[0], list(problems))


def _split(cell: str) -> list[str]:
    return [p.strip() for p in cell.split(";") if p.strip()]


def _pairs(cell: str, column: str, left: str, right: str) -> list[tuple[str, str]]:
    out = []
    for i, part in enumerate(_split(cell), start=1):
        a, sep, b = part.partition(":")
        if not sep or not a.strip() or not b.strip():
            raise _fail(f"{column}: entry {i} is not {left}:{right}")
        out.append((a.strip(), b.strip()))
    return out


def csv_row_to_referral(row: Mapping[str, str]) -> dict[str, Any]:
    """One CSV row (column → cell) as a referral dict; ValidationFailed on a malformed cell."""
    cell = {k: (v or "").strip() for k, v in row.items() if k}
    problems: list[str] = []

    def get(name: str, default: Any = None) -> Any:
        return cell.get(name) or default

    def pairs(name: str, left: str, right: str) -> list[tuple[str, str]]:
        try:
            return _pairs(cell.get(name, ""), name, left, right)
        except ValidationFailed as exc:
            problems.extend(exc.problems)
            return []

    now = datetime.now(UTC).isoformat()
    hosting: dict[str, Any] = {}
    for key in ("ip", "provider", "country"):
        if get(f"hosting_{key}"):
            hosting[key] = get(f"hosting_{key}")
    if get("hosting_asn"):
        try:
            hosting["asn"] = int(cell["hosting_asn"])
        except ValueError:
            problems.append("hosting_asn: not a whole number")
    envelope: dict[str, Any] = {
        "case_id": get("case_id"),
        "priority": get("priority", "NORMAL"),
        "urgency_reason": get("urgency_reason"),
        "handling": {
            "tlp": get("tlp", "AMBER"),
            "recipients": _split(cell.get("recipients", "")),
            "handling_code": get("handling_code", "H0"),
        },
        "jurisdictions": [
            {"country": c.upper(), "basis": b.upper()}
            for c, b in pairs("jurisdictions", "COUNTRY", "BASIS")
        ],
        "external_refs": [
            {"system": s.upper(), "id": i} for s, i in pairs("external_refs", "SYSTEM", "ID")
        ],
    }
    if get("referral_id"):
        envelope["referral_id"] = get("referral_id")
    if get("created_at"):
        envelope["created_at"] = get("created_at")
    item: dict[str, Any] = {
        "url": get("url"),
        "media_type": get("media_type", "OTHER"),
        "hashes": [
            {"algorithm": a.upper(), "value": v} for a, v in pairs("hashes", "ALGORITHM", "HEX")
        ],
        "hosting": hosting or None,
    }
    body: dict[str, Any] = {
        "items": [item],
        "classification": {
            "legal_status": get("legal_status", "UNASSESSED"),
            "assessed_under": get("assessed_under"),
            "incident_type": get("incident_type", "OTHER"),
            "annotations": _split(cell.get("annotations", "")),
            "victim_age_group": get("victim_age_group", "UNKNOWN"),
        },
        "timeline": {
            "incident_at": get("incident_at"),
            "received_at": get("received_at", now),
            "assessed_at": get("assessed_at"),
        },
        "prior_actions": {
            "ntd_sent_at": get("ntd_sent_at"),
            "reported_to_le_at": get("reported_to_le_at"),
        },
        "duplicate_of": get("duplicate_of"),
        "summary": get("summary"),
    }
    if problems:
        raise _fail(*problems)
    return {"envelope": envelope, "body": body}


_CSV_GROUPS = ("handling", "classification", "timeline", "prior_actions")


def csv_column_of(path: str) -> str:
    """The CSV column a referral field path comes from (``body.items.0.url`` → ``url``)."""
    parts = path.split(".")
    if parts and parts[0] in ("envelope", "body"):
        parts = parts[1:]
    if parts[:1] == ["items"]:
        parts = parts[2:] if len(parts) > 2 else ["url"]
    if parts[:1] == ["hosting"] and len(parts) > 1:
        return f"hosting_{parts[1]}"
    if parts[:1] == ["handling"] and len(parts) == 1:
        return "recipients"
    if parts[:1] == ["classification"] and len(parts) == 1:
        return "assessed_under"
    if parts and parts[0] in _CSV_GROUPS and len(parts) > 1:
        parts = parts[1:]
    return parts[0] if parts and parts[0] else path


def _csv_problem(problem: str) -> str:
    where, sep, message = problem.partition(": ")
    if not sep or where.startswith("("):
        return problem
    return f"{csv_column_of(where)}: {message}"


def _default_id(digest: str, label: str) -> str:
    return str(uuid.uuid5(_ID_NAMESPACE, f"{digest}:{label}"))


def _with_id(data: Any, referral_id: str) -> Any:
    if not isinstance(data, Mapping):
        return data
    envelope = data.get("envelope")
    if not isinstance(envelope, Mapping) or envelope.get("referral_id"):
        return data
    return {**data, "envelope": {**envelope, "referral_id": referral_id}}


def read_referral_file(path: Path) -> list[Row]:
    """The referrals in a ``.json``/``.jsonl``/``.csv`` file as ``(label, dict or problem)``.

    A problem with the whole file (unreadable, not JSON, unknown CSV column) is one
    row labelled ``file``. Rows without a referral id get one derived from the
    file's bytes and the row label.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [("file", _fail(f"(file): cannot read: {exc.strerror}"))]
    digest = hashlib.sha256(raw).hexdigest()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [("file", _fail("(file): not UTF-8 text"))]
    suffix = path.suffix.lower()
    rows: list[Row]
    if suffix == ".json":
        rows = _read_json(text)
    elif suffix == ".jsonl":
        rows = _read_jsonl(text)
    elif suffix == ".csv":
        rows = _read_csv(text)
    else:
        return [("file", _fail(f"(file): unsupported file type {suffix or '(none)'}"))]
    return [
        (
            label,
            data
            if isinstance(data, ValidationFailed)
            else _with_id(data, _default_id(digest, label)),
        )
        for label, data in rows
    ]


def _json_problem(exc: json.JSONDecodeError) -> str:
    return f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"


def _read_json(text: str) -> list[Row]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return [("file", _fail(f"(file): {_json_problem(exc)}"))]
    if isinstance(data, list):
        return [(f"[{i}]", item) for i, item in enumerate(data)]
    return [("record", data)]


def _read_jsonl(text: str) -> list[Row]:
    rows: list[Row] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"line {n}", json.loads(line)))
        except json.JSONDecodeError as exc:
            rows.append((f"line {n}", _fail(f"(line): {_json_problem(exc)}")))
    return rows


def _read_csv(text: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in reader.fieldnames or []]
    if not header:
        return [("file", _fail("(file): empty CSV, no header row"))]
    reader.fieldnames = header
    unknown = [h for h in header if h not in CSV_COLUMNS]
    if unknown:
        return [("header", _fail(*(f"{h}: unknown column" for h in unknown)))]
    rows: list[Row] = []
    try:
        for record in reader:
            label = f"row {reader.line_num}"
            if None in record:
                rows.append((label, _fail("(row): more cells than header columns")))
                continue
            try:
                rows.append((label, csv_row_to_referral(record)))
            except ValidationFailed as exc:
                rows.append((label, exc))
    except csv.Error as exc:
        rows.append((f"row {reader.line_num}", _fail(f"(row): malformed CSV ({exc})")))
    return rows


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
        rows = read_referral_file(path)
        csv_file = path.suffix.lower() == ".csv"
        if csv_file:
            rows = [
                (label, _csv_rewrite(data)) if isinstance(data, ValidationFailed) else (label, data)
                for label, data in rows
            ]
        result = self.publisher.publish(rows)
        if csv_file:
            for i, rej in enumerate(result.rejected):
                result.rejected[i] = type(rej)(
                    rej.label, tuple(_csv_problem(p) for p in rej.problems)
                )
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


def _csv_rewrite(exc: ValidationFailed) -> ValidationFailed:
    return ValidationFailed(str(exc), [_csv_problem(p) for p in exc.problems])
