"""ISO 3166-1 alpha-2 country codes (from ``pycountry``), normalised and checked."""

from __future__ import annotations

from functools import lru_cache

import pycountry

__all__ = ["is_country", "normalise_country"]


@lru_cache(maxsize=1)
def _codes() -> frozenset[str]:
    return frozenset(c.alpha_2 for c in pycountry.countries)


def is_country(code: str) -> bool:
    """True if ``code`` is an assigned ISO 3166-1 alpha-2 code (exact, upper case)."""
    return code in _codes()


def normalise_country(code: str) -> str:
    """Strip and upper-case ``code``; raise ``ValueError`` if it is no country."""
    norm = code.strip().upper()
    if not is_country(norm):
        raise ValueError(f"unknown ISO 3166-1 alpha-2 country code {code.strip()!r}")
    return norm
