"""Service settings: read from the environment (``DAVIT_*``), overridable by command-line flags.

Every default says why it is what it is; the README lists the variables.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import socket
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from davit import constants


def _default_identity() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    #: Kubeconfig file; empty means $KUBECONFIG, then the in-cluster service account.
    kubeconfig: str = ""
    #: The broker and Davit's own Redis keys. Kept out of ``repr`` (and so out of any dump of the
    #: settings): with a password it is a credential.
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    #: Redis' password, for a ``redis_url`` that has none: a deployment keeps the URL in plain
    #: configuration and the password in a Secret (``DAVIT_REDIS_PASSWORD`` from a secretKeyRef), and the
    #: two are joined here, so ``redis_url`` is always what a client connects with.
    redis_password: str = field(default="", repr=False)
    #: Objects here may act across namespaces (Stork's admin namespace).
    admin_namespace: str = constants.DEFAULT_ADMIN_NAMESPACE
    #: Full relist and reconcile of every object at least this often, so lost messages and missed events
    #: are noticed within a minute without loading the API server.
    resync_seconds: float = 60.0
    #: An in-progress operation whose status has not moved for this long has its current stage queued
    #: again. Workers touch ``lastUpdateTimestamp`` at least every minute while they work, so five minutes
    #: of silence means the worker is gone, not slow.
    stall_seconds: float = 300.0
    #: A Pending operation whose message is in no queue is sent again only after this long, so a message
    #: a worker has just taken (between its pop and its unacked record) is not mistaken for a lost one.
    requeue_grace_seconds: float = 5.0
    #: BackupLocations are checked when created or changed, and again this often (a list and a probe
    #: write per location: cheap for the store, quick to show expired credentials).
    location_check_seconds: float = 300.0
    #: Leader election, with client-go's defaults: a dead leader is replaced within ~15 s.
    lease_name: str = "davit-watcher"
    lease_namespace: str = constants.DEFAULT_ADMIN_NAMESPACE
    lease_duration_seconds: float = 15.0
    lease_renew_deadline_seconds: float = 10.0
    lease_retry_seconds: float = 2.0
    #: Where the exporter serves ``/metrics``, as ``host:port``. Loopback by default so that nothing is
    #: exposed unless asked for (a container sets ``0.0.0.0:9797``); 9797 lies in the range Prometheus
    #: exporters use (9100-9999).
    metrics_address: str = "127.0.0.1:9797"
    #: The file this process touches while it is healthy, for the exec probes (``davit.health``): the
    #: watcher's leader-election loop and every worker's consumer beat it every few seconds.
    heartbeat_file: str = "/tmp/davit-heartbeat"  # noqa: S108 - the container's own emptyDir /tmp
    #: This process' name in the Lease and in logs.
    identity: str = field(default_factory=_default_identity)
    log_level: str = "INFO"
    #: Requests per second to the API server, and the burst allowed at once (client-go's QPS/Burst).
    api_qps: float = 50.0
    api_burst: int = 100
    #: The restore service's own: its creates go as fast as the API server lets them (0: no client-side
    #: limit). A restore writes what an operator is waiting for, and the server protects itself (API
    #: Priority and Fairness answers 429 with a Retry-After, which every request honours); at 50 a second
    #: a restore of 100,000 objects would take over half an hour however idle the server.
    restore_api_qps: float = 0.0
    restore_api_burst: int = 0
    #: Tasks a worker runs at once (threads: the work is I/O on the API server and the store, and the
    #: compression and encryption libraries release the GIL).
    worker_concurrency: int = 4
    #: The node agent's node (its queue is ``davit.node.<node_name>``); in a DaemonSet, from the downward
    #: API's ``spec.nodeName``.
    node_name: str = ""
    #: Where the kubelet keeps pod volume directories on this node.
    kubelet_root: str = "/var/lib/kubelet"
    #: How long a CSI VolumeSnapshot may take to become readyToUse before its volume is failed.
    snapshot_timeout_seconds: float = 600.0
    #: A restore's snapshot copy whose restore is gone is deleted by the watcher once it is this old (a
    #: copy younger than this may belong to a restore created while the watcher was listing).
    snapshot_copy_grace_seconds: float = 600.0
    #: The data mover's helper pod and temporary claim whose operation ended or is gone are deleted by the
    #: watcher once they are this old (younger ones may belong to an operation created while it listed).
    mover_grace_seconds: float = 600.0
    #: Objects per list call in resource-export: kubectl's page size; large enough to amortise a request,
    #: small enough that a worker's memory stays flat whatever a namespace holds.
    export_page_size: int = 500
    #: A volume with more file data or entries than this is stored as several shards (ranges of its tree),
    #: one task each, so a node agent's several task slots (or a retry after a kill) share a big volume.
    #: 1 GiB takes about ten seconds to store; a retried shard repeats at most that much reading.
    volume_shard_bytes: int = 1 << 30
    volume_shard_entries: int = 100_000
    #: The image of the init container a restore adds to the pods that mount restored claims (it runs
    #: ``python -m davit.restore.init_container``) and of the data mover's helper pods: Davit's own image,
    #: which every cluster running Davit has. Empty (the default): the image of the service's own pod
    #: (``pod_name``/``pod_namespace``), so the install's one image setting reaches the helpers too
    #: (``davit.kube.mover.resolve_helper_image``); outside a pod, ``DEV_HELPER_IMAGE``.
    restore_helper_image: str = ""
    #: This process' pod, from the downward API (``metadata.name``, ``metadata.namespace``); empty outside
    #: a pod.
    pod_name: str = ""
    pod_namespace: str = ""
    #: The BackupLocation (in the admin namespace) clones stage their backup through; empty: the first
    #: Available one there, by name.
    clone_location: str = ""
    #: The retention service collects the garbage of every Available BackupLocation's repository this
    #: often (docs/format.md, "Garbage collection"): a deleted backup's data is marked at one run and
    #: freed at a later one, so space comes back within a few days without a run costing much more than
    #: a read of every tree once a day.
    gc_interval_seconds: float = 86400.0
    #: How long garbage stays marked before it is deleted: three times the task time limit (2 h), so a
    #: backup task that began before the mark has named its data long before (docs/format.md says what
    #: else it must exceed: the longest backup of a claim overlapping another).
    gc_grace_seconds: float = 21600.0
    #: How often the watcher looks for due schedule slots: a backup starts at most this late.
    schedule_tick_seconds: float = 10.0
    #: Development and tests only, never deployed: a file holding seconds by which the clock that decides
    #: when schedule slots are due and when backups expire runs ahead (or behind) of the real one
    #: (``davit.clocks``), so that a test need not wait days for a daily or monthly slot. Empty: the real
    #: clock.
    dev_clock_file: str = ""
    #: Directories (comma-separated) under which a ``type: local`` BackupLocation outside the admin
    #: namespace must lie; ``{namespace}`` in one stands for the location's namespace, so each tenant
    #: can be kept to a directory of its own. Empty: tenants may not use local locations at all, because
    #: the workers and the node agent (root) would otherwise read and write any path a tenant names.
    #: The admin namespace's locations may use any directory.
    local_location_roots: str = ""
    #: Endpoints (comma-separated ``host`` or ``host:port`` patterns, ``*`` as a wildcard, e.g.
    #: ``minio.storage.svc:9000,*.amazonaws.com``) that BackupLocations outside the admin namespace may
    #: contact; a cloud's default endpoint counts too. Empty: any endpoint, as before such a list
    #: existed; set it where tenants must not make Davit reach addresses inside the cluster network.
    tenant_endpoint_allowlist: str = ""
    #: A store operation (one object's read or write, one page of a listing) is retried, with jittered
    #: exponential backoff honouring the store's Retry-After, for at most this long; then the operation
    #: fails with the store's reason (docs/storage.md, "Retries and timeouts"). Long enough to ride out
    #: throttling or a store's front end restarting, short enough that a dead store fails the operation
    #: within a couple of minutes rather than holding a worker's slot.
    store_retry_seconds: float = 90.0
    #: Every store request's connect timeout, and its read timeout (the longest silence between two
    #: bytes of an answer): a hung connection ends, since a worker's threads are not stopped by Celery's
    #: time limits. A minute is far above a healthy store's time to first byte for one object.
    store_connect_timeout_seconds: float = 10.0
    store_read_timeout_seconds: float = 60.0

    def __post_init__(self) -> None:
        # Frozen: set through object.__setattr__, once, as the instance is made (dataclasses.replace,
        # and so with_overrides, makes a new one: a --redis-url override gets the password too).
        object.__setattr__(self, "redis_url", redis_url_with_password(self.redis_url, self.redis_password))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Settings from ``DAVIT_<FIELD>`` variables; ``KUBECONFIG`` and ``REDIS_URL`` are honoured too."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        fallbacks = {"kubeconfig": "KUBECONFIG", "redis_url": "REDIS_URL"}
        for f in fields(cls):
            raw = env.get(f"DAVIT_{f.name.upper()}")
            if not raw and f.name in fallbacks:
                raw = env.get(fallbacks[f.name])
            if raw is not None and raw != "":
                values[f.name] = _coerce(f, raw)
        return cls(**values)

    def with_overrides(self, **overrides: Any) -> Settings:
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """One ``--flag`` per setting, each overriding the environment."""
        for f in fields(Settings):
            flag = "--" + f.name.replace("_", "-")
            kind = {"float": float, "int": int}.get(str(f.type), str)
            parser.add_argument(flag, dest=f.name, type=kind, default=None)

    @classmethod
    def from_args(cls, argv: Sequence[str] | None = None, description: str = "") -> Settings:
        parser = argparse.ArgumentParser(description=description)
        cls.add_arguments(parser)
        args = parser.parse_args(argv)
        return cls.from_env().with_overrides(**vars(args))


def redis_url_with_password(url: str, password: str) -> str:
    """``url`` with ``password`` as its AUTH password (percent-encoded), unless it has one already or
    there is none to add."""
    if not password:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.password is not None:
        return url
    user, _, host = parts.netloc.rpartition("@")
    netloc = f"{user}:{urllib.parse.quote(password, safe='')}@{host}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def parse_list(value: str) -> tuple[str, ...]:
    """The items of a comma-separated setting, stripped, empty ones dropped."""
    return tuple(item.strip() for item in value.split(",") if item.strip())


def parse_address(address: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6 address]:port``) as (host, port); an empty host means every interface."""
    host, sep, port_text = address.strip().rpartition(":")
    if not sep or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"expected host:port with a port in 1-65535, got {address!r}")
    host = host.removeprefix("[").removesuffix("]")
    return host or "0.0.0.0", int(port_text)  # noqa: S104 - an empty host asks for every interface


def _coerce(f: dataclasses.Field[Any], raw: str) -> Any:
    convert = {"float": float, "int": int}.get(str(f.type))
    if convert is None:
        return raw
    try:
        return convert(raw)
    except ValueError as exc:
        raise ValueError(f"DAVIT_{f.name.upper()} must be a number, got {raw!r}") from exc
