"""The chaos suite's test bed: the local stack with every Davit service as a recorded process, an
application with volume data, operations driven through their custom resources, faults injected at
points the operations themselves show, and checks that count what came back and what was stored.

Faults are injected at *points* (``Point``): predicates over what an operation shows while it runs, its
status stage, the events in its scratch log, what is in its location, what already exists in the target
namespace; never after a sleep. When a point is reached the service's recorded process is SIGKILLed
(``devstack.procs.ProcessTable.kill``) and brought back by ``Stack.up`` (what ``make up`` runs), which
starts again only what died.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import stat
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from davit import constants
from davit.api.objects import RawObject
from davit.api.types import LocationSpec
from davit.backup.selection import ApiResource
from davit.format.layout import BackupRef
from davit.format.repository import BackupRepository
from davit.kube import clients, discovery
from davit.operations.scratch import OperationState, connect
from davit.restore.normalize import normalize
from davit.storage import factory
from devstack import demo_check
from devstack.stack import Stack, StackState

ADMIN = constants.DEFAULT_ADMIN_NAMESPACE
CLUSTER = "a"
MiB = 1024 * 1024
POLL_SECONDS = 0.05

#: Settings of the stack's services under chaos: stalled work is noticed within seconds, a dead
#: watcher's Lease is taken over within seconds, resources are listed in small pages (more parts, more
#: points to be killed at) and volumes stored in 16 MiB shards (several tasks per volume).
SERVICE_SETTINGS: Mapping[str, str] = {
    "DAVIT_RESYNC_SECONDS": "2",
    "DAVIT_REQUEUE_GRACE_SECONDS": "1",
    "DAVIT_STALL_SECONDS": "5",
    "DAVIT_LEASE_DURATION_SECONDS": "6",
    "DAVIT_LEASE_RENEW_DEADLINE_SECONDS": "4",
    "DAVIT_LEASE_RETRY_SECONDS": "1",
    "DAVIT_EXPORT_PAGE_SIZE": "20",
    "DAVIT_VOLUME_SHARD_BYTES": str(16 * MiB),
    # Clones stage their backup in a location of their own (made by the clone case).
    "DAVIT_CLONE_LOCATION": "chaos-staging",
}

#: The services a case may kill, by the name of their process in the stack (``a-<name>``).
WORKERS = ("watcher", "backup", "resources", "restore", "retention")


class CaseFailed(AssertionError):
    """The case's operation did not complete, or what it brought back differs."""


# --- the application ----------------------------------------------------------------------------------

APP = """
apiVersion: v1
kind: ServiceAccount
metadata: {name: app, namespace: NS}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: reader, namespace: NS}
rules: [{apiGroups: [""], resources: [configmaps], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: app-reads, namespace: NS}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: reader}
subjects: [{kind: ServiceAccount, name: app, namespace: NS}]
---
apiVersion: v1
kind: Secret
metadata: {name: credentials, namespace: NS}
type: Opaque
stringData: {password: not-a-real-password}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: NS, labels: {app: web}}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      serviceAccountName: app
      containers: [{name: web, image: nginx}]
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: NS}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: NS, labels: {app: db}}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - {labelSelector: {matchLabels: {app: db}}, topologyKey: kubernetes.io/hostname}
      containers: [{name: db, image: postgres, volumeMounts: [{name: data, mountPath: /var/lib/postgresql}]}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec: {storageClassName: davit-dev, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"""


@dataclass(frozen=True)
class AppShape:
    """How big the application is: data per volume (two volumes, one per dev node) and ConfigMaps."""

    volume_bytes: int = 48 * MiB
    small_files: int = 200
    configmaps: int = 120


def fill_volume(root: Path, seed: int, shape: AppShape) -> None:
    """Incompressible data, small files, a subdirectory, a symlink, an empty file, modes: what a
    volume's restore must bring back byte for byte."""
    rng = random.Random(seed)  # noqa: S311 - test data, reproducible on purpose
    with (root / "data.bin").open("wb") as out:
        left = shape.volume_bytes
        while left > 0:
            block = min(left, 4 * MiB)
            out.write(rng.randbytes(block))
            left -= block
    small = root / "small"
    small.mkdir(exist_ok=True)
    for i in range(shape.small_files):
        (small / f"f{i:04d}.txt").write_bytes(rng.randbytes(rng.randint(1, 4000)))
    (root / "conf").mkdir(exist_ok=True)
    (root / "conf" / "settings.ini").write_text(f"[db]\nseed = {seed}\n")
    os.chmod(root / "conf" / "settings.ini", 0o640)
    (root / "empty").touch()
    link = root / "current"
    if not link.is_symlink():
        link.symlink_to("data.bin")


# --- records and comparison ---------------------------------------------------------------------------


@dataclass
class Record:
    """An application at one moment: raw objects (normalised when compared, with the namespace mapping
    of the comparison) and every file below each volume's root."""

    namespace: str
    objects: dict[str, RawObject] = field(default_factory=dict)
    volumes: dict[str, list[demo_check.FileEntry]] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        return sum(demo_check.volume_totals(entries)[1] for entries in self.volumes.values())


@dataclass
class Comparison:
    objects_equal: int = 0
    bytes_equal: int = 0
    files_equal: int = 0
    differences: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return len(self.differences)


def compare(before: Record, after: Record, mapping: Mapping[str, str]) -> Comparison:
    """Every object of ``before`` (normalised with ``mapping``) against ``after``; every file's type,
    mode, size, mtime and sha256. Extra objects or files count as differences too."""
    result = Comparison()
    old = {key: normalize(obj, dict(mapping)) for key, obj in before.objects.items()}
    new = {key: normalize(obj, {}) for key, obj in after.objects.items()}
    differences = demo_check.object_differences(old, new)
    result.differences += differences
    changed = {d.split(":", 1)[0] for d in differences}
    result.objects_equal = sum(1 for key in old if key in new and key not in changed)
    volume_diffs = demo_check.volume_differences(before.volumes, after.volumes)
    result.differences += volume_diffs
    for claim, entries in before.volumes.items():
        bad = {d.split(": ", 1)[1].split(" ", 1)[0] for d in volume_diffs if d.startswith(f"volume {claim}:")}
        if claim not in after.volumes:
            continue
        for entry in entries:
            if entry.type == "file" and entry.path not in bad:
                result.files_equal += 1
                result.bytes_equal += entry.size or 0
    return result


# --- points ---------------------------------------------------------------------------------------------


@dataclass
class View:
    """What an operation shows at one moment."""

    obj: RawObject | None
    events: list[str]
    location: Path | None
    target_objects: int = 0

    @property
    def status(self) -> dict[str, Any]:
        return dict((self.obj or {}).get("status") or {})

    @property
    def stage(self) -> str:
        return str(self.status.get("stage") or "")

    @property
    def final(self) -> bool:
        return self.stage == "Final"

    def count(self, event: str) -> int:
        return self.events.count(event)

    def files(self, prefix: str) -> int:
        """Files below ``prefix`` of the operation's location (a local directory)."""
        if self.location is None:
            return 0
        root = self.location / prefix
        return sum(len(names) for _dir, _dirs, names in os.walk(root)) if root.is_dir() else 0


@dataclass(frozen=True)
class Point:
    """Where in an operation a fault goes: a name for the table and a predicate over its ``View``."""

    name: str
    reached: Callable[[View], bool]


#: What is done at a point: the services to SIGKILL (then ``make up``), or any fault as a callable.
Action = tuple[str, ...] | Callable[["Bed"], None]


# --- the bed ---------------------------------------------------------------------------------------------


class Bed:
    """One local stack with every service, driven by the cases."""

    def __init__(self, state_dir: Path, say: Callable[[str], None] = print) -> None:
        self.stack = Stack(state_dir)
        self.say = say
        self.state: StackState | None = None
        self.env: dict[str, str] = {}
        self._api: client.ApiClient | None = None
        self._redis: Any = None
        self.sources: dict[str, tuple[Record, AppShape]] = {}
        self.died_by_itself: list[str] = []
        #: The shared application's size (the short version in ``make test`` uses a smaller one).
        self.shape = AppShape()

    # --- the stack ------------------------------------------------------------------------------------

    def up(self) -> list[str]:
        """Start the stack, or bring back what died in it (``make up``); returns what was restarted."""
        self.state = self.stack.up(clusters=1, with_services=True, service_settings=SERVICE_SETTINGS)
        self.env = self.stack.env(self.state)
        if self._api is None:
            self._api = clients.api_client(self.env["KUBECONFIG"])
        if self._redis is not None:
            self._redis.close()
        self._redis = connect(self.env["REDIS_URL"], timeout=10, connect_timeout=5)
        return list(self.stack.restarted)

    def down(self) -> None:
        self.stack.down()

    @property
    def api(self) -> client.ApiClient:
        assert self._api is not None, "the bed is not up"
        return self._api

    @property
    def redis(self) -> Any:
        assert self._redis is not None, "the bed is not up"
        return self._redis

    def process(self, service: str) -> str:
        return f"{CLUSTER}-{service}"

    def node_agents(self) -> list[str]:
        return [f"uploader-{node}" for node in self.env["DEV_NODES"].split(",")]

    def kill(self, *services: str) -> None:
        """SIGKILL the services' recorded processes (``watcher``, ``backup``, ``uploader-<node>``...)."""
        for service in services:
            record = self.stack.procs.kill(self.process(service))
            self.say(f"    SIGKILL {self.process(service)} (pid {record.pid})")

    def revive(self) -> list[str]:
        """What ``make up`` does to a stack with dead processes (``Stack.revive``), without the CRDs'
        re-apply that ``up`` adds: a fault's process is back within a second or two."""
        assert self.state is not None
        restarted = self.stack.revive(self.state)
        self.env = self.stack.env(self.state)
        self.say(f"    make up: restarted {', '.join(restarted) or 'nothing'}")
        return restarted

    def restart_the_dead(self) -> list[str]:
        """What the kubelet does for a pod's containers: a process that died by itself (not SIGKILLed
        by a case) is started again. Each is noted in ``died_by_itself``, for the case's notes."""
        assert self.state is not None
        dead = self.stack.dead(self.state)
        if dead:
            self.say(f"    died by itself: {', '.join(dead)}")
            self.died_by_itself += dead
            self.revive()
        return dead

    def start_extra_watcher(self, name: str) -> None:
        """A second watcher process (``a-<name>``, recorded like the stack's own) with the same settings
        and Lease: two replicas of the watcher Deployment."""
        import sys

        assert self.state is not None
        env = self.stack.service_env(
            CLUSTER,
            self.stack.kubeconfig_path(CLUSTER),
            self.state.redis_ports[CLUSTER],
            self.state.metrics_ports[CLUSTER],
        )
        env.update(self.state.service_settings, DAVIT_IDENTITY=f"dev-{CLUSTER}-{name}")
        self.stack.procs.start(self.process(name), [sys.executable, "-m", "davit_services.watcher"], env=env)
        self.say(f"    started {self.process(name)}")

    def stop_extra(self, name: str) -> None:
        self.stack.procs.stop(self.process(name))

    def logs(self, *services: str, lines: int = 40) -> str:
        return "\n".join(
            f"--- {self.process(s)}\n{self.stack.procs.log_tail(self.process(s), lines)}" for s in services
        )

    # --- objects --------------------------------------------------------------------------------------

    def kubectl(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        result = subprocess.run(
            [self.env["KUBECTL"], f"--kubeconfig={self.env['KUBECONFIG']}", *args],
            input=stdin, capture_output=True, text=True, check=False, timeout=180,
        )  # fmt: skip
        if check and result.returncode != 0:
            raise CaseFailed(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def apply(self, manifest: Mapping[str, Any] | str) -> None:
        self.kubectl(
            "apply", "-f", "-", stdin=manifest if isinstance(manifest, str) else json.dumps(manifest)
        )

    def get(self, plural: str, name: str, namespace: str = ADMIN) -> RawObject | None:
        try:
            found: RawObject = client.CustomObjectsApi(self.api).get_namespaced_custom_object(
                constants.API_GROUP, constants.API_VERSION, namespace, plural, name
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return found

    def create(self, kind: str, name: str, spec: Mapping[str, Any], namespace: str = ADMIN) -> None:
        self.apply({"apiVersion": f"{constants.API_GROUP}/{constants.API_VERSION}", "kind": kind,
                    "metadata": {"name": name, "namespace": namespace}, "spec": dict(spec)})  # fmt: skip

    def delete_namespace(self, namespace: str) -> None:
        self.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")

    def wait(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                result = check()
                if result:
                    return result
            except (ApiException, OSError, CaseFailed) as exc:
                last = exc  # a transient API error (the server restarting) is "not yet"
            time.sleep(0.2)
        raise CaseFailed(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last})")

    # --- the application ----------------------------------------------------------------------------

    def deploy(self, namespace: str, shape: AppShape, seed: int) -> Record:
        """The application in ``namespace``, Running, its volumes filled; returns its record."""
        if namespace in self.sources:
            return self.sources[namespace][0]
        if self.kubectl("get", "namespace", namespace, check=False):
            self.kubectl("delete", "namespace", namespace, "--timeout=180s")
        self.kubectl("create", "namespace", namespace)
        self.apply(APP.replace("NS", namespace))
        self.apply_configmaps(namespace, shape.configmaps)
        paths = self.wait("both volumes bound", lambda: self.volume_paths(namespace, 2), timeout=120)
        for index, path in enumerate(sorted(paths.values())):
            fill_volume(path, seed * 10 + index, shape)
        self.wait(
            f"the application in {namespace} to run", lambda: demo_check.running(self.api, namespace), 180
        )
        record = self.record(namespace)
        self.sources[namespace] = (record, shape)
        self.say(
            f"  application {namespace}: {len(record.objects)} objects, {len(record.volumes)} volumes, "
            f"{record.bytes:,} bytes"
        )
        return record

    def apply_configmaps(self, namespace: str, count: int, prefix: str = "settings") -> None:
        items = [
            {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": f"{prefix}-{i:04d}", "namespace": namespace},
             "data": {"index": str(i), "payload": hashlib.sha256(str(i).encode()).hexdigest() * 8}}
            for i in range(count)
        ]  # fmt: skip
        if items:
            self.apply({"apiVersion": "v1", "kind": "List", "items": items})

    def volume_paths(self, namespace: str, count: int) -> dict[str, Path] | None:
        core = client.CoreV1Api(self.api)
        claims = core.list_namespaced_persistent_volume_claim(namespace).items
        if len(claims) < count or any(c.status.phase != "Bound" for c in claims):
            return None
        paths = {}
        for claim in claims:
            pv = core.read_persistent_volume(claim.spec.volume_name)
            local = pv.spec.local.path if pv.spec.local else pv.spec.host_path.path
            paths[claim.metadata.name] = Path(local)
        return paths

    def record(self, namespace: str) -> Record:
        """Every object of the namespace (raw) and a manifest of each volume, as ``make demo`` takes them."""
        # The Namespace itself is left out: restored under another name, it is another object.
        record = Record(namespace)
        for resource in discovery.discover(self.api):
            if not _listable(resource):
                continue
            for obj in _list(self.api, resource, namespace):
                key = demo_check.object_key(obj)
                if key in record.objects or demo_check.uncompared(obj) is not None:
                    continue
                record.objects[key] = obj
                if obj["kind"] == "PersistentVolumeClaim":
                    root = demo_check._volume_dir(self.api, obj)
                    record.volumes[obj["metadata"]["name"]] = demo_check.manifest(root)
        return record

    # --- locations and operations -----------------------------------------------------------------------

    def location(self, name: str) -> tuple[str, Path]:
        """A fresh local BackupLocation in the admin namespace, Available; returns (name, directory)."""
        path = self.stack.dir / "local-store" / "chaos" / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        self.create_location(name, {"type": "local", "path": str(path)})
        return name, path

    def create_location(self, name: str, location: Mapping[str, Any]) -> None:
        self.apply({"apiVersion": f"{constants.API_GROUP}/{constants.API_VERSION}", "kind": "BackupLocation",
                    "metadata": {"name": name, "namespace": ADMIN}, "location": dict(location)})  # fmt: skip

        def available() -> bool:
            status = (self.get("backuplocations", name) or {}).get("status") or {}
            return status.get("phase") == "Available"

        self.wait(f"location {name} to be Available", available, timeout=60)

    def view(self, plural: str, name: str, location: Path | None, target: str | None = None) -> View:
        obj = self.get(plural, name)
        uid = (obj or {}).get("metadata", {}).get("uid")
        events = []
        if uid:
            for line in OperationState(self.redis, uid).log_lines():
                try:
                    events.append(str(json.loads(line).get("event")))
                except ValueError:
                    continue
        count = 0
        if target is not None:
            items = client.CoreV1Api(self.api).list_namespaced_config_map(target).items
            count = len(items)
        return View(obj, events, location, count)

    def run(
        self,
        plural: str,
        name: str,
        location: Path | None,
        faults: list[tuple[Point, Action]],
        *,
        target: str | None = None,
        timeout: float = 420,
        during: Callable[[View], None] | None = None,
    ) -> tuple[dict[str, Any], list[str]]:
        """Follow a created operation to Final, injecting ``faults`` when their point is reached (each in
        turn, the next one watched once the previous was injected): services named are SIGKILLed and
        the stack brought back; a callable is called with the bed.
        Returns the final status and the names of the points reached ("missed: …" for the others)."""
        pending = list(faults)
        hit: list[str] = []
        deadline = time.monotonic() + timeout
        next_look = 0.0
        while True:
            if time.monotonic() >= next_look:
                self.restart_the_dead()
                next_look = time.monotonic() + 1.0
            view = self.view(plural, name, location, target)
            if during is not None:
                during(view)
            # The first point reached, in order; those before it were passed unseen (missed).
            reached = [i for i, (p, _) in enumerate(pending) if view.obj is not None and p.reached(view)]
            index = reached[0] if reached else None
            if index is not None:
                hit += [f"missed: {p.name}" for p, _ in pending[:index]]
                del pending[:index]
                point, action = pending.pop(0)
                self.say(f"  point {point.name} reached (stage {view.stage or '-'})")
                if callable(action):
                    action(self)  # a fault of another kind (Redis, a store)
                else:
                    self.kill(*action)
                    self.revive()
                hit.append(point.name)
                continue
            if view.final:
                hit += [f"missed: {point.name}" for point, _ in pending]
                return view.status, hit
            if time.monotonic() > deadline:
                raise CaseFailed(
                    f"{plural} {name} did not finish in {timeout:.0f}s (stage {view.stage}, "
                    f"events {Counter(view.events)})\n" + self.logs(*WORKERS, *self.node_agents())
                )
            time.sleep(POLL_SECONDS)

    def backups(self, names: list[str], location: str, namespace: str, **spec: Any) -> None:
        """Several backups created by one request, so that they start together."""
        body = {"backupLocation": location, "namespaces": [namespace], "reclaimPolicy": "Retain", **spec}
        items = [{"apiVersion": f"{constants.API_GROUP}/{constants.API_VERSION}", "kind": "ApplicationBackup",
                  "metadata": {"name": n, "namespace": ADMIN}, "spec": body} for n in names]  # fmt: skip
        self.apply({"apiVersion": "v1", "kind": "List", "items": items})

    def backup(self, name: str, location: str, namespace: str, **spec: Any) -> None:
        body = {"backupLocation": location, "namespaces": [namespace], "reclaimPolicy": "Retain", **spec}
        self.create("ApplicationBackup", name, body)

    def restore(self, name: str, backup: str, location: str, mapping: Mapping[str, str]) -> None:
        body = {"backupName": backup, "backupLocation": location, "namespaceMapping": dict(mapping)}
        self.create("ApplicationRestore", name, body)

    def verify(self, source: Record, target: str) -> Comparison:
        """Wait until the restored application runs, record it, compare it with ``source``."""
        self.wait(f"the application in {target} to run", lambda: demo_check.running(self.api, target), 240)
        after = self.record(target)
        return compare(source, after, {source.namespace: target})


def _listable(resource: ApiResource) -> bool:
    listable = resource.namespaced and "list" in resource.verbs and "/" not in resource.plural
    return listable and (resource.group, resource.plural) not in demo_check.EVENTS


def _list(api: client.ApiClient, resource: ApiResource, namespace: str) -> Iterator[RawObject]:
    token = None
    while True:
        page = discovery.list_page(api, resource, namespace, None, 500, token)
        yield from page.items
        if page.continue_token is None:
            return
        token = page.continue_token


# --- what a location holds ------------------------------------------------------------------------------


@dataclass
class Stored:
    """What a location holds, counted: backups with a manifest (by name), resource objects, chunks."""

    manifests: Counter[str] = field(default_factory=Counter)
    objects: int = 0
    duplicate_objects: list[str] = field(default_factory=list)
    chunks: int = 0
    duplicate_chunks: int = 0

    @property
    def stored_twice(self) -> int:
        twice = sum(n - 1 for n in self.manifests.values() if n > 1)
        return twice + len(self.duplicate_objects) + self.duplicate_chunks


#: Where a location is: a local directory, or a BackupLocation's ``location`` field (any store).
Where = Path | Mapping[str, Any]


def open_repository(where: Where) -> BackupRepository:
    body = {"type": "local", "path": str(where)} if isinstance(where, Path) else dict(where)
    spec = LocationSpec.model_validate(body)
    resolved = factory.resolve_credentials(spec, None)
    return BackupRepository.open(factory.open_store(resolved), resolved.encryption_key, create=False)


def stored(path: Where) -> Stored:
    """Count what the location at ``path`` holds: each backup's manifests (one per backup name),
    the objects in each backup's resource parts (each object once), the repository's indexed chunks
    (each chunk once)."""
    from davit.repo import layout as repo_layout
    from davit.repo.index import decode_index

    repository = open_repository(path)
    result = Stored()
    for ref in repository.list_backups():
        result.manifests[f"{ref.namespace}/{ref.name}"] += 1
        seen: Counter[str] = Counter()
        for info in repository.store.list(f"{ref.root.rstrip('/')}/resources/"):
            for obj in repository.read_part(info.key):
                meta = obj.get("metadata") or {}
                seen[f"{obj.get('kind')} {meta.get('namespace', '')}/{meta.get('name')}"] += 1
        result.objects += sum(seen.values())
        result.duplicate_objects += [f"{ref.name}: {key} x{n}" for key, n in seen.items() if n > 1]
    chunks: list[bytes] = []
    for info in repository.store.list("repo/index/"):
        pack_id = repo_layout.pack_id_of_key(info.key) or info.key.rsplit("/", 1)[-1]
        raw = repository.sealer.open(info.key, repository.store.get(info.key))
        chunks += [chunk for chunk, _entry in decode_index(info.key, pack_id, raw)]
    result.chunks = len(chunks)
    result.duplicate_chunks = len(chunks) - len(set(chunks))
    return result


def backup_log_events(path: Where, namespace: str, name: str, uid: str) -> Counter[str]:
    """The events of a backup's own log as its location keeps it."""
    repository = open_repository(path)
    events: Counter[str] = Counter()
    for line in repository.read_log(BackupRef(namespace, name, uid)):
        try:
            events[str(json.loads(line).get("event"))] += 1
        except ValueError:
            continue
    return events


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:5]}"


def sha256_tree(root: Path) -> dict[str, str]:
    """Regular files below ``root`` → sha256 (for the byte-level checks of a single volume)."""
    found = {}
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = Path(dirpath) / name
            if stat.S_ISREG(os.lstat(path).st_mode):
                found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


class Churn(threading.Thread):
    """Creates, updates and deletes ConfigMaps ``churn-*`` in a namespace while it runs, recording every
    version each name ever had (its ``data``), so a restore can be checked against states that existed."""

    def __init__(self, bed: Bed, namespace: str, names: int = 30) -> None:
        super().__init__(daemon=True)
        self.core = client.CoreV1Api(bed.api)
        self.namespace = namespace
        self.names = [f"churn-{i:02d}" for i in range(names)]
        #: name → every ``data`` it had; ``None`` stands for "did not exist".
        self.versions: dict[str, list[dict[str, str] | None]] = {n: [None] for n in self.names}
        self.stopping = threading.Event()
        self.changes = 0
        self.rng = random.Random(11)  # noqa: S311 - test data
        for name in self.names[: names // 2]:  # half of them exist before the backup starts
            self._create(name)
        # What each name was when the backup started: its versions from then on are what may come back.
        self.versions = {n: [v[-1]] for n, v in self.versions.items()}

    def _create(self, name: str) -> None:
        data = {"version": str(len(self.versions[name])), "by": "churn"}
        self.versions[name].append(data)  # recorded first: the write may land before we return
        body = {"metadata": {"name": name}, "data": data}
        self.core.create_namespaced_config_map(self.namespace, body)
        self.changes += 1

    def run(self) -> None:
        while not self.stopping.is_set():
            name = self.rng.choice(self.names)
            exists = self.versions[name][-1] is not None
            try:
                if not exists:
                    self._create(name)
                elif self.rng.random() < 0.5:
                    data = {"version": str(len(self.versions[name])), "by": "churn"}
                    self.versions[name].append(data)
                    self.core.replace_namespaced_config_map(
                        name, self.namespace, {"metadata": {"name": name}, "data": data}
                    )
                    self.changes += 1
                else:
                    self.versions[name].append(None)
                    self.core.delete_namespaced_config_map(name, self.namespace)
                    self.changes += 1
            except ApiException:
                continue
            time.sleep(0.02)

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=30)

    def check(self, restored: Mapping[str, RawObject]) -> tuple[int, list[str]]:
        """(objects checked, problems): every restored churn ConfigMap holds a version its name had; a
        name whose every version existed restored is present."""
        problems, checked = [], 0
        for name, versions in self.versions.items():
            obj = restored.get(f"ConfigMap {name}")
            if obj is None:
                if None not in versions:
                    problems.append(f"ConfigMap {name}: existed throughout, missing after the restore")
                continue
            checked += 1
            if obj.get("data") not in [v for v in versions if v is not None]:
                problems.append(f"ConfigMap {name}: restored data {obj.get('data')} never existed")
        return checked, problems
