"""The monitoring files of docs/monitoring: rules that promtool accepts, alerts that fire.

``promtool check rules`` parses the alerting rules; ``promtool test rules`` feeds
them synthetic series (docs/monitoring/referral-alerts.test.yml) and checks each
alert fires when it should and not on a healthy network. The Grafana dashboard's
queries are run against a real Prometheus in tests/e2e/test_prometheus.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

MONITORING = Path(__file__).resolve().parent.parent / "docs" / "monitoring"
RULES = MONITORING / "referral-alerts.rules.yml"
DASHBOARD = MONITORING / "referral-dashboard.json"
PROMTOOL = Path("/usr/bin/promtool")
#: The alerts the issue asks for (lag growing, dead letters, overdue receipts, a producer
#: replaced, a deadline missed), and the others of the file.
ALERTS = {
    "ReferralConsumerLagGrowing",
    "ReferralDeadLetters",
    "ReferralReceiptsOverdue",
    "ReferralProducerReplaced",
    "ReferralDeadlineMissed",
    "ReferralSignatureOrSealFailures",
    "ReferralConsumerRejoined",
    "ReferralMetricsTargetDown",
}
METRIC = re.compile(r"\b((?:referral|messaging)_[a-z_]+)\b")


def promtool(*args: str) -> str:
    """Run promtool; its output (AssertionError with it if it fails)."""
    if not PROMTOOL.exists():
        # Never a skip: a check that did not run is not a pass.
        pytest.fail(f"{PROMTOOL} is missing (`make prometheus` installs Debian's prometheus)")
    done = subprocess.run(
        [str(PROMTOOL), *args], cwd=MONITORING, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def dashboard_queries() -> list[str]:
    """Every query of the dashboard's panels."""
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def test_promtool_checks_the_alerting_rules() -> None:
    out = promtool("check", "rules", RULES.name)
    assert f"SUCCESS: {len(ALERTS)} rules found" in out
    assert set(re.findall(r"- alert: (\w+)", RULES.read_text())) == ALERTS


def test_every_alert_fires_on_its_series_and_not_on_a_healthy_network() -> None:
    out = promtool("test", "rules", "referral-alerts.test.yml")
    assert "SUCCESS" in out
    tested = set(
        re.findall(r"alertname: (\w+)", (MONITORING / "referral-alerts.test.yml").read_text())
    )
    assert tested == ALERTS


def test_the_dashboard_is_grafana_json_over_the_exported_metrics() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] == "referral-network"
    queries = dashboard_queries()
    assert len(queries) >= 12
    names = {m for q in queries for m in METRIC.findall(q)}
    # Lag, dead letters, overdue receipts, healing and deadlines all have a panel.
    for name in (
        "referral_consumer_lag",
        "referral_dead_lettered_total",
        "referral_receipts_overdue",
        "referral_producer_replacements_total",
        "referral_deadlines_missed",
        "referral_outbox_pending",
        "referral_security_failures_total",
    ):
        assert name in names, name
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
