"""Errors of the known-content package; messages never quote a hash, a URL or a token."""

from __future__ import annotations

from broker.errors import ConfigError, SecurityError, ValidationFailed

__all__ = ["BadMatchInput", "EvaluationRefused", "OprfError", "SodiumMissing"]


class SodiumMissing(ConfigError):
    """Debian's libsodium23 (the ristretto255 primitives) cannot be loaded."""


class OprfError(SecurityError):
    """An OPRF value is malformed: not a group element, the identity, or not a scalar."""


class EvaluationRefused(SecurityError):
    """The evaluator refused a batch: over the organisation's rate, or an unknown key."""


class BadMatchInput(ValidationFailed):
    """A hash or URL to tokenise is malformed (the message names the kind, never the value)."""
