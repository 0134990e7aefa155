"""Short ids: one resolver for every command that takes a referral id.

A referral id may be given in full or as an unambiguous prefix of at least
:data:`MIN_PREFIX` characters (``3f2a9c1e`` for ``3f2a9c1e-…``), as people copy
them from an 80-column table. The candidates come from whatever store the
command reads (the ledger for ``trace``, the inbox for ``status`` and ``inbox``).
"""

from __future__ import annotations

from collections.abc import Iterable

from broker.errors import ConfigError

__all__ = ["MIN_PREFIX", "SHORT", "matches", "resolve_id", "short_id"]

#: The shortest prefix accepted in place of a whole id.
MIN_PREFIX = 4
#: How many characters of an id the tables show.
SHORT = 8


def short_id(value: str, width: int = SHORT) -> str:
    """The first ``width`` characters of an id (the form the narrow tables show)."""
    return value[:width]


def matches(prefix: str, value: str) -> bool:
    """True if ``value`` starts with ``prefix`` (case-insensitive)."""
    return value.lower().startswith(prefix.strip().lower())


def resolve_id(given: str, candidates: Iterable[str], what: str = "referral") -> str:
    """The one candidate ``given`` names: itself if whole, else the only one it prefixes.

    An id that is no candidate's prefix is returned unchanged (the caller reports
    it as unknown in its own terms); a prefix shorter than :data:`MIN_PREFIX` or
    naming several candidates is a :class:`ConfigError` listing a few of them.
    """
    given = given.strip()
    pool = set(candidates)
    if given in pool:
        return given
    hits = sorted(c for c in pool if matches(given, c))
    if not hits:
        return given
    if len(given) < MIN_PREFIX:
        raise ConfigError(
            f"{what} id prefix {given!r} is too short: give at least {MIN_PREFIX} characters"
        )
    if len(hits) > 1:
        shown = ", ".join(short_id(h, len(given) + 4) for h in hits[:5])
        more = f" and {len(hits) - 5} more" if len(hits) > 5 else ""
        raise ConfigError(
            f"{what} id prefix {given!r} is ambiguous: {len(hits)} match ({shown}{more});"
            " give more characters"
        )
    return hits[0]
