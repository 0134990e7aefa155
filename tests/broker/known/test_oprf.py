"""RFC 9497 OPRF(ristretto255, SHA-512) mode 0 against the RFC's vectors, and its input checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from broker.known import oprf
from broker.known.errors import OprfError

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).with_name("rfc_vectors.json")).read_text(encoding="utf-8")
)
SUITE = VECTORS["oprf_ristretto255_sha512_mode0"]
XMD = VECTORS["expand_message_xmd_sha512"]


def _h(value: str) -> bytes:
    return bytes.fromhex(value)


def test_context_string_is_the_rfcs() -> None:
    assert oprf.CONTEXT_STRING == b"OPRFV1-\x00-ristretto255-SHA512"


@pytest.mark.parametrize(
    "vector", XMD["vectors"], ids=lambda v: f"{v['msg'][:8]}-{v['len_in_bytes']}"
)
def test_expand_message_xmd_sha512_rfc9380_vectors(vector: dict[str, Any]) -> None:
    out = oprf.expand_message_xmd(
        vector["msg"].encode(), XMD["DST"].encode(), vector["len_in_bytes"]
    )
    assert out.hex() == vector["uniform_bytes"]


def test_derive_key_pair_gives_the_rfcs_key() -> None:
    sk, pk = oprf.derive_key_pair(_h(SUITE["Seed"]), _h(SUITE["KeyInfo"]))
    assert sk.hex() == SUITE["skSm"]
    assert len(pk) == oprf.NE


@pytest.mark.parametrize("vector", SUITE["vectors"], ids=["vector1", "vector2"])
def test_oprf_mode0_rfc9497_vectors(vector: dict[str, Any]) -> None:
    sk = _h(SUITE["skSm"])
    # Batch > 1 vectors list comma-separated values; mode 0 has only batch size 1.
    inputs = [_h(x) for x in vector["Input"].split(",")]
    blinds = [_h(x) for x in vector["Blind"].split(",")]
    blinded_want = vector["BlindedElement"].split(",")
    evaluated_want = vector["EvaluationElement"].split(",")
    outputs_want = vector["Output"].split(",")
    assert len(inputs) == vector["Batch"]
    for i, input_ in enumerate(inputs):
        r, blinded = oprf.blind(input_, blinds[i])
        assert blinded.hex() == blinded_want[i]
        evaluated = oprf.blind_evaluate(sk, blinded)
        assert evaluated.hex() == evaluated_want[i]
        assert oprf.finalize(input_, r, evaluated).hex() == outputs_want[i]
        assert oprf.evaluate(sk, input_).hex() == outputs_want[i]


def test_random_blinds_finalize_to_the_same_output() -> None:
    sk, _ = oprf.derive_key_pair(os.urandom(32), b"k1")
    input_ = b"sha256:" + os.urandom(32).hex().encode()
    (r1, b1), (r2, b2) = oprf.blind(input_), oprf.blind(input_)
    assert b1 != b2  # the evaluator cannot link two blindings of one input
    out1 = oprf.finalize(input_, r1, oprf.blind_evaluate(sk, b1))
    out2 = oprf.finalize(input_, r2, oprf.blind_evaluate(sk, b2))
    assert out1 == out2 == oprf.evaluate(sk, input_)


def test_hash_to_scalar_is_reduced() -> None:
    scalar = oprf.hash_to_scalar(b"anything")
    assert int.from_bytes(scalar, "little") < oprf.ORDER


@pytest.mark.parametrize(
    "element",
    [bytes(32), b"\xff" * 32, b"\x01" * 31, b"\x01" + bytes(31)],
    ids=["identity", "non-canonical", "short", "not-on-curve"],
)
def test_blind_evaluate_refuses_bad_elements(element: bytes) -> None:
    sk, _ = oprf.derive_key_pair(bytes(32), b"k")
    with pytest.raises(OprfError):
        oprf.blind_evaluate(sk, element)


@pytest.mark.parametrize(
    "scalar",
    [bytes(32), oprf.ORDER.to_bytes(32, "little"), b"\x01" * 31],
    ids=["zero", "order", "short"],
)
def test_bad_scalars_are_refused(scalar: bytes) -> None:
    with pytest.raises(OprfError):
        oprf.blind(b"x", scalar)


def test_overlong_input_is_refused() -> None:
    with pytest.raises(OprfError):
        oprf.blind(bytes(0x10000))


def test_a_missing_libsodium_is_one_clear_error() -> None:
    # pysodium raises at import when the system has no libsodium; stand that in for it.
    code = (
        "import sys; sys.modules['pysodium'] = None\n"
        "from broker.known.errors import SodiumMissing\n"
        "try:\n    import broker.known.oprf\n"
        "except SodiumMissing as exc:\n    print(exc)\n"
    )
    root = Path(__file__).resolve().parents[3]
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True
    )
    assert done.stdout == (
        "libsodium is not installed: install Debian's libsodium23 (`make install` does it)\n"
    )
