"""kafka-python's traceback for a task left waiting on a closed socket is not printed.

The record is made the way kafka-python's IO loop makes it (``log.exception`` on
``kafka.net.selector`` for the selector's ``ValueError`` on a closed socket), by
really registering a closed socket with a selector; the transport's traceback for a
read on a socket a close already dropped, by kafka-python's own read.
"""

from __future__ import annotations

import logging
import selectors
import socket

import pytest

import broker.kafka.clients  # noqa: F401  (installs the filters on kafka's loggers)
from cli.app import configure_logging

SELECTOR_LOG = logging.getLogger("kafka.net.selector")


def _task_dies(exc: BaseException) -> None:
    try:
        raise exc
    except BaseException:
        SELECTOR_LOG.exception("Unhandled exception in task %s:", "<Task _read_from_sock>")


def test_a_read_on_a_closed_socket_leaves_no_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    sock = socket.socket()
    sock.close()
    with (
        selectors.DefaultSelector() as sel,
        pytest.raises(ValueError, match="Invalid file descriptor: -1") as raised,
    ):
        sel.register(sock, selectors.EVENT_READ)
    _task_dies(raised.value)
    assert capsys.readouterr().err == ""


def test_other_task_failures_are_still_logged(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging()
    _task_dies(RuntimeError("something else"))
    err = capsys.readouterr().err
    assert "Unhandled exception in task" in err
    assert "RuntimeError: something else" in err


def test_a_read_on_a_transport_already_closed_leaves_no_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """kafka-python's own read, on a transport whose socket a close already dropped."""
    from kafka.net.transport import KafkaTCPTransport

    configure_logging()
    transport = KafkaTCPTransport(None, None)
    transport._closed = True
    data, err = transport._sock_recv()
    assert (data, type(err).__name__) == (b"", "KafkaConnectionError")
    assert capsys.readouterr().err == ""


def test_other_receive_errors_are_still_logged(capsys: pytest.CaptureFixture[str]) -> None:
    from kafka.net.transport import KafkaTCPTransport

    class Broken:
        def recv(self, n: int) -> bytes:
            raise OSError("synthetic receive failure")

        def getpeername(self) -> tuple[str, int]:
            raise OSError("not connected")

    configure_logging()
    KafkaTCPTransport(None, Broken())._sock_recv()
    assert "synthetic receive failure" in capsys.readouterr().err
