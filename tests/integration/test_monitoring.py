"""The monitoring shipped with the compose deployment, checked for real: Prometheus (Debian's
package) accepts its config and alerts, `promtool test rules` covers each alert, and every
query of the Grafana dashboard returns data from processors running on the local broker (a
panel that shows nothing is a bug): the order charger with its flaky gateway and poison, the
booking saga with its services, and an outbox relay on a real PostgreSQL."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import psycopg
import pytest
import yaml

from examples.booking.deployment import Deployment, bookings
from examples.gateway import Faults, Gateway
from examples.orders import make_samples
from localkafka import free_port
from localkafka.clients import create_topics, unique_name, wait_for
from tests.outboxes import create_tables, insert, table_name, write_relay_config
from tests.processes import ROOT

pytestmark = pytest.mark.kafka
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "processor.json"


def promtool(*argv: str) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: install Debian's prometheus package (.ci/run does)")
    return subprocess.run(["promtool", *argv], capture_output=True, text=True, cwd=PROMETHEUS, timeout=120)


def test_the_prometheus_config_and_alerts_are_valid_and_each_alert_is_tested():
    for argv in (("check", "config", "prometheus.yml"), ("check", "rules", "alerts.yml"),
                 ("test", "rules", "alerts.test.yml")):
        result = promtool(*argv)
        assert result.returncode == 0, result.stdout + result.stderr
    alerts = {rule["alert"] for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
              for rule in group["rules"]}
    tested = {case["alertname"] for test in yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
              for case in test["alert_rule_test"]}
    assert alerts == tested, f"alerts without a test: {alerts - tested}"


class Prometheus:
    """Debian's Prometheus on loopback, scraping `targets` every second, with the alerts."""

    def __init__(self, workdir: Path, targets: list[str]):
        self.port = free_port()
        config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
        config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
        config["scrape_configs"] = config["scrape_configs"][:1]  # the processor's job (no relay here)
        config["scrape_configs"][0]["static_configs"] = [{"targets": targets}]
        config["rule_files"] = [str(PROMETHEUS / "alerts.yml")]
        path = workdir / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        self.log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["prometheus", f"--config.file={path}", f"--storage.tsdb.path={workdir / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self._ready, 60, "Prometheus ready")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as answer:
                return answer.status == 200
        except OSError:
            return False

    def get(self, path: str, **params) -> dict:
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as answer:
            return json.load(answer)["data"]

    def query(self, expr: str) -> list:
        return self.get("/api/v1/query", query=expr)["result"]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.log.close()


def dashboard_queries() -> dict[str, str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return {f"{panel['title']}: {target['expr']}": target["expr"] for panel in panels for target in panel["targets"]}


def start_relay(processors, tmp_path: Path, bootstrap: str, dsn: str, port: int) -> None:
    """An outbox relay with rows to publish, its metrics on `port`."""
    table = table_name()
    create_tables(dsn, table)
    create_topics(bootstrap, ["outbox.monitored"], 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        for n in range(100):
            insert(conn, table, "monitored", f"o{n % 10}", {"n": n})
    config = write_relay_config(tmp_path / "relay.yaml", bootstrap, dsn, table, unique_name("relay"), metrics_port=port)
    processors(config, "relay", command="outbox")


def test_every_dashboard_query_shows_data_from_a_real_run(pipe, processors, tmp_path, kafka_bootstrap, postgres):
    charger_port = free_port()
    p = pipe(partitions=3, transform="examples.charge:transform", output_value={"format": "json"},
             metrics_port=charger_port,
             resilience={"payment-gateway": {"retry": {"attempts": 4, "base_delay_ms": 20, "max_delay_ms": 200},
                                             "breaker": {"failure_rate": 0.5, "window": 20, "minimum_calls": 10,
                                                         "open_ms": 2000, "half_open_calls": 2},
                                             "bulkhead": 4, "rate_limit": 500, "rate_burst": 20}},
             processing={"concurrency": 4, "record_deadline_ms": 5000, "retry_backoff_ms": 500})
    gateway = Gateway(Faults(rate=0.3, timeout_s=0.2), seed=3).start()
    booking = Deployment(kafka_bootstrap, tmp_path, {"BOOKING_DECLINE_RATE": "0.2", "BOOKING_STEP_TIMEOUT_MS": "2000"})
    prometheus = None
    try:
        samples = make_samples(3_000, poison_per_kind=0.02, seed=11)  # every kind of poison
        p.feed(samples)
        processors(p.config, "charger", env={"GATEWAY_URL": gateway.url, "GATEWAY_TIMEOUT_S": "0.3"})
        booking.create_topics()
        booking.start_all()
        booking.feed(bookings(300))
        relay_port = free_port()
        start_relay(processors, tmp_path, kafka_bootstrap, postgres, relay_port)
        targets = [f"127.0.0.1:{port}" for port in (charger_port, relay_port, *booking.metrics_ports.values())]
        prometheus = Prometheus(tmp_path, targets)
        queries = dashboard_queries()
        empty: list[str] = []

        def all_show_data() -> bool:
            empty[:] = [name for name, expr in queries.items() if not prometheus.query(expr)]
            return not empty
        try:
            wait_for(all_show_data, 180, "every dashboard query returning data", interval=2.0)
        except TimeoutError:
            pytest.fail(f"dashboard queries without data: {empty}")
        def alerting() -> set[str]:
            return {alert["labels"]["alertname"] for alert in prometheus.get("/api/v1/alerts")["alerts"]}
        wait_for(lambda: "ProcessorDeadLetters" in alerting(), 60, "the dead letters' alert")  # for real
        assert prometheus.query('up{job="processor"} == 0') == [], "a target was not scraped"
    finally:
        if prometheus is not None:
            prometheus.stop()
        booking.stop_all()
        gateway.stop()
