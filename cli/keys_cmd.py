"""``referral keys init|show|revoke``: an organisation's signing and encryption keys."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from broker.errors import ConfigError
from broker.network import Network
from broker.security.keys import (
    RELOAD_CHECK_SECONDS,
    ROUTER,
    OrgKeys,
    PublicKey,
    add_to_trust_file,
    init_keys,
    key_dir,
    load_trust,
    revoke_in_trust_file,
    trust_file_path,
)
from cli.app import NETWORK_OPTION, App, console, print_json, state

__all__ = ["app"]

app = App(help="Organisation keys: create, show public key ids, revoke.")

JSON_OPTION: Any = typer.Option(False, "--json", help="Machine-readable output.")


def _org(network: Network, org: str) -> None:
    if org != ROUTER:
        network.organisation(org)  # UnknownName naming the nearest


def _table_snippet(keys: list[PublicKey]) -> str:
    lines = ["[organisations.keys]", "revoked = []"]
    for k in keys:
        t = k.to_table()
        lines += [
            "[[organisations.keys.public]]",
            f'id = "{t["id"]}"',
            f'use = "{t["use"]}"',
            f'public = "{t["public"]}"',
        ]
    return "\n".join(lines)


@app.command("init")
def init_cmd(
    ctx: typer.Context,
    org: str = typer.Argument(..., help="Organisation id from the network file."),
    rotate: bool = typer.Option(False, "--rotate", help="Add new keys to existing ones."),
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """Create ORG's signing and encryption keys; add the public keys to the trust file."""
    st = state(ctx)
    network = st.network(network_file)
    _org(network, org)
    settings = st.settings
    directory = key_dir(settings, org)
    keys = init_keys(directory, org, rotate=rotate)
    console.print(f"keys of {org} in {directory} (private key files mode 0600, never printed)")
    for k in keys:
        console.print(f"  {k.use:4} {k.id}")
    trust = trust_file_path(network, settings.network_file)
    if trust is not None:
        add_to_trust_file(trust, keys)
        console.print(f"public keys added to {trust}; share it with the network")
    else:
        console.print("the network file names no trust_file; add this to the organisation's table:")
        console.print(_table_snippet(keys), markup=False)
    _oprf_key(network, settings, org, rotate)


def _oprf_key(network: Network, settings: Any, org: str, rotate: bool) -> None:
    """The evaluator of ``[known]`` also gets an OPRF key (a new current one on --rotate)."""
    if network.known is None or network.known.evaluator != org:
        return
    from broker.known.keystore import OprfKeys, oprf_dir

    store = OprfKeys(oprf_dir(settings, org))
    if store.exists() and not rotate:
        return
    kid = store.create()
    console.print(
        f"  oprf {kid} (match-token key; a running evaluator takes it on its next request)"
    )


@app.command("show")
def show_cmd(
    ctx: typer.Context,
    org: str = typer.Argument(..., help="Organisation id from the network file."),
    network_file: Path | None = NETWORK_OPTION,
    as_json: bool = JSON_OPTION,
) -> None:
    """Public key ids of ORG: held locally, and trusted by the network (with revocations)."""
    st = state(ctx)
    network = st.network(network_file)
    _org(network, org)
    settings = st.settings
    local = OrgKeys.load(key_dir(settings, org), org)
    store = load_trust(network, settings.network_file)
    held = {k.id for k in local.public_keys()} if local else set()
    rows: list[dict[str, Any]] = [
        {"id": k.id, "use": k.use, "held_here": k.id in held, "revoked": k.id in store.revoked}
        for k in store.keys_of(org) + store.revoked_keys(org)
    ]
    known = {r["id"] for r in rows}
    rows += [
        {"id": k.id, "use": k.use, "held_here": True, "revoked": k.id in store.revoked}
        for k in (local.public_keys() if local else [])
        if k.id not in known
    ]
    if as_json:
        print_json({"org": org, "keys": rows})
        return
    if not rows:
        console.print(f"{org} has no keys (run `referral keys init {org}`)")
        return
    table = Table(title=f"keys of {org}")
    for col in ("key id", "use", "held here", "trusted"):
        table.add_column(col)
    for r in rows:
        trusted = "revoked" if r["revoked"] else ("yes" if r["id"] in known else "no")
        table.add_row(str(r["id"]), str(r["use"]), "yes" if r["held_here"] else "-", trusted)
    console.print(table)


@app.command("revoke")
def revoke_cmd(
    ctx: typer.Context,
    org: str = typer.Argument(..., help="Organisation id from the network file."),
    kid: str = typer.Argument(..., help="The key id to revoke."),
    network_file: Path | None = NETWORK_OPTION,
) -> None:
    """Revoke one of ORG's keys in the trust file: its signatures and sealing are refused."""
    st = state(ctx)
    network = st.network(network_file)
    _org(network, org)
    trust = trust_file_path(network, st.settings.network_file)
    if trust is None:
        raise ConfigError(
            "the network file names no trust_file; add the key id to the organisation's "
            "keys.revoked list instead"
        )
    revoke_in_trust_file(trust, org, kid)
    console.print(
        f"key {kid} of {org} revoked in {trust}; running connectors refuse it within "
        f"{RELOAD_CHECK_SECONDS:g} s (plus the batch in hand)"
    )
