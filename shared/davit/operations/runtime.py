"""What a worker process needs to act: clients for the API server and Redis, the Celery app, and the
backup locations it writes to. Built once per process from its Settings."""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import redis
from celery import Celery

from davit import clocks, errors
from davit.api.objects import RawObject
from davit.api.types import LocationSpec
from davit.format.repository import BackupRepository
from davit.kube import client, clients, mover
from davit.kube.cluster import KubeCluster
from davit.kube.operations import Operations
from davit.operations import queueing
from davit.operations.adapters import RedisScratch
from davit.operations.dispatch import CeleryDispatch, Dispatch
from davit.operations.ports import Cluster, Ports, Scratch
from davit.settings import Settings
from davit.storage import factory
from davit.storage.base import ObjectStore, StorageError
from davit.storage.retry import RetryPolicy
from davit.validation import resolve_location


def open_location_store(
    ops: Operations,
    location: RawObject,
    policy: factory.LocationPolicy | None = None,
    retry: RetryPolicy | None = None,
) -> tuple[ObjectStore, factory.ResolvedLocation]:
    """The store of a BackupLocation CR, with the keys of its ``secretConfig`` Secret applied. Every
    open checks the location again against ``policy`` (by default the environment's settings): a
    tenant's directory must lie under the administrator's roots, resolved on this machine, and its
    endpoint must be allowed; StorageError (LocationRefused) otherwise, before anything is contacted."""
    settings = Settings.from_env()
    policy = policy or factory.LocationPolicy.from_settings(settings)
    resolved = resolve_location_store(ops, location, policy)
    return factory.open_store(resolved, policy, retry or factory.retry_policy(settings)), resolved


def resolve_location_store(
    ops: Operations, location: RawObject, policy: factory.LocationPolicy
) -> factory.ResolvedLocation:
    """What ``open_location_store`` opens: the location with its Secret read now and applied, checked
    against ``policy``; StorageError when the Secret is missing or the policy refuses it."""
    meta = location["metadata"]
    spec = LocationSpec.model_validate(location["location"])
    secret = None
    if spec.secret_config:
        secret = ops.secret_data(meta["namespace"], spec.secret_config)
        if secret is None:
            raise StorageError("SecretNotFound", f"Secret {meta['namespace']}/{spec.secret_config} not found")
    return factory.guard(factory.resolve_credentials(spec, secret, namespace=meta["namespace"]), policy)


class LocationUnavailable(errors.Transient):
    """The operation's BackupLocation is missing or its store refused us; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class LocationUnusable(LocationUnavailable, errors.Permanent):
    """The location's store refused its credentials, or kept failing for the stores' whole retry time:
    trying again gives the same answer (or was done already), so the operation fails at once."""

    retryable = False


#: Open locations a worker keeps (the least recently used goes first): an S3 store holds a boto3 client
#: of ~3 MB, and a cluster may have a location per tenant.
REPOSITORIES_KEPT = 16

#: The service whose client keeps to ``restore_api_qps`` rather than ``api_qps``.
RESTORE_SERVICE = "restore"


@dataclass
class Runtime:
    settings: Settings
    api: client.ApiClient
    redis: Any
    celery: Celery
    ops: Operations
    #: Per location generation: the resolved location (credentials included) and its repository, the
    #: most recently used last; at most ``REPOSITORIES_KEPT``.
    _repositories: OrderedDict[tuple[str, str], tuple[factory.ResolvedLocation, BackupRepository]] = field(
        default_factory=OrderedDict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, settings: Settings, service: str) -> Runtime:
        qps, burst = settings.api_qps, settings.api_burst
        if service == RESTORE_SERVICE:  # bulk creates: bound by the API server, not a client budget
            qps, burst = settings.restore_api_qps, settings.restore_api_burst
        api = clients.api_client(settings.kubeconfig or None, qps=qps, burst=burst, component=service)
        return cls(
            settings=mover.resolve_helper_image(api, settings),
            api=api,
            redis=redis.Redis.from_url(settings.redis_url),
            celery=queueing.create_app(settings.redis_url, f"davit-{service}"),
            ops=Operations(api, accepted_only=True),
        )

    @functools.cached_property
    def dispatch(self) -> Dispatch:
        """Where this process sends messages: the Celery app's queues (a test may assign a fake)."""
        return CeleryDispatch(self.celery)

    @functools.cached_property
    def cluster(self) -> Cluster:
        """The API server as the handlers use it (``davit.kube.cluster.KubeCluster`` over ``ops``)."""
        return KubeCluster(self.ops)

    @functools.cached_property
    def scratch(self) -> Scratch | None:
        """The operations' scratch state in this process's Redis; None without one (the CLI's)."""
        return None if self.redis is None else RedisScratch(self.redis)

    @functools.cached_property
    def ports(self) -> Ports:
        """The narrow interfaces handed to a handler (``davit.operations.ports``)."""
        if self.scratch is None:
            raise RuntimeError("a worker's runtime needs Redis for its scratch state")
        clock = clocks.from_settings(self.settings, "worker")
        return Ports(self.cluster, self.scratch, self.dispatch, self, self.settings, clock)

    def repository(self, namespace: str, location_name: str, verify: bool = False) -> BackupRepository:
        """The repository of the BackupLocation ``location_name`` as seen from ``namespace``; cached per
        location generation. ``verify`` (a backup's start) reads the location's Secret again, so edited
        credentials take effect, and checks the store: with the same credentials as the cached
        repository's, that repository's store is checked rather than a new one opened."""
        location = resolve_location(self.ops, namespace, location_name, self.settings.admin_namespace)
        if location is None:
            raise LocationUnavailable(f"BackupLocation {namespace}/{location_name} not found")
        meta = location["metadata"]
        # generation, not resourceVersion: status updates (the watcher's periodic checks) must not
        # throw the cached repository and its derived key away.
        cache_key = (str(meta["uid"]), str(meta.get("generation", "")))
        with self._lock:
            cached = self._repositories.get(cache_key)
            if cached is not None:
                self._repositories.move_to_end(cache_key)
        if cached is not None and not verify:
            return cached[1]
        policy = factory.LocationPolicy.from_settings(self.settings)
        try:
            resolved = resolve_location_store(self.ops, location, policy)
            if cached is not None and cached[0] == resolved:
                # Opening an S3 store again per backup cost the snapshot service ~0.13 CPU-s each (a
                # boto3 session and client) and, with many backups starting at once, its peak memory.
                cached[1].store.check()
                return cached[1]
            store = factory.open_store(resolved, policy, factory.retry_policy(self.settings))
            if verify:
                store.check()
            repository = BackupRepository.open(store, resolved.encryption_key)
        except StorageError as exc:
            # Refused credentials, or a store that failed for the whole retry time, fail at once.
            unavailable = LocationUnavailable if exc.retryable else LocationUnusable
            raise unavailable(
                f"BackupLocation {meta['namespace']}/{meta['name']} is unavailable: {exc.reason}"
            ) from exc
        with self._lock:
            # An edited location's older generations are not used again.
            for key in [k for k in self._repositories if k[0] == cache_key[0] and k != cache_key]:
                del self._repositories[key]
            self._repositories[cache_key] = (resolved, repository)
            while len(self._repositories) > REPOSITORIES_KEPT:
                self._repositories.popitem(last=False)
        return repository
