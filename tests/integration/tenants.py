"""A tenant, as the attacks of the security tests act: kubectl as a ServiceAccount held to its namespace by
RBAC, and the reading of what came of an attack (an operation's end, its Events)."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services

ADMIN_NAMESPACE = "kube-system"

#: What a tenant may do in its namespace: Davit's resources, nothing else.
TENANT_ROLE = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: tenant, namespace: NS}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: davit-user, namespace: NS}
rules:
- apiGroups: [davit.dev]
  resources: [backuplocations, applicationbackups, applicationrestores]
  verbs: [get, list, watch, create, update, patch, delete]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: davit-user, namespace: NS}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: davit-user}
subjects: [{kind: ServiceAccount, name: tenant, namespace: NS}]
"""


class TenantUser:
    """kubectl as the tenant's ServiceAccount (impersonated: the API server applies its RBAC)."""

    def __init__(self, stack: StackEnv, namespace: str) -> None:
        self.stack = stack
        self.namespace = namespace
        stack.kubectl("apply", "-f", "-", stdin=TENANT_ROLE.replace("NS", namespace))
        self.user = f"--as=system:serviceaccount:{namespace}:tenant"
        # The tenant really is held to its namespace: the same request elsewhere is forbidden.
        denied = stack.kubectl(self.user, "-n", ADMIN_NAMESPACE, "get", "backuplocations", check=False)
        assert denied.returncode != 0 and "forbidden" in denied.stderr, denied

    def apply(self, manifest: dict[str, Any]) -> None:
        self.stack.kubectl(self.user, "-n", self.namespace, "apply", "-f", "-", stdin=json.dumps(manifest))

    def find(self, kind: str, name: str) -> dict[str, Any] | None:
        """The object as the tenant reads it; None when it does not exist."""
        result = self.stack.kubectl(
            self.user, "-n", self.namespace, "get", kind, name, "-o", "json", check=False
        )
        if result.returncode != 0:
            assert "NotFound" in result.stderr, result.stderr
            return None
        found: dict[str, Any] = json.loads(result.stdout)
        return found


def events_of(stack: StackEnv, namespace: str, name: str) -> list[dict[str, Any]]:
    out = stack.kubectl(
        "-n", namespace, "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
    ).stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def wait_final(
    stack: StackEnv, services: Services, kind: str, namespace: str, name: str, timeout: float = 120
) -> dict[str, Any]:
    """The status of an operation once it is Final (the services' logs are printed if it never is)."""

    def final() -> dict[str, Any] | None:
        out = stack.kubectl("-n", namespace, "get", kind, name, "-o", "json").stdout
        status: dict[str, Any] = json.loads(out).get("status") or {}
        return status if status.get("stage") == "Final" else None

    try:
        return wait_for(f"{kind} {namespace}/{name} to finish", final, timeout=timeout)
    except AssertionError:
        print(services.logs())
        raise
