"""The ``known`` connector kind: known content for one organisation (issue 24)::

    [organisations.connectors.known]
    timeout_s = 10     # how long a batch waits for the evaluator's answer

With it, what the organisation publishes is tokenised onto ``match.tokens``
(:class:`broker.known.publish.KnownPublisher`, after each batch is acknowledged)
and what it receives is tokenised when delivered (:class:`KnownSink`), so its
inbox marks what another member assessed before. The network needs a ``[known]``
table and a running evaluator (``referral known evaluate``); without an answer in
``timeout_s`` the batch stays published, untokenised, and a warning says so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from kafka import KafkaConsumer, KafkaProducer
from pydantic import BaseModel, Field

from broker.config import Settings
from broker.contracts import Source
from broker.errors import ConfigError
from broker.ids import short_id
from broker.kafka import clients
from broker.known.casestatus import CaseStatusSink
from broker.known.client import EvaluationClient
from broker.known.index import MatchIndex
from broker.known.pending import Untokenised
from broker.known.publish import KnownPublisher, KnownSink
from broker.network import Network
from broker.origin.outbox import Outbox
from broker.origin.publisher import BatchResult, KnownHook
from broker.origin.status_log import StatusLog
from broker.security.keys import LiveKeys, key_dir, load_trust
from connectors.base import ConnectorConfig

__all__ = [
    "KnownConfig",
    "KnownParts",
    "KnownSync",
    "known_for_publish",
    "known_lines",
    "known_parts",
]


class KnownConfig(ConnectorConfig):
    """Settings of the ``known`` kind."""

    timeout_s: float = Field(default=10.0, gt=0, le=300)


class KnownSync(Source):
    """Keeps the organisation's match index in step with ``match.tokens`` (every 5 s)."""

    kind = "known"
    poll_interval = 5.0

    def __init__(
        self,
        settings: Settings,
        network: Network,
        index: MatchIndex,
        retries: Sequence[Callable[[], int]] = (),
    ) -> None:
        self.settings = settings
        self.network = network
        self.index = index
        #: Called after each sync: tokenise what waits (the evaluator was unreachable).
        self.retries = tuple(retries)
        self._consumer: KafkaConsumer | None = None

    def poll(self, idle: float = 0.5) -> int:
        """Take what came on ``match.tokens`` since the last poll; the entries taken."""
        if self._consumer is None:
            self._consumer = clients.consumer(self.settings, group_id=None, role="known-sync")
        trust = load_trust(self.network, self.settings.network_file)
        topic = self.settings.topic_names().match_tokens
        allow_plain = self.network.network.allow_plain
        self.index.sync(self._consumer, topic, trust, allow_plain, idle=idle)
        for retry in self.retries:
            retry()
        return 0

    def close(self) -> None:
        """Close the consumer."""
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


@dataclass
class KnownParts:
    """The publisher's hook, the index sync and (for a receiver) the sink, on one index."""

    hook: KnownHook
    sink: KnownSink | None
    client: EvaluationClient
    index: MatchIndex
    syncer: KnownSync
    queue: Untokenised | None = field(default=None)
    publisher: KnownPublisher | None = field(default=None)

    def status_sink(self, outbox: Outbox, status_log: StatusLog) -> CaseStatusSink | None:
        """The status sink that keeps the case status of this origin's entries current."""
        if self.publisher is None:
            return None
        return CaseStatusSink(self.publisher, outbox, status_log)

    def close(self) -> None:
        """Close the publisher's evaluation client, the index and the retry queue (the sink
        closes its own client)."""
        self.client.close()
        self.index.close()
        if self.queue is not None:
            self.queue.close()


def known_parts(
    settings: Settings,
    network: Network,
    org_id: str,
    producer: KafkaProducer,
    config: BaseModel,
    receives: bool,
) -> KnownParts:
    """Build the known-content parts of ``org_id``; ConfigError without ``[known]``."""
    if network.known is None:
        raise ConfigError(
            f"{org_id}: connectors.known: the network file has no [known] table (the evaluator)"
        )
    timeout = config.timeout_s if isinstance(config, KnownConfig) else 10.0
    client = EvaluationClient(settings, network, org_id, producer, timeout=timeout)
    index = MatchIndex.for_org(settings, org_id)
    keys = LiveKeys(key_dir(settings, org_id), org_id)
    queue = Untokenised.for_org(settings, org_id)
    publisher = KnownPublisher(client, index, producer, keys, queue=queue)
    retries: list[Callable[[], int]] = [publisher.retry]
    sink = None
    if receives:
        own = EvaluationClient(settings, network, org_id, producer, timeout=timeout)
        sink = KnownSink(own, index, queue)
        retries.append(sink.retry)
    syncer = KnownSync(settings, network, index, retries)
    return KnownParts(publisher.publish_or_keep, sink, client, index, syncer, queue, publisher)


def known_for_publish(
    settings: Settings, network: Network, org_id: str, producer: KafkaProducer
) -> KnownParts | None:
    """A one-off publish's known-content parts, its index synced first (None: not opted in)."""
    raw = network.organisation(org_id).connectors.get("known")
    if raw is None or network.known is None:
        return None
    parts = known_parts(settings, network, org_id, producer, KnownConfig.model_validate(raw), False)
    try:
        parts.syncer.poll(idle=2.0)  # once, before publishing: wait out a late end offset
    finally:
        parts.syncer.close()
    return parts


def known_lines(results: Iterable[BatchResult]) -> list[str]:
    """``<referral> item <item>: previously assessed by hl-de as BASELINE on ...`` lines."""
    return [
        f"{short_id(rid)} item {short_id(item)}: {hit.line()}"
        for result in results
        for (rid, item), hit in result.known.items()
    ]
