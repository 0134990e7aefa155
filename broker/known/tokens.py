"""Blind match tokens: the origin blinds a batch, the evaluator evaluates it, the origin unblinds.

The evaluator sees only group elements (``EvaluationRequest.blinded``), never an input;
nobody without the evaluator's key can compute a token. Clocks and keys are arguments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from broker.known import oprf
from broker.known.errors import EvaluationRefused, OprfError

__all__ = [
    "TOKEN_BYTES",
    "EvaluationRecord",
    "EvaluationRequest",
    "EvaluationResponse",
    "Evaluator",
    "EvaluatorKey",
    "KeyRing",
    "PendingBatch",
    "RateLimit",
    "RateWindows",
    "Token",
    "blind_batch",
    "unblind",
]

TOKEN_BYTES = 32  # the first half of the 64-byte OPRF output: 256 bits suffice to match on


@dataclass(frozen=True)
class Token:
    """A match token: the OPRF output (truncated) under the evaluator key ``key_id``."""

    key_id: str
    value: bytes

    def hex(self) -> str:
        """The token value in lower-case hex."""
        return self.value.hex()


@dataclass(frozen=True)
class EvaluationRequest:
    """What the origin sends: its id, the key it asks for (None: current) and blinded elements."""

    organisation: str
    blinded: tuple[bytes, ...]
    key_id: str | None = None


@dataclass(frozen=True)
class EvaluationResponse:
    """What the evaluator answers: the key it used and one evaluated element per blinded one."""

    key_id: str
    evaluated: tuple[bytes, ...]


@dataclass(frozen=True)
class PendingBatch:
    """The origin's private half of a batch (inputs and blinds); it never leaves the origin."""

    inputs: tuple[bytes, ...]
    blinds: tuple[bytes, ...] = field(repr=False)

    def __repr__(self) -> str:
        return f"PendingBatch({len(self.inputs)} items)"


def blind_batch(
    organisation: str, inputs: Sequence[bytes], key_id: str | None = None
) -> tuple[PendingBatch, EvaluationRequest]:
    """Blind each input (see ``broker.known.normalise``); send the request, keep the batch."""
    pairs = [oprf.blind(item) for item in inputs]
    pending = PendingBatch(tuple(inputs), tuple(r for r, _ in pairs))
    return pending, EvaluationRequest(organisation, tuple(b for _, b in pairs), key_id)


def unblind(pending: PendingBatch, response: EvaluationResponse) -> list[Token]:
    """Unblind the evaluator's answer into one token per input, in the batch's order."""
    if len(response.evaluated) != len(pending.inputs):
        raise OprfError("the evaluator answered a different number of elements than were sent")
    return [
        Token(response.key_id, oprf.finalize(item, r, element)[:TOKEN_BYTES])
        for item, r, element in zip(pending.inputs, pending.blinds, response.evaluated, strict=True)
    ]


@dataclass(frozen=True)
class EvaluatorKey:
    """One OPRF key of the evaluator, named ``key_id`` (the rotation unit)."""

    key_id: str
    secret: bytes = field(repr=False)

    @classmethod
    def derive(cls, key_id: str, seed: bytes) -> EvaluatorKey:
        """RFC 9497 DeriveKeyPair from a 32-byte secret seed, with the key id as info."""
        secret, _ = oprf.derive_key_pair(seed, b"referral-broker match key " + key_id.encode())
        return cls(key_id, secret)

    def token(self, input_: bytes) -> Token:
        """The token of an input the key holder knows (RFC 9497 Evaluate); for tests and benches."""
        return Token(self.key_id, oprf.evaluate(self.secret, input_)[:TOKEN_BYTES])


class KeyRing:
    """The evaluator's keys: one current key, older ones kept until retired (tokens re-derived)."""

    def __init__(self, current: EvaluatorKey) -> None:
        self._keys = {current.key_id: current}
        self._current = current.key_id

    @property
    def current(self) -> EvaluatorKey:
        """The key new evaluations use."""
        return self._keys[self._current]

    def rotate(self, key: EvaluatorKey) -> None:
        """Make ``key`` current; the previous key still answers requests that name it."""
        if key.key_id in self._keys:
            raise EvaluationRefused(f"key id {key.key_id} was used before; rotate to a new id")
        self._keys[key.key_id] = key
        self._current = key.key_id

    def retire(self, key_id: str) -> None:
        """Forget an old key: requests naming it are refused from now on."""
        if key_id == self._current:
            raise EvaluationRefused("the current key cannot be retired; rotate first")
        self._keys.pop(key_id, None)

    def get(self, key_id: str | None) -> EvaluatorKey:
        """The named key (None: the current one); EvaluationRefused if unknown or retired."""
        key = self._keys.get(self._current if key_id is None else key_id)
        if key is None:
            raise EvaluationRefused(f"key {key_id} is unknown or retired")
        return key

    def key_ids(self) -> Iterable[str]:
        """The ids of the keys held, current last."""
        return sorted(self._keys, key=lambda k: k == self._current)


@dataclass(frozen=True)
class EvaluationRecord:
    """What the ledger keeps of one evaluation: who, how many, which key, when, refused or not."""

    organisation: str
    items: int
    key_id: str | None
    at: float
    refused: str | None = None  # the refusal's reason, None when evaluated


@dataclass(frozen=True)
class RateLimit:
    """At most ``items`` evaluations per organisation per ``per_seconds`` (a token bucket)."""

    items: int
    per_seconds: float


class RateWindows(Protocol):
    """Where an evaluator keeps its per-organisation buckets across restarts."""

    def load(self) -> dict[str, tuple[float, float]]:
        """Every organisation's (allowance, at) as last saved."""
        ...

    def save(self, organisation: str, allowance: float, at: float) -> None:
        """Record one organisation's bucket after a charge."""
        ...


class Evaluator:
    """The key holder's side: evaluates blinded batches, rate-limited per organisation."""

    def __init__(
        self,
        keys: KeyRing,
        limit: RateLimit,
        clock: Callable[[], float],
        record: Callable[[EvaluationRecord], None] | None = None,
        windows: RateWindows | None = None,
    ) -> None:
        self._keys = keys
        self._limit = limit
        self._clock = clock
        self._record = record  # e.g. a ledger emitter; told of every evaluation and refusal
        self._windows = windows  # persisted buckets: a restart does not refill them
        # org -> (allowance, at)
        self._buckets: dict[str, tuple[float, float]] = windows.load() if windows else {}

    def allowance(self, organisation: str) -> float:
        """How many items ``organisation`` may have evaluated right now."""
        return self._allowance(organisation, self._clock())

    def _allowance(self, organisation: str, now: float) -> float:
        allowance, at = self._buckets.get(organisation, (float(self._limit.items), now))
        refill = (now - at) * self._limit.items / self._limit.per_seconds
        return min(float(self._limit.items), allowance + max(0.0, refill))

    def evaluate(self, request: EvaluationRequest) -> EvaluationResponse:
        """BlindEvaluate every element, or refuse the whole batch (over the rate, bad element)."""
        now = self._clock()
        try:
            key = self._keys.get(request.key_id)
            elements = [oprf.deserialize_element(b) for b in request.blinded]
            available = self._allowance(request.organisation, now)
            if len(elements) > available:
                raise EvaluationRefused(
                    f"evaluation refused for {request.organisation}: {len(elements)} items over"
                    f" its rate of {self._limit.items} per {self._limit.per_seconds:g} s"
                )
        except (EvaluationRefused, OprfError) as exc:
            self._tell(request, request.key_id, now, str(exc))
            raise
        self._buckets[request.organisation] = (available - len(elements), now)
        if self._windows is not None:
            self._windows.save(request.organisation, available - len(elements), now)
        evaluated = tuple(oprf.blind_evaluate(key.secret, e) for e in elements)
        self._tell(request, key.key_id, now, None)
        return EvaluationResponse(key.key_id, evaluated)

    def _tell(
        self, request: EvaluationRequest, key_id: str | None, at: float, refused: str | None
    ) -> None:
        if self._record is not None:
            items = len(request.blinded)
            self._record(EvaluationRecord(request.organisation, items, key_id, at, refused))
