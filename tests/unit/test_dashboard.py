"""The Grafana dashboard (dashboards/davit.py → deploy/monitoring/dashboards/davit.json): the committed JSON
is what the code builds, every panel has a query, and every query is valid PromQL (promtool parses each as
a recording rule). tests/integration/test_dashboard.py evaluates them against a real Prometheus."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import yaml

from dashboards import davit

#: What the Grafana variables stand for when a query is sent to Prometheus itself.
VARIABLES = {"$namespace": ".*", "$__rate_interval": "2m"}


def substituted(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def test_committed_dashboard_is_what_the_code_builds() -> None:
    assert davit.OUTPUT.read_text() == davit.render(), "run `make dashboard` and commit the result"


def test_every_panel_queries_something() -> None:
    model = json.loads(davit.render())
    panels = [p for p in model["panels"] if p["type"] != "row"]
    assert len(panels) >= 15
    for panel in panels:
        assert panel.get("targets"), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make deps` installs Debian's prometheus package"
    found = davit.queries(json.loads(davit.render()))
    rules = [
        {"record": f"davit:dashboard:q{i}", "expr": substituted(expr)} for i, (_t, expr) in enumerate(found)
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", "rules.yaml"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert all("$" not in rule["expr"] for rule in rules), "a Grafana variable the tests do not substitute"


def test_the_sidecar_configmap_carries_the_dashboard() -> None:
    kustomization = yaml.safe_load((davit.OUTPUT.parents[1] / "kustomization.yaml").read_text())
    [generator] = kustomization["configMapGenerator"]
    assert generator["files"] == ["dashboards/davit.json"]
    # The Grafana sidecar of kube-prometheus-stack loads ConfigMaps with this label.
    assert kustomization["generatorOptions"]["labels"]["grafana_dashboard"] == "1"
