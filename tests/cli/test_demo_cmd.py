"""`referral demo` end to end, as a newcomer runs it (a real process, its own broker)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from console.server import DEFAULT_PORT as CONSOLE_PORT
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def test_demo_accounts_for_every_published_referral(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRAL_")}
    env["COLUMNS"] = "200"
    done = subprocess.run(
        [sys.executable, "-m", "cli", "--state-dir", str(tmp_path), "demo", "--count", "200"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    m = re.search(
        r"accounted: (\d+) delivered \+ (\d+) dead-lettered \+ (\d+) unassigned = (\d+) published "
        r"\((\d+) pending\); (\d+) more refused at their source",
        out,
    )
    assert m, out[-3000:]
    delivered, dead, unassigned, published, pending, refused = map(int, m.groups())
    assert delivered + dead + unassigned == published
    assert pending == 0
    assert dead == 3  # the legacy client's three broken records
    assert unassigned > 0
    assert refused > 0
    assert published + refused == 200 + 3
    assert "ledger intact" in out
    assert re.search(r"raw topic bytes: none of \d+ URLs and hashes readable", out)
    assert "trace of multi-jurisdiction referral" in out
    # Police requests between the Nordic points of contact, in the Art. 18 figures (issue 26).
    assert re.search(r"police requests: 4 between the Nordic points of contact .* 1 refused", out)
    for cc in ("DK", "FI", "NO", "SE"):
        assert re.search(rf"  {cc}: sent 1, received 1, answered within the limit \d", out), cc
    assert "answered within the limit 0, late 0, refused: " in out  # the refusal's state
    # The role rules at work: hosted material goes hotline → the hosting country's hotline.
    assert "routes by role" in out
    assert re.search(r"hotline\s*│\s*HOSTING\s*│\s*hotline\s*│\s*\d+", out), out[-3000:]
    # The run's own state: spans were exported, the broker is gone.
    run = next(tmp_path.glob("demo-*"))
    assert (run / "traces.jsonl").stat().st_size > 0
    assert not (run / "broker.json").exists()


def test_kept_demo_prints_a_reachable_intake_and_console_and_stops_without_noise(
    tmp_path: Path,
) -> None:
    """``--keep``: the printed HTTP intake address and token work; Ctrl-C stops it quietly,
    and a console port already taken (here by the test) is passed over without a bind error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRAL_")}
    env["COLUMNS"] = "300"
    args = ["--state-dir", str(tmp_path), "demo", "--keep", "--count", "20"]
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        taken.bind(("127.0.0.1", CONSOLE_PORT))
        taken.listen()
    except OSError:
        pass  # taken by someone else already: the same case
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "stderr.log").open("w"),
        text=True,
    )
    try:
        assert proc.stdout is not None
        lines: list[str] = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("still running"):
                break
        out = "".join(lines)
        intake = re.search(
            r"http intake of hl-de at (http://\S+/referrals) \(POST JSON; header "
            r"Authorization: Bearer (\S+)\)",
            out,
        )
        assert intake, out[-3000:]
        console_url = re.search(r"web console at (http://\S+)", out)
        assert console_url, out[-3000:]
        url, token = intake.groups()
        referral = json.loads((ROOT / "examples" / "referral.json").read_text(encoding="utf-8"))
        referral["envelope"]["case_id"] = f"kept-{uuid.uuid4()}"
        assert (
            httpx.post(url, json=referral, headers={"Authorization": "Bearer nope"}).status_code
            == 401
        )
        answer = httpx.post(url, json=referral, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 202, answer.text
        assert httpx.get(console_url.group(1)).status_code in (200, 302, 303)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
    finally:
        taken.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, rest[-3000:]
    err = (tmp_path / "stderr.log").read_text(encoding="utf-8")
    assert "Traceback" not in err + rest
    assert f":{CONSOLE_PORT}/" not in console_url.group(1)
    assert "address already in use" not in err + out + rest
    assert "Invalid file descriptor" not in err


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie no one reaped yet has stopped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def test_kept_demo_stopped_by_sigterm_stops_its_broker_too(tmp_path: Path) -> None:
    """``timeout``, a service manager: SIGTERM stops the kept demo as Ctrl-C does, broker too."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRAL_")}
    env["COLUMNS"] = "300"
    args = ["--state-dir", str(tmp_path), "demo", "--keep", "--count", "10"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("still running"):
                break
        run = next(tmp_path.glob("demo-*"))
        broker_pid = json.loads((run / "broker.json").read_text(encoding="utf-8"))["pid"]
        proc.send_signal(signal.SIGTERM)
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 20  # a loaded machine may take a while to reap it
    while _alive(broker_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    orphaned = _alive(broker_pid)
    if orphaned:
        os.kill(broker_pid, signal.SIGKILL)  # left behind: cleaned up, then reported
    assert not orphaned, f"the broker outlived the demo (exit {proc.returncode}): {rest[-600:]}"
    assert proc.returncode == 0
    assert "stopping" in rest
