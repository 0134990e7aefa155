"""The hosting-provider directory: who a provider is, where it is, how to reach its abuse desk.

A TOML file (``<state dir>/providers.toml`` unless named), one table per provider::

    [providers.host-a]
    name = "Example Hosting A"
    country = "NL"
    abuse_email = "abuse@host-a.example.org"
    escalate_to = "police-nl"                        # optional: whom a silent one is escalated to
    escalate_email = "upstream@transit.example.org"  # optional: where that escalation goes
    abuse_webhook = "https://abuse-api.host-a.example.org/notices"  # optional: notices by API
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.errors import ConfigError

__all__ = ["DEFAULT_FILE", "Provider", "ProviderDirectory", "load_directory", "parse_directory"]

#: The directory's file name under the state directory.
DEFAULT_FILE = "providers.toml"

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")
_CC = re.compile(r"^[A-Z]{2}$")
_KEYS = {"name", "country", "abuse_email", "escalate_to", "escalate_email", "abuse_webhook"}


@dataclass(frozen=True)
class Provider:
    """One hosting provider and its abuse contact."""

    id: str
    name: str
    country: str
    abuse_email: str
    escalate_to: str | None = None
    escalate_email: str | None = None
    #: where notices are POSTed instead of mailed (an abuse API)
    abuse_webhook: str | None = None


class ProviderDirectory:
    """The providers by id."""

    def __init__(self, providers: list[Provider]) -> None:
        self._by_id = {p.id: p for p in providers}

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, provider_id: object) -> bool:
        return provider_id in self._by_id

    def get(self, provider_id: str) -> Provider:
        """The provider ``provider_id`` (ConfigError naming it if the directory has none)."""
        try:
            return self._by_id[provider_id]
        except KeyError:
            raise ConfigError(f"no hosting provider {provider_id!r} in the directory") from None

    def all(self) -> list[Provider]:
        """Every provider, by id."""
        return [self._by_id[k] for k in sorted(self._by_id)]


def _provider(pid: str, table: Any, where: str) -> tuple[Provider | None, list[str]]:
    problems: list[str] = []
    if not _ID.match(pid):
        problems.append(f"{where}: provider id {pid!r} is not a lower-case id")
    if not isinstance(table, dict):
        return None, [*problems, f"{where}.{pid}: not a table"]
    for key in sorted(set(table) - _KEYS):
        problems.append(f"{where}.{pid}: unknown key {key!r}")
    for key in ("name", "country", "abuse_email"):
        if not isinstance(table.get(key), str) or not table[key]:
            problems.append(f"{where}.{pid}.{key}: missing")
    if isinstance(table.get("country"), str) and not _CC.match(table["country"]):
        problems.append(f"{where}.{pid}.country: not a country code")
    for key in ("abuse_email", "escalate_email"):
        value = table.get(key)
        if isinstance(value, str) and not _EMAIL.match(value):
            problems.append(f"{where}.{pid}.{key}: not an e-mail address")
    hook = table.get("abuse_webhook")
    if hook is not None and (
        not isinstance(hook, str) or not hook.startswith(("https://", "http://"))
    ):
        problems.append(f"{where}.{pid}.abuse_webhook: not an http(s) address")
    if problems:
        return None, problems
    return Provider(
        pid,
        table["name"],
        table["country"],
        table["abuse_email"],
        table.get("escalate_to"),
        table.get("escalate_email"),
        hook,
    ), []


def parse_directory(text: str, where: str = "providers") -> ProviderDirectory:
    """The directory a TOML text describes; ConfigError listing every problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not TOML ({exc})") from None
    tables = data.get("providers", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{where}: [providers] is not a table")
    found: list[Provider] = []
    problems: list[str] = []
    for pid, table in tables.items():
        provider, bad = _provider(str(pid), table, f"{where}: providers")
        problems += bad
        if provider is not None:
            found.append(provider)
    if problems:
        raise ConfigError("\n".join(problems))
    return ProviderDirectory(found)


def load_directory(path: Path) -> ProviderDirectory:
    """The directory in ``path`` (ConfigError in the user's words if it cannot be read)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the provider directory {path}: {exc.strerror}") from None
    return parse_directory(text, str(path))
