"""Input formats of every source: JSON, JSON Lines and CSV referral files and bodies."""

from __future__ import annotations

import csv
import difflib
import io
import json
import re
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from broker.errors import ValidationFailed
from broker.origin.publisher import BatchResult, Rejected
from broker.terminal import escape

__all__ = [
    "CSV_COLUMNS",
    "MAX_JSON_DEPTH",
    "RECEIPT_COLUMNS",
    "SUFFIXES",
    "Row",
    "csv_column_of",
    "csv_row_to_referral",
    "incomplete",
    "json_problem",
    "json_rows",
    "load_json",
    "name_fields",
    "normalise",
    "parse_referrals",
    "read_referral_file",
    "receipt_csv",
    "receipt_rows",
    "split_problem",
    "spreadsheet_safe",
    "with_example",
]

#: One input of a file: its label (``row 2``, ``line 3``, ``[0]``) and the referral or its problem.
Row = tuple[str, Mapping[str, Any] | ValidationFailed]

#: The file suffixes read as referral files.
SUFFIXES = (".json", ".jsonl", ".csv")

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
            "received_at": get("received_at"),
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
    doc: dict[str, Any] = normalise({"envelope": envelope, "body": body})
    return doc


#: Envelope and body defaults shared by JSON and CSV (what a JSON referral may leave out).
_ENVELOPE_DEFAULTS: dict[str, Any] = {
    "priority": "NORMAL",
    "jurisdictions": [],
    "external_refs": [],
}
_HANDLING_DEFAULTS: dict[str, Any] = {"tlp": "AMBER", "recipients": [], "handling_code": "H0"}
_CLASSIFICATION_DEFAULTS: dict[str, Any] = {
    "legal_status": "UNASSESSED",
    "incident_type": "OTHER",
    "annotations": [],
    "victim_age_group": "UNKNOWN",
}
_ITEM_DEFAULTS: dict[str, Any] = {"media_type": "OTHER", "hashes": []}


def _upper(value: Any) -> Any:
    return value.strip().upper() if isinstance(value, str) else value


def _defaults(target: dict[str, Any], defaults: Mapping[str, Any]) -> None:
    for key, value in defaults.items():
        if target.get(key) is None:
            target[key] = list(value) if isinstance(value, list) else value


def _classification(classification: Any) -> None:
    if not isinstance(classification, dict):
        return
    _defaults(classification, _CLASSIFICATION_DEFAULTS)
    for key in ("legal_status", "incident_type", "victim_age_group", "assessed_under"):
        classification[key] = _upper(classification.get(key))
    if isinstance(classification.get("annotations"), list):
        classification["annotations"] = [_upper(a) for a in classification["annotations"]]


def normalise(doc: Any) -> Any:
    """A referral dict with the shared defaults filled in and codes upper-cased.

    Anything that is not the documented shape is returned as it is, for the model's
    validation to name. The input is not changed (a copy is returned).
    """
    if not isinstance(doc, Mapping):
        return doc
    out = json.loads(json.dumps(doc))  # a deep copy of plain JSON data
    env, body = out.get("envelope"), out.get("body")
    if isinstance(env, dict):
        _defaults(env, _ENVELOPE_DEFAULTS)
        for key in ("priority", "origin_country"):
            env[key] = _upper(env.get(key)) if key in env else env.get(key)
        if env.get("origin_country") is None:
            env.pop("origin_country", None)
        handling = env.setdefault("handling", {})
        if isinstance(handling, dict):
            _defaults(handling, _HANDLING_DEFAULTS)
            for key in ("tlp", "handling_code"):
                handling[key] = _upper(handling[key])
        for j in env.get("jurisdictions") or []:
            if isinstance(j, dict):
                for key in ("country", "basis"):
                    if key in j:
                        j[key] = _upper(j[key])
        for ref in env.get("external_refs") or []:
            if isinstance(ref, dict) and "system" in ref:
                ref["system"] = _upper(ref["system"])
    if isinstance(body, dict):
        _classification(body.setdefault("classification", {}))
        body.setdefault("timeline", {})
        body.setdefault("prior_actions", {})
        for item in body.get("items") or []:
            if not isinstance(item, dict):
                continue
            _defaults(item, _ITEM_DEFAULTS)
            if item.get("classification") is not None:  # None: the referral's applies
                _classification(item["classification"])
            item["media_type"] = _upper(item["media_type"])
            for h in item.get("hashes") or []:
                if isinstance(h, dict) and "algorithm" in h:
                    h["algorithm"] = _upper(h["algorithm"])
            hosting = item.get("hosting")
            if isinstance(hosting, dict) and "country" in hosting:
                hosting["country"] = _upper(hosting["country"])
    return out


#: Examples of the right form, added to problems about dates and codes.
_DATE_EXAMPLE = "e.g. 2026-11-23T13:05:00Z or 2026-11-23T14:05:00+01:00"
_COUNTRY_EXAMPLE = "e.g. NL or de (ISO 3166 alpha-2)"
_DATE_WORDS = ("datetime", "date", "timezone", "time zone")
_COUNTRY_FIELDS = ("country", "assessed_under", "origin_country", "hosting_country")


def with_example(problem: str) -> str:
    """``problem`` with an example of the right form if it is about a date or a country code."""
    where, sep, message = problem.partition(": ")
    if not sep or "e.g." in message:
        return problem
    field = where.rsplit(".", 1)[-1]
    low = message.lower()
    if field.endswith("_at") or any(w in low for w in _DATE_WORDS):
        return f"{problem} ({_DATE_EXAMPLE})"
    if field in _COUNTRY_FIELDS:
        return f"{problem} ({_COUNTRY_EXAMPLE})"
    if field == "jurisdictions":
        return f"{problem} (e.g. DE:HOSTING;fr:victim_location)"
    return problem


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


#: What pydantic says of a value that is not there (a CSV cell is always a string when given).
_ABSENT = ("Input should be a valid string", "Field required")


def _csv_problem(problem: str) -> str:
    where, sep, message = problem.partition(": ")
    if not sep or where.startswith("("):
        return problem
    if message in _ABSENT:
        message = "empty: this column needs a value"
    return f"{csv_column_of(where)}: {message}"


def name_fields(result: BatchResult, suffix: str) -> BatchResult:
    """``result`` with every problem's field named as the format names it (CSV: its column).

    Problems about dates and country codes get an example of the right form.
    """
    csv_file = suffix.lower() == ".csv"
    result.rejected = [
        Rejected(
            rej.label,
            tuple(with_example(_csv_problem(p) if csv_file else p) for p in rej.problems),
            rej.kind,
        )
        for rej in result.rejected
    ]
    return result


#: Columns of a receipt (``done/<file>.receipt.csv``): which referral each input row became.
RECEIPT_COLUMNS = ("row", "referral_id", "status", "reason")


def receipt_rows(result: BatchResult) -> list[tuple[str, str, str, str]]:
    """``(row, referral id, status, reason)`` for each input, in input order.

    ``status`` is ``new`` (published now or held in the outbox), ``repeat`` (already
    published with the same content) or ``rejected`` (``reason``: its problems, ``; ``-joined).
    """
    out: list[tuple[int, tuple[str, str, str, str]]] = []
    for i, p in enumerate(result.published):
        out.append((i, (p.label, p.referral_id, "repeat" if p.repeat else "new", "")))
    for i, rej in enumerate(result.rejected):
        out.append(
            (len(result.published) + i, (rej.label, "", "rejected", "; ".join(rej.problems)))
        )
    return [row for _, row in sorted(out, key=lambda r: (_row_order(r[1][0]), r[0]))]


def _row_order(label: str) -> tuple[int, str]:
    digits = re.findall(r"\d+", label)
    return (int(digits[0]) if digits else -1, label)


#: Leading characters a spreadsheet reads as a formula (CSV injection).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(cell: object) -> object:
    """``cell`` for a CSV export: control and bidi characters escaped (:mod:`broker.terminal`),
    and text a spreadsheet would run as a formula prefixed with ``'``."""
    if isinstance(cell, str):
        cell = escape(cell)
        if cell.startswith(_FORMULA_START):
            return "'" + cell
    return cell


def receipt_csv(result: BatchResult) -> str:
    """The receipt of one file as CSV text (:data:`RECEIPT_COLUMNS`, header row first)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(RECEIPT_COLUMNS)
    writer.writerows([spreadsheet_safe(c) for c in row] for row in receipt_rows(result))
    return buf.getvalue()


def split_problem(problem: str) -> tuple[str, str]:
    """``(field, message)`` of a ``field: message`` problem (``(record)`` if it names none)."""
    where, sep, message = problem.partition(": ")
    return (where, message) if sep else ("(record)", problem)


def parse_referrals(raw: bytes, suffix: str) -> list[Row]:
    """The referrals in the bytes of a ``.json``/``.jsonl``/``.csv`` file, by row label.

    A problem with the whole file (not UTF-8, not JSON, an unknown CSV column) is
    one row labelled ``file`` or ``header``.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return [("file", _fail("(file): not UTF-8 text"))]
    suffix = suffix.lower()
    if suffix == ".json":
        return _read_json(text)
    if suffix == ".jsonl":
        return _read_jsonl(text)
    if suffix == ".csv":
        return _read_csv(text)
    return [("file", _fail("(file): unsupported file type (not .json, .jsonl or .csv)"))]


def read_referral_file(path: Path) -> list[Row]:
    """The referrals in a ``.json``/``.jsonl``/``.csv`` file as ``(label, dict or problem)``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        return [("file", _fail(f"(file): cannot read: {exc.strerror}"))]
    return parse_referrals(raw, path.suffix)


def incomplete(raw: bytes, suffix: str) -> str | None:
    """Why the bytes of a file look unfinished (still being written), or None if complete.

    Empty, or not UTF-8; a ``.jsonl`` or ``.csv`` whose last line has no line
    break; a ``.csv`` with a quoted cell left open; a ``.json`` that does not
    parse. The reason names positions only, never content.
    """
    if not raw.strip():
        return "the file is empty"
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return "not UTF-8 text (a character may be cut off)"
    suffix = suffix.lower()
    if suffix == ".json":
        try:
            load_json(text)
        except ValidationFailed as exc:
            return str(exc)
        return None
    if not text.endswith("\n"):
        return "the last line has no line break"
    if suffix == ".csv" and text.count('"') % 2:
        return "a quoted CSV cell is not closed"
    return None


def json_problem(exc: json.JSONDecodeError | UnicodeDecodeError) -> str:
    """What is wrong with a JSON text, by position only (the text is never quoted)."""
    if isinstance(exc, UnicodeDecodeError):
        return "not valid JSON (not UTF-8 text)"
    return f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"


#: How deeply JSON arrays and objects may nest (a referral needs 6).
MAX_JSON_DEPTH = 32
#: A JSON string literal (possessive: no backtracking on long strings).
_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
#: Outside strings: drop what valid JSON has besides brackets, brackets become ( and ).
_SCALARS = str.maketrans("[{]}", "(())", string.digits + string.ascii_letters + ",:.+-\x20\t\r\n")
_NOT_BRACKET = re.compile(r"[^()]+")


def _too_deep(text: str, max_depth: int) -> bool:
    """True if the arrays and objects of a JSON text nest deeper than ``max_depth``.

    Strings are taken out, then the innermost bracket pairs are removed
    ``max_depth`` times: a pair left over means deeper nesting (no parsing, no recursion).
    """
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text).translate(_SCALARS))
    for _ in range(max_depth):
        fewer = brackets.replace("()", "")
        if fewer == brackets:
            return False
        brackets = fewer
    return "()" in brackets


def load_json(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The JSON value of ``text``; ValidationFailed naming the position of the first error.

    Nesting deeper than ``max_depth`` is refused before parsing (a deeply nested
    document would otherwise exhaust the parser's recursion).
    """
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        if _too_deep(text, max_depth):
            raise _fail(f"JSON nested deeper than {max_depth} levels")
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(json_problem(exc)) from None
    except RecursionError:
        raise _fail(f"JSON nested deeper than {max_depth} levels") from None


def json_rows(data: Any) -> list[Row]:
    """The rows of a parsed JSON document (``[0]``, ``[1]``, … or one), each :func:`normalise`-d."""
    if isinstance(data, list):
        return [(f"[{i}]", normalise(item)) for i, item in enumerate(data)]
    return [("record", normalise(data))]


def _read_json(text: str) -> list[Row]:
    try:
        data = load_json(text)
    except ValidationFailed as exc:
        return [("file", _fail(f"(file): {exc}"))]
    return json_rows(data)


def _read_jsonl(text: str) -> list[Row]:
    rows: list[Row] = []
    # Only "\n" ends a line: JSON strings may hold other line separators (U+2028, ...).
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"line {n}", normalise(load_json(line))))
        except ValidationFailed as exc:
            rows.append((f"line {n}", _fail(f"(line): {exc}")))
    return rows


#: What an unknown header cell must look like to be named in a problem (else only its position).
_COLUMN_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")


#: The columns every CSV file must have (the others are optional).
REQUIRED_CSV_COLUMNS = ("case_id", "url")


def _column_key(name: str) -> str:
    """A header cell as the column it names: case and spaces or dashes do not matter."""
    key = re.sub(r"[\s-]+", "_", name.strip().lower())
    return key if key in CSV_COLUMNS else name.strip()


def _unknown_column(position: int, name: str) -> str:
    if _COLUMN_NAME.match(name):
        near = difflib.get_close_matches(name.lower(), CSV_COLUMNS, n=1, cutoff=0.6)
        return f"{name}: unknown column" + (f"; did you mean {near[0]}?" if near else "")
    return f"(column {position}): unknown column (its name is not shown: not a column name)"


def _dialect(text: str) -> type[csv.Dialect] | str:
    """The CSV dialect of ``text``: its delimiter sniffed among ``,``, ``;`` and tab."""
    first = text.split("\n", 1)[0]
    try:
        return csv.Sniffer().sniff(first, delimiters=",;\t")
    except csv.Error:
        return "excel"


def _read_csv(text: str) -> list[Row]:
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=_dialect(text))
    header = [h.strip() for h in reader.fieldnames or []]
    if not header:
        return [("file", _fail("(file): empty CSV, no header row"))]
    header = [_column_key(h) for h in header]
    reader.fieldnames = header
    unknown = [(i, h) for i, h in enumerate(header, start=1) if h not in CSV_COLUMNS]
    problems = [_unknown_column(i, h) for i, h in unknown]
    problems += [f"{c}: missing column" for c in REQUIRED_CSV_COLUMNS if c not in header]
    if problems:
        return [("header", _fail(*problems))]
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
