"""deploy/base/rbac.yaml on the real API server: each service's account, with its own token, may read a
Secret only if its service opens a location's store, and never list them (the export's and the restore's
wildcards aside); and the services, each running with nothing but its own account, back up an
application with its volumes, a location whose credentials are in a Secret, to Successful — the grants
are narrow and still enough."""

from __future__ import annotations

import base64
import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from devstack.net import free_port
from tests.conftest import REPO_ROOT, StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import apply, backup_manifest, location_manifest, wait_final
from tests.integration.test_backup_volumes import deploy

pytestmark = pytest.mark.integration

DAVIT_NAMESPACE = "davit-system"
#: Each service's account in deploy/base/rbac.yaml.
ACCOUNTS = {
    "watcher": "davit",
    "backup": "davit-backup",
    "resources": "davit-resources",
    "retention": "davit-retention",
    "restore": "davit-restore",
    "uploader": "davit-uploader",
    "exporter": "davit-exporter",
}
#: The accounts that may read a Secret they name: their services open locations' stores.
READ_SECRETS = {"watcher", "backup", "resources", "retention", "restore", "uploader"}
#: The accounts that may list Secrets: what the export backs up and the restore recreates.
LIST_SECRETS = {"resources", "restore"}
#: The Lease the watcher's Role names (deploy/base/rbac.yaml); the test's watcher must use it.
LEASE = "davit-watcher"


@pytest.fixture(scope="module")
def kubeconfigs(stack: StackEnv, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """service → a kubeconfig holding its account's token (and nothing of the administrator's)."""
    stack.kubectl("apply", "-f", str(REPO_ROOT / "deploy" / "base" / "rbac.yaml"))
    admin = yaml.safe_load(Path(stack.kubeconfig).read_text())
    directory = tmp_path_factory.mktemp("accounts")
    paths = {}
    for service, account in ACCOUNTS.items():

        def token(account: str = account) -> str | None:
            sa = json.loads(stack.kubectl("-n", DAVIT_NAMESPACE, "get", "sa", account, "-o", "json").stdout)
            for ref in sa.get("secrets") or []:
                secret = json.loads(
                    stack.kubectl("-n", DAVIT_NAMESPACE, "get", "secret", ref["name"], "-o", "json").stdout
                )
                if (secret.get("data") or {}).get("token"):
                    return base64.b64decode(secret["data"]["token"]).decode()
            return None

        config = {
            **admin,
            "users": [{"name": account, "user": {"token": wait_for(f"{account}'s token", token)}}],
        }
        config["contexts"] = [{**c, "context": {**c["context"], "user": account}} for c in admin["contexts"]]
        path = directory / f"{account}.kubeconfig"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        paths[service] = str(path)
    return paths


def as_account(stack: StackEnv, kubeconfig: str, *args: str) -> tuple[int, str]:
    result = stack.kubectl(f"--kubeconfig={kubeconfig}", *args, check=False)
    return result.returncode, result.stdout + result.stderr


def test_only_the_services_that_open_a_store_read_secrets(
    stack: StackEnv, namespace: str, kubeconfigs: dict[str, str]
) -> None:
    value = f"tenant-secret-{uuid.uuid4().hex}"
    stack.kubectl("-n", namespace, "create", "secret", "generic", "db", f"--from-literal=password={value}")
    for service, kubeconfig in kubeconfigs.items():
        # The attack: a stolen token of this service reads a tenant's Secret, by name and by listing.
        code, out = as_account(stack, kubeconfig, "-n", namespace, "get", "secret", "db", "-o", "json")
        if service in READ_SECRETS:
            assert code == 0, f"{service}: {out}"
        else:
            assert code != 0 and "forbidden" in out.lower(), f"{service} read a Secret: {out}"
            assert value not in out
        code, out = as_account(stack, kubeconfig, "-n", namespace, "get", "secrets", "-o", "name")
        if service in LIST_SECRETS:
            assert code == 0, f"{service}: {out}"
        else:
            assert code != 0 and "forbidden" in out.lower(), f"{service} listed Secrets: {out}"
        # And none may watch them or write one.
        code, out = as_account(stack, kubeconfig, "auth", "can-i", "watch", "secrets", "-n", namespace)
        assert out.strip() == "no", f"{service} may watch Secrets"
    # The node agent, on every node, reads a Secret only by name: it cannot find the others.
    code, out = as_account(stack, kubeconfigs["uploader"], "get", "secrets", "--all-namespaces")
    assert code != 0 and "forbidden" in out.lower(), out


@pytest.fixture
def own_account_services(stack: StackEnv, kubeconfigs: dict[str, str], tmp_path: Path) -> Iterator[Services]:
    import redis

    redis.Redis.from_url(stack.redis_url).flushdb()
    running = Services(stack, tmp_path / "logs")
    running.log_dir.mkdir()
    running.lease = LEASE
    yield running
    running.stop_all()
    stack.kubectl("-n", "kube-system", "delete", "lease", LEASE, "--ignore-not-found")


def test_each_service_backs_up_with_only_its_own_grants(
    stack: StackEnv,
    namespace: str,
    kubeconfigs: dict[str, str],
    own_account_services: Services,
    tmp_path: Path,
) -> None:
    services = own_account_services
    volumes = deploy(stack, namespace)
    for path in volumes.values():
        (path / "data.txt").write_text(f"rows of {path.name}\n" * 1000)
    # The location's credentials in a Secret of the tenant's namespace, as a tenant would keep them.
    location: dict[str, Any] = location_manifest(stack, "s3", namespace, tmp_path)
    s3 = location["location"].pop("s3Config")
    stack.kubectl(
        "-n", namespace, "create", "secret", "generic", "store-keys",
        f"--from-literal=accessKeyID={s3.pop('accessKeyID')}",
        f"--from-literal=secretAccessKey={s3.pop('secretAccessKey')}",
    )  # fmt: skip
    location["location"]["s3Config"] = s3
    location["location"]["secretConfig"] = "store-keys"
    apply(stack, location)

    metrics_port = free_port()
    for service in ("watcher", "backup", "resources", "retention", "restore", "exporter"):
        env = {"DAVIT_KUBECONFIG": kubeconfigs[service], "DAVIT_LEASE_NAME": LEASE}
        if service == "exporter":
            env["DAVIT_METRICS_ADDRESS"] = f"127.0.0.1:{metrics_port}"
        services.start(service, **env)
    for node in stack.env["DEV_NODES"].split(","):
        services.start(
            "uploader", name=f"uploader-{node}", DAVIT_KUBECONFIG=kubeconfigs["uploader"],
            DAVIT_NODE_NAME=node, DAVIT_KUBELET_ROOT=stack.env["KUBELET_ROOT"],
        )  # fmt: skip

    def available() -> bool:
        out = stack.kubectl("-n", namespace, "get", "backuplocation", "loc", "-o", "json").stdout
        return (json.loads(out).get("status") or {}).get("phase") == "Available"

    wait_for("the watcher (its own account) to find the location Available", available, timeout=60)
    apply(stack, backup_manifest(namespace, "own-grants"))
    status = wait_final(stack, namespace, "own-grants", services, timeout=180)
    assert status["status"] == "Successful", status
    assert status["volumesProgress"] == "2/2", status
    assert {v["status"] for v in status["volumes"]} == {"Successful"}, status

    # The exporter, on its own read-only account, counts the backup.
    def scraped() -> str | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
        return text if f'namespace="{namespace}"' in text else None

    assert "davit_" in wait_for("the exporter's metrics of the namespace", scraped, timeout=60)
    # RBAC's refusal names the account (a 403 for a namespace being deleted, from an earlier test's
    # leftovers, does not).
    logs = "\n".join(p.read_text(errors="replace") for p in sorted(services.log_dir.glob("*.log")))
    refused = [line for line in logs.splitlines() if f"system:serviceaccount:{DAVIT_NAMESPACE}:" in line]
    assert not refused, f"a service was refused what its code does: {refused[:3]}"
