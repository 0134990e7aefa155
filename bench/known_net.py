"""Known content across three hotlines on the real broker: the issue-24 scenario, any size.

Three hotlines (hl-a, hl-b, hl-c) publish ``items`` synthetic items, ``repeats`` of
them repeats of an item another hotline published first (half the same exact
hashes under a new URL, half the same URL with new hashes). Every referral goes
to police-fr, sealed and signed, through the router; each origin tokenises what
it published onto ``match.tokens`` (:class:`~broker.known.publish.KnownPublisher`),
police-fr's sink driver tokenises what it received (:class:`KnownSink`), and its
index, synced from ``match.tokens``, marks each item. One in ten original
referrals is TLP RED (the mark then names only the holder).

:func:`run` returns the counts the tests assert on and the benchmark reports:
marked repeats (with the right holder and the earlier classification), false
matches, what the origins were told before publishing, the canary scan of every
topic and of the evaluator's and operator's stores, and the attacker's guesses.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from broker.config import Settings
from broker.kafka import clients
from broker.kafka.provision import provision
from broker.kafka.reader import TopicReader
from broker.known import oprf
from broker.known.client import EvaluationClient
from broker.known.index import MatchIndex
from broker.known.keystore import OprfKeys, oprf_dir
from broker.known.normalise import hash_input
from broker.known.publish import KnownPublisher, KnownSink
from broker.known.service import EvaluationService
from broker.known.tokens import TOKEN_BYTES, EvaluatorKey
from broker.network import Network, parse_network
from broker.origin.outbox import Outbox
from broker.origin.publisher import Publisher
from broker.receiver.inbox import Inbox
from broker.receiver.sink_driver import SinkDriver
from broker.routing.router import Router
from broker.security.keys import ROUTER, LiveKeys, add_to_trust_file, init_keys, key_dir
from broker.security.rules import ReceiverSecurity
from broker.wire.codec import Codec

__all__ = [
    "HOTLINES",
    "NETWORK",
    "RECEIVER",
    "Outcome",
    "known_network",
    "run",
    "running_evaluator",
]

HOTLINES = ("hl-a", "hl-b", "hl-c")
COUNTRIES = {"hl-a": "NL", "hl-b": "DE", "hl-c": "SE"}
RECEIVER = "police-fr"
PER_REFERRAL = 10
CLASSES = ("BASELINE", "NATIONAL")

NETWORK = """
[network]
name = "known-content network"
allow_plain = false
trust_file = "{trust}"

[known]
evaluator = "secretariat"
rate_items = {rate}
rate_seconds = 3600

[[organisations]]
id = "hl-a"
name = "Hotline A"
role = "hotline"
country = "NL"

[[organisations]]
id = "hl-b"
name = "Hotline B"
role = "hotline"
country = "DE"

[[organisations]]
id = "hl-c"
name = "Hotline C"
role = "hotline"
country = "SE"

[[organisations]]
id = "police-fr"
name = "Police FR"
role = "police"
country = "FR"

[[organisations]]
id = "secretariat"
name = "Secretariat"
role = "fallback"
country = "NL"

[routing]
fallback = "secretariat"
[routing.jurisdictions]
NL = ["hl-a"]
DE = ["hl-b"]
SE = ["hl-c"]
FR = ["police-fr"]
"""


def known_network(
    settings: Settings, *, rate: int = 100_000, connectors: bool = False
) -> tuple[Settings, Network]:
    """Write the network into the state directory (keys for all, an OPRF key), provision it.

    ``connectors``: the hotlines and police-fr get the ``known`` connector kind.
    """
    state = Path(settings.state_dir)
    state.mkdir(parents=True, exist_ok=True)
    trust = state / "trust.toml"
    text = NETWORK.format(trust=trust, rate=rate)
    if connectors:
        for org, country in (*COUNTRIES.items(), (RECEIVER, "FR")):
            block = f'id = "{org}"\n'
            at = text.index(block)
            end = text.index(f'country = "{country}"\n', at) + len(f'country = "{country}"\n')
            known = "[organisations.connectors.known]\ntimeout_s = 30\n"
            text = text[:end] + known + text[end:]
    path = state / "network.toml"
    path.write_text(text, encoding="utf-8")
    network = parse_network(text, str(path))
    settings = settings.model_copy(update={"network_file": path})
    for org in (*HOTLINES, RECEIVER, "secretariat", ROUTER):
        add_to_trust_file(trust, init_keys(key_dir(settings, org), org))
    OprfKeys(oprf_dir(settings, "secretariat")).create()
    admin = clients.admin_client(settings)
    try:
        provision(admin, network, settings.topic_names())
    finally:
        admin.close()
    return settings, network


@contextmanager
def running_evaluator(
    settings: Settings, network: Network, **kw: Any
) -> Iterator[EvaluationService]:
    """An evaluation service consuming in a thread until the block ends."""
    service = EvaluationService(settings, network, Codec.from_settings(settings), **kw)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield service
    finally:
        stop.set()
        thread.join(30)


@dataclass
class Item:
    """One planned item: who publishes it, its URL and hashes, what it repeats."""

    org: str
    url: str
    sha256: str
    md5: str
    repeat_of: int | None = None
    how: str = ""  # "hash" or "url" for a repeat


@dataclass
class Outcome:
    """What the scenario saw; every count is of items."""

    items: int = 0
    repeats: int = 0
    originals: int = 0
    marked_repeats: int = 0
    right_holder_and_class: int = 0
    red_marks: int = 0
    red_marks_hiding_class: int = 0
    false_matches: int = 0
    told_origin: int = 0
    canaries: int = 0
    canaries_found: int = 0
    scanned_bytes: int = 0
    guesses: int = 0
    guesses_confirmed: int = 0
    attacker_values: int = 0
    #: The scanner's control: canaries found in the members' own stores (they hold them).
    control_found: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    evaluated_elements: int = 0


def plan(items: int, repeats: int, rng: random.Random) -> list[Item]:
    """``items - repeats`` originals round-robin over the hotlines, then the repeats."""
    originals = items - repeats
    out: list[Item] = []
    for i in range(originals):
        org = HOTLINES[(i // PER_REFERRAL) % len(HOTLINES)]
        seed = rng.randbytes(16)
        out.append(
            Item(
                org,
                f"https://h{i % 97}.example.org/known/{seed.hex()}",
                hashlib.sha256(seed).hexdigest(),
                hashlib.md5(seed).hexdigest(),
            )
        )
    for j in range(repeats):
        first = rng.randrange(originals)
        orig = out[first]
        org = HOTLINES[(HOTLINES.index(orig.org) + 1 + j % 2) % len(HOTLINES)]
        seed = rng.randbytes(16)
        if j % 2 == 0:  # the same exact hashes under a new URL
            item = Item(org, f"https://m{j % 89}.example.org/r/{seed.hex()}", orig.sha256, orig.md5)
            item.how = "hash"
        else:  # the same URL (written differently), new hashes
            url = orig.url.replace("https://", "HTTPS://").replace(".org/", ".org:443/")
            item = Item(org, url, hashlib.sha256(seed).hexdigest(), hashlib.md5(seed).hexdigest())
            item.how = "url"
        item.repeat_of = first
        out.append(item)
    return out


def _document(org: str, chunk: list[tuple[int, Item]], legal: str, red: bool) -> dict[str, Any]:
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now * 1000) % 1000:03d}Z"
    handling = {"tlp": "RED", "recipients": [RECEIVER], "handling_code": "H0"}
    if not red:
        handling = {"tlp": "AMBER", "recipients": [], "handling_code": "H0"}
    return {
        "envelope": {
            "case_id": f"known-{org}-{chunk[0][0]}-{uuid.uuid4().hex[:8]}",
            "origin_org": org,
            "origin_country": COUNTRIES[org],
            "jurisdictions": [{"country": "FR", "basis": "HOSTING", "derived": False}],
            "priority": "NORMAL",
            "handling": handling,
            "created_at": stamp,
        },
        "body": {
            "items": [
                {
                    "url": it.url,
                    "media_type": "IMAGE",
                    "hashes": [
                        {"algorithm": "SHA256", "value": it.sha256},
                        {"algorithm": "MD5", "value": it.md5},
                    ],
                    "hosting": {"country": "FR"},
                }
                for _, it in chunk
            ],
            "classification": {
                "legal_status": legal,
                "assessed_under": COUNTRIES[org] if legal == "NATIONAL" else None,
                "incident_type": "CSAM_IMAGERY",
                "annotations": [],
                "victim_age_group": "PREPUBESCENT",
            },
            "timeline": {"received_at": stamp, "assessed_at": stamp},
            "prior_actions": {},
            "summary": "Synthetic known-content referral.",
        },
    }


@dataclass
class _Net:
    settings: Settings
    network: Network
    codec: Codec
    producer: KafkaProducer
    publishers: dict[str, Publisher] = field(default_factory=dict)
    indexes: dict[str, MatchIndex] = field(default_factory=dict)
    clients: list[EvaluationClient] = field(default_factory=list)
    #: By planned item: the classification it was published under, and whether TLP RED.
    legal_of: dict[int, str] = field(default_factory=dict)
    red_of: dict[int, bool] = field(default_factory=dict)


def _publisher(net: _Net, org: str, known: bool) -> Publisher:
    s = net.settings
    hook = None
    if known:
        client = EvaluationClient(s, net.network, org, net.producer)
        net.clients.append(client)
        index = net.indexes.setdefault(org, MatchIndex.for_org(s, org))
        keys = LiveKeys(key_dir(s, org), org)
        hook = KnownPublisher(client, index, net.producer, keys).publish
    outbox = Outbox.for_org(s, org)
    return Publisher(s, net.network, org, net.codec, net.producer, outbox, known=hook)


def _sync(net: _Net, org: str) -> None:
    from broker.security.keys import load_trust

    consumer = clients.consumer(net.settings, group_id=None, role=f"sync-{org}")
    try:
        trust = load_trust(net.network, net.settings.network_file)
        topic = net.settings.topic_names().match_tokens
        net.indexes[org].sync(consumer, topic, trust, allow_plain=False)
    finally:
        consumer.close()


def _publish_all(net: _Net, planned: list[Item], out: Outcome) -> dict[str, tuple[int, ...]]:
    """Publish originals, sync every hotline's index, publish repeats; the items per referral."""
    legal_of, red_of = net.legal_of, net.red_of
    where: dict[str, tuple[int, ...]] = {}
    originals = [(i, it) for i, it in enumerate(planned) if it.repeat_of is None]
    repeats = [(i, it) for i, it in enumerate(planned) if it.repeat_of is not None]
    for phase, rows in (("originals", originals), ("repeats", repeats)):
        started = time.perf_counter()
        if phase == "repeats":
            for org in HOTLINES:
                _sync(net, org)
            out.seconds["sync hotline indexes"] = time.perf_counter() - started
        for org in HOTLINES:
            mine = [(i, it) for i, it in rows if it.org == org]
            batch = []
            for k in range(0, len(mine), PER_REFERRAL):
                chunk = mine[k : k + PER_REFERRAL]
                n = len(where)
                red = phase == "originals" and n % 10 == 0
                legal = CLASSES[n % 2] if phase == "originals" else "NOT_ILLEGAL"
                for i, _ in chunk:
                    legal_of[i], red_of[i] = legal, red
                batch.append((str(n), _document(org, chunk, legal, red), chunk))
                where[str(n)] = tuple(i for i, _ in chunk)
            result = net.publishers[org].publish([(label, doc) for label, doc, _ in batch])
            assert result.ok, result.rejected[:1]
            out.told_origin += len(result.known)
            ids = {p.label: p.referral_id for p in result.published}
            for label, _, _ in batch:
                where[ids[label]] = where.pop(label)
        out.seconds[f"publish {phase}"] = time.perf_counter() - started
    return where


def _receive(net: _Net, expected: int, timeout: float) -> Inbox:
    s = net.settings
    names = s.topic_names()
    client = EvaluationClient(s, net.network, RECEIVER, net.producer)
    net.clients.append(client)
    index = net.indexes.setdefault(RECEIVER, MatchIndex.for_org(s, RECEIVER))
    inbox = Inbox.for_org(s, RECEIVER)
    driver = SinkDriver(
        s,
        RECEIVER,
        net.codec,
        net.network.subscriptions(RECEIVER, names),
        [KnownSink(client, index)],
        inbox,
        security=ReceiverSecurity.load(s, net.network, RECEIVER),
    )
    driver.open()
    deadline = time.monotonic() + timeout
    try:
        while len(inbox.received()) < expected and time.monotonic() < deadline:
            driver.poll_once()
    finally:
        driver.close()
    return inbox


def _check(net: _Net, planned: list[Item], where: dict[str, tuple[int, ...]], out: Outcome) -> None:
    inbox = Inbox.for_org(net.settings, RECEIVER)
    index = net.indexes[RECEIVER]
    legal_of, red_of = net.legal_of, net.red_of
    for rec in inbox.received():
        for pos, item_id in enumerate(inbox.item_ids(rec.origin_org, rec.referral_id)):
            i = where[rec.referral_id][pos]
            item = planned[i]
            hit = index.lookup(rec.referral_id, item_id)
            if item.repeat_of is None:
                out.false_matches += hit is not None
                continue
            if hit is None:
                continue
            out.marked_repeats += 1
            first = item.repeat_of
            if red_of[first]:
                out.red_marks += 1
                hidden = hit.classification is None and hit.case_status is None
                out.red_marks_hiding_class += hidden and hit.holder == planned[first].org
                out.right_holder_and_class += hidden and hit.holder == planned[first].org
            elif hit.holder == planned[first].org and hit.classification == legal_of[first]:
                out.right_holder_and_class += 1
            else:
                out.false_matches += 1
    inbox.close()


def _topic_bytes(settings: Settings) -> Iterator[bytes]:
    consumer = clients.consumer(settings, group_id=None, role="scan")
    try:
        prefix = settings.topic_prefix
        topics = [t for t in consumer.topics() if t.startswith(prefix)]
        reader = TopicReader(consumer, *topics, timeout=300.0, idle=1.0)
        for batch in reader.batches(max_records=5000):
            for r in batch:
                yield (r.key or b"") + (r.value or b"")
                for k, v in r.headers or ():
                    yield k.encode() + (v or b"")
    finally:
        consumer.close()


def _store_bytes(settings: Settings, members: bool = False) -> Iterator[bytes]:
    """Every file of the evaluator's (and the operator's) state: all but the members' own
    (``members``: only the members' own)."""
    own = {*HOTLINES, RECEIVER}
    for path in Path(settings.state_dir).rglob("*"):
        parts = path.relative_to(settings.state_dir).parts
        if (
            path.is_file()
            and (len(parts) > 1 and parts[0] == "orgs" and parts[1] in own) == members
        ):
            yield path.read_bytes()


_HEX = re.compile(rb"[0-9a-fA-F]{32,}")
_B64 = re.compile(rb"[A-Za-z0-9+/]{43}=")


def canaries(planned: list[Item]) -> set[str]:
    """Every item's SHA-256, MD5 and the unique hex of its URL's path (lower-case hex)."""
    out = {it.sha256 for it in planned} | {it.md5 for it in planned}
    return out | {it.url.rsplit("/", 1)[1].lower() for it in planned}


def scan(blobs: Iterator[bytes], planned: list[Item], out: Outcome) -> None:
    """Count the canary hashes and URLs found in ``blobs``: every 32- and 64-digit window of
    every hex run, in any case (a URL is caught by the unique hex of its path)."""
    wanted = canaries(planned)
    out.canaries = len(wanted)
    found: set[str] = set()
    for blob in blobs:
        out.scanned_bytes += len(blob)
        for run in _HEX.findall(blob):
            low = run.lower().decode()
            for size in (32, 64):
                for at in range(0, len(low) - size + 1):
                    if low[at : at + size] in wanted:
                        found.add(low[at : at + size])
    out.canaries_found = len(found)


def _values(settings: Settings) -> set[bytes]:
    """Every 32-byte value on the topics written as hex (tokens) or base64 (elements)."""
    values: set[bytes] = set()
    for blob in _topic_bytes(settings):
        for run in _HEX.findall(blob):
            if len(run) == 2 * TOKEN_BYTES:
                values.add(bytes.fromhex(run.decode()))
        for b64 in _B64.findall(blob):
            values.add(base64.b64decode(b64))
    return values


def attack(settings: Settings, planned: list[Item], out: Outcome, guesses: int = 1000) -> None:
    """Guess hashes (half really published) against every token and element on the topics.

    Without the key the attacker tries what it can compute: a token under an OPRF key
    of its own, the input's plain SHA-256 and SHA-512, and its unblinded group element.
    """
    values = _values(settings)
    rng = random.Random(7)
    guessed = [it.sha256 for it in rng.sample(planned, min(guesses // 2, len(planned)))]
    guessed += [
        hashlib.sha256(rng.randbytes(16)).hexdigest() for _ in range(guesses - len(guessed))
    ]
    own = EvaluatorKey.derive("guess", rng.randbytes(32))
    confirmed = 0
    for g in guessed:
        data = hash_input("sha256", g)
        tries = (
            own.token(data).value,
            hashlib.sha256(data).digest(),
            hashlib.sha512(data).digest()[:TOKEN_BYTES],
            oprf.hash_to_group(data),
        )
        confirmed += any(t in values for t in tries)
    out.guesses, out.guesses_confirmed = guesses, confirmed
    out.attacker_values = len(values)


def run(
    settings: Settings,
    items: int = 10_000,
    repeats: int = 6_300,
    *,
    seed: int = 24,
    receive_timeout: float = 600.0,
    scan_everything: bool = True,
) -> Outcome:
    """The whole scenario on the broker of ``settings`` (a fresh namespace); the outcome."""
    settings, network = known_network(settings, rate=10 * items)
    out = Outcome(items=items, repeats=repeats, originals=items - repeats)
    planned = plan(items, repeats, random.Random(seed))
    codec = Codec.from_settings(settings)
    with ExitStack() as stack:
        evaluator = stack.enter_context(running_evaluator(settings, network))
        router = Router(settings, network, codec, checkpoint_every=None)
        stop = threading.Event()
        thread = threading.Thread(target=router.run, args=(stop,), daemon=True)
        thread.start()
        stack.callback(thread.join, 30)
        stack.callback(stop.set)
        producer = clients.producer(settings, role="known-bench")
        stack.callback(producer.close)
        net = _Net(settings, network, codec, producer)
        for org in HOTLINES:
            net.publishers[org] = _publisher(net, org, known=True)
            stack.callback(net.publishers[org].close)
        where = _publish_all(net, planned, out)
        started = time.perf_counter()
        expected = len(where)
        _receive(net, expected, receive_timeout).close()
        out.seconds["receive"] = time.perf_counter() - started
        _sync(net, RECEIVER)
        _check(net, planned, where, out)
        out.evaluated_elements = evaluator.evaluated
        for client in net.clients:
            client.close()
    if scan_everything:
        started = time.perf_counter()
        scan(_chain(_topic_bytes(settings), _store_bytes(settings)), planned, out)
        attack(settings, planned, out)
        control = Outcome()
        scan(_store_bytes(settings, members=True), planned, control)
        out.control_found = control.canaries_found
        out.seconds["scan and attack"] = time.perf_counter() - started
    for index in net.indexes.values():
        index.close()
    return out


def _chain(*its: Iterator[bytes]) -> Iterator[bytes]:
    for it in its:
        yield from it


# -- the benchmark: python -m bench.known_net ----------------------------------------------------


def _pdq_rows(
    rng: random.Random, items: int, chunk: Any, holds: int
) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[bytes]]:
    """Entries of ``items`` PDQ items (32 each), own_pdq rows of every ``holds``-th, hashes."""
    from broker.known.pdq import chunk_inputs

    rows: list[tuple[Any, ...]] = []
    own: list[tuple[Any, ...]] = []
    hashes: list[bytes] = []
    for n in range(items):
        pdq = rng.randbytes(32)
        ref = f"p{n:031x}"
        hashes.append(pdq)
        for c in chunk_inputs(pdq):
            rows.append((chunk(c), "k", HOTLINES[n % 3], ref, "pdq", "AMBER", n, "BASELINE", None))
        if n % holds == 0:
            own.append((f"r{n}", "i", "k", ref, pdq))
    return rows, own, hashes


def _fill(
    path: Path, rng: random.Random, tokens: int, pdq_share: float, chunk: Any
) -> tuple[list[bytes], list[bytes], int]:
    """Write ``tokens`` entries into the index file; the known exact tokens, the PDQ hashes
    and the PDQ entries written."""
    import sqlite3 as sq

    known: list[bytes] = []
    conn = sq.connect(path)
    rows, own, hashes = _pdq_rows(rng, int(tokens * pdq_share) // 32, chunk, 10)
    pdq_entries = len(rows)
    conn.executemany("INSERT INTO own_pdq VALUES (?,?,?,?,?)", own)
    for n in range(tokens - pdq_entries):
        token = rng.randbytes(TOKEN_BYTES)
        if n % 1000 == 0:
            known.append(token)
        ref = f"{n:032x}"
        rows.append((token, "k", HOTLINES[n % 3], ref, "sha256", "AMBER", n, "BASELINE", None))
        if len(rows) >= 50_000:
            conn.executemany("INSERT INTO tokens VALUES (?,?,?,?,?,?,?,?,?)", rows)
            conn.commit()
            rows = []
    conn.executemany("INSERT INTO tokens VALUES (?,?,?,?,?,?,?,?,?)", rows)
    conn.commit()
    conn.close()
    return known, hashes, pdq_entries


def lookup_figures(
    directory: Path,
    tokens: int = 1_000_000,
    rate: float = 100.0,
    seconds: float = 20.0,
    pdq_share: float = 0.0,
) -> dict[str, float]:
    """Lookups of one item (three tokens) at ``rate``/s in a MatchIndex of ``tokens`` entries.

    Entries are random 32-byte values (an OPRF output is indistinguishable from them);
    half the looked-up items are known. Latency from each lookup's scheduled time.
    ``pdq_share``: that share of the entries are PDQ chunks (32 per item, real chunk
    tokens: only 8,192 exist), the index holds every tenth item's hash, and every lookup
    is then also a PDQ one (``near``: half of them 10 bits from an indexed item).
    """
    import os

    from broker.known.pdq import chunk_inputs, hamming

    index = MatchIndex(directory / "lookup.sqlite3")
    rng = random.Random(5)
    key = EvaluatorKey.derive("k", bytes(32))
    chunk = functools.cache(lambda c: key.token(c).value)
    started = time.perf_counter()
    known, hashes, pdq_entries = _fill(directory / "lookup.sqlite3", rng, tokens, pdq_share, chunk)
    build_s = time.perf_counter() - started
    latencies: list[float] = []
    alone: list[float] = []
    hits = near_hits = 0
    t0 = time.perf_counter()
    count = int(rate * seconds)
    for i in range(count):
        due = t0 + i / rate
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        first = known[i % len(known)] if i % 2 == 0 else os.urandom(TOKEN_BYTES)
        wanted = [("sha256", "k", first), ("md5", "k", os.urandom(TOKEN_BYTES))]
        wanted.append(("url", "k", os.urandom(TOKEN_BYTES)))
        query = None
        if hashes:
            base = hashes[(i * 7) % len(hashes)] if i % 2 == 0 else os.urandom(32)
            mask = sum(1 << p for p in rng.sample(range(256), 10))
            query = (int.from_bytes(base, "big") ^ mask).to_bytes(32, "big")
            assert hamming(query, base) == 10
        asked = time.perf_counter()
        hits += index.match(wanted, "r", "i", 2**62) is not None
        if query is not None:
            qtokens = [chunk(c) for c in chunk_inputs(query)]
            near_hits += index.near("k", qtokens, query, "mine", 2**62) is not None
        done = time.perf_counter()
        latencies.append(done - due)
        alone.append(done - asked)
    index.close()
    latencies.sort()
    alone.sort()
    return {
        "query_alone_p50_ms": 1000 * alone[len(alone) // 2],
        "query_alone_p99_ms": 1000 * alone[int(len(alone) * 0.99)],
        "tokens": tokens,
        "pdq_entries": pdq_entries,
        "build_s": build_s,
        "lookups": count,
        "hits": hits,
        "near_hits": near_hits,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
        "max_ms": 1000 * latencies[-1],
        "load_1min": os.getloadavg()[0],
    }


def publish_cost(settings: Settings, referrals: int = 100, pdq: bool = False) -> dict[str, float]:
    """Publishing the same kind of referrals (10 items) with and without the known hook
    (``pdq``: every item carries a PDQ hash too, 32 more elements and entries)."""
    settings, network = known_network(settings, rate=10**7)
    codec = Codec.from_settings(settings)
    rng = random.Random(3)
    out: dict[str, float] = {}
    with running_evaluator(settings, network) as evaluator:
        producer = clients.producer(settings, role="known-cost")
        net = _Net(settings, network, codec, producer)
        for known, org in ((False, "hl-b"), (True, "hl-a"), (False, "hl-c"), (True, "hl-a")):
            publisher = _publisher(net, org, known)
            planned = plan(referrals * PER_REFERRAL, 0, rng)
            docs = [
                (
                    str(k),
                    _document(
                        org, list(enumerate(planned[k : k + PER_REFERRAL])), "BASELINE", False
                    ),
                )
                for k in range(0, len(planned), PER_REFERRAL)
            ]
            for _, doc in docs if pdq else ():
                for item in doc["body"]["items"]:
                    item["hashes"].append({"algorithm": "PDQ", "value": rng.randbytes(32).hex()})
            started = time.perf_counter()
            result = publisher.publish(docs)
            took = time.perf_counter() - started
            assert result.ok
            key = "with_known_s" if known else "without_known_s"
            out[key] = min(out.get(key, float("inf")), took)
            publisher.close()
        for client in net.clients:
            out["client_wait_s"] = out.get("client_wait_s", 0.0) + client.wait_s
            client.close()
        producer.close()
        out["evaluated_elements"] = float(evaluator.evaluated)
    items = referrals * PER_REFERRAL
    out["items"] = float(items)
    out["added_ms_per_item"] = 1000 * (out["with_known_s"] - out["without_known_s"]) / items
    return out


def evaluation_cpu(items: int = 1000) -> dict[str, float]:
    """CPU µs per element of each side (no Kafka): blind, BlindEvaluate, finalize."""
    from broker.known.tokens import Evaluator, KeyRing, RateLimit, blind_batch, unblind

    rng = random.Random(9)
    inputs = [hash_input("sha256", rng.randbytes(32).hex()) for _ in range(items)]
    key = EvaluatorKey.derive("cpu", rng.randbytes(32))
    evaluator = Evaluator(KeyRing(key), RateLimit(10 * items, 3600), lambda: 0.0)
    t0 = time.process_time()
    pending, request = blind_batch("hl-a", inputs)
    t1 = time.process_time()
    response = evaluator.evaluate(request)
    t2 = time.process_time()
    unblind(pending, response)
    t3 = time.process_time()
    return {
        "blind_us": 1e6 * (t1 - t0) / items,
        "evaluate_us": 1e6 * (t2 - t1) / items,
        "finalize_us": 1e6 * (t3 - t2) / items,
    }


def _costs() -> dict[str, dict[str, float]]:
    """The publishing cost on a fresh embedded broker: exact hashes and URLs, then with PDQ."""
    import os
    import tempfile

    from broker.kafka.embedded import EmbeddedBroker

    out: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="known-cost-")))
        broker = stack.enter_context(EmbeddedBroker(log_path=tmp / "broker.log").start())
        for pdq in (False, True):
            name = "pdq" if pdq else "exact"
            base = Settings(bootstrap_servers=broker.bootstrap, state_dir=tmp / name)
            load = os.getloadavg()[0]
            cost = publish_cost(base.model_copy(update={"topic_prefix": f"{name}."}), pdq=pdq)
            out[name] = {**cost, "load_1min": max(load, os.getloadavg()[0])}
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the scenario, the publishing A/B and the lookups on a fresh embedded broker."""
    import argparse
    import json
    import tempfile

    from broker.kafka.embedded import EmbeddedBroker

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=6_300)
    parser.add_argument("--tokens", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--lookups-only", action="store_true", help="Only the index lookups.")
    parser.add_argument(
        "--cost-only", action="store_true", help="Only the publishing cost, without and with PDQ."
    )
    parser.add_argument(
        "--pdq-share", type=float, default=0.0, help="Share of PDQ chunk entries (lookups)."
    )
    args = parser.parse_args(argv)
    if args.lookups_only:
        import tempfile as tf

        with tf.TemporaryDirectory(prefix="known-lookups-") as tmp:
            lk = lookup_figures(Path(tmp), args.tokens, 100.0, args.seconds, args.pdq_share)
            print(json.dumps(lk))
        return
    if args.cost_only:
        print(json.dumps(_costs(), indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="known-bench-") as tmp:
        run_dir = Path(tmp)
        with EmbeddedBroker(log_path=run_dir / "broker.log").start() as broker:
            base = Settings(bootstrap_servers=broker.bootstrap, state_dir=run_dir / "scenario")
            started = time.perf_counter()
            outcome = run(base.model_copy(update={"topic_prefix": "s."}), args.items, args.repeats)
            scenario_s = time.perf_counter() - started
            cost_settings = base.model_copy(
                update={"topic_prefix": "c.", "state_dir": run_dir / "cost"}
            )
            cost = publish_cost(cost_settings)
        figures = {
            "scenario": {**outcome.__dict__, "total_s": scenario_s},
            "publish_cost": cost,
            "cpu": evaluation_cpu(),
            "lookups": lookup_figures(run_dir, args.tokens, 100.0, args.seconds),
        }
    print(json.dumps(figures, indent=2, default=str))


if __name__ == "__main__":
    main()
