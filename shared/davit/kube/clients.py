"""Builds Kubernetes API clients from a kubeconfig file or, inside a pod, the service account."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes import client, config

_IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")

#: Every API request's (connect, read) timeouts, in seconds, unless the call passes its own
#: ``_request_timeout`` (a watch does: its read waits as long as the watch lasts). The read timeout is the
#: longest silence between two bytes of an answer, so a hung API server call ends: a worker's threads are
#: not stopped by Celery's time limits. A minute is far above any answer a healthy API server gives.
DEFAULT_REQUEST_TIMEOUT: tuple[float, float] = (10.0, 60.0)


class BoundedApiClient(client.ApiClient):  # type: ignore[misc]  # the library has no type information
    """The library's ApiClient with a default ``_request_timeout`` on every request: the library's own
    default is none, and a connection the server stopped answering would hold its thread for ever."""

    def __init__(
        self,
        configuration: client.Configuration,
        request_timeout: tuple[float, float] = DEFAULT_REQUEST_TIMEOUT,
    ) -> None:
        super().__init__(configuration)
        self.request_timeout = request_timeout

    def request(  # type: ignore[no-untyped-def]
        self, method, url, query_params=None, headers=None, post_params=None, body=None,
        _preload_content=True, _request_timeout=None,
    ):  # fmt: skip
        timeout = self.request_timeout if _request_timeout is None else _request_timeout
        return super().request(
            method, url, query_params=query_params, headers=headers, post_params=post_params, body=body,
            _preload_content=_preload_content, _request_timeout=timeout,
        )  # fmt: skip


def api_client(
    kubeconfig: str | None = None,
    context: str | None = None,
    request_timeout: tuple[float, float] = DEFAULT_REQUEST_TIMEOUT,
) -> client.ApiClient:
    """A client for the cluster named by ``kubeconfig`` (or $KUBECONFIG), else the in-cluster account;
    every request bounded by ``request_timeout`` (connect, read) unless it sets its own.

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
    return BoundedApiClient(configuration, request_timeout)
