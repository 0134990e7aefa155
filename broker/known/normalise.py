"""What gets tokenised: exact hashes and URLs in one canonical form (equal content, equal input)."""

from __future__ import annotations

import string
from urllib.parse import urlsplit

from broker.known.errors import BadMatchInput

__all__ = ["HASH_KINDS", "hash_input", "normalise_hash", "normalise_url", "url_input"]

HASH_KINDS: dict[str, int] = {"md5": 32, "sha1": 40, "sha256": 64}
_HEX = frozenset(string.hexdigits)
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
_RESERVED = frozenset(":/?#[]@!$&'()*+,;=")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ftp": 21, "ws": 80, "wss": 443}


def normalise_hash(kind: str, value: str) -> str:
    """``"<kind>:<lower-hex>"`` for an MD5, SHA-1 or SHA-256 hex digest; BadMatchInput otherwise."""
    name = kind.strip().lower().replace("-", "").replace("_", "")
    if name not in HASH_KINDS:
        raise BadMatchInput(f"unknown hash kind {kind[:16]!r}: use md5, sha1 or sha256")
    digest = value.strip().lower()
    if len(digest) != HASH_KINDS[name] or not _HEX.issuperset(digest):
        raise BadMatchInput(f"not a {name} digest: expected {HASH_KINDS[name]} hex digits")
    return f"{name}:{digest}"


def hash_input(kind: str, value: str) -> bytes:
    """The OPRF input for an exact hash: the normalised form as ASCII bytes."""
    return normalise_hash(kind, value).encode("ascii")


def _percent(component: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(component):
        char = component[i]
        if char == "%" and i + 2 < len(component) and _HEX.issuperset(component[i + 1 : i + 3]):
            code = int(component[i + 1 : i + 3], 16)
            decoded = chr(code)
            out.append(
                decoded if decoded in _UNRESERVED else "%" + component[i + 1 : i + 3].upper()
            )
            i += 3
            continue
        if char in _UNRESERVED or char in _RESERVED:
            out.append(char)
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode("utf-8"))
        i += 1
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    # RFC 3986 §5.2.4, on an absolute path.
    segments = path.split("/")
    kept: list[str] = []
    for segment in segments[1:]:
        if segment == ".":
            continue
        if segment == "..":
            if kept:
                kept.pop()
            continue
        kept.append(segment)
    if segments[-1] in (".", ".."):
        kept.append("")
    return "/" + "/".join(kept)


def _host(host: str) -> str:
    if host.startswith("["):  # IPv6 literal
        return host.lower()
    host = host.rstrip(".").lower()
    if not host:
        raise BadMatchInput("the URL has no host")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise BadMatchInput("the URL's host is not a valid international name") from exc
    return _percent(_percent(host).lower())  # lower-case names, upper-case escapes


def normalise_url(url: str) -> str:
    """The canonical form of an absolute URL, by the rule in this module's docstring."""
    text = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise BadMatchInput("not a URL") from exc
    if not parts.scheme or not text[len(parts.scheme) :].startswith("://"):
        raise BadMatchInput("not an absolute URL (scheme://host/...)")
    scheme = parts.scheme.lower()
    userinfo, _, hostport = parts.netloc.rpartition("@")
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise BadMatchInput("the URL's IPv6 host is not closed")
        host, port_text = hostport[: end + 1], hostport[end + 1 :].removeprefix(":")
    else:
        host, _, port_text = hostport.partition(":")
    authority = _host(host)
    if port_text:
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise BadMatchInput("the URL's port is not a number from 0 to 65535")
        if int(port_text) != _DEFAULT_PORTS.get(scheme):
            authority += f":{int(port_text)}"
    if userinfo:
        authority = _percent(userinfo) + "@" + authority
    path = _remove_dot_segments(_percent(parts.path or "/"))
    query = f"?{_percent(parts.query)}" if parts.query else ""
    return f"{scheme}://{authority}{path}{query}"


def url_input(url: str) -> bytes:
    """The OPRF input for a URL: ``b"url:"`` and its normalised form in UTF-8 (all ASCII)."""
    return b"url:" + normalise_url(url).encode("ascii")
