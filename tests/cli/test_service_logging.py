"""Long-running commands log kafka-python at WARNING: its INFO chatter stays out of the log."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator

import pytest

from cli.app import service_stop_event


@pytest.fixture
def restored() -> Iterator[None]:
    """Undo what service_stop_event sets: signal handlers and logger levels."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    names = ("", "kafka", "kafka.net.manager")
    levels = {n: logging.getLogger(n).level for n in names}
    try:
        yield
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)
        for n, level in levels.items():
            logging.getLogger(n).setLevel(level)


def test_kafka_info_is_not_logged_but_warnings_and_our_info_are(
    restored: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REFERRAL_DEBUG_LOGGERS", raising=False)
    service_stop_event()
    logging.getLogger("kafka.net.manager").info("Bootstrap complete: <cluster>")
    logging.getLogger("kafka.net.manager").warning("Bootstrap connection failed")
    logging.getLogger("referral.router").info("router started")
    err = capsys.readouterr().err
    assert "Bootstrap complete" not in err
    assert "Bootstrap connection failed" in err
    assert "router started" in err


def test_a_maintainer_can_ask_for_a_kafka_logger(
    restored: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REFERRAL_DEBUG_LOGGERS", "kafka.net.manager")
    service_stop_event()
    logging.getLogger("kafka.net.manager").info("Bootstrap complete: <cluster>")
    assert "Bootstrap complete" in capsys.readouterr().err
