"""Who may ask whom: each country's single point of contact (SPOC), police to police.

A SPOC is the police organisation flagged ``spoc = true`` in the network file
(else the first police organisation serving its country). A police message goes
from one country's SPOC to another's, never to anyone else. Topics:
``requests.intake`` (senders), ``requests.to.<org>`` (each SPOC), ``requests.deadletter``.
"""

from __future__ import annotations

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from broker.errors import KafkaBrokerError
from broker.network import Network
from broker.requests.wire import RequestError
from broker.wire.topics import TopicNames

__all__ = [
    "REQUESTS_DEADLETTER",
    "REQUESTS_INTAKE",
    "check_route",
    "provision_requests",
    "request_topics",
    "spoc_of",
    "spocs",
    "to_topic",
]

REQUESTS_INTAKE = "requests.intake"
REQUESTS_DEADLETTER = "requests.deadletter"


def spoc_of(network: Network, country: str) -> str | None:
    """The single point of contact of ``country`` (None if it has none)."""
    police = [o for o in network.organisations if o.role == "police" and o.country == country]
    flagged = [o.id for o in police if o.spoc]
    if flagged:
        return flagged[0]
    served = network.receivers(country, "police")
    return served[0] if served else (police[0].id if police else None)


def spocs(network: Network) -> list[str]:
    """Every country's SPOC, sorted by organisation id."""
    countries = {o.country for o in network.organisations}
    return sorted({s for cc in countries if (s := spoc_of(network, cc)) is not None})


def check_route(network: Network, from_org: str, to_org: str) -> None:
    """RequestError unless ``from_org`` and ``to_org`` are SPOCs of two different countries."""
    for org, what in ((from_org, "sender"), (to_org, "receiver")):
        if not network.has_organisation(org):
            raise RequestError(f"the {what} {org} is not in the network")
        country = network.organisation(org).country
        if spoc_of(network, country) != org:
            raise RequestError(
                f"the {what} {org} is not the police single point of contact of {country}"
            )
    if network.organisation(from_org).country == network.organisation(to_org).country:
        raise RequestError("a request goes to another country's point of contact")


def to_topic(names: TopicNames, org: str) -> str:
    """The topic a SPOC reads its police messages from."""
    return f"{names.prefix}requests.to.{org}"


def request_topics(network: Network, names: TopicNames) -> dict[str, int]:
    """Every topic police requests need, with its partition count (none unless two countries
    have a point of contact)."""
    if len(spocs(network)) < 2:
        return {}
    n = network.topics.partitions
    out = {names.prefix + REQUESTS_INTAKE: n, names.prefix + REQUESTS_DEADLETTER: 1}
    out.update({to_topic(names, org): n for org in spocs(network)})
    return out


def provision_requests(admin: KafkaAdminClient, network: Network, names: TopicNames) -> list[str]:
    """Create the request topics that do not exist yet; the names created."""
    try:
        present = set(admin.list_topics())
        missing = {t: n for t, n in request_topics(network, names).items() if t not in present}
        if missing:
            rf = network.topics.replication_factor
            admin.create_topics([NewTopic(t, n, rf) for t, n in missing.items()])
    except TopicAlreadyExistsError:
        return []
    except KafkaError as exc:
        raise KafkaBrokerError(f"cannot create the request topics: {type(exc).__name__}") from exc
    return sorted(missing)
