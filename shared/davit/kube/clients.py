"""Builds Kubernetes API clients from a kubeconfig file or, inside a pod, the service account."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client, config

_IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def api_client(kubeconfig: str | None = None, context: str | None = None) -> client.ApiClient:
    """A client for the cluster named by ``kubeconfig`` (or $KUBECONFIG), else the in-cluster account.

    A fresh ``Configuration`` is built for every call, never the library's global default, so that two
    clusters can be used side by side in one process (cross-cluster tests, the dev kubelet).
    """
    path = kubeconfig or os.environ.get("KUBECONFIG")
    configuration = client.Configuration()
    if path:
        config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
    elif _IN_CLUSTER_TOKEN.exists():
        config.load_incluster_config(client_configuration=configuration)
    else:
        raise RuntimeError("no kubeconfig given (--kubeconfig or $KUBECONFIG) and not running in a pod")
    # Parallel list and create calls share this pool; the default of 4 connections would serialise them.
    configuration.connection_pool_maxsize = 32
    return client.ApiClient(configuration)
