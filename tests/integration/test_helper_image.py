"""The helper image follows the install's one image setting: a service whose DAVIT_RESTORE_HELPER_IMAGE is
unset uses the image of its own pod (read from the API server), so a restore's init container and the
data mover's helper pods run the image the install chose, not a default tag."""

from __future__ import annotations

import json

import pytest

from davit.kube import clients, mover
from davit.settings import Settings
from tests.conftest import StackEnv
from tests.integration.test_backup_resources import apply

pytestmark = pytest.mark.integration


def test_the_helper_image_is_the_services_own(stack: StackEnv, namespace: str) -> None:
    image = "registry.example.com/platform/davit:0.1.0"
    apply(stack, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "davit-restore-0", "namespace": namespace},
        "spec": {"containers": [{"name": "restore", "image": image}]},
    })  # fmt: skip
    api = clients.api_client(stack.kubeconfig)
    resolved = mover.resolve_helper_image(
        api, Settings(kubeconfig=stack.kubeconfig, pod_name="davit-restore-0", pod_namespace=namespace)
    )
    assert resolved.restore_helper_image == image
    # An explicit setting wins; outside a pod (or a pod that is gone) the development default is used.
    explicit = Settings(restore_helper_image="mirror.example/davit:0.1.0", pod_name="davit-restore-0",
                        pod_namespace=namespace)  # fmt: skip
    assert mover.resolve_helper_image(api, explicit).restore_helper_image == "mirror.example/davit:0.1.0"
    gone = Settings(pod_name="no-such-pod", pod_namespace=namespace)
    assert mover.resolve_helper_image(api, gone).restore_helper_image == mover.DEV_HELPER_IMAGE
    assert mover.resolve_helper_image(api, Settings()).restore_helper_image == mover.DEV_HELPER_IMAGE
    pods = json.loads(stack.kubectl("-n", namespace, "get", "pods", "-o", "json").stdout)["items"]
    assert [p["spec"]["containers"][0]["image"] for p in pods] == [image]
