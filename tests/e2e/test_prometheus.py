"""A real Prometheus (Debian's ``prometheus``) scrapes a router and two connector processes.

The router, hl-a's connectors (drop folder, status feed, outbox) and police-nl's
(inbox folder) run as ``referral ... --metrics-port`` processes on loopback;
Prometheus scrapes them every half second. The test asks Prometheus's HTTP API,
as an operator's dashboard would: the counters move while referrals flow, the
receiving sink's consumer lag rises while its backlog is read and comes back to
0, the outbox empties. Prometheus evaluates docs/monitoring's alerting rules
(the dead letter raises its alert) and answers every query of the Grafana
dashboard. The graph page of the lag and dead-letter series is shot in headless
Chromium (``artifacts/screenshots/prometheus-graph.png``).
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from broker.config import Settings
from broker.kafka.embedded import free_port
from tests.console.test_browser import CHROMIUM, CHROMIUM_ARGS, SHOTS
from tests.support.connectors import network_text, referral_json, wait_for
from tests.support.kafka import publish, spawn_cli
from tests.test_monitoring import METRIC, RULES, dashboard_queries

pytestmark = pytest.mark.slow

PROMETHEUS = Path("/usr/bin/prometheus")
#: Referrals of the run: enough that police-nl's backlog outlives a few scrapes.
N = 400


def _binary() -> Path:
    if not PROMETHEUS.exists():
        # Never a skip: a Prometheus test that did not run is not a pass.
        pytest.fail(f"{PROMETHEUS} is missing (`make prometheus` installs Debian's prometheus)")
    return PROMETHEUS


class Prom:
    """A Prometheus server on loopback, asked through its HTTP API."""

    def __init__(self, directory: Path, targets: dict[str, int]) -> None:
        self.port = free_port()
        jobs = [
            {
                "job_name": f"referral-{name}",
                "scrape_interval": "500ms",
                "scrape_timeout": "400ms",
                "static_configs": [{"targets": [f"127.0.0.1:{port}"]}],
            }
            for name, port in targets.items()
        ]
        config = directory / "prometheus.yml"
        # JSON is YAML: the configuration written as JSON.
        settings = {"evaluation_interval": "500ms"}
        config.write_text(
            json.dumps({"global": settings, "rule_files": [str(RULES)], "scrape_configs": jobs})
        )
        self.log = directory / "prometheus.log"
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [
                    str(_binary()),
                    f"--config.file={config}",
                    f"--storage.tsdb.path={directory / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{self.port}"

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of one API answer."""
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        return body["data"]

    def value(self, expr: str) -> float | None:
        """The single value of an instant query (None: no series)."""
        result = self.api("query", query=expr)["result"]
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None

    def ready(self) -> bool:
        """True once the server answers."""
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        """Stop the server."""
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _drop(settings: Settings, n: int, name: str) -> None:
    drop = settings.state_dir / "orgs" / "hl-a" / "drop"
    drop.mkdir(parents=True, exist_ok=True)
    tmp = drop / f".{name}.tmp"
    tmp.write_text("".join(json.dumps(referral_json("hl-a", "NL")) + "\n" for _ in range(n)))
    tmp.rename(drop / f"{name}.jsonl")


def _firing(prom: Prom) -> set[str]:
    """The alerts of docs/monitoring's rules firing now (after one more evaluation)."""
    firing: set[str] = set()

    def evaluated() -> bool:
        alerts = prom.api("alerts")["alerts"]
        firing.clear()
        firing.update(a["labels"]["alertname"] for a in alerts if a["state"] == "firing")
        return bool(firing)

    wait_for(evaluated, 30, "the dead-letter alert firing")
    return firing


#: Dashboard metrics no run here produces (no republish, no bad signature): their names
#: are checked in tests/broker/test_metrics.py.
_NOT_IN_THIS_RUN = {"referral_outbox_republished_total", "referral_security_failures_total"}


def _dashboard_gaps(prom: Prom) -> set[str]:
    """Dashboard queries Prometheus refuses, and dashboard metrics it has never scraped."""
    scraped = set(prom.api("label/__name__/values"))
    gaps: set[str] = set()
    for expr in dashboard_queries():
        query = expr.replace("$__rate_interval", "1m").replace("$job", "referral-.*")
        try:
            prom.api("query", query=query)
        except (AssertionError, OSError):
            gaps.add(expr)
        gaps.update(m for m in METRIC.findall(expr) if m not in scraped | _NOT_IN_THIS_RUN)
    return gaps


def _shoot(prom: Prom, lag: str, dead: str) -> Path:
    """The graph page of ``lag`` and ``dead`` over the run, shot in headless Chromium."""
    from playwright.sync_api import sync_playwright

    params: dict[str, str] = {}
    for i, expr in enumerate((lag, dead)):
        params |= {f"g{i}.expr": expr, f"g{i}.tab": "0", f"g{i}.range_input": "1m"}
    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / "prometheus-graph.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(f"{prom.url}/graph?{urllib.parse.urlencode(params)}")
            page.wait_for_selector("canvas, .graph-chart, svg", timeout=20_000)
            page.wait_for_timeout(1500)  # the chart draws after the range query answers
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    return shot


@pytest.mark.timeout(300)
def test_prometheus_sees_the_counters_move_and_the_lag_come_back_to_0(
    ready: Settings, tmp_path: Path
) -> None:
    network_file = tmp_path / "network.toml"
    network_file.write_text(network_text())
    settings = ready.model_copy(update={"network_file": network_file})
    prefix = settings.topic_prefix
    names = settings.topic_names()
    ports = {"router": free_port(), "hl-a": free_port(), "police-nl": free_port()}
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(name: str) -> None:
        args = ["route"] if name == "router" else ["connector", "run", name]
        procs[name] = spawn_cli(
            settings, *args, "--metrics-port", str(ports[name]), log=tmp_path / f"{name}.log"
        )

    prom = Prom(tmp_path, ports)
    try:
        for name in ("router", "hl-a"):
            start(name)
        wait_for(prom.ready, 30, "prometheus ready")
        up = 'sum(up{job=~"referral-router|referral-hl-a"})'
        wait_for(lambda: prom.value(up) == 2, 60, "router and hl-a scraped")
        router = f'job="referral-router",topic="{names.intake}"'
        sent = f"sum(messaging_client_consumed_messages_total{{{router}}})"
        assert prom.value(sent) in (None, 0.0)
        # hl-a publishes; the router routes to police-nl's topic while police-nl is away.
        _drop(settings, N, "wave-1")
        wait_for(lambda: prom.value(sent) == N, 120, f"the router's {N} intake records counted")
        publish(settings, names.intake, [(b"legacy", b"\x07not avro")])
        dead = "sum(referral_dead_lettered_total)"
        wait_for(lambda: prom.value(dead) == 1, 60, "the broken record dead-lettered")
        pending = 'sum(referral_outbox_pending{job="referral-hl-a",destination="police-nl"})'
        wait_for(lambda: prom.value(pending) == N, 30, f"hl-a's {N} referrals pending")
        # police-nl starts with N referrals waiting: its lag rises, then comes back to 0.
        start("police-nl")
        group = f"{prefix}sink-police-nl"
        lag = f'sum(referral_consumer_lag{{job="referral-police-nl",group="{group}"}})'
        wait_for(lambda: prom.value(lag) is not None, 90, "police-nl's lag scraped")
        consumed = f'sum(messaging_client_consumed_messages_total{{group="{group}"}})'
        wait_for(lambda: prom.value(consumed) == N, 120, "police-nl's deliveries counted")
        wait_for(lambda: prom.value(lag) == 0, 60, "police-nl's lag back to 0")
        wait_for(lambda: prom.value(pending) == 0, 90, "hl-a's outbox empty (every RECEIVED)")
        peak = prom.value(f"max_over_time({lag}[5m:250ms])")
        router_query = 'sum(referral_consumer_lag{job="referral-router"})'
        # The router's series comes from its own scrapes: it may show 0 a scrape later.
        wait_for(lambda: prom.value(router_query) == 0, 60, "the router's lag back to 0")
        router_lag = prom.value(router_query)
        overdue = prom.value('sum(referral_receipts_overdue{job="referral-hl-a"})')
        commits = prom.value(
            f'sum(referral_commit_duration_seconds_count{{job="referral-police-nl",group="{group}"}})'
        )
        alerts = _firing(prom)
        unanswered = _dashboard_gaps(prom)
        shot = _shoot(prom, "referral_consumer_lag", "referral_dead_lettered_total")
    finally:
        for proc in procs.values():
            proc.terminate()
        for name, proc in procs.items():
            assert proc.wait(30) == 0, (tmp_path / f"{name}.log").read_text()
        prom.stop()
    assert peak is not None
    assert peak > 0, "the lag never showed the backlog"
    assert router_lag == 0
    assert overdue == 0
    assert commits is not None
    assert commits > 0
    # The broken record raised its alert; nothing else fired on this healthy run (but a
    # group's rejoins, the healing of Tansu's group joins, which a loaded machine can make).
    assert "ReferralDeadLetters" in alerts
    assert alerts - {"ReferralDeadLetters", "ReferralConsumerRejoined"} == set(), alerts
    assert unanswered == set(), unanswered
    assert shot.stat().st_size > 20_000
    print(f"lag peak {peak:.0f}; screenshot {shot}")
