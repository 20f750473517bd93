"""The dashboard and the alerts against a real Prometheus: Debian's Prometheus, on loopback, scrapes the
stack's exporter every second while the real services back up a StatefulSet's volumes twice; then every
dashboard panel's query is evaluated through Prometheus' HTTP API and must return data, a real scrape
passes ``promtool check metrics``, and the alert rules load healthy.

With DAVIT_SCREENSHOT_DIR set (and Debian's chromium installed), headless Chromium also saves Prometheus'
graph page for two dashboard queries there, as evidence that the series look right."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dashboards import davit
from devstack.net import free_port
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import apply, backup_manifest, location_manifest, wait_final
from tests.integration.test_backup_volumes import deploy
from tests.integration.test_exporter import ExporterProcess
from tests.unit.test_dashboard import substituted

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "monitoring" / "prometheusrule.yaml"
MiB = 1024 * 1024


class PrometheusProcess:
    """Debian's Prometheus on a free loopback port, scraping one exporter every second."""

    def __init__(self, target: str, work: Path) -> None:
        prometheus = shutil.which("prometheus")
        assert prometheus, "prometheus is missing: `make deps` installs Debian's prometheus package"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        rules = yaml.safe_load(RULES.read_text())["spec"]
        (work / "rules.yaml").write_text(yaml.safe_dump(rules))
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(work / "rules.yaml")],
            "scrape_configs": [
                {
                    # As the ServiceMonitor has it: the job is davit-exporter, the exporter's labels win.
                    "job_name": "davit-exporter",
                    "honor_labels": True,
                    "static_configs": [{"targets": [target]}],
                }
            ],
        }
        (work / "prometheus.yaml").write_text(yaml.safe_dump(config))
        self.log_path = work / "prometheus.log"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={work / 'prometheus.yaml'}",
                    f"--storage.tsdb.path={work / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--web.enable-lifecycle",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_for("Prometheus ready", lambda: self._get("/-/ready") is not None, timeout=60)

    def _get(self, path: str) -> bytes | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as response:  # noqa: S310 - loopback
                body: bytes = response.read()
                return body
        except OSError:
            return None

    def api(self, path: str, **params: str) -> Any:
        body = self._get(f"/api/v1/{path}?{urllib.parse.urlencode(params)}")
        assert body is not None, f"no answer from {path}"
        answer = json.loads(body)
        assert answer["status"] == "success", answer
        return answer["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def exporter(stack: StackEnv, tmp_path: Path) -> Iterator[ExporterProcess]:
    (tmp_path / "exporter").mkdir()
    process = ExporterProcess(stack, tmp_path / "exporter")
    yield process
    process.stop()


@pytest.fixture
def prometheus(exporter: ExporterProcess, tmp_path: Path) -> Iterator[PrometheusProcess]:
    (tmp_path / "prometheus").mkdir()
    process = PrometheusProcess(f"127.0.0.1:{exporter.port}", tmp_path / "prometheus")
    yield process
    process.stop()


def has_data(result: list[dict[str, Any]]) -> bool:
    return bool(result) and all(sample.get("value") for sample in result)


def test_every_dashboard_query_returns_data_during_real_backups(
    stack: StackEnv,
    namespace: str,
    stack_services: Callable[..., Services],
    exporter: ExporterProcess,
    prometheus: PrometheusProcess,
    tmp_path: Path,
) -> None:
    services = stack_services()
    volumes = deploy(stack, namespace)
    for index, path in enumerate(volumes.values()):
        (path / "data.bin").write_bytes(os.urandom(4 * MiB + index))
    apply(stack, location_manifest(stack, "local", namespace, tmp_path))
    policy = f"hourly-{uuid.uuid4().hex[:6]}"
    apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "SchedulePolicy", "metadata": {"name": policy},
                  "policy": {"interval": {"intervalMinutes": 60, "retain": 2}}})  # fmt: skip
    apply(stack, {
        "apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationBackupSchedule",
        "metadata": {"name": "nightly", "namespace": namespace},
        "spec": {"schedulePolicyName": policy, "suspend": True,
                 "template": {"spec": {"backupLocation": "loc", "namespaces": [namespace]}}},
    })  # fmt: skip
    try:
        apply(stack, backup_manifest(namespace, "first"))
        assert wait_final(stack, namespace, "first", services, timeout=180)["status"] == "Successful"
        for path in volumes.values():
            (path / "more.bin").write_bytes(os.urandom(2 * MiB))
        apply(stack, backup_manifest(namespace, "second"))
        assert wait_final(stack, namespace, "second", services, timeout=180)["status"] == "Successful"

        # Prometheus has scraped the second backup's counters.
        completed = f'davit_operations_completed_total{{namespace="{namespace}",result="Successful"}}'
        wait_for(
            "both backups counted in Prometheus",
            lambda: [s for s in prometheus.query(completed) if s["value"][1] == "2"],
            timeout=60,
        )
        wait_for("the location Available in Prometheus",
                 lambda: prometheus.query(f'davit_location_available{{namespace="{namespace}"}} == 1'),
                 timeout=60)  # fmt: skip

        queries = davit.queries(json.loads(davit.render()))
        empty = [
            (title, expr) for title, expr in queries if not has_data(prometheus.query(substituted(expr)))
        ]
        assert empty == [], f"panels whose query returned no data: {empty}"
        # The namespace label survived the scrape (honor_labels), so $namespace selects this test's data.
        ours = prometheus.query(f'davit_backup_bytes_read_total{{namespace="{namespace}"}}')
        assert ours and float(ours[0]["value"][1]) >= 2 * 4 * MiB

        promtool = shutil.which("promtool")
        assert promtool
        check = subprocess.run([promtool, "check", "metrics"], input=exporter.text().encode(),
                               capture_output=True, check=False)  # fmt: skip
        assert check.returncode == 0 and not check.stdout.strip(), (
            check.stdout.decode() + check.stderr.decode()
        )

        groups = prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        assert len(rules) == sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["spec"]["groups"])
        assert {rule["health"] for rule in rules} == {"ok"}, [r for r in rules if r["health"] != "ok"]

        screenshots = os.environ.get("DAVIT_SCREENSHOT_DIR")
        if screenshots:
            take_screenshots(prometheus, Path(screenshots), namespace)
    finally:
        stack.kubectl("delete", "schedulepolicy", policy, "--ignore-not-found")


def take_screenshots(prometheus: PrometheusProcess, directory: Path, namespace: str) -> None:
    """Prometheus' graph page for two dashboard queries, saved by headless Chromium."""
    chromium = shutil.which("chromium")
    assert chromium, "DAVIT_SCREENSHOT_DIR needs Debian's chromium"
    directory.mkdir(parents=True, exist_ok=True)
    shots = {
        "node-agent-throughput": "sum by (node, direction) (rate(davit_node_agent_bytes_total[1m]))",
        "backup-bytes": f'davit_backup_bytes_read_total{{namespace="{namespace}"}}',
    }
    for name, expr in shots.items():
        params = {"g0.expr": expr, "g0.tab": "0", "g0.range_input": "1m"}
        url = f"{prometheus.url}/graph?{urllib.parse.urlencode(params)}"
        out = directory / f"{name}.png"
        subprocess.run(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={directory / '.chromium'}", "--window-size=1400,900",
             "--virtual-time-budget=8000", f"--screenshot={out}", url],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        assert out.stat().st_size > 10_000, out
