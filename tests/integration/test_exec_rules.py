"""Exec, end to end on the real stack: ``pods/exec`` through the real API server to the dev kubelet's exec
endpoint (``devstack/exec_server.py``), which runs the command in a sandbox holding the container's
volumes at their mount paths.

First the exec path itself (output, exit codes, environment, volumes, ``/tmp`` kept between sessions, the
API server's refusals), then rules run over it, then app-consistent backups with the real services: a
pre-exec rule's dump is in the backup and gone from the live volume, a background rule holds across the
volume stage, a failing rule fails the backup naming the pod and the command.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from davit.api.types import RuleAction, RuleItem
from davit.backup.exec_rules import WAIT_CMD, ExecError, RuleFailed, plan, run_rule
from davit.format.layout import BackupRef
from davit.kube.clients import api_client
from davit.kube.execution import KubernetesExecutor
from davit.repo import RepoReader, load_tree, restore_tree
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import (
    apply,
    backup_manifest,
    location_manifest,
    repository_for,
    wait_final,
)

pytestmark = pytest.mark.integration

#: A database with its data on a claim, a config volume mounted read-only, and a sidecar.
APP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: mysql-config, namespace: NS}
data: {my.cnf: "[mysqld]\\nskip-name-resolve\\n"}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: mysql, namespace: NS}
spec:
  serviceName: mysql
  replicas: 1
  selector: {matchLabels: {app: mysql}}
  template:
    metadata: {labels: {app: mysql, tier: db}}
    spec:
      containers:
      - name: mysql
        image: mysql:8
        env: [{name: MYSQL_DATABASE, value: shop}]
        volumeMounts:
        - {name: data, mountPath: /var/lib/mysql}
        - {name: config, mountPath: /config, readOnly: true}
      - {name: metrics, image: prom/mysqld-exporter}
      volumes: [{name: config, configMap: {name: mysql-config}}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {storageClassName: davit-dev, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"""

POD = "mysql-0"


@pytest.fixture
def api(stack: StackEnv) -> client.ApiClient:
    return api_client(stack.kubeconfig)


@pytest.fixture
def data_dir(stack: StackEnv, namespace: str) -> Path:
    """The app deployed and running; the directory of its claim's volume on the host."""
    apply(stack, APP.replace("NS", namespace))

    def running() -> Path | None:
        pod = json.loads(
            stack.kubectl("-n", namespace, "get", "pod", POD, "-o", "json", check=False).stdout or "{}"
        )
        if (pod.get("status") or {}).get("phase") != "Running":
            return None
        claim = json.loads(stack.kubectl("-n", namespace, "get", "pvc", "data-mysql-0", "-o", "json").stdout)
        if not claim["spec"].get("volumeName"):
            return None
        pv = json.loads(stack.kubectl("get", "pv", claim["spec"]["volumeName"], "-o", "json").stdout)
        return Path(pv["spec"]["local"]["path"])

    return wait_for("mysql-0 running with its volume", running, timeout=60)


def test_exec_runs_in_the_container_with_its_volumes_environment_and_exit_code(
    api: client.ApiClient, namespace: str, data_dir: Path
) -> None:
    with KubernetesExecutor(api, timeout=30) as executor:
        result = executor.run(
            namespace, POD, "mysql",
            "echo db=$MYSQL_DATABASE host=$HOSTNAME; echo dump > /var/lib/mysql/dump.sql; "
            "echo oops >&2; exit 3",
        )  # fmt: skip
        assert result.exit_code == 3
        assert "db=shop host=mysql-0" in result.output and "oops" in result.output
        # Written through the mount: the claim's volume on the host holds it.
        assert (data_dir / "dump.sql").read_text() == "dump\n"

        # /tmp is the container's own and outlives one session, as in a real container.
        assert executor.run(namespace, POD, "mysql", "echo kept > /tmp/marker").exit_code == 0
        assert executor.run(namespace, POD, "mysql", "cat /tmp/marker").output == "kept\n"
        assert executor.run(namespace, POD, "metrics", "cat /tmp/marker").exit_code != 0, "another container"

        # The read-only mount refuses writes; the machine's own directories are not there.
        config = executor.run(namespace, POD, "mysql", "cat /config/my.cnf; touch /config/x")
        assert config.exit_code != 0 and "Read-only file system" in config.output
        assert executor.run(namespace, POD, "mysql", f"test -e {data_dir}").exit_code == 1
        assert executor.run(namespace, POD, "metrics", "test -e /var/lib/mysql/dump.sql").exit_code == 1

        background = executor.start_background(namespace, POD, "mysql", "sleep 0.5; echo finished")
        ended = wait_for("the background command to end", background.result, timeout=30)
        assert (ended.exit_code, ended.output) == (0, "finished\n")


def test_exec_refusals_come_from_the_api_server_and_name_the_pod(
    stack: StackEnv, api: client.ApiClient, namespace: str, data_dir: Path
) -> None:
    with KubernetesExecutor(api, timeout=30) as executor:
        with pytest.raises(ExecError) as gone:
            executor.run(namespace, "mysql-gone", "mysql", "true")
        assert str(gone.value) == (
            f"pod {namespace}/mysql-gone (container mysql): the API server answered 404 NotFound: "
            'pods "mysql-gone" not found'
        )
        with pytest.raises(ExecError) as no_container:
            executor.run(namespace, POD, "postgres", "true")
        assert str(no_container.value) == (
            f"pod {namespace}/{POD} (container postgres): the API server answered 400 BadRequest: container "
            f"postgres is not valid for pod {POD}"
        )
    forbidden_for_a_reader(stack, namespace)


def forbidden_for_a_reader(stack: StackEnv, namespace: str) -> None:
    """A service account that may read pods but not exec into them: 403 Forbidden, with RBAC's reason.

    Over a websocket (a GET upgrade) the API server checks ``get`` on ``pods/exec`` up to Kubernetes 1.30
    and ``create`` too from 1.31 (AuthorizePodWebsocketUpgradeCreatePermission): Davit needs both verbs."""
    apply(
        stack,
        f"""
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
    core = client.CoreV1Api(api_client(stack.kubeconfig))

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
    with KubernetesExecutor(reader, timeout=30) as executor, pytest.raises(ExecError) as refused:
        executor.run(namespace, POD, "mysql", "true")
    assert str(refused.value) == (
        f"pod {namespace}/{POD} (container mysql): the API server answered 403 Forbidden: pods "
        f'"{POD}" is forbidden: User "system:serviceaccount:{namespace}:reader" cannot get resource '
        f'"pods/exec" in API group "" in the namespace "{namespace}"'
    )


def test_a_background_rule_holds_until_released_then_its_command_finishes(
    api: client.ApiClient, namespace: str, data_dir: Path
) -> None:
    hold = (
        f"touch /var/lib/mysql/locked; {WAIT_CMD}; rm /var/lib/mysql/locked; "
        "echo done > /var/lib/mysql/released"
    )
    items = [
        RuleItem(
            pod_selector={"app": "mysql"}, container="mysql",
            actions=[RuleAction(type="command", value=hold, background=True)],
        )
    ]  # fmt: skip
    pods = json.loads(client.CoreV1Api(api).list_namespaced_pod(namespace, _preload_content=False).data)[
        "items"
    ]
    planned = plan(items, pods, namespace)
    with KubernetesExecutor(api, timeout=30) as executor:
        run = run_rule(executor, planned, token=f"{namespace}-hold", hold_timeout=30)
        # run_rule returns once the command reached its hold: the lock is taken, and still held.
        assert (data_dir / "locked").exists() and not (data_dir / "released").exists()
        run.check()
        run.release()
    wait_for("the command to go on past its hold", (data_dir / "released").exists, timeout=30)
    assert not (data_dir / "locked").exists()


def test_a_failing_rule_over_the_real_exec_path_names_the_pod_command_and_exit_code(
    api: client.ApiClient, namespace: str, data_dir: Path
) -> None:
    action = RuleAction(type="command", value="echo 'ERROR 1045: access denied' >&2; exit 7")
    items = [RuleItem(pod_selector={"app": "mysql", "tier": "db"}, container="mysql", actions=[action])]
    pods = json.loads(client.CoreV1Api(api).list_namespaced_pod(namespace, _preload_content=False).data)[
        "items"
    ]
    planned = plan(items, pods, namespace)
    with KubernetesExecutor(api, timeout=30) as executor, pytest.raises(RuleFailed) as failed:
        run_rule(executor, planned, token=f"{namespace}-pre", hold_timeout=30)
    message = str(failed.value)
    assert failed.value.exit_code == 7, message
    assert f"{namespace}/{POD}" in message and "exit code 7" in message and "access denied" in message, (
        message
    )


# --- app-consistent backups with the real services ----------------------------------------------------

PRE_RULE = {
    "apiVersion": "davit.dev/v1alpha1",
    "kind": "Rule",
    "metadata": {"name": "dump-and-lock"},
    "rules": [
        {
            "podSelector": {"app": "mysql"},
            "container": "mysql",
            "actions": [
                {"type": "command", "value": 'echo "dump of $MYSQL_DATABASE" > /var/lib/mysql/dump.sql'},
                {
                    "type": "command",
                    "background": True,
                    "value": f"touch /var/lib/mysql/locked; {WAIT_CMD}; rm /var/lib/mysql/locked; "
                    "echo unlocked > /var/lib/mysql/unlocked",
                },
            ],
        }
    ],
}
POST_RULE = {
    "apiVersion": "davit.dev/v1alpha1",
    "kind": "Rule",
    "metadata": {"name": "cleanup"},
    "rules": [
        {
            "podSelector": {"app": "mysql"},
            "container": "mysql",
            "actions": [{"type": "command", "value": "rm /var/lib/mysql/dump.sql"}],
        }
    ],
}


def stored_files(location: dict[str, Any], ref: BackupRef, claim: str, target: Path) -> dict[str, str]:
    """The files of ``claim``'s volume as the backup stored them: name → text."""
    repository = repository_for(location)
    manifest = repository.read_manifest(ref)
    volume = next(v for v in manifest["volumes"] if v["persistentVolumeClaim"] == claim)
    restore_tree(load_tree(repository.store, repository.sealer, volume["tree"]), target, RepoReader(
        repository.store, repository.sealer))  # fmt: skip
    return {p.name: p.read_text() for p in target.iterdir() if p.is_file()}


def test_an_app_consistent_backup_holds_the_dump_and_the_live_volume_does_not(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path, data_dir: Path
) -> None:
    (data_dir / "table.ibd").write_text("rows\n")
    for rule in (PRE_RULE, POST_RULE):
        apply(stack, {**rule, "metadata": {**rule["metadata"], "namespace": namespace}})  # type: ignore[dict-item]
    location = location_manifest(stack, "local", namespace, tmp_path)
    apply(stack, location)
    apply(
        stack, backup_manifest(namespace, "consistent", preExecRule="dump-and-lock", postExecRule="cleanup")
    )
    status = wait_final(stack, namespace, "consistent", services, timeout=180)
    assert status["status"] == "Successful", status

    uid = json.loads(
        stack.kubectl("-n", namespace, "get", "applicationbackup", "consistent", "-o", "json").stdout
    )
    ref = BackupRef(namespace, "consistent", uid["metadata"]["uid"])
    stored = stored_files(location, ref, "data-mysql-0", tmp_path / "stored")
    # The dump the pre-exec rule wrote, and the lock its background command held while the volume was read.
    assert stored["dump.sql"] == "dump of shop\n" and "locked" in stored and stored["table.ibd"] == "rows\n"
    assert "unlocked" not in stored, "the hold was released only after the volume stage"
    # The live volume: the post-exec rule removed the dump; the held command went on once released.
    wait_for("the held command to end", (data_dir / "unlocked").exists, timeout=30)
    assert sorted(p.name for p in data_dir.iterdir()) == ["table.ibd", "unlocked"]


def test_a_failing_pre_exec_rule_fails_the_backup_naming_the_pod_and_the_command(
    stack: StackEnv, namespace: str, services: Services, tmp_path: Path, data_dir: Path
) -> None:
    failing = {
        "apiVersion": "davit.dev/v1alpha1",
        "kind": "Rule",
        "metadata": {"name": "flush", "namespace": namespace},
        "rules": [
            {
                "podSelector": {"app": "mysql"},
                "container": "mysql",
                "actions": [{"type": "command", "value": "echo 'cannot flush: disk full' >&2; exit 3"}],
            }
        ],
    }
    apply(stack, failing)
    location = location_manifest(stack, "local", namespace, tmp_path)
    apply(stack, location)
    apply(stack, backup_manifest(namespace, "ruled", preExecRule="flush"))
    status = wait_final(stack, namespace, "ruled", services)
    assert status["status"] == "Failed", status
    reason: str = status["reason"]
    assert "preExecRule flush" in reason and f"{namespace}/{POD}" in reason, reason
    assert "exit code 3" in reason and "cannot flush: disk full" in reason, reason
    # Nothing of the volume was stored: the rule failed before the volume stage.
    trees = [p for p in (tmp_path / "store").rglob("*") if p.parent.name == "trees"]
    assert not trees, trees
