"""The Avro contracts (``*.avsc``), installed with the package: the source of truth."""

from __future__ import annotations

from pathlib import Path

__all__ = ["SCHEMA_DIR"]

#: Directory holding the ``.avsc`` files and the embedded registry's id table.
SCHEMA_DIR = Path(__file__).resolve().parent
