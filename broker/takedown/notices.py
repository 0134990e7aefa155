"""Notices to hosting providers: one e-mail per abuse contact, a DSA trusted-flagger notice.

A notice carries what the provider must see and nothing more: for each item its
location (the URL), an item reference (the item id) and signed one-click answer
links; the notifier, the reasons in neutral words and the statement of good
faith (the elements of DSA Art. 16(2)); never hashes, case ids, notes or
anything about a person. :class:`SmtpSender` sends it by SMTP.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from enum import StrEnum
from typing import Any, Protocol

import httpx

from broker.errors import DeliveryError, SecurityError
from broker.takedown.providers import ProviderDirectory

__all__ = [
    "Answer",
    "Notice",
    "NoticeItem",
    "NoticeSender",
    "ParsedNotice",
    "ProviderRouter",
    "SmtpSender",
    "WebhookSender",
    "answer_token",
    "build_message",
    "notice_json",
    "parse_notice",
    "read_token",
]


class Answer(StrEnum):
    """What a provider may answer about one item."""

    REMOVED = "removed"
    NOT_ILLEGAL = "not_illegal"
    MOVED = "moved"


@dataclass(frozen=True)
class NoticeItem:
    """One item of a notice: its id and where it is."""

    item_id: str
    url: str


@dataclass(frozen=True)
class Notice:
    """One notice to one abuse contact about some of a provider's items."""

    notice_id: str
    provider_id: str
    to: str
    sender: str
    notifier: str
    items: tuple[NoticeItem, ...]
    #: 0: the first notice, k: the k-th repeat; "escalation": to the escalation contact
    kind: str = "notice"
    repeat: int = 0


def answer_token(secret: bytes, item_id: str, answer: Answer) -> str:
    """The signed one-click token answering ``answer`` about ``item_id``."""
    mac = hmac.new(secret, f"{item_id}|{answer.value}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{item_id}.{answer.value}.{mac}"


def read_token(secret: bytes, token: str) -> tuple[str, Answer]:
    """The item id and answer of a one-click token; SecurityError if it is not ours."""
    item_id, _, rest = token.partition(".")
    value, _, mac = rest.partition(".")
    try:
        answer = Answer(value)
    except ValueError:
        raise SecurityError("not a takedown answer link") from None
    if not hmac.compare_digest(answer_token(secret, item_id, answer), token):
        raise SecurityError("the answer link's signature does not hold")
    _ = mac
    return item_id, answer


def _body(notice: Notice, secret: bytes, answer_base: str) -> str:
    lines = [
        f"Notice {notice.notice_id} from {notice.notifier}, a trusted flagger (DSA Art. 22),",
        "under Art. 16 of Regulation (EU) 2022/2065 (Digital Services Act).",
        "",
        "Reasons: the material at the locations below was assessed by the notifier's",
        "analysts as child sexual abuse material, illegal under the law of the hosting",
        "country. Please remove or disable access to it without delay.",
        "",
    ]
    if notice.repeat:
        lines.insert(0, f"REPEAT {notice.repeat}: no answer has been received to earlier notices.")
    for item in notice.items:
        lines.append(f"Item {item.item_id}")
        lines.append(f"  Location: {item.url}")
        for answer in Answer:
            token = answer_token(secret, item.item_id, answer)
            lines.append(f"  Answer {answer.value}: {answer_base}/takedown/answer/{token}")
        lines.append("")
    lines += [
        "The notifier states in good faith that the information and allegations in",
        "this notice are accurate and complete.",
    ]
    return "\n".join(lines) + "\n"


def build_message(notice: Notice, secret: bytes, answer_base: str) -> EmailMessage:
    """The e-mail of a notice (trusted-flagger headers, one answer link per item and answer)."""
    msg = EmailMessage()
    label = "Escalation" if notice.kind == "escalation" else "Notice"
    msg["Subject"] = f"[Trusted flagger] {label} {notice.notice_id}: {len(notice.items)} item(s)"
    msg["From"] = notice.sender
    msg["To"] = notice.to
    msg["X-Notice-Id"] = notice.notice_id
    msg["X-Notice-Kind"] = notice.kind
    msg["X-Notice-Repeat"] = str(notice.repeat)
    msg["X-Provider-Id"] = notice.provider_id
    msg["X-DSA-Trusted-Flagger"] = "yes; Art. 16 and 22 of Regulation (EU) 2022/2065"
    msg.set_content(_body(notice, secret, answer_base))
    return msg


@dataclass(frozen=True)
class ParsedNotice:
    """A notice as its recipient reads it back: headers, items and their answer tokens."""

    notice_id: str
    kind: str
    repeat: int
    provider_id: str
    to: str
    items: dict[str, str]
    tokens: dict[tuple[str, str], str]


_ITEM = re.compile(r"^Item ([0-9a-f-]{36})$")
_LOCATION = re.compile(r"^  Location: (\S+)$")
_LINK = re.compile(r"^  Answer (\w+): \S+/takedown/answer/(\S+)$")


def parse_notice(raw: bytes) -> ParsedNotice:
    """Read a notice e-mail back: its items (id → location) and one-click tokens."""
    msg = BytesParser(policy=default_policy).parsebytes(raw)
    body = msg.get_body(("plain",))
    text = body.get_content() if body is not None else ""  # type: ignore[union-attr]
    items: dict[str, str] = {}
    tokens: dict[tuple[str, str], str] = {}
    current = ""
    for line in str(text).splitlines():
        if m := _ITEM.match(line):
            current = m.group(1)
        elif (m := _LOCATION.match(line)) and current:
            items[current] = m.group(1)
        elif (m := _LINK.match(line)) and current:
            tokens[(current, m.group(1))] = m.group(2)
    return ParsedNotice(
        str(msg["X-Notice-Id"]),
        str(msg["X-Notice-Kind"]),
        int(str(msg["X-Notice-Repeat"] or 0)),
        str(msg["X-Provider-Id"]),
        str(msg["To"]),
        items,
        tokens,
    )


class NoticeSender(Protocol):
    """Delivers one notice (DeliveryError if it could not)."""

    def send(self, notice: Notice) -> None:
        """Deliver ``notice``."""


class SmtpSender:
    """Sends notices by SMTP to the abuse contact, one message per notice."""

    def __init__(
        self, host: str, port: int, *, secret: bytes, answer_base: str, timeout: float = 10.0
    ) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._secret = secret
        self.answer_base = answer_base.rstrip("/")

    def send(self, notice: Notice) -> None:
        """Send ``notice``; DeliveryError naming the notice and provider, never an address."""
        msg = build_message(notice, self._secret, self.answer_base)
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
                smtp.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(
                f"notice {notice.notice_id} to provider {notice.provider_id} "
                f"not sent: {type(exc).__name__}"
            ) from None


def _link(answer_base: str, secret: bytes, item_id: str, answer: Answer) -> str:
    return f"{answer_base}/takedown/answer/{answer_token(secret, item_id, answer)}"


def notice_json(notice: Notice, secret: bytes, answer_base: str) -> dict[str, Any]:
    """A notice as the JSON an abuse API is sent (the same elements as the e-mail)."""
    return {
        "notice_id": notice.notice_id,
        "kind": notice.kind,
        "repeat": notice.repeat,
        "provider_id": notice.provider_id,
        "notifier": notice.notifier,
        "trusted_flagger": True,
        "legal_basis": "Art. 16 and 22 of Regulation (EU) 2022/2065 (Digital Services Act)",
        "reasons": "assessed by the notifier's analysts as child sexual abuse material, "
        "illegal under the law of the hosting country",
        "good_faith": True,
        "items": [
            {
                "item_id": item.item_id,
                "location": item.url,
                "answer": {a.value: _link(answer_base, secret, item.item_id, a) for a in Answer},
            }
            for item in notice.items
        ],
    }


class WebhookSender:
    """POSTs notices as JSON to an abuse API, the body signed (``X-Notice-Signature``:
    ``sha256=`` HMAC of the body under the desk's secret)."""

    def __init__(self, *, secret: bytes, answer_base: str, timeout: float = 10.0) -> None:
        self._secret = secret
        self.answer_base = answer_base.rstrip("/")
        self._client = httpx.Client(timeout=timeout, trust_env=False)

    def post(self, notice: Notice, url: str) -> None:
        """Send ``notice`` to ``url``; DeliveryError (a 4xx: permanent) naming no address."""
        body = json.dumps(notice_json(notice, self._secret, self.answer_base)).encode()
        mac = hmac.new(self._secret, body, hashlib.sha256).hexdigest()
        headers = {
            "Content-Type": "application/json",
            "X-Notice-Id": notice.notice_id,
            "X-Notice-Signature": f"sha256={mac}",
        }
        what = f"notice {notice.notice_id} to provider {notice.provider_id}"
        try:
            response = self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{what} not sent: {type(exc).__name__}") from None
        if response.status_code >= 300:
            code = response.status_code
            raise DeliveryError(
                f"{what} refused: HTTP {code}", permanent=400 <= code < 500, reason=f"HTTP_{code}"
            )

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()


class ProviderRouter:
    """Sends each notice the provider's way: to its abuse API if it has one, else by e-mail."""

    def __init__(
        self, directory: ProviderDirectory, mail: NoticeSender, webhook: WebhookSender
    ) -> None:
        self.directory, self.mail, self.webhook = directory, mail, webhook

    def send(self, notice: Notice) -> None:
        """Deliver ``notice`` (an escalation always goes by e-mail, to the escalation contact)."""
        hook = self.directory.get(notice.provider_id).abuse_webhook
        if hook and notice.kind != "escalation":
            self.webhook.post(notice, hook)
        else:
            self.mail.send(notice)
