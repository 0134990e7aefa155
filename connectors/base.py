"""The settings base every connector kind is built on (paths, secrets, URLs checked once).

What a kind implements — source, sink, status sink — is :mod:`broker.contracts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, SecretStr

from broker.config import Settings
from broker.errors import ConfigError

__all__ = [
    "ConnectorConfig",
    "check_http_url",
    "resolve_path",
    "secret_from_env",
]


class ConnectorConfig(BaseModel):
    """Base of every connector kind's settings (frozen; unknown keys are errors)."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def resolve_path(settings: Settings, raw: str | Path) -> Path:
    """``raw`` as an absolute path; relative paths are under ``settings.state_dir``."""
    path = Path(raw).expanduser()
    return path if path.is_absolute() else Path(settings.state_dir) / path


def secret_from_env(env: Mapping[str, str], name: str, what: str) -> SecretStr:
    """The secret held in environment variable ``name`` (never printed)."""
    value = env.get(name, "")
    if not value:
        raise ConfigError(f"{what}: environment variable {name} is not set")
    return SecretStr(value)


def check_http_url(url: str, what: str) -> str:
    """``url`` if it is an absolute http(s) URL; ConfigError otherwise (URL not quoted)."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"{what}: not a valid URL") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigError(f"{what}: URL must be absolute http(s)://host/...")
    return url
