"""A worker's repository of a BackupLocation (``Runtime.repository``) against the real API server and S3
server: cached per location generation; a backup's start (``verify``) reads the location's Secret again
and checks the store, and keeps the store it has open only while the credentials are the same ones."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from davit.format import layout
from davit.kube import clients
from davit.kube.operations import Operations
from davit.operations import runtime as runtime_module
from davit.operations.runtime import LocationUnavailable, LocationUnusable, Runtime
from davit.settings import Settings
from tests.conftest import StackEnv
from tests.integration.tenants import ADMIN_NAMESPACE as ADMIN

pytestmark = pytest.mark.integration


def worker_runtime(stack: StackEnv) -> Runtime:
    """What a worker holds, without its Redis and queues (``repository`` uses neither)."""
    api = clients.api_client(stack.kubeconfig)
    return Runtime(
        settings=Settings.from_env(stack.env), api=api, redis=None, celery=None, ops=Operations(api)
    )


def set_secret_key(stack: StackEnv, namespace: str, key: str, value: str) -> None:
    encoded = base64.b64encode(value.encode()).decode()
    stack.kubectl("-n", namespace, "patch", "secret", "loc-creds", "--type=merge",
                  "-p", f'{{"data": {{"{key}": "{encoded}"}}}}')  # fmt: skip


def test_a_backup_start_reuses_the_open_store_until_the_credentials_change(
    stack: StackEnv, namespace: str
) -> None:
    env = stack.env
    stack.kubectl("-n", namespace, "create", "secret", "generic", "loc-creds",
                  f"--from-literal=accessKeyID={env['S3_ACCESS_KEY']}",
                  f"--from-literal=secretAccessKey={env['S3_SECRET_KEY']}")  # fmt: skip
    prefix = f"repository-{uuid.uuid4().hex[:8]}"
    location = {
        "apiVersion": "davit.dev/v1alpha1", "kind": "BackupLocation",
        "metadata": {"name": "loc", "namespace": namespace},
        "location": {"type": "s3", "path": env["S3_BUCKET"], "prefix": prefix, "secretConfig": "loc-creds",
                     "s3Config": {"region": env["S3_REGION"], "endpoint": env["S3_ENDPOINT"],
                                  "disableSSL": True}},
    }  # fmt: skip
    stack.kubectl("apply", "-f", "-", stdin=json.dumps(location))
    runtime = worker_runtime(stack)

    first = runtime.repository(namespace, "loc", verify=True)
    assert first.store.exists(layout.LOCATION_RECORD)  # written by the first open
    # The next backups' starts check the same store; the page tasks in between use it as it is.
    assert runtime.repository(namespace, "loc", verify=True) is first
    assert runtime.repository(namespace, "loc") is first

    # A rotated key is read at the next start, and used: this one is wrong, and the S3 server says so.
    set_secret_key(stack, namespace, "secretAccessKey", env["S3_SECRET_KEY"] + "-rotated")
    assert runtime.repository(namespace, "loc") is first  # a page task does not re-read the Secret
    with pytest.raises(LocationUnusable, match="SignatureDoesNotMatch"):
        runtime.repository(namespace, "loc", verify=True)
    # Rotated back: the same credentials as the open store's, which is checked and kept.
    set_secret_key(stack, namespace, "secretAccessKey", env["S3_SECRET_KEY"])
    assert runtime.repository(namespace, "loc", verify=True) is first

    # With the Secret gone, a start fails with the reason, whatever the cache holds.
    stack.kubectl("-n", namespace, "delete", "secret", "loc-creds")
    with pytest.raises(LocationUnavailable, match="loc-creds"):
        runtime.repository(namespace, "loc", verify=True)

    # An edited location (a new generation) is opened anew, with the same credentials.
    stack.kubectl("-n", namespace, "create", "secret", "generic", "loc-creds",
                  f"--from-literal=accessKeyID={env['S3_ACCESS_KEY']}",
                  f"--from-literal=secretAccessKey={env['S3_SECRET_KEY']}")  # fmt: skip
    assert runtime.repository(namespace, "loc", verify=True) is first
    stack.kubectl("-n", namespace, "patch", "backuplocation", "loc", "--type=merge",
                  "-p", f'{{"location": {{"prefix": "{prefix}-moved"}}}}')  # fmt: skip
    moved = runtime.repository(namespace, "loc", verify=True)
    assert moved is not first
    assert moved.store.url != first.store.url
    assert moved.store.exists(layout.LOCATION_RECORD)
    # The older generation is dropped, not kept beside it.
    assert [key[1] for key in runtime._repositories] == [moved_generation(stack, namespace)]


def moved_generation(stack: StackEnv, namespace: str) -> str:
    jsonpath = "-o=jsonpath={.metadata.generation}"
    return stack.kubectl("-n", namespace, "get", "backuplocation", "loc", jsonpath).stdout


def test_a_worker_keeps_a_bounded_number_of_open_locations(
    stack: StackEnv, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A location per tenant must not grow a worker's memory without end: past the bound, the least
    recently used location is opened again when it is next needed."""
    monkeypatch.setattr(runtime_module, "REPOSITORIES_KEPT", 2)
    root = stack.state_dir / "local-store" / namespace
    for name in ("one", "two", "three"):
        (root / name).mkdir(parents=True)
        location = {
            "apiVersion": "davit.dev/v1alpha1", "kind": "BackupLocation",
            "metadata": {"name": name, "namespace": ADMIN},
            "location": {"type": "local", "path": str(root / name)},
        }  # fmt: skip
        stack.kubectl("apply", "-f", "-", stdin=json.dumps(location))
    try:
        runtime = worker_runtime(stack)
        one = runtime.repository(ADMIN, "one")
        two = runtime.repository(ADMIN, "two")
        assert runtime.repository(ADMIN, "one") is one  # used last: "two" is now the oldest
        runtime.repository(ADMIN, "three")
        assert len(runtime._repositories) == 2
        assert runtime.repository(ADMIN, "one") is one
        assert runtime.repository(ADMIN, "two") is not two  # it was let go, and is opened again
    finally:
        stack.kubectl("-n", ADMIN, "delete", "backuplocation", "one", "two", "three", "--ignore-not-found")
