"""The Kubernetes client library as the rest of Davit sees it: the one module that names it.

Everything outside ``davit.kube`` takes the API client type, the typed API groups and the error it
raises from here (``from davit.kube import client``), so an import contract (``.importlinter``) can keep
the library itself inside this package. ``KubeApiError`` is the client's own ``ApiException`` (the same
class, not a wrapper): ``exc.status`` (404, 409, 410, ...), ``exc.reason`` and ``exc.body`` mean what the
API server said.
"""

from __future__ import annotations

from kubernetes.client import (
    ApiClient,
    CoordinationV1Api,
    CoreV1Api,
    CustomObjectsApi,
    V1DeleteOptions,
    V1Preconditions,
)
from kubernetes.client.exceptions import ApiException
from kubernetes.config import list_kube_config_contexts
from kubernetes.config.config_exception import ConfigException
from kubernetes.watch.watch import iter_resp_lines

#: What the API server's refusals raise; ``status`` is the HTTP status.
KubeApiError = ApiException
#: A kubeconfig that cannot be read or has no such context.
KubeConfigError = ConfigException

__all__ = [
    "ApiClient",
    "ApiException",
    "ConfigException",
    "CoordinationV1Api",
    "CoreV1Api",
    "CustomObjectsApi",
    "KubeApiError",
    "KubeConfigError",
    "V1DeleteOptions",
    "V1Preconditions",
    "iter_resp_lines",
    "list_kube_config_contexts",
]
