"""Settings: one pydantic-settings model, built by the CLI.

Precedence is CLI flags > ``REFERRAL_*`` environment variables > the network
file's ``[broker]`` table > defaults. The library never reads the environment
on its own: the CLI calls :func:`load_settings` and passes the result down.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, PrivateAttr, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.errors import ConfigError
from broker.validation import validation_problems
from broker.wire.topics import TopicNames

__all__ = ["SecurityProtocol", "Settings", "Source", "load_settings", "setting_sources"]

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
#: Where a setting's value came from, as ``config show`` says it.
Source = Literal["flag", "environment", "network file", "state directory", "default"]
TraceExporter = Literal["none", "console", "otlp", "jsonl"]
#: What an organisation id looks like (as in the network file); no path separators.
_ORG_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


class Settings(BaseSettings):
    """Effective settings of one process (frozen; secrets are ``SecretStr``)."""

    model_config = SettingsConfigDict(
        env_prefix="REFERRAL_", frozen=True, extra="ignore", env_ignore_empty=True
    )

    bootstrap_servers: str | None = Field(
        default=None,
        description="Comma-separated host:port list; unset = the detached embedded broker.",
    )
    client_id: str = Field(default="referral-broker", description="Kafka client id prefix.")
    security_protocol: SecurityProtocol = "PLAINTEXT"
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True

    topic_prefix: str = Field(
        default="", description="Namespace prepended to every topic name (shared clusters)."
    )
    network_file: Path = Field(
        default=Path("examples/network.toml"), description="The network file (TOML)."
    )
    state_dir: Path = Field(
        default=Path(".referral"),
        description="Where the embedded broker, outboxes, inboxes and the ledger keep state.",
    )
    max_record_bytes: int = Field(default=1024 * 1024, ge=1024, description="Codec size limit.")
    fetch_wait_ms: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="How long an idle consumer's fetch waits on the broker for records (ms).",
    )
    fetch_wait_busy_ms: int = Field(
        default=10,
        ge=0,
        le=10_000,
        description=(
            "The fetch wait while records are flowing (ms); 0 = always fetch_wait_ms. "
            "Low latency on brokers that hold a waiting fetch for its whole wait."
        ),
    )
    schema_registry_url: str | None = Field(
        default=None, description="Confluent-compatible Schema Registry; unset = embedded."
    )
    schema_registry_password: SecretStr | None = None
    schema_registry_username: str | None = None
    trace_exporter: TraceExporter | None = Field(
        default=None,
        description="none, console, otlp or jsonl; unset: otlp if an OTLP endpoint is set",
    )
    trace_file: Path | None = None
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Serve Prometheus /metrics on 127.0.0.1 at this port (0: a free one).",
    )
    otlp_endpoint: str | None = Field(
        default=None,
        description=(
            "OTLP/HTTP base URL (``/v1/traces``, ``/v1/metrics`` appended; a URL ending in "
            "``/v1/traces`` is taken as its base): the project's alias of "
            "OTEL_EXPORTER_OTLP_ENDPOINT, and it wins over every OTEL_* one."
        ),
    )
    # The OpenTelemetry SDK's own variables (no REFERRAL_ prefix), as the specification names them.
    otel_exporter_otlp_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices("otel_exporter_otlp_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT"),
    )
    otel_exporter_otlp_traces_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "otel_exporter_otlp_traces_endpoint", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        ),
    )
    otel_exporter_otlp_metrics_endpoint: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "otel_exporter_otlp_metrics_endpoint", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
        ),
    )
    otel_metrics_exporter: str | None = Field(
        default=None,
        validation_alias=AliasChoices("otel_metrics_exporter", "OTEL_METRICS_EXPORTER"),
    )
    otel_metric_export_interval: int = Field(
        default=60_000,
        ge=1,
        validation_alias=AliasChoices("otel_metric_export_interval", "OTEL_METRIC_EXPORT_INTERVAL"),
        description="Milliseconds between two OTLP metric exports.",
    )
    otel_metric_export_timeout: int = Field(
        default=30_000,
        ge=1,
        validation_alias=AliasChoices("otel_metric_export_timeout", "OTEL_METRIC_EXPORT_TIMEOUT"),
        description="Milliseconds one OTLP metric export may take.",
    )
    otel_traces_exporter: str | None = Field(
        default=None, validation_alias=AliasChoices("otel_traces_exporter", "OTEL_TRACES_EXPORTER")
    )
    otel_service_name: str | None = Field(
        default=None, validation_alias=AliasChoices("otel_service_name", "OTEL_SERVICE_NAME")
    )
    otel_resource_attributes: str | None = Field(
        default=None,
        validation_alias=AliasChoices("otel_resource_attributes", "OTEL_RESOURCE_ATTRIBUTES"),
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _strip_servers(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = [p.strip() for p in value.split(",") if p.strip()]
        for part in parts:
            host, sep, port = part.rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"bootstrap server {part!r} is not host:port")
        return ",".join(parts) or None

    def kafka_security_kwargs(self) -> dict[str, Any]:
        """The security part of every kafka-python client's arguments."""
        kwargs: dict[str, Any] = {"security_protocol": self.security_protocol}
        if self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
            if self.sasl_mechanism is None or self.sasl_username is None:
                raise ConfigError(
                    f"security protocol {self.security_protocol} needs sasl_mechanism "
                    "and sasl_username"
                )
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else ""
            )
        if self.security_protocol in ("SSL", "SASL_SSL"):
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                path = getattr(self, name)
                if path is not None:
                    if not Path(path).is_file():
                        raise ConfigError(f"{name}: file not found: {path}")
                    kwargs[name] = str(path)
            if self.ssl_password is not None:
                kwargs["ssl_password"] = self.ssl_password.get_secret_value()
            kwargs["ssl_check_hostname"] = self.ssl_check_hostname
        return kwargs

    #: Where each value came from (:func:`setting_sources`); empty: built directly.
    _sources: dict[str, Source] = PrivateAttr(default_factory=dict)

    def org_dir(self, org_id: str) -> Path:
        """``<state_dir>/orgs/<org>``: an organisation's outbox, inbox, keys and handling log."""
        if not _ORG_ID.match(org_id):
            raise ConfigError(f"not an organisation id: {org_id[:64]!r}")
        return Path(self.state_dir) / "orgs" / org_id

    def topic_names(self) -> TopicNames:
        """The topic names under this deployment's prefix."""
        return TopicNames(self.topic_prefix)

    def masked(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict with every secret masked."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                out[name] = "**********" if value.get_secret_value() else ""
            elif isinstance(value, Path):
                out[name] = str(value)
            else:
                out[name] = value
        return out


def load_settings(**overrides: Any) -> Settings:
    """Build settings from CLI overrides (None = not given) over the environment.

    A state directory that holds its own ``network.toml`` (a demo run's sealed copy)
    uses it unless a network file is named; the network file's ``[broker]`` table
    fills in what neither the CLI nor the environment set. :func:`setting_sources`
    says where each value came from.
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    sources: dict[str, Source] = dict.fromkeys(given, "flag")
    try:
        settings = Settings(**given)
        for name in settings.model_fields_set - set(given):
            sources[name] = "environment"
        own = Path(settings.state_dir) / "network.toml"
        if "network_file" not in settings.model_fields_set and own.is_file():
            given = {**given, "network_file": own}
            sources["network_file"] = "state directory"
            settings = Settings(**given)
        section = _network_broker_section(settings.network_file)
        # The network file fills in only what neither the CLI nor the environment set.
        extra = {k: v for k, v in section.items() if k not in settings.model_fields_set}
        if extra:
            settings = Settings(**{**extra, **given})
            sources.update(dict.fromkeys(extra, "network file"))
    except ValidationError as exc:
        raise ConfigError(_settings_problems(exc)) from exc
    settings._sources = sources
    return settings


def setting_sources(settings: Settings) -> dict[str, Source]:
    """Where each setting of ``settings`` (as built by :func:`load_settings`) came from."""
    return {name: settings._sources.get(name, "default") for name in Settings.model_fields}


def _network_broker_section(path: Path) -> dict[str, Any]:
    from broker.network import broker_section

    return broker_section(path)


def _settings_problems(exc: ValidationError) -> str:
    return "; ".join(
        f"setting {where or 'settings'}: {msg}" for where, msg in validation_problems(exc)
    )
