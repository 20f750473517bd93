"""The PrometheusRule's alerts (deploy/monitoring/prometheusrule.yaml): promtool accepts them, each has a
firing and a quiet case in tests/alerts/davit.yaml and they pass, and each links to its runbook section."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULE_FILE = ROOT / "deploy" / "monitoring" / "prometheusrule.yaml"
CASES = ROOT / "tests" / "alerts" / "davit.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
RUNBOOK_URL = "https://davit.dev/runbook#"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `make deps` installs Debian's prometheus package"
    return found


def groups() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULE_FILE.read_text())
    assert document["kind"] == "PrometheusRule"
    return list(document["spec"]["groups"])


def alerts() -> list[dict[str, Any]]:
    return [rule for group in groups() for rule in group["rules"] if "alert" in rule]


def run(*args: str, cwd: Path) -> str:
    result = subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_promtool_check_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups()}))
    out = run("check", "rules", str(rules), cwd=tmp_path)
    assert f"SUCCESS: {len(alerts())} rules found" in out


def test_promtool_test_rules(tmp_path: Path) -> None:
    # promtool compares annotations exactly; their templates are checked by `check rules` above.
    bare = [
        {**group, "rules": [{k: v for k, v in rule.items() if k != "annotations"} for rule in group["rules"]]}
        for group in groups()
    ]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": bare}))
    shutil.copy(CASES, tmp_path / "cases.yaml")
    out = run("test", "rules", "cases.yaml", cwd=tmp_path)
    assert "SUCCESS" in out


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(CASES.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a quiet case"
    assert (firing | quiet) - names == set(), "cases of alerts that do not exist"


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_each_alert_says_what_to_do(rule: dict[str, Any]) -> None:
    annotations = rule["annotations"]
    assert annotations["summary"] and annotations["description"]
    assert rule["labels"]["severity"] in ("warning", "critical")
    url = annotations["runbook_url"]
    assert url == RUNBOOK_URL + rule["alert"].lower()
    headings = re.findall(r"^## (\w+)$", RUNBOOK.read_text(), flags=re.MULTILINE)
    assert rule["alert"] in headings, f"docs/runbook.md has no section '## {rule['alert']}'"
