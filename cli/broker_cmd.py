"""``referral broker up|status|down``: the embedded Tansu broker."""

from __future__ import annotations

import signal
import time
from types import FrameType

import typer

from broker.errors import EmbeddedBrokerError
from broker.kafka.embedded import EmbeddedBroker, read_state, stop_detached
from broker.private import private_dir
from cli.app import App, console, print_json, state

__all__ = ["app", "down", "status", "up"]

app = App(help="Run the embedded (memory-only) Tansu broker.")


@app.command("up")
def up(
    ctx: typer.Context,
    port: int = typer.Option(0, "--port", help="Port to listen on (0 = a free one)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Loopback address to listen on."),
    detach: bool = typer.Option(False, "--detach", help="Run in the background."),
) -> None:
    """Start the embedded broker (foreground until Ctrl-C, or --detach)."""
    settings = state(ctx).settings
    running = read_state(settings.state_dir)
    if running is not None:
        raise EmbeddedBrokerError(
            f"an embedded broker is already running at {running.bootstrap} (pid {running.pid})"
        )
    private_dir(settings.state_dir, "state directory")
    broker = EmbeddedBroker(port or None, host, log_path=settings.state_dir / "broker.log")
    broker.start(detach=detach)
    if detach:
        st = broker.write_state(settings.state_dir)
        console.print(f"embedded broker running at {st.bootstrap} (pid {st.pid})")
        return
    console.print(f"embedded broker running at {broker.bootstrap}; Ctrl-C stops it")
    stop = False

    def _stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop and broker.pid is not None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
        console.print("embedded broker stopped")


@app.command("status")
def status(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Say whether a detached embedded broker is running, and where."""
    settings = state(ctx).settings
    st = read_state(settings.state_dir)
    if as_json:
        print_json(
            {
                "running": st is not None,
                **({"bootstrap": st.bootstrap, "pid": st.pid} if st else {}),
            }
        )
    elif st is None:
        console.print("embedded broker: not running")
    else:
        up_for = time.time() - st.started_at
        console.print(
            f"embedded broker: running at {st.bootstrap} (pid {st.pid}, up {up_for:.0f}s)"
        )
    if st is None:
        raise typer.Exit(3)


@app.command("down")
def down(ctx: typer.Context) -> None:
    """Stop the detached embedded broker started from this state directory."""
    settings = state(ctx).settings
    st = stop_detached(settings.state_dir)
    if st is None:
        console.print("embedded broker: not running")
    else:
        console.print(f"embedded broker at {st.bootstrap} (pid {st.pid}) stopped")
