"""The project's exception tree."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CodecError",
    "ConfigError",
    "CorruptDatum",
    "DeliveryError",
    "EmbeddedBrokerError",
    "IncompatibleSchema",
    "KafkaBrokerError",
    "KafkaUnavailable",
    "LedgerError",
    "LedgerStoreError",
    "Misrouted",
    "NetworkFileError",
    "NotARecipient",
    "NotFramed",
    "RecordTooLarge",
    "ReferralError",
    "RegistryError",
    "RoutingError",
    "SchemaError",
    "SchemaMismatch",
    "SealError",
    "SecurityError",
    "SignatureInvalid",
    "SignatureOutOfWindow",
    "UnknownName",
    "UnknownReferral",
    "UnknownSchema",
    "UnknownSchemaId",
    "ValidationFailed",
]


class ReferralError(Exception):
    """Root of every error raised by referral-broker (the CLI maps each to an exit code)."""


class ConfigError(ReferralError):
    """Settings or connector configuration are invalid."""


class NetworkFileError(ConfigError):
    """The network file has one or more problems; ``problems`` lists them all."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = list(problems)
        if len(self.problems) == 1:  # one problem, one line (it names the file itself)
            only = self.problems[0]
            super().__init__(only if only.startswith(path) else f"{path}: {only}")
        else:
            head = f"{path}: {len(self.problems)} problem(s)\n"
            super().__init__(head + "\n".join(self.problems))


class UnknownName(ConfigError, KeyError):
    """No ``kind`` called ``name``; the message names the nearest valid ones.

    Also a ``KeyError``, so a lookup that used to raise one still satisfies its callers.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        valid: Iterable[str],
        hint: str = "",
        *,
        cutoff: float = 0.5,
        empty: str = "",
        list_known: bool = True,
    ) -> None:
        self.kind, self.name = kind, name
        self.valid = sorted(set(valid))
        nearest = difflib.get_close_matches(name, self.valid, n=3, cutoff=cutoff)
        if nearest:
            known = "did you mean " + ", ".join(nearest) + "?"
        elif self.valid and not list_known:
            known = f"{len(self.valid)} known, none close"
        elif self.valid:
            shown = self.valid[:6]
            known = "known: " + ", ".join(shown) + (", ..." if len(self.valid) > 6 else "")
        else:
            known = empty or f"there is no {kind} yet"
        super().__init__(f"unknown {kind} {name!r}{hint}; {known}")

    def __str__(self) -> str:
        return str(self.args[0])


class KafkaBrokerError(ReferralError):
    """The Kafka broker (the server) failed an operation: unreachable, refused, not acked."""


class KafkaUnavailable(KafkaBrokerError):
    """No broker answered at the configured bootstrap servers in time."""


class EmbeddedBrokerError(KafkaBrokerError):
    """The embedded Tansu broker could not be started, found or stopped."""


class SchemaError(ReferralError):
    """A schema problem: unknown, unregistered or incompatible."""


class UnknownSchema(SchemaError):
    """No schema with that name, version or id is known."""


class RegistryError(SchemaError):
    """The schema registry failed or refused a request."""


class IncompatibleSchema(SchemaError):
    """A schema change breaks the configured compatibility rule."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        super().__init__(message)


class CodecError(ReferralError):
    """A message could not be encoded or decoded. Never quotes payload content."""


class NotFramed(CodecError):
    """The bytes do not start with the Confluent frame (magic byte 0 + schema id)."""


class UnknownSchemaId(CodecError):
    """The frame names a schema id the registry does not know."""


class CorruptDatum(CodecError):
    """The Avro datum is truncated or corrupt."""


class RecordTooLarge(CodecError):
    """The record exceeds the configured size limit."""


class SchemaMismatch(CodecError):
    """The datum is not of the record type the caller expected."""


class ValidationFailed(ReferralError):
    """A referral or status update fails semantic validation."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        self.problems = list(problems or [])
        super().__init__(message)


class RoutingError(ReferralError):
    """No destination can be derived for a referral (or a code is unknown)."""


class DeliveryError(ReferralError):
    """A sink could not deliver a referral to its organisation's system.

    ``permanent`` says the system refused it for good (e.g. HTTP 4xx): sending
    it again would be refused again, so the sink answers the origin with a
    REJECTED carrying ``reason`` (a code such as ``HTTP_422``, never payload).
    Otherwise the failure is transient (an outage) and a republish may succeed.
    """

    def __init__(self, message: str, *, permanent: bool = False, reason: str | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.reason = reason or ("REFUSED" if permanent else "UNAVAILABLE")


class SecurityError(ReferralError):
    """Keys, signatures, sealing or handling rules refused an operation."""


class SignatureInvalid(SecurityError):
    """A signature is bad, missing, or made with a revoked or unknown key."""


class SealError(SecurityError):
    """A sealed case body cannot be opened by this organisation."""


class SignatureOutOfWindow(SignatureInvalid):
    """A signature made longer ago than the network's window, or in the future beyond the skew."""


class Misrouted(SecurityError):
    """A referral arrived where (or for whom) its signed envelope does not route it."""


class NotARecipient(SecurityError):
    """A status update from an organisation the referral was not routed to (or not ours at all)."""


class LedgerError(ReferralError):
    """The handover ledger, as materialised and viewed by the operator, cannot answer."""


class LedgerStoreError(LedgerError):
    """The materialised ledger cannot be opened, synced or read."""


class UnknownReferral(LedgerError):
    """The ledger holds no event about this referral id."""
