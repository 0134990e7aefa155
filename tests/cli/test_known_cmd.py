"""``referral keys init`` gives the [known] evaluator an OPRF key; ``--rotate`` a new one."""

from __future__ import annotations

import stat
from pathlib import Path

from typer.testing import CliRunner

from broker.known.keystore import OprfKeys
from cli.main import app
from tests.conftest import EXAMPLE_NETWORK


def _run(tmp_path: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        app, ["--network", str(EXAMPLE_NETWORK), "--state-dir", str(tmp_path / "state"), *args]
    )
    return result.exit_code, result.output


def test_the_evaluator_gets_an_oprf_key_and_rotates_it_by_hand(tmp_path: Path) -> None:
    store = OprfKeys(tmp_path / "state" / "orgs" / "secretariat" / "keys" / "oprf")
    code, out = _run(tmp_path, "keys", "init", "secretariat")
    assert code == 0, out
    first = store.ring().current.key_id
    assert f"oprf {first}" in out
    seed = store.directory / f"{first}.seed"
    assert stat.S_IMODE(seed.stat().st_mode) == 0o600
    assert seed.read_bytes().hex() not in out
    code, out = _run(tmp_path, "keys", "init", "secretariat", "--rotate")
    assert code == 0, out
    second = store.ring().current.key_id
    assert second != first
    assert set(store.ring().key_ids()) == {first, second}
    # Another organisation gets no OPRF key.
    code, out = _run(tmp_path, "keys", "init", "hl-nl")
    assert code == 0, out
    assert "oprf" not in out
    assert not (tmp_path / "state" / "orgs" / "hl-nl" / "keys" / "oprf").exists()
