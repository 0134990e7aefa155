"""Writers of one trust file at once (connectors rotating period keys): no key is lost."""

from __future__ import annotations

import multiprocessing
import os
import tomllib
from pathlib import Path

from broker.security.keys import PublicKey, add_to_trust_file


def _add(path: str, org: str, n: int) -> None:
    for i in range(n):
        add_to_trust_file(Path(path), [PublicKey(org, f"{org[-1]}{i:015d}", "enc", os.urandom(32))])


def test_processes_adding_keys_to_one_trust_file_at_once_lose_none(tmp_path: Path) -> None:
    trust = tmp_path / "trust.toml"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_add, args=(str(trust), f"police-{c}", 15)) for c in "abcd"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    orgs = tomllib.loads(trust.read_text())["orgs"]
    assert sorted(orgs) == [f"police-{c}" for c in "abcd"]
    assert [len(orgs[o]["public"]) for o in sorted(orgs)] == [15] * 4
