"""A fault matrix you can run: ``python -m bench.faults [--n N] [--scenario NAME] [--out FILE]``.

Each scenario starts a fresh embedded broker and a signed network (plain
referrals refused) whose every component is its own process: ``referral
route`` and ``referral connector run ORG`` for two hotlines (``hl-a`` through
its drop folder, ``hl-b`` through its HTTP intake) and three police sinks (an
inbox folder, a SQLite case table, a webhook to a loopback case system run
here). ``--n`` referrals are published in waves, each naming two of the three
jurisdictions, while one fault is injected:

* ``router-killed`` — the router is SIGKILLed twice and started again;
* ``connectors-killed`` — every police connector and one hotline are SIGKILLed and started again;
* ``broker-empty-restart`` — the broker is SIGKILLed and an empty one started on the
  same port, the topics provisioned again; no other process is restarted;
* ``broker-late-topics-40`` / ``-120`` — the same, the topics provisioned only 40 / 120 s
  after the broker is back (publishing goes on meanwhile);
* ``broker-restart-burners`` — the same with three CPU-burning processes beside it;
* ``webhook-500`` — the case system answers 500 for a while;
* ``sink-4xx`` — the case system refuses some referrals for good (400): each must come
  back to its origin as REJECTED and leave the outbox refused, never pending.

Then it counts per recipient: expected, delivered, duplicated, missing; per
origin the outbox entries still pending and the sends per referral; and the
seconds it took to settle (every expected delivery made and no outbox entry
pending) after the last fault ended. ``--out`` writes the table as Markdown
(``bench/FAULTS.md``). Exit status 1 if a scenario missed, duplicated or did
not settle within ``--settle-budget`` seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from broker.config import Settings
from broker.kafka import clients
from broker.kafka.embedded import EmbeddedBroker
from broker.kafka.provision import provision
from broker.network import parse_network
from broker.security.keys import ROUTER, add_to_trust_file, init_keys, key_dir
from broker.synthetic import synthetic_referral

__all__ = ["SCENARIOS", "CaseSystem", "Net", "Row", "main", "markdown", "run_scenario"]

TOKEN_ENV = "FAULTS_TOKEN_HL_B"
TOKEN = "faults-intake-token-not-a-real-one"
SECRET_ENV = "FAULTS_WEBHOOK_SECRET"
SECRET = "faults-webhook-secret-not-a-real-one"
HOTLINES = ("hl-a", "hl-b")
#: (origin, referral JSON as a source takes it, its recipients)
Planned = tuple[str, dict[str, Any], tuple[str, ...]]
#: Recipient → (jurisdiction, sink kind).
POLICE = {
    "police-nl": ("NL", "inbox_folder"),
    "police-de": ("DE", "sqlite"),
    "police-fr": ("FR", "webhook"),
}
PAIRS = [("NL", "DE"), ("DE", "FR"), ("FR", "NL")]
SCENARIOS = (
    "router-killed",
    "connectors-killed",
    "broker-empty-restart",
    "broker-late-topics-40",
    "broker-late-topics-120",
    "broker-restart-burners",
    "webhook-500",
    "sink-4xx",
)
#: Broker-restart scenarios → (seconds from the broker's return to the provisioning, CPU burners).
RESTARTS = {
    "broker-empty-restart": (0.0, 0),
    "broker-late-topics-40": (40.0, 0),
    "broker-late-topics-120": (120.0, 0),
    "broker-restart-burners": (0.0, 3),
}
#: A process that burns one CPU until killed.
BURNER = "while True: pass"
WAVES = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CaseSystem:
    """The webhook's case system on loopback: one case per Idempotency-Key; can fail.

    As a real receiver of the webhook contract does, a POST repeating a key it has
    answered 2xx opens no second case: it is answered 200 again and counted in
    ``reposted`` (a sink killed between its POST and its inbox record must post
    again: at least once). ``accepted`` counts cases per referral id.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted: Counter[str] = Counter()
        self.reposted: Counter[str] = Counter()
        self._keys: set[str] = set()
        self.refused_posts: Counter[str] = Counter()
        #: Referral ids answered 400 every time.
        self.refuse: set[str] = set()
        #: Until this monotonic time every POST is answered 500.
        self.outage_until = 0.0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rid = self.headers.get("X-Referral-Id") or ""
                key = self.headers.get("Idempotency-Key") or rid
                with owner.lock:
                    if time.monotonic() < owner.outage_until:
                        code = 500
                    elif rid in owner.refuse:
                        code = 400
                        owner.refused_posts[rid] += 1
                    elif key in owner._keys:
                        code = 200
                        owner.reposted[rid] += 1
                    else:
                        code = 200
                        owner._keys.add(key)
                        owner.accepted[rid] += 1
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        """Where the webhook posts."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/cases"

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


def _network_toml(run: Path, hook_url: str, intake_port: int, republish_after: float) -> str:
    outbox = (
        "[organisations.connectors.outbox]\n"
        f"republish_after = {republish_after}\ncheck_interval = 0.5\n"
    )
    parts = [
        '[network]\nname = "fault matrix"\nallow_plain = false\ntrust_file = "trust.toml"\n',
        "[topics]\npartitions = 3\n",
        '[[organisations]]\nid = "hl-a"\nname = "Faults hotline A"\nrole = "hotline"\n'
        'country = "NL"\n'
        '[organisations.connectors.drop_folder]\npath = "orgs/hl-a/drop"\npoll_interval = 0.2\n'
        'settle_seconds = 0\n[organisations.connectors.status_folder]\npath = "orgs/hl-a/status"\n'
        + outbox,
        '[[organisations]]\nid = "hl-b"\nname = "Faults hotline B"\nrole = "hotline"\n'
        'country = "DE"\n'
        f'[organisations.connectors.http_intake]\nhost = "127.0.0.1"\nport = {intake_port}\n'
        f'token_env = "{TOKEN_ENV}"\n[organisations.connectors.status_folder]\n'
        'path = "orgs/hl-b/status"\n' + outbox,
        '[[organisations]]\nid = "police-nl"\nname = "Faults police NL"\nrole = "police"\n'
        'country = "NL"\n[organisations.connectors.inbox_folder]\npath = "orgs/police-nl/inbox"\n',
        '[[organisations]]\nid = "police-de"\nname = "Faults police DE"\nrole = "police"\n'
        'country = "DE"\n[organisations.connectors.sqlite]\n'
        'path = "orgs/police-de/cases.sqlite3"\n',
        '[[organisations]]\nid = "police-fr"\nname = "Faults police FR"\nrole = "police"\n'
        f'country = "FR"\n[organisations.connectors.webhook]\nurl = "{hook_url}"\n'
        f'secret_env = "{SECRET_ENV}"\ntimeout = 2.0\nmax_attempts = 3\nbackoff_initial = 0.05\n'
        "backoff_max = 0.2\n",
        '[[organisations]]\nid = "secretariat"\nname = "Faults secretariat"\nrole = "fallback"\n'
        'country = "NL"\n',
        '[routing]\nfallback = "secretariat"\n[routing.jurisdictions]\n'
        'NL = ["police-nl"]\nDE = ["police-de"]\nFR = ["police-fr"]\n',
    ]
    return "\n".join(parts)


@dataclass
class Net:
    """One scenario's network: its broker, its processes, its case system and its state."""

    run: Path
    broker: EmbeddedBroker
    hook: CaseSystem
    intake_port: int
    settings: Settings
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    burners: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: When the topics were provisioned after the broker's restart (monotonic seconds).
    provisioned_at: float | None = None
    provisioner: threading.Thread | None = None

    def env(self) -> dict[str, str]:
        """Environment of every process of the network."""
        env = dict(os.environ)
        env.update(
            {
                "REFERRAL_BOOTSTRAP_SERVERS": str(self.settings.bootstrap_servers),
                "REFERRAL_STATE_DIR": str(self.settings.state_dir),
                "REFERRAL_NETWORK_FILE": str(self.settings.network_file),
                TOKEN_ENV: TOKEN,
                SECRET_ENV: SECRET,
            }
        )
        return env

    def start(self, name: str) -> None:
        """Start ``router`` or the connectors of organisation ``name`` as a process."""
        args = ["route"] if name == "router" else ["connector", "run", name]
        with open(self.run / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "cli", *args],
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self, name: str) -> None:
        """SIGKILL one process of the network, as a crash would, and reap it."""
        proc = self.procs[name]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def provision(self) -> None:
        """Create the network's topics (again)."""
        network = parse_network(Path(self.settings.network_file).read_text(), "network.toml")
        admin = clients.admin_client(self.settings)
        try:
            provision(admin, network, self.settings.topic_names())
        finally:
            admin.close()

    def burn(self, n: int) -> None:
        """Start ``n`` processes that each burn a CPU until :meth:`stop`."""
        for _ in range(n):
            self.burners.append(subprocess.Popen([sys.executable, "-c", BURNER]))

    def provision_later(self, delay: float) -> None:
        """Provision the topics ``delay`` seconds from now, in a thread; note when."""

        def later() -> None:
            time.sleep(delay)
            self.provision()
            self.provisioned_at = time.monotonic()

        self.provisioner = threading.Thread(target=later, name="provision-later", daemon=True)
        self.provisioner.start()

    def stop(self) -> None:
        """SIGTERM every process (SIGKILL after 15 s), then the broker and the case system."""
        for burner in self.burners:
            burner.kill()
            burner.wait(5)
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.broker.stop()
        self.hook.close()


def make_net(run: Path, republish_after: float) -> Net:
    """Write the network, make keys for everyone, start a broker, provision, start every process."""
    run.mkdir(parents=True, exist_ok=True)
    hook = CaseSystem()
    port = _free_port()
    (run / "network.toml").write_text(_network_toml(run, hook.url, port, republish_after))
    broker = EmbeddedBroker(log_path=run / "broker.log").start()
    settings = Settings(
        bootstrap_servers=broker.bootstrap, state_dir=run, network_file=run / "network.toml"
    )
    for org in (*HOTLINES, *POLICE, "secretariat", ROUTER):
        add_to_trust_file(run / "trust.toml", init_keys(key_dir(settings, org), org))
    net = Net(run, broker, hook, port, settings)
    net.provision()
    for name in ("router", *POLICE, *HOTLINES):
        net.start(name)
    return net


# -- publishing and counting ----------------------------------------------------------------


def make_referrals(n: int, seed: int) -> list[Planned]:
    """``n`` synthetic referrals: (origin, referral JSON, recipients), origins and pairs in turn."""
    rng = random.Random(seed)
    by_cc = {cc: org for org, (cc, _) in POLICE.items()}
    out: list[Planned] = []
    for i in range(n):
        first, second = PAIRS[i % len(PAIRS)]
        origin = HOTLINES[i % 2]
        ref = synthetic_referral(rng, origin, [(first, "HOSTING"), (second, "VICTIM_LOCATION")])
        out.append((origin, ref, (by_cc[first], by_cc[second])))
    return out


def publish(net: Net, wave: int, refs: list[dict[str, Any]], origin: str) -> None:
    """Hand one wave to a hotline: a drop file (``hl-a``) or HTTP POSTs (``hl-b``, retried)."""
    if not refs:
        return
    if origin == "hl-a":
        drop = net.run / "orgs" / "hl-a" / "drop"
        drop.mkdir(parents=True, exist_ok=True)
        tmp = drop / f".wave-{wave}.tmp"
        tmp.write_text("".join(json.dumps(r) + "\n" for r in refs))
        tmp.rename(drop / f"wave-{wave}.jsonl")
        return
    url = f"http://127.0.0.1:{net.intake_port}/referrals"
    for i in range(0, len(refs), 50):
        chunk = refs[i : i + 50]
        deadline = time.monotonic() + 90
        while True:
            try:
                r = httpx.post(
                    url, json=chunk, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
                )
                if r.status_code == 202:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"HTTP intake of hl-b did not take wave {wave}")
            time.sleep(0.5)


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    if not path.exists():
        return []
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return list(db.execute(sql))
    except sqlite3.OperationalError:
        return []


def deliveries(net: Net) -> dict[str, Counter[str]]:
    """Deliveries per recipient, by referral id, as the organisations' systems hold them."""
    folder = net.run / "orgs" / "police-nl" / "inbox"
    nl = Counter(p.stem for p in folder.glob("*.json")) if folder.exists() else Counter()
    de = Counter(
        str(r[0])
        for r in _rows(
            net.run / "orgs" / "police-de" / "cases.sqlite3", "SELECT referral_id FROM cases"
        )
    )
    with net.hook.lock:
        fr = Counter(net.hook.accepted)
    return {"police-nl": nl, "police-de": de, "police-fr": fr}


def outbox_state(net: Net) -> dict[str, tuple[int, int, list[int]]]:
    """Per origin: (pending, refused, sends per referral) from its outbox file."""
    out = {}
    for org in HOTLINES:
        path = net.run / "orgs" / org / "outbox.sqlite3"
        sends = [int(r[0]) for r in _rows(path, "SELECT attempts FROM referrals")]
        pending = _rows(path, "SELECT COUNT(*) FROM referrals WHERE completed_at IS NULL")
        refused = _rows(path, "SELECT COUNT(DISTINCT referral_id) FROM refused")
        out[org] = (
            int(pending[0][0]) if pending else -1,
            int(refused[0][0]) if refused else 0,
            sends,
        )
    return out


@dataclass
class Row:
    """One line of the table: a scenario's counts for one recipient (and the totals)."""

    scenario: str
    recipient: str
    expected: int
    delivered: int
    duplicated: int
    missing: int
    refused: int
    pending: int
    sends_mean: float
    sends_max: int
    settle_s: float | None
    faults: str
    #: POSTs that repeated an answered Idempotency-Key (no second case; webhook only)
    reposted: int = 0


def _expected(
    refs: list[tuple[str, dict[str, Any], tuple[str, ...]]], refused: set[str]
) -> dict[str, set[str]]:
    want: dict[str, set[str]] = {org: set() for org in POLICE}
    for _, ref, recipients in refs:
        rid = str(ref["envelope"]["referral_id"])
        for org in recipients:
            if not (org == "police-fr" and rid in refused):
                want[org].add(rid)
    return want


def _settled(net: Net, want: dict[str, set[str]], n: int) -> bool:
    got = deliveries(net)
    if any(set(got[org]) != want[org] for org in POLICE):
        return False
    state = outbox_state(net)
    return sum(len(s[2]) for s in state.values()) == n and all(s[0] == 0 for s in state.values())


# -- scenarios -------------------------------------------------------------------------------


def _fault(net: Net, scenario: str, wave: int, log: list[str]) -> None:
    """Inject ``scenario``'s fault before ``wave`` (some waves only)."""
    if scenario == "router-killed" and wave in (2, 4):
        net.kill("router")
        log.append(f"router SIGKILL w{wave}")
        time.sleep(2)
        net.start("router")
    elif scenario == "connectors-killed" and wave in (2, 4):
        victims = [*POLICE, "hl-a"] if wave == 2 else list(POLICE)
        for name in victims:
            net.kill(name)
        log.append(f"{len(victims)} connectors SIGKILL w{wave}")
        time.sleep(2)
        for name in victims:
            net.start(name)
    elif scenario in RESTARTS and wave == 3:
        delay, burners = RESTARTS[scenario]
        net.burn(burners)
        port = net.broker.port
        assert net.broker.pid is not None
        os.kill(net.broker.pid, signal.SIGKILL)
        net.broker.stop()
        time.sleep(3)
        net.broker = EmbeddedBroker(port=port, log_path=net.run / "broker-2.log").start()
        time.sleep(2)  # clients reconnect before the operator provisions
        if delay:
            net.provision_later(delay)
        else:
            net.provision()
            net.provisioned_at = time.monotonic()
        log.append(
            f"broker empty restart w{wave}"
            + (f", topics {delay:g} s later" if delay else "")
            + (f", {burners} CPU burners" if burners else "")
        )
    elif scenario == "webhook-500" and wave == 2:
        with net.hook.lock:
            net.hook.outage_until = time.monotonic() + 10
        log.append("webhook 500 for 10 s")


def run_scenario(
    scenario: str,
    n: int,
    work: Path,
    *,
    seed: int = 13,
    settle_budget: float = 60.0,
    republish_after: float = 5.0,
) -> list[Row]:
    """Run one scenario on a fresh network; its rows (one per recipient, then ``all``)."""
    refs = make_referrals(n, seed + SCENARIOS.index(scenario))
    refused: set[str] = set()
    if scenario == "sink-4xx":
        fr = [str(r["envelope"]["referral_id"]) for _, r, to in refs if "police-fr" in to]
        refused = set(fr[::10])
    want = _expected(refs, refused)
    net = make_net(work / scenario, republish_after=republish_after)
    net.hook.refuse = set(refused)
    log: list[str] = [f"webhook 400 for {len(refused)} referrals"] if refused else []
    settle_s: float | None = None
    try:
        per_wave = -(-n // WAVES)
        last_fault = time.monotonic()
        for wave in range(WAVES):
            before = time.monotonic()
            _fault(net, scenario, wave, log)
            if time.monotonic() - before > 0.1 or (scenario == "webhook-500" and wave == 2):
                last_fault = time.monotonic()
            chunk = refs[wave * per_wave : (wave + 1) * per_wave]
            for origin in HOTLINES:
                publish(net, wave, [r for o, r, _ in chunk if o == origin], origin)
            time.sleep(1)
        if scenario == "webhook-500":
            last_fault = max(last_fault, net.hook.outage_until)
        if net.provisioner is not None:
            net.provisioner.join()
        if net.provisioned_at is not None:
            last_fault = max(last_fault, net.provisioned_at)
        last = max(last_fault, time.monotonic())
        deadline = last + settle_budget
        while time.monotonic() < deadline:
            if _settled(net, want, n):
                settle_s = round(time.monotonic() - last_fault, 1)
                break
            time.sleep(0.5)
        got = deliveries(net)
        state = outbox_state(net)
        with net.hook.lock:
            reposted = sum(net.hook.reposted.values())
    finally:
        net.stop()
    sends = [s for st in state.values() for s in st[2]]
    pending = sum(max(st[0], 0) for st in state.values())
    rows = []
    for org in POLICE:
        delivered = set(got[org])
        rows.append(
            Row(
                scenario,
                org,
                len(want[org]),
                len(delivered & want[org]),
                sum(c - 1 for c in got[org].values() if c > 1) + len(delivered - want[org]),
                len(want[org] - delivered),
                len(refused) if org == "police-fr" else 0,
                pending,
                round(sum(sends) / len(sends), 2) if sends else 0.0,
                max(sends, default=0),
                settle_s,
                "; ".join(log),
                reposted if org == "police-fr" else 0,
            )
        )
    refused_at_origin = sum(st[1] for st in state.values())
    if refused and refused_at_origin != len(refused):
        log.append(f"refused at origins {refused_at_origin} != {len(refused)}")
        rows[-1].faults = "; ".join(log)
        rows[-1].missing += abs(len(refused) - refused_at_origin)
    return rows


def markdown(rows: list[Row], n: int, republish_after: float = 5.0) -> str:
    """The table of a run, in Markdown."""
    head = (
        "| scenario | recipient | expected | delivered | duplicated | missing | refused (4xx) "
        "| reposted (same key) | outbox pending | sends/referral (mean, max) "
        "| settled after last fault (s) | faults |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n"
    )
    lines = [
        f"| {r.scenario} | {r.recipient} | {r.expected} | {r.delivered} | {r.duplicated} "
        f"| {r.missing} | {r.refused} | {r.reposted} | {r.pending} | {r.sends_mean}, {r.sends_max} "
        f"| {r.settle_s if r.settle_s is not None else 'NOT SETTLED'} | {r.faults} |"
        for r in rows
    ]
    return (
        "# Fault matrix\n\n"
        f"`python -m bench.faults --n {n} --republish-after {republish_after:g}` "
        f"({n} referrals per scenario, each for two of the "
        "three police sinks; every component its own process; signed network). "
        "Settled = every expected delivery made and no outbox entry pending, counted from the "
        "end of the last fault (from the start where the fault is a standing one, 4xx). "
        "The webhook's case system opens one case per Idempotency-Key, as the contract asks; "
        "reposted counts POSTs that repeated a key (a sink killed between POST and record). "
        "Written by `bench/faults.py`.\n\n" + head + "\n".join(lines) + "\n"
    )


def failures(rows: list[Row], settle_budget: float) -> list[str]:
    """What breaks the promise: missing, duplicated, pending or not settled in time."""
    bad = []
    for r in rows:
        if r.missing or r.duplicated or r.pending:
            bad.append(f"{r.scenario}/{r.recipient}: {r.missing} missing, {r.duplicated} dup")
        if r.settle_s is None or r.settle_s > settle_budget:
            bad.append(f"{r.scenario}/{r.recipient}: settled after {r.settle_s}")
    return bad


def main(argv: list[str] | None = None) -> None:
    """Run the matrix, print the table (or JSON), write ``--out``; exit 1 on a broken promise."""
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument("--n", type=int, default=300, help="Referrals per scenario.")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="Repeatable.")
    parser.add_argument("--out", type=Path, help="Write the Markdown table here.")
    parser.add_argument("--json", action="store_true", help="Print rows as JSON.")
    parser.add_argument("--settle-budget", type=float, default=60.0)
    parser.add_argument(
        "--republish-after", type=float, default=5.0, help="Outbox republish interval (s)."
    )
    parser.add_argument("--work", type=Path, help="Keep the runs' state and logs here.")
    parser.add_argument("--repeat", type=int, default=1, help="Runs of each scenario in a row.")
    args = parser.parse_args(argv)
    work = args.work or Path(tempfile.mkdtemp(prefix="faults-"))
    rows: list[Row] = []
    for scenario in args.scenario or SCENARIOS:
        for run in range(1, args.repeat + 1):
            got = run_scenario(
                scenario,
                args.n,
                work / f"run-{run}",
                settle_budget=args.settle_budget,
                republish_after=args.republish_after,
            )
            if args.repeat > 1:
                for row in got:
                    row.scenario = f"{scenario} (run {run})"
            rows += got
            print(f"{scenario} run {run}: done", file=sys.stderr, flush=True)
    table = markdown(rows, args.n, args.republish_after)
    if args.out:
        args.out.write_text(table, encoding="utf-8")
    print(json.dumps([asdict(r) for r in rows], indent=2) if args.json else table)
    bad = failures(rows, args.settle_budget)
    if bad:
        print("\n".join(bad), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
