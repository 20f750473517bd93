"""Clones hold no worker slot while their staging backup and restore run: more clones than the restore
service has task slots all complete (a clone's task creates its staging operation and returns; the
watcher sends its message again when that operation changes)."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import StackEnv
from tests.integration.conftest import Services
from tests.integration.test_backup_resources import apply
from tests.integration.test_restore import ADMIN, admin_location, wait_available, wait_done

__all__ = ["admin_location"]  # the fixture, shared with the restore tests


def test_more_clones_than_restore_slots_complete(
    stack: StackEnv, namespace: str, stack_services: Callable[..., Services], admin_location: str
) -> None:
    # One task slot per worker: a clone that waited in its slot for its own staging restore (which needs
    # a restore slot too) would never end, and a second one would never start.
    services = stack_services(DAVIT_WORKER_CONCURRENCY="1")
    stack.kubectl("-n", namespace, "create", "configmap", "settings", "--from-literal=colour=teal")
    wait_available(stack, admin_location)
    names = [f"slots-{i}" for i in range(2)]
    destinations = {name: f"{namespace}-{i}" for i, name in enumerate(names)}
    try:
        for name in names:
            apply(stack, {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationClone",
                          "metadata": {"name": name, "namespace": ADMIN},
                          "spec": {"sourceNamespace": namespace,
                                   "destinationNamespace": destinations[name]}})  # fmt: skip
        for name in names:
            status = wait_done(stack, services, "applicationclone", name, timeout=300)
            assert status["status"] == "Successful", (name, status.get("reason"))
            assert status.get("resourcesByKind", {}).get("ConfigMap"), status
            copied = stack.kubectl(
                "-n", destinations[name], "get", "configmap", "settings", "-o", "jsonpath={.data.colour}"
            ).stdout
            assert copied == "teal"
    finally:
        for name in names:
            stack.kubectl("-n", ADMIN, "delete", "applicationclone", name, "--wait=false", check=False)
        for destination in destinations.values():
            stack.kubectl("delete", "namespace", destination, "--wait=false", check=False)
