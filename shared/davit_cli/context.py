"""The global options every ``davit`` command shares (kubeconfig, context, namespace, output, Redis)
and the cluster connection and Davit's objects they lead to."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from davit.api.objects import CLUSTER_SCOPED
from davit.constants import Kind
from davit_cli.errors import CliError

if TYPE_CHECKING:
    from davit.kube.operations import Operations


_IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


#: Who the API server records as having written the fields the CLI sets.
FIELD_MANAGER = "davit-cli"


@dataclass
class CliContext:
    """The global options, set by whichever level gave them (a command's own flag wins)."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None
    all_namespaces: bool = False
    output: str = "table"
    #: ``get -l``: only the objects whose labels match this selector.
    selector: str | None = None
    #: Out of repr: the URL may hold Redis' password.
    redis_url: str | None = field(default=None, repr=False)
    #: The namespace when neither ``-n`` nor the kubeconfig names one, if a command group has its own
    #: (clones live in the admin namespace).
    group_namespace: str | None = None
    _api: Any = field(default=None, repr=False)

    def kubeconfig_path(self) -> str | None:
        """``--kubeconfig``, else $KUBECONFIG, else ``~/.kube/config`` where it exists, as kubectl
        finds it; None in a pod without any (the pod's service account is used)."""
        found = self.kubeconfig or os.environ.get("KUBECONFIG")
        if found:
            return found
        home = Path.home() / ".kube" / "config"
        return str(home) if home.is_file() else None

    def api(self) -> Any:
        if self._api is None:
            from davit.kube import clients

            self._api = clients.api_client(self.kubeconfig_path(), self.context, component="cli")
        return self._api

    def resolved_namespace(self) -> str:
        return (
            self.namespace or self.group_namespace or default_namespace(self.kubeconfig_path(), self.context)
        )

    def namespace_for(self, kind: Kind) -> str:
        """Where objects of ``kind`` are read and written: nowhere ("") for a cluster-scoped kind."""
        return "" if kind in CLUSTER_SCOPED else self.resolved_namespace()

    def resolved_redis_url(self) -> str | None:
        url = self.redis_url or os.environ.get("REDIS_URL") or os.environ.get("DAVIT_REDIS_URL")
        if not url:
            return None
        # As for the services: $DAVIT_REDIS_PASSWORD joins a URL that holds no password.
        from davit.settings import redis_url_with_password

        return redis_url_with_password(url, os.environ.get("DAVIT_REDIS_PASSWORD", ""))

    def objects(self) -> Operations:
        """Davit's objects, written as ``davit-cli``; a missing one required raises NotFound (one line)."""
        from davit.kube.operations import Operations

        return Operations(self.api(), field_manager=FIELD_MANAGER)


pass_cli = click.make_pass_decorator(CliContext, ensure=True)


def default_namespace(kubeconfig: str | None, context: str | None = None) -> str:
    """The namespace of the kubeconfig's current (or named) context; in a pod, the pod's; else default."""
    if kubeconfig:
        from davit.kube.client import list_kube_config_contexts

        try:
            contexts, active = list_kube_config_contexts(config_file=kubeconfig)
        except Exception as exc:
            raise CliError(f"cannot read kubeconfig {kubeconfig}: {exc}") from exc
        chosen = active if context is None else next((c for c in contexts if c.get("name") == context), None)
        if chosen is None:
            raise CliError(f"context {context!r} not found in kubeconfig {kubeconfig}")
        return str((chosen.get("context") or {}).get("namespace") or "default")
    if _IN_CLUSTER_NAMESPACE.exists():
        return _IN_CLUSTER_NAMESPACE.read_text().strip() or "default"
    return "default"


def admin_namespace() -> str:
    """The namespace whose operations may act across namespaces, as the services are configured
    (``$DAVIT_ADMIN_NAMESPACE``, else Stork's ``kube-system``)."""
    from davit.settings import Settings

    return os.environ.get("DAVIT_ADMIN_NAMESPACE") or Settings().admin_namespace
