"""Exec rules against the real API server of the local stack.

The stack has no real kubelet (``devstack/kubelet.py``): pods are scheduled and marked Running, but the
API server cannot open an exec session into them. That makes this the test of the real exec path's
failure reporting: whatever the API server answers arrives as an ExecError naming the pod and carrying
the API server's reason, and a rule run over it fails naming the pod, never with a library traceback.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from kubernetes import client

from davit.api.types import RuleAction, RuleItem
from davit.backup.exec_rules import WAIT_CMD, ExecError, RuleFailed, plan, run_rule
from davit.kube.clients import api_client
from davit.kube.execution import KubernetesExecutor
from tests.conftest import StackEnv
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: mysql, namespace: NS}
spec:
  replicas: 2
  selector: {matchLabels: {app: mysql}}
  template:
    metadata: {labels: {app: mysql, tier: db}}
    spec:
      containers:
      - {name: mysql, image: mysql:8}
      - {name: metrics, image: prom/mysqld-exporter}
"""

#: What the API server says when it cannot reach the (missing) kubelet to open the exec session.
NO_KUBELET = "the API server answered 500: error dialing backend"


def running_pods(api: client.ApiClient, namespace: str, count: int) -> list[dict[str, Any]]:
    core = client.CoreV1Api(api)

    def listed() -> list[dict[str, Any]] | None:
        response = core.list_namespaced_pod(namespace, label_selector="app=mysql", _preload_content=False)
        items: list[dict[str, Any]] = json.loads(response.data)["items"]
        running = [p for p in items if (p.get("status") or {}).get("phase") == "Running"]
        return items if len(running) == count else None

    return wait_for(f"{count} mysql pods running", listed, timeout=60)


@pytest.fixture
def api(stack: StackEnv) -> client.ApiClient:
    return api_client(stack.kubeconfig)


@pytest.fixture
def mysql_pods(stack: StackEnv, namespace: str, api: client.ApiClient) -> list[dict[str, Any]]:
    stack.kubectl("apply", "-f", "-", stdin=DEPLOYMENT.replace("NS", namespace))
    return sorted(running_pods(api, namespace, 2), key=lambda p: str(p["metadata"]["name"]))


def test_exec_into_a_running_pod_reports_the_api_servers_answer(
    api: client.ApiClient, namespace: str, mysql_pods: list[dict[str, Any]]
) -> None:
    name = mysql_pods[0]["metadata"]["name"]
    with KubernetesExecutor(api, timeout=30) as executor:
        with pytest.raises(ExecError) as no_kubelet:
            executor.run(namespace, name, "mysql", "echo hello")
        message = str(no_kubelet.value)
        assert message.startswith(f"pod {namespace}/{name} (container mysql): {NO_KUBELET}"), message
        assert "Traceback" not in message and "NoneType" not in message

        with pytest.raises(ExecError) as background:
            executor.start_background(namespace, name, "mysql", "sleep 60")
        assert str(background.value).startswith(f"pod {namespace}/{name} (container mysql): {NO_KUBELET}")

        with pytest.raises(ExecError) as gone:
            executor.run(namespace, "mysql-gone", "mysql", "true")
        assert str(gone.value) == (
            f"pod {namespace}/mysql-gone (container mysql): the API server answered 404 NotFound: "
            'pods "mysql-gone" not found'
        )

        with pytest.raises(ExecError) as no_container:
            executor.run(namespace, name, "postgres", "true")
        assert str(no_container.value) == (
            f"pod {namespace}/{name} (container postgres): the API server answered 400 BadRequest: container "
            f"postgres is not valid for pod {name}"
        )


def test_exec_without_permission_reports_the_api_servers_refusal(
    stack: StackEnv, api: client.ApiClient, namespace: str, mysql_pods: list[dict[str, Any]]
) -> None:
    """A service account that may read pods but not exec into them: 403 Forbidden, with RBAC's reason.

    Over a websocket (a GET upgrade) the API server checks ``get`` on ``pods/exec`` up to Kubernetes 1.30
    and ``create`` too from 1.31 (AuthorizePodWebsocketUpgradeCreatePermission): Davit needs both verbs."""
    stack.kubectl(
        "apply",
        "-f",
        "-",
        stdin=f"""
apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: {namespace}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: pod-reader, namespace: {namespace}}}
rules: [{{apiGroups: [""], resources: [pods], verbs: [get, list]}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader, namespace: {namespace}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}}
subjects: [{{kind: ServiceAccount, name: reader, namespace: {namespace}}}]
""",
    )
    core = client.CoreV1Api(api)

    def token() -> str | None:
        for secret in core.list_namespaced_secret(namespace).items:
            annotations = secret.metadata.annotations or {}
            if annotations.get("kubernetes.io/service-account.name") == "reader" and (secret.data or {}).get(
                "token"
            ):
                return base64.b64decode(secret.data["token"]).decode()
        return None

    reader = api_client(stack.kubeconfig)
    # The kubeconfig loader's hook would put the admin token back before every request.
    reader.configuration.refresh_api_key_hook = None
    reader.configuration.api_key = {"authorization": f"Bearer {wait_for('the reader token', token)}"}
    name = mysql_pods[0]["metadata"]["name"]
    with KubernetesExecutor(reader, timeout=30) as executor, pytest.raises(ExecError) as refused:
        executor.run(namespace, name, "mysql", "true")
    assert str(refused.value) == (
        f"pod {namespace}/{name} (container mysql): the API server answered 403 Forbidden: pods "
        f'"{name}" is forbidden: User "system:serviceaccount:{namespace}:reader" cannot get resource '
        f'"pods/exec" in API group "" in the namespace "{namespace}"'
    )


@pytest.mark.parametrize(
    ("action", "doing"),
    [
        (
            RuleAction(type="command", value="mysql -e 'flush tables'", run_in_single_pod=True),
            "could not be run",
        ),
        (
            RuleAction(
                type="command",
                value=f"mysql -Bse 'flush tables with read lock; system {WAIT_CMD};'",
                background=True,
                run_in_single_pod=True,
            ),
            f"could not be started (writing its {WAIT_CMD} script)",
        ),
    ],
    ids=["foreground", "background"],
)
def test_a_rule_run_over_the_real_exec_path_fails_naming_the_pod(
    api: client.ApiClient, namespace: str, mysql_pods: list[dict[str, Any]], action: RuleAction, doing: str
) -> None:
    items = [RuleItem(pod_selector={"app": "mysql", "tier": "db"}, container="mysql", actions=[action])]
    planned = plan(items, mysql_pods, namespace)
    first = mysql_pods[0]["metadata"]["name"]
    assert [(p.pod, p.container) for p in planned] == [(first, "mysql")], "runInSinglePod: the first by name"

    with KubernetesExecutor(api, timeout=30) as executor, pytest.raises(RuleFailed) as failed:
        run_rule(executor, planned, token=f"{namespace}-pre", hold_timeout=30)
    message = str(failed.value)
    assert message.startswith(
        f"rules[0] (podSelector app=mysql,tier=db) actions[0]: command {action.value!r} {doing}: "
        f"pod {namespace}/{first} (container mysql): {NO_KUBELET}"
    ), message
    assert failed.value.exit_code is None and failed.value.action == planned[0]
    assert "releasing" not in message, "nothing was holding, so there was nothing to release"
