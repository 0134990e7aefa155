"""``referral receipt`` and ``schemas/verify_receipt.py`` on a signed ledger on the real broker."""

from __future__ import annotations

import base64
import importlib.util
import json
import subprocess
import sys
import sysconfig
from pathlib import Path
from types import ModuleType

import pytest

from broker.config import Settings
from broker.ledger.receipt import LedgerTree, canonical, receipt
from broker.ledger.store import LedgerStore
from broker.ledger.treehead import TreeHead, sign_tree_head, witness_cosign
from broker.security.keys import ROUTER, OrgKeys, PublicKey, TrustStore, key_dir
from tests.e2e.test_trust import _cli, keyed, signed_ledger

__all__ = ["keyed", "signed_ledger"]  # the fixtures this module uses

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[3]
VERIFIER = ROOT / "schemas" / "verify_receipt.py"


def _verifier() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verify_receipt_standalone", VERIFIER)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _clean_python(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the verifier on a Python that sees the standard library and cryptography only."""
    only = tmp_path / "only-cryptography"
    if not only.exists():
        only.mkdir()
        site = Path(sysconfig.get_paths()["purelib"])
        for name in ("cryptography", "cffi", *(p.name for p in site.glob("_cffi_backend*"))):
            (only / name).symlink_to(site / name)
    boot = (
        "import sys, runpy; sys.path.append(sys.argv.pop(1)); sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    return subprocess.run(
        [sys.executable, "-I", "-S", "-c", boot, str(only), str(VERIFIER), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_receipt_proves_one_delivery_on_its_own_and_any_changed_byte_fails(
    signed_ledger: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings, env = signed_ledger
    with LedgerStore(Path(settings.state_dir) / "ledger.sqlite3") as store:
        rid = store.entries()[0].record.referral_id
    out = tmp_path / "receipt.json"
    code, text = _cli(env, "receipt", rid[:8], "--event", "delivered", "--out", str(out))
    assert code == 0, text
    assert text == f"receipt of entry 7 of 8 written to {out}"
    data = out.read_bytes()
    doc = json.loads(data)
    assert (doc["entry"]["event"], doc["entry"]["actor"]) == ("DELIVERED", "hl-a")
    assert set(doc["keys"]) == {"router", "hl-a"}

    done = _clean_python(tmp_path, str(out))
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    assert done.stdout == (
        f"receipt holds: DELIVERED of referral {rid} by hl-a, entry 7 of 8 in "
        f"referral-broker/ledger/{settings.topic_names().ledger}, signed by router; "
        "keys from the receipt itself\n"
    )
    trust = Path(str(settings.network_file)).parent / "trust.toml"
    done = _clean_python(tmp_path, str(out), str(trust))
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("; keys from the trust file\n")

    # One changed byte, anywhere: the receipt no longer holds, and says why in one line.
    verifier = _verifier()
    for at in range(len(data)):
        changed = bytearray(data)
        changed[at] ^= 0x01
        with pytest.raises(verifier.Invalid):
            verifier.verify(bytes(changed))
    changed = bytearray(data)
    at = data.index(b'"to_party":"') + len(b'"to_party":"')
    changed[at] ^= 0x01
    bad = tmp_path / "changed.json"
    bad.write_bytes(bytes(changed))
    done = _clean_python(tmp_path, str(bad))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        "receipt does not hold: the entry is not in the signed tree: "
        "the proof leads to another root\n"
    )
    # A key the trust file does not hold is refused even when everything else agrees.
    other = tmp_path / "trust-other.toml"
    other.write_text("[orgs.router]\npublic = []\n", encoding="utf-8")
    done = _clean_python(tmp_path, str(out), str(other))
    assert done.returncode == 1
    assert "is not in the trust file" in done.stderr


def test_no_such_event_is_one_line_in_the_users_words(
    signed_ledger: tuple[Settings, dict[str, str]],
) -> None:
    settings, env = signed_ledger
    with LedgerStore(Path(settings.state_dir) / "ledger.sqlite3") as store:
        rid = store.entries()[0].record.referral_id
    code, text = _cli(env, "receipt", rid, "--event", "RESOLVED")
    assert code == 2
    assert "Traceback" not in text


def test_a_receipt_in_a_ten_million_entry_log_stays_under_2_kb(
    signed_ledger: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    """The real receipt (without its record) with the proof of a 10-million-entry log: 24 hashes."""
    settings, env = signed_ledger
    with LedgerStore(Path(settings.state_dir) / "ledger.sqlite3") as store:
        rid = store.entries()[0].record.referral_id
    code, text = _cli(env, "receipt", rid, "--no-record")
    assert code == 0, text
    doc = json.loads(text)
    assert doc["record"] is None
    assert set(doc["keys"]) == {"router"}
    verifier = _verifier()
    assert "record not included" in verifier.verify(text.encode() + b"\n")
    hashes = (10_000_000 - 1).bit_length()
    assert hashes == 24
    doc["proof"] = base64.b64encode(b"\xab" * 32 * hashes).decode()
    doc["size"], doc["index"] = 10_000_000, 9_999_999 - 1
    doc["checkpoint"] = doc["checkpoint"].replace("\n8\n", "\n10000000\n", 1)
    size = len(canonical(doc)) + 1
    assert size <= 2048, size


def test_a_witness_cosignature_travels_in_the_receipt_and_is_checked(
    signed_ledger: tuple[Settings, dict[str, str]], tmp_path: Path
) -> None:
    settings, _ = signed_ledger
    router = OrgKeys.load(key_dir(settings, ROUTER), ROUTER)
    witness = OrgKeys.load(key_dir(settings, "police-de"), "police-de")
    assert router is not None
    assert witness is not None
    with LedgerStore(Path(settings.state_dir) / "ledger.sqlite3") as store:
        tree = LedgerTree.of(store)
        head = TreeHead("referral-broker/ledger/x", len(tree.tree), tree.tree.root())
        note = sign_tree_head(head, ROUTER, router.signing)
        cosig, _ = witness_cosign(
            None, note, ROUTER, router.signing.public_key(), [], "police-de", witness.signing, 7
        )
        raw = witness.public_keys()[0].raw
        doc = receipt(
            store,
            3,
            origin=head.origin,
            log_name=ROUTER,
            log_key=router.signing,
            trust=TrustStore(k for o in ("hl-a", "police-de") for k in _public(settings, o)),
            cosignatures=(("police-de", raw, cosig.signature),),
        )
    data = canonical(doc) + b"\n"
    verifier = _verifier()
    assert verifier.verify(data).startswith("receipt holds: DELIVERED of referral ")
    assert ", signed by router, cosigned by 1 (police-de); " in verifier.verify(data)
    line = doc["checkpoint"].splitlines()[-1]
    assert line.startswith("\u2014 police-de ")
    forged = doc["checkpoint"].replace(
        line, line[:-6] + ("A" if line[-6] != "A" else "B") + line[-5:]
    )
    with pytest.raises(verifier.Invalid, match="police-de"):
        verifier.verify(canonical({**doc, "checkpoint": forged}) + b"\n")


def _public(settings: Settings, org: str) -> list[PublicKey]:
    keys = OrgKeys.load(key_dir(settings, org), org)
    assert keys is not None
    return keys.public_keys()
