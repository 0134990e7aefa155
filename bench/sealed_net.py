"""The benchmarks' network: hotlines, three police sinks (one of each kind), keys for all.

The network file is written into the run's state directory the way ``referral
demo`` prepares its sealed run: plain referrals refused (``allow_plain = false``),
an Ed25519 + X25519 key pair made for every organisation with
:func:`broker.security.keys.init_keys` and its public half added to the trust
file. Every referral names two jurisdictions served by different police sinks,
so the origin seals it for two recipients and each sink kind gets two thirds of
the referrals.

The webhook sink posts to :class:`WebhookReceiver`, a loopback HTTP server run
by the benchmark itself, which checks each request's HMAC signature and notes
when each referral arrived.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from broker.config import Settings
from broker.network import Network
from broker.routing.decide import add_hosting_jurisdictions
from broker.security.keys import add_to_trust_file, init_keys, key_dir
from broker.synthetic import synthetic_referral
from broker.wire.models import Referral
from connectors.webhook import SIGNATURE_HEADER, verify

__all__ = [
    "HOTLINES",
    "PAIRS",
    "SINKS",
    "WEBHOOK_SECRET_ENV",
    "BenchReferral",
    "WebhookReceiver",
    "avro_datum",
    "bench_env",
    "bench_settings",
    "make_referrals",
    "write_network",
]

#: Hotline organisations (id, country); the first ``--hotlines`` of them publish.
HOTLINES: list[tuple[str, str]] = [("hl-nl", "NL"), ("hl-de", "DE"), ("hl-se", "SE")]
#: Sink kind → (police organisation, the jurisdiction it serves).
SINKS: dict[str, tuple[str, str]] = {
    "inbox_folder": ("police-nl", "NL"),
    "sqlite": ("police-de", "DE"),
    "webhook": ("police-fr", "FR"),
}
WEBHOOK_SECRET_ENV = "REFERRAL_WEBHOOK_SECRET_POLICE_FR"
#: A fixed, synthetic HMAC secret: the receiver is a loopback server of the benchmark.
WEBHOOK_SECRET = "bench-webhook-secret-not-a-real-one"
#: Jurisdiction pairs, in turn: every referral goes to two different sink kinds.
PAIRS: list[tuple[str, str]] = [("NL", "DE"), ("DE", "FR"), ("FR", "NL")]

#: (origin org, referral JSON as a source accepts it, recipient org ids)
BenchReferral = tuple[str, dict[str, Any], tuple[str, ...]]


def _sink_toml(kind: str, org: str, webhook_url: str) -> str:
    if kind == "inbox_folder":
        return f'[organisations.connectors.inbox_folder]\npath = "orgs/{org}/inbox"\n'
    if kind == "sqlite":
        return f'[organisations.connectors.sqlite]\npath = "orgs/{org}/cases.sqlite3"\n'
    return (
        "[organisations.connectors.webhook]\n"
        f'url = "{webhook_url}"\n'
        f'secret_env = "{WEBHOOK_SECRET_ENV}"\n'
        "max_attempts = 3\n"
        "backoff_initial = 0.1\n"
    )


def write_network(run_dir: Path, webhook_url: str, *, partitions: int = 3) -> Path:
    """Write ``<run_dir>/network.toml`` and ``trust.toml``, make every organisation's keys."""
    run_dir.mkdir(parents=True, exist_ok=True)
    parts = [
        "# Written by the benchmark: sealed and signed referrals only.\n",
        '[network]\nname = "Benchmark network"\nallow_plain = false\ntrust_file = "trust.toml"\n',
        f"[topics]\npartitions = {partitions}\n",
    ]
    orgs: list[str] = []
    for org, cc in HOTLINES:
        parts.append(
            f'[[organisations]]\nid = "{org}"\nname = "Bench hotline {cc}"\n'
            f'role = "hotline"\ncountry = "{cc}"\n'
        )
        orgs.append(org)
    for kind, (org, cc) in SINKS.items():
        parts.append(
            f'[[organisations]]\nid = "{org}"\nname = "Bench police {cc}"\n'
            f'role = "police"\ncountry = "{cc}"\n' + _sink_toml(kind, org, webhook_url)
        )
        orgs.append(org)
    parts.append(
        '[[organisations]]\nid = "secretariat"\nname = "Bench secretariat"\n'
        'role = "fallback"\ncountry = "NL"\n'
    )
    orgs.append("secretariat")
    routes = "".join(f'{cc} = ["{org}"]\n' for org, cc in SINKS.values())
    parts.append(f'[routing]\nfallback = "secretariat"\n\n[routing.jurisdictions]\n{routes}')
    path = run_dir / "network.toml"
    path.write_text("\n".join(parts), encoding="utf-8")
    keys_settings = Settings(state_dir=run_dir, network_file=path)
    trust = run_dir / "trust.toml"
    for org in orgs:
        add_to_trust_file(trust, init_keys(key_dir(keys_settings, org), org))
    return path


def bench_settings(bootstrap: str, run_dir: Path) -> Settings:
    """Settings of every process of one run (tracing off, as deployed by default)."""
    return Settings(
        bootstrap_servers=bootstrap,
        state_dir=run_dir,
        network_file=run_dir / "network.toml",
    )


def bench_env(settings: Settings) -> dict[str, str]:
    """Environment variables that give a worker or CLI process the same settings."""
    return {
        "REFERRAL_BOOTSTRAP_SERVERS": str(settings.bootstrap_servers),
        "REFERRAL_STATE_DIR": str(settings.state_dir),
        "REFERRAL_NETWORK_FILE": str(settings.network_file),
        "REFERRAL_TOPIC_PREFIX": settings.topic_prefix,
        WEBHOOK_SECRET_ENV: WEBHOOK_SECRET,
    }


def make_referrals(
    n: int, origins: Sequence[str], *, seed: int, pairs: Sequence[tuple[str, str]] = PAIRS
) -> list[BenchReferral]:
    """``n`` synthetic referrals, origins and jurisdiction pairs in turn."""
    rng = random.Random(seed)
    receivers = {cc: org for org, cc in SINKS.values()}
    out: list[BenchReferral] = []
    for i in range(n):
        first, second = pairs[i % len(pairs)]
        origin = origins[i % len(origins)]
        ref = synthetic_referral(rng, origin, [(first, "HOSTING"), (second, "VICTIM_LOCATION")])
        out.append((origin, ref, tuple(sorted({receivers[first], receivers[second]}))))
    return out


def avro_datum(network: Network, raw: dict[str, Any]) -> dict[str, Any]:
    """The Avro datum a publisher encodes for ``raw`` (completed, validated, hosting added)."""
    envelope = raw["envelope"]
    country = network.organisation(envelope["origin_org"]).country
    datum = Referral.model_validate(
        {**raw, "envelope": {**envelope, "origin_country": country}}
    ).to_avro()
    env = datum["envelope"]
    env["jurisdictions"] = add_hosting_jurisdictions(env["jurisdictions"], datum["body"]["items"])
    return datum


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a case system would answer
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        now = time.time()
        ok = verify(self.server.secret, body, self.headers.get(SIGNATURE_HEADER))
        self.server.receiver.arrived(self.headers.get("X-Referral-Id") or "", now, ok)
        self.send_response(200 if ok else 401)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: one line per request would flood the terminal."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: WebhookReceiver
    secret: SecretStr


class WebhookReceiver:
    """A case system on loopback: checks signatures, remembers when each referral arrived."""

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self._server.secret = SecretStr(WEBHOOK_SECRET)
        self._lock = threading.Lock()
        #: referral id → first arrival (time.time())
        self.arrivals: dict[str, float] = {}
        self.requests = 0
        self.bad_signatures = 0
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where the webhook sink posts."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/referrals"

    def arrived(self, referral_id: str, at: float, signed: bool) -> None:
        """Note one request."""
        with self._lock:
            self.requests += 1
            if not signed:
                self.bad_signatures += 1
                return
            self.arrivals.setdefault(referral_id, at)

    def start(self) -> WebhookReceiver:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
