"""Every manifest of the production install, as the project's kubectl renders it, applied to the local
API server with a server-side dry run: the API server validates each object (with stand-in CRDs for
ServiceMonitor, PrometheusRule, ScaledObject and TriggerAuthentication written from their documented
fields, tests/fixtures/stand-in-crds), and nothing Davit sets is pruned as unknown.

The local API server is Kubernetes 1.20, which serves PodDisruptionBudget as policy/v1beta1 only; the
install uses policy/v1 (1.21 and later), whose fields Davit sets (selector, minAvailable,
maxUnavailable) are the same, so those are dry-run as v1beta1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT, StackEnv
from tests.unit.test_install import PRODUCTION, render

pytestmark = pytest.mark.integration

STAND_INS = REPO_ROOT / "tests" / "fixtures" / "stand-in-crds"
#: Fields the API server fills in or keeps apart: left out of the comparison of sent and returned objects.
SERVER_FIELDS = {"status", "metadata"}


def served_on_the_stack(doc: dict[str, Any]) -> dict[str, Any]:
    if doc["apiVersion"] == "policy/v1" and doc["kind"] == "PodDisruptionBudget":
        return {**doc, "apiVersion": "policy/v1beta1"}
    return doc


def missing(sent: Any, returned: Any, path: str = "") -> list[str]:
    """Paths of what ``sent`` holds and ``returned`` does not (a pruned field, a dropped item)."""
    if isinstance(sent, dict):
        if not isinstance(returned, dict):
            return [path or "/"]
        found: list[str] = []
        for key, value in sent.items():
            if not path and key in SERVER_FIELDS:
                continue
            if key not in returned:
                found.append(f"{path}/{key}")
            else:
                found += missing(value, returned[key], f"{path}/{key}")
        return found
    if isinstance(sent, list):
        if not isinstance(returned, list) or len(returned) != len(sent):
            return [path]
        return [
            p
            for i, (a, b) in enumerate(zip(sent, returned, strict=True))
            for p in missing(a, b, f"{path}/{i}")
        ]
    return []


def test_the_production_install_passes_a_server_side_dry_run(stack: StackEnv, tmp_path: Path) -> None:
    stack.kubectl("apply", "-f", str(STAND_INS))
    stack.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(STAND_INS))
    # A dry run creates nothing, the namespace neither: the objects in it need it to exist.
    if stack.kubectl("get", "namespace", "davit-system", check=False).returncode:
        stack.kubectl("create", "namespace", "davit-system")

    docs = [served_on_the_stack(doc) for doc in render(PRODUCTION)]
    rendered = tmp_path / "install.yaml"
    rendered.write_text(yaml.safe_dump_all(docs))
    result = stack.kubectl("apply", "--dry-run=server", "-o", "json", "-f", str(rendered), check=False)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    returned = answer["items"] if answer.get("kind") == "List" else [answer]
    by_key = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in returned}
    assert len(by_key) == len(docs)

    pruned = {}
    for doc in docs:
        key = (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
        lost = missing(doc, by_key[key])
        if lost:
            pruned[key] = lost
    assert pruned == {}, f"fields the API server dropped as unknown: {pruned}"

    # The dry run made nothing.
    listed = stack.kubectl(
        "-n", "davit-system", "get", "deployments,scaledobjects,prometheusrules", "-o", "name"
    )
    assert listed.stdout.strip() == ""


def test_the_dry_run_refuses_a_wrong_field(stack: StackEnv, tmp_path: Path) -> None:
    """The stand-ins do check: a ScaledObject whose minReplicaCount is not a number is refused."""
    stack.kubectl("apply", "-f", str(STAND_INS))
    stack.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(STAND_INS))
    if stack.kubectl("get", "namespace", "davit-system", check=False).returncode:
        stack.kubectl("create", "namespace", "davit-system")
    scaled = next(doc for doc in render(PRODUCTION) if doc["kind"] == "ScaledObject")
    scaled["spec"]["minReplicaCount"] = "one"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(scaled))
    result = stack.kubectl("apply", "--dry-run=server", "-f", str(bad), check=False)
    assert result.returncode != 0 and "minReplicaCount" in result.stderr, result.stderr
