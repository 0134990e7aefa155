"""The shape of the ids a sink acts on, checked again on receipt."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any

from broker.errors import CodecError

__all__ = ["IdShapeError", "check_ids"]

#: A case id: 1-128 printable ASCII characters, no spaces (``CaseId`` in the models).
_CASE_ID = re.compile(r"[\x21-\x7e]{1,128}")
#: An organisation id (``OrgId``); a list is comma-separated.
_ORG_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")

_SHAPES = {
    "case_id": "1-128 printable characters without spaces",
    "origin_org": "an organisation id (a-z, 0-9, . _ -)",
    "emitted_by": "an organisation id (a-z, 0-9, . _ -)",
    "referral_id": "a UUID",
}


class IdShapeError(CodecError):
    """An id of a received record does not have the shape its field requires."""


def _fits(field: str, value: object) -> bool:
    if not isinstance(value, str):
        return False
    if field == "referral_id":
        try:
            return str(uuid.UUID(value)) == value.lower() and len(value) == 36
        except ValueError:
            return False
    if field == "case_id":
        return _CASE_ID.fullmatch(value) is not None
    return _ORG_ID.fullmatch(value) is not None


def check_ids(record: Mapping[str, Any], where: str = "") -> None:
    """Raise :class:`IdShapeError` if an id field of ``record`` present there is misshapen."""
    for field, shape in _SHAPES.items():
        if field in record and record[field] is not None and not _fits(field, record[field]):
            raise IdShapeError(f"{where}{field}: not {shape}; refused on receipt")
