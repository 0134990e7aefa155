"""Shared helpers of the security tests: a keyed test network, records, a TLS test CA."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from broker.config import Settings
from broker.network import Network, parse_network
from broker.security.keys import add_to_trust_file, init_keys, key_dir
from tests.support.connectors import NETWORK_TOML


def keyed_network(
    trust_file: Path,
    *,
    allow_plain: bool = False,
    webhook_url: str = "http://127.0.0.1:9/hook",
    republish_after: float = 300,
) -> Network:
    """The connector test network, naming ``trust_file`` and whether plain referrals pass."""
    text = keyed_network_text(
        trust_file,
        allow_plain=allow_plain,
        webhook_url=webhook_url,
        republish_after=republish_after,
    )
    return parse_network(text, "security-test-network.toml")


def keyed_network_text(
    trust_file: Path,
    *,
    allow_plain: bool = False,
    webhook_url: str = "http://127.0.0.1:9/hook",
    republish_after: float = 300,
) -> str:
    """:func:`keyed_network` as TOML (for a network file the CLI reads)."""
    return (
        NETWORK_TOML.replace("{webhook_url}", webhook_url)
        .replace("{republish_after}", str(republish_after))
        .replace(
            'name = "connector test network"',
            f'name = "security test network"\nallow_plain = {str(allow_plain).lower()}\n'
            f'trust_file = "{trust_file}"',
        )
    )


def give_keys(settings: Settings, trust_file: Path, *orgs: str) -> None:
    """Create keys for ``orgs`` in their key directories and trust their public keys."""
    for org in orgs:
        add_to_trust_file(trust_file, init_keys(key_dir(settings, org), org))


@dataclass
class FakeRecord:
    """The fields of a consumed record the sink driver reads (for tests without a broker)."""

    topic: str
    value: bytes
    headers: list[tuple[str, bytes]]
    partition: int = 0
    offset: int = 0
    key: bytes | None = None


# -- a throw-away CA for TLS tests -------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Paths of a test CA, a server certificate for 127.0.0.1/localhost and a client certificate."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def case_content(data: dict[str, Any]) -> list[bytes]:
    """The case content of a referral's JSON form (summary, URLs, hash values) as bytes."""
    body = data["body"]
    out = [body["summary"].encode()]
    for item in body["items"]:
        out.append(item["url"].encode())
        out += [h["value"].encode() for h in item["hashes"]]
    return out


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(path: Path, key: Any) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate (SAN 127.0.0.1, localhost) and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("referral-broker test CA"))
        .issuer_name(_name("referral-broker test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str, server: bool) -> tuple[x509.Certificate, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
                    if server
                    else [x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    ]
                ),
                critical=False,
            )
        return builder.sign(ca_key, hashes.SHA256()), key

    server_cert, server_key = leaf("127.0.0.1", True)
    client_cert, client_key = leaf("referral-test-client", False)
    pki = Pki(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
    )
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    pki.client_cert.write_bytes(client_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.server_key, server_key)
    _write_key(pki.client_key, client_key)
    return pki
