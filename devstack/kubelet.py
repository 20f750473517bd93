"""A dev kubelet and local-path provisioner for a control plane without real nodes.

What it simulates, and nothing more (there are no containers, images, probes or networking):

* **Nodes**: registers one Node per name in ``--nodes`` (Ready, with capacity and the usual labels),
  renews each node's Lease in ``kube-node-lease`` every 10 s and refreshes the Ready condition every 60 s,
  so the node lifecycle controller keeps the nodes schedulable.
* **Pods** scheduled to those nodes: creates the pod's volume directories under ``--root`` in the
  kubelet's layout (``pods/<podUID>/volumes/<plugin>/<name>``) and marks the pod Running and Ready (init
  containers reported as completed, but see the restore's below). A PVC-backed volume's directory is a
  symlink to the PV's directory, where a real kubelet would bind-mount it (for a CSI volume, to
  ``<volumes>/csi/<volumeHandle>``, where a stand-in CSI driver keeps its files); emptyDir, configMap,
  secret and projected volumes get empty directories. Pods being deleted are removed with their
  directories, as a kubelet does after their containers stop.
* **The restore's init container** ``davit-restore-wait`` (``davit.restore.init_container``): a pod that
has it
  stays Pending, initialising, with that container running, until the node agent's marker
  (``.davit-restore/<DAVIT_RESTORE_UID>``) is in the directory of every volume the container mounts under
  ``/davit-restore/``; then the markers are removed, the container reported Completed and the pod run. A
  failing container (no uid, a timeout) is reported terminated with its exit code and not restarted.
* **Provisioning** for StorageClass ``davit-dev`` (provisioner ``davit.dev/dev-local``,
  WaitForFirstConsumer): for a PVC the scheduler has given a node (``volume.kubernetes.io/selected-node``)
  it creates a directory for that node and a ``local`` PV with node affinity, like a local-path
  provisioner; the PV controller binds them. Released PVs with reclaim policy Delete are deleted with
  their directory.
* **Exec**: ``pods/exec`` through the API server reaches an endpoint each Node advertises
  (``daemonEndpoints.kubeletEndpoint``), where ``devstack.exec_server`` runs the command in a sandbox
  holding the container's volumes at their mount paths.
* **Seed data**: a PVC annotated ``dev.davit.dev/seed-data: "24Mi"`` gets its new volume filled with about
  that much application-like data, since there are no containers to write any. Not a claim a restore
  created (label ``davit.dev/restore``): its data comes from the restore, as a real application's would.

Run as ``python -m devstack.kubelet --kubeconfig K --nodes a,b --root DIR --volumes DIR``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import shutil
import signal
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from davit import logs
from davit.kube import clients
from davit.kube.watching import ListWatch
from davit.restore import init_container
from davit.restore.fields import RESTORE_LABEL
from devstack import exec_server, pki

log = structlog.get_logger("devstack.kubelet")

STORAGE_CLASS = "davit-dev"
PROVISIONER = "davit.dev/dev-local"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
KUBELET_VERSION = "v1.20.2"
LEASE_SECONDS = 40
LEASE_RENEW_SECONDS = 10.0
STATUS_REFRESH_SECONDS = 60.0
#: How often pods held by a restore's init container are checked for the node agent's markers: as often
#: as the container itself looks (a stat per volume, no API call).
RESTORE_CHECK_SECONDS = init_container.POLL_SECONDS

#: A PVC annotated with this gets a freshly provisioned volume filled with that much data (e.g. "24Mi"),
#: standing in for an application's writes: there are no containers to write real data. Claims a restore
#: created (``RESTORE_LABEL``) are left empty for the restore to fill.
SEED_ANNOTATION = "dev.davit.dev/seed-data"

_PLUGIN_DIRS = {
    "emptyDir": "kubernetes.io~empty-dir",
    "configMap": "kubernetes.io~configmap",
    "secret": "kubernetes.io~secret",
    "projected": "kubernetes.io~projected",
    "downwardAPI": "kubernetes.io~downward-api",
}


#: Under ``--volumes``: a directory per CSI volume handle, the files of that volume (see ``csi_volume_dir``).
CSI_VOLUMES = "csi"


def csi_volume_dir(volumes_root: Path, handle: str) -> Path:
    """The directory of the CSI volume ``handle``: what a pod that mounts it sees. The kubelet has no CSI
    driver to ask, so a stand-in driver (the tests' provisioner and snapshotter) and the kubelet agree on
    this place; a handle that is not a plain name is kept apart by its digest."""
    plain = handle and handle not in (".", "..") and "/" not in handle and "\0" not in handle
    name = handle if plain else "h-" + hashlib.sha256(handle.encode()).hexdigest()[:16]
    return volumes_root / CSI_VOLUMES / name


#: What the exec sandbox shares with the machine read-only (``devstack.exec_server.sandbox_command``).
_SANDBOX_READ_ONLY = ("/usr", "/etc", "/proc", "/dev", "/bin", "/sbin", "/lib", "/lib64")


def _exec_tls(exec_pki: pki.KubeletPki) -> ssl.SSLContext:
    """The exec endpoint's TLS: its own certificate, and only clients with a certificate from its CA
    (the API server's ``--kubelet-client-certificate``)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(exec_pki.ca_cert))
    context.load_cert_chain(str(exec_pki.serving_cert), str(exec_pki.serving_key))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _quantity(text: str) -> int:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def seed_volume(path: Path, amount: str) -> None:
    """Write about ``amount`` of application-like data: a table file of random bytes, a write-ahead log
    of text, many small files and a symlink; deterministic per volume directory."""
    import random

    total = _quantity(amount)
    rng = random.Random(path.name)  # noqa: S311 - reproducible test data, not secrets
    (path / "base").mkdir(exist_ok=True)
    (path / "base" / "16384").write_bytes(rng.randbytes(total // 2))
    with (path / "pg_wal.log").open("w") as wal:
        line = 0
        while wal.tell() < total // 4:
            wal.write(f"{line:08d} order {rng.randint(1, 10**6)} pending\n")
            line += 1
    small = path / "pg_stat"
    small.mkdir(exist_ok=True)
    for i in range(200):
        (small / f"stat-{i:03d}").write_bytes(rng.randbytes(max(1, total // 4 // 200)))
    if not (path / "current").exists():
        (path / "current").symlink_to("base/16384")


def _container_status(
    pod_uid: str, container: dict[str, Any], state: dict[str, Any], ready: bool, started: bool | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "name": container["name"], "image": container.get("image", ""), "imageID": "", "ready": ready,
        "restartCount": 0, "state": state,
    }  # fmt: skip
    if "waiting" not in state:  # a container that was never created has no id
        status["containerID"] = f"dev://{pod_uid}/{container['name']}"
    if started is not None:
        status["started"] = started
    return status


def _restore_wait_container(pod: dict[str, Any]) -> dict[str, Any] | None:
    """The init container a restore injected (``davit.restore.init_container``), if the pod has one."""
    for container in pod.get("spec", {}).get("initContainers") or []:
        if container.get("name") == init_container.CONTAINER_NAME:
            return dict(container)
    return None


def _restore_mounts(container: dict[str, Any]) -> list[dict[str, Any]]:
    """The restored volumes the container waits for: its mounts under ``/davit-restore/``. Others are not
    the restore's (the API server adds the service-account token's mount to every container)."""
    prefix = init_container.MOUNT_ROOT + "/"
    return [m for m in container.get("volumeMounts") or [] if str(m.get("mountPath", "")).startswith(prefix)]


def _mounted_dirs(pod: dict[str, Any], volume_dirs: dict[str, Path]) -> list[Path] | None:
    """The directories the restore's init container sees at its restore mounts: the pod volume each
    mount names, in the directory the dev kubelet made for it. None while one of them is not there (an
    unbound claim, or a kind of volume that is not simulated)."""
    container = _restore_wait_container(pod) or {}
    dirs = []
    for mount in _restore_mounts(container):
        volume_dir = volume_dirs.get(mount.get("name", ""))
        if volume_dir is None:
            return None
        dirs.append(volume_dir / mount["subPath"] if mount.get("subPath") else volume_dir)
    return dirs


@dataclass
class _RestoreWait:
    """A pod held by the restore's init container, as the dev kubelet follows it."""

    pod: dict[str, Any]
    node: str
    restore_uid: str
    #: Why the container would exit at once (no uid, a bad timeout, nothing mounted); empty if it waits.
    usage_error: str
    timeout: float | None
    #: The container's ``startedAt``: kept across updates, and taken over from the pod's status when the
    #: dev kubelet restarts, so the timeout counts from when the wait really began.
    started: str
    #: The API server already shows the container running.
    reported: bool
    dirs: list[Path] | None = None
    finished: str = ""
    outcome: Literal["completed", "failed"] | None = None

    @classmethod
    def start(cls, pod: dict[str, Any], node: str) -> _RestoreWait:
        container = _restore_wait_container(pod) or {}
        env = {e["name"]: str(e.get("value", "")) for e in container.get("env") or [] if "name" in e}
        restore_uid, timeout, usage_error = "", None, ""
        try:
            restore_uid, timeout = init_container.settings_from(env)
        except init_container.UsageError as exc:
            usage_error = str(exc)
        if not usage_error and not _restore_mounts(container):
            usage_error = f"no volume is mounted under {init_container.MOUNT_ROOT}/"
        shown = next(
            (s for s in (pod.get("status") or {}).get("initContainerStatuses") or []
             if s.get("name") == init_container.CONTAINER_NAME and "running" in (s.get("state") or {})),
            None,
        )  # fmt: skip
        started = shown["state"]["running"].get("startedAt") if shown else None
        return cls(pod=pod, node=node, restore_uid=restore_uid, usage_error=usage_error, timeout=timeout,
                   started=started or _now(), reported=shown is not None)  # fmt: skip

    @property
    def pod_uid(self) -> str:
        return str(self.pod["metadata"]["uid"])

    @property
    def pod_name(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    @property
    def mount_names(self) -> list[str]:
        container = _restore_wait_container(self.pod) or {}
        return [m.get("name", "") for m in _restore_mounts(container)]

    @property
    def deadline(self) -> datetime.datetime | None:
        if self.timeout is None:
            return None
        started = datetime.datetime.fromisoformat(self.started)
        return started + datetime.timedelta(seconds=self.timeout)


class DevKubelet:
    def __init__(
        self,
        api: client.ApiClient,
        nodes: list[str],
        root: Path,
        volumes: Path,
        exec_pki: pki.KubeletPki | None = None,
    ) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.nodes = nodes
        self.root = root
        self.volumes = volumes
        self._pod_ips: dict[str, str] = {}
        self._lock = threading.Lock()
        #: Pods held by a restore's init container, by pod uid; the watch thread and the check loop
        #: both act on them, one at a time under ``_restore_lock``.
        self._restore_waits: dict[str, _RestoreWait] = {}
        self._restore_lock = threading.Lock()
        #: Pods whose init containers are being run (or failed), by uid: each is run once.
        self._init_runs: set[str] = set()
        #: The exec endpoint (``devstack.exec_server``), when there are certificates for it and bubblewrap
        #: to run commands in; without it the Nodes advertise port 0 and the API server cannot exec.
        self.exec_server: exec_server.ExecServer | None = None
        if exec_pki is not None:
            if exec_server.bubblewrap_available():
                self.exec_server = exec_server.ExecServer(self.resolve_exec, _exec_tls(exec_pki))
            else:
                log.warning("exec.unavailable", reason="bubblewrap (bwrap) is not installed")

    @property
    def exec_port(self) -> int:
        return self.exec_server.port if self.exec_server else 0

    # --- nodes -------------------------------------------------------------------------------------

    def _node_status(self) -> dict[str, Any]:
        now = _now()
        conditions = [
            ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
            ("PIDPressure", "False", "KubeletHasSufficientPID"),
            ("Ready", "True", "KubeletReady"),
        ]
        capacity = {"cpu": "16", "memory": "64Gi", "pods": "500", "ephemeral-storage": "200Gi"}
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                {"type": t, "status": s, "reason": r, "message": "davit dev kubelet",
                 "lastHeartbeatTime": now, "lastTransitionTime": now}
                for t, s, r in conditions
            ],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.exec_port}},
            "nodeInfo": {
                "machineID": "davit-dev", "systemUUID": "davit-dev", "bootID": "davit-dev",
                "kernelVersion": "dev", "osImage": "davit dev kubelet", "containerRuntimeVersion": "dev://0",
                "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux", "architecture": "amd64",
            },
        }  # fmt: skip

    def register_nodes(self) -> None:
        for index, name in enumerate(self.nodes):
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "davit.dev/dev-node": "true",
                    },
                },
                "spec": {"podCIDR": f"10.244.{index}.0/24"},
                "status": self._node_status(),
            }
            try:
                self.core.create_node(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
            self.refresh_node_status(name)
            (self.root / "pods").mkdir(parents=True, exist_ok=True)

    def refresh_node_status(self, name: str) -> None:
        self.core.patch_node_status(name, {"status": self._node_status()})

    def renew_lease(self, name: str) -> None:
        body = {
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": _micro_now(),
            },
        }
        try:
            self.coordination.patch_namespaced_lease(name, "kube-node-lease", body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    def heartbeat_loop(self, stop: threading.Event) -> None:
        last_status = 0.0
        elapsed = 0.0
        while not stop.is_set():
            for name in self.nodes:
                try:
                    self.renew_lease(name)
                    if elapsed - last_status >= STATUS_REFRESH_SECONDS:
                        self.refresh_node_status(name)
                except Exception as exc:
                    log.warning("heartbeat.failed", node=name, error=str(exc))
            if elapsed - last_status >= STATUS_REFRESH_SECONDS:
                last_status = elapsed
            stop.wait(LEASE_RENEW_SECONDS)
            elapsed += LEASE_RENEW_SECONDS

    # --- pods --------------------------------------------------------------------------------------

    def _pod_ip(self, node: str, uid: str) -> str:
        with self._lock:
            if uid not in self._pod_ips:
                index = self.nodes.index(node)
                self._pod_ips[uid] = f"10.244.{index}.{len(self._pod_ips) % 250 + 2}"
            return self._pod_ips[uid]

    def pod_dir(self, uid: str) -> Path:
        return self.root / "pods" / uid

    def handle_pod(self, pod: dict[str, Any]) -> None:
        spec = pod.get("spec", {})
        node = spec.get("nodeName")
        if node not in self.nodes:
            return
        meta = pod["metadata"]
        if meta.get("deletionTimestamp"):
            self._remove_pod(pod)
            return
        status = pod.get("status", {})
        if status.get("phase") in ("Running", "Succeeded", "Failed"):
            return
        volume_dirs = self._create_volume_dirs(pod)
        if _restore_wait_container(pod) is not None:
            self._hold_for_restore(pod, node, volume_dirs)
            return
        self._start(pod, node)

    # --- init containers ---------------------------------------------------------------------------

    def _start(self, pod: dict[str, Any], node: str, restore: _RestoreWait | None = None) -> None:
        """Run the pod's init containers that have a command, one after the other in the exec sandbox
        (after the restore's own, which ``_hold_for_restore`` follows), then mark the pod Running. Init
        containers without a command (an image's entrypoint) are reported completed, as before."""
        runnable = [
            c for c in pod["spec"].get("initContainers") or []
            if c.get("name") != init_container.CONTAINER_NAME and c.get("command")
        ]  # fmt: skip
        if not runnable or self.exec_server is None:
            self._mark_running(pod, node, restore)
            return
        uid = pod["metadata"]["uid"]
        shown = (pod.get("status") or {}).get("initContainerStatuses") or []
        if any(
            ((s.get("state") or {}).get("terminated") or {}).get("exitCode") not in (None, 0) for s in shown
        ):
            return  # failed before (this process or an earlier one): containers are not restarted here
        with self._lock:
            if uid in self._init_runs:
                return
            self._init_runs.add(uid)
        threading.Thread(
            target=self._run_init_containers, args=(pod, node, restore, runnable), daemon=True,
            name=f"init {pod['metadata']['name']}",
        ).start()  # fmt: skip

    def _run_init_containers(
        self, pod: dict[str, Any], node: str, restore: _RestoreWait | None, runnable: list[dict[str, Any]]
    ) -> None:
        assert self.exec_server is not None
        started = restore.started if restore is not None else _now()
        try:
            for container in runnable:
                command = [
                    str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]
                ]
                target = self._sandbox_target(pod, container, command, stdin=False)
                code, output = self.exec_server.run_to_end(target)
                where = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
                log.info("init_container.ended", pod=where, container=container["name"], exit_code=code)
                if code != 0:
                    self._write_init_failure(pod, node, container["name"], code, output, started)
                    return
            self._mark_running(pod, node, restore)
        except Exception as exc:
            log.warning("init_container.failed_to_run", pod=pod["metadata"]["name"], error=str(exc))

    def _write_init_failure(
        self, pod: dict[str, Any], node: str, failed: str, exit_code: int, output: str, started: str
    ) -> None:
        """An init container exited non-zero: the pod stays initialising (or fails, if it is never
        restarted) with the container's exit code and the end of its output, as a kubelet reports it."""
        meta, spec = pod["metadata"], pod["spec"]
        now = _now()
        init_statuses = []
        reached = False
        for container in spec.get("initContainers") or []:
            if container["name"] == failed:
                reached = True
                state = {"terminated": {"exitCode": exit_code, "reason": "Error", "message": output[-1024:],
                                        "startedAt": started, "finishedAt": now}}  # fmt: skip
                init_statuses.append(_container_status(meta["uid"], container, state, ready=False))
            elif reached:
                waiting = {"waiting": {"reason": "PodInitializing"}}
                init_statuses.append(_container_status(meta["uid"], container, waiting, ready=False))
            else:
                done = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started,
                                       "finishedAt": now}}  # fmt: skip
                init_statuses.append(_container_status(meta["uid"], container, done, ready=True))
        pod_ip = self._pod_ip(node, meta["uid"])
        incomplete = f"containers with incomplete status: [{failed}]"
        status = {
            "phase": "Failed" if spec.get("restartPolicy") == "Never" else "Pending",
            "hostIP": "127.0.0.1", "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "startTime": started,
            "conditions": [
                {"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized",
                 "message": incomplete, "lastTransitionTime": now},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady",
                 "lastTransitionTime": now},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": started},
            ],
            "initContainerStatuses": init_statuses,
            "containerStatuses": [
                _container_status(meta["uid"], c, {"waiting": {"reason": "PodInitializing"}}, ready=False,
                                  started=False)
                for c in spec.get("containers", [])
            ],
        }  # fmt: skip
        try:
            self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": status})
            log.warning("init_container.failed", pod=f"{meta['namespace']}/{meta['name']}", container=failed,
                        exit_code=exit_code)  # fmt: skip
        except ApiException as exc:
            if exc.status != 404:
                raise

    def handle_pod_list(self, pods: list[dict[str, Any]]) -> None:
        handle = self._safe("pod", self.handle_pod)
        for pod in pods:
            handle(pod)
        # A pod deleted while the watch was down is only noticed by its absence from the list.
        listed = {p["metadata"]["uid"] for p in pods}
        with self._restore_lock:
            for uid in set(self._restore_waits) - listed:
                del self._restore_waits[uid]

    def _remove_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        with self._restore_lock:
            self._restore_waits.pop(meta["uid"], None)
        if self.exec_server is not None:
            self.exec_server.kill_pod(meta["uid"])  # the containers stop: what runs in them ends
        with self._lock:
            self._init_runs.discard(meta["uid"])
        shutil.rmtree(self.pod_dir(meta["uid"]), ignore_errors=True)
        try:
            self.core.delete_namespaced_pod(
                meta["name"],
                meta["namespace"],
                body=client.V1DeleteOptions(
                    grace_period_seconds=0, preconditions=client.V1Preconditions(uid=meta["uid"])
                ),
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise
        with self._lock:
            self._pod_ips.pop(meta["uid"], None)
        log.info("pod.removed", pod=f"{meta['namespace']}/{meta['name']}")

    def _create_volume_dirs(self, pod: dict[str, Any]) -> dict[str, Path]:
        """Create the pod's volume directories; returns, per pod volume name, the directory its
        containers would see mounted (volumes not simulated are left out)."""
        meta = pod["metadata"]
        volumes_dir = self.pod_dir(meta["uid"]) / "volumes"
        dirs: dict[str, Path] = {}
        for volume in pod["spec"].get("volumes", []) or []:
            claim = volume.get("persistentVolumeClaim")
            if claim:
                claim_dir = self._link_claim(volumes_dir, meta["namespace"], claim["claimName"])
                if claim_dir is not None:
                    dirs[volume["name"]] = claim_dir
                continue
            for source, plugin in _PLUGIN_DIRS.items():
                if source in volume:
                    path = volumes_dir / plugin / volume["name"]
                    path.mkdir(parents=True, exist_ok=True)
                    dirs[volume["name"]] = path
        return dirs

    def _link_claim(self, volumes_dir: Path, namespace: str, claim_name: str) -> Path | None:
        try:
            pvc = self.core.read_namespaced_persistent_volume_claim(claim_name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        pv_name: str | None = pvc.spec.volume_name
        if not pv_name:
            return None
        pv = self.core.read_persistent_volume(pv_name)
        if pv.spec.local is not None:
            plugin, target = "kubernetes.io~local-volume", Path(pv.spec.local.path)
        elif pv.spec.host_path is not None:
            # Not materialised under the pod directory by a kubelet either: containers see the path itself.
            return Path(pv.spec.host_path.path)
        elif pv.spec.csi is not None:
            # Where a CSI driver's node plugin would mount the volume: here, the directory a stand-in
            # driver keeps the volume's files in, shared by every pod that mounts it.
            mount = volumes_dir / "kubernetes.io~csi" / pv_name / "mount"
            data = csi_volume_dir(self.volumes, str(pv.spec.csi.volume_handle or pv_name))
            data.mkdir(parents=True, exist_ok=True)
            mount.parent.mkdir(parents=True, exist_ok=True)
            if not mount.is_symlink():
                mount.symlink_to(data, target_is_directory=True)
            return mount
        else:
            return None
        link = volumes_dir / plugin / pv_name
        link.parent.mkdir(parents=True, exist_ok=True)
        target.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
        return link

    def _mark_running(self, pod: dict[str, Any], node: str, restore: _RestoreWait | None = None) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        now = _now()

        def completed(container: dict[str, Any]) -> dict[str, Any]:
            started, finished = now, now
            if restore is not None and container["name"] == init_container.CONTAINER_NAME:
                started, finished = restore.started, restore.finished or now
            return _container_status(
                meta["uid"], container, {"terminated": {"exitCode": 0, "reason": "Completed",
                                                        "startedAt": started, "finishedAt": finished}},
                ready=True,
            )  # fmt: skip

        pod_ip = self._pod_ip(node, meta["uid"])
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": restore.started if restore is not None else now,
            # Conditions are merged by type: the nulls clear the reason a held pod's conditions carried.
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": now, "reason": None, "message": None}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "containerStatuses": [
                _container_status(meta["uid"], c, {"running": {"startedAt": now}}, ready=True, started=True)
                for c in spec.get("containers", [])
            ],
            "initContainerStatuses": [completed(c) for c in spec.get("initContainers", []) or []],
        }
        try:
            self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": status})
            log.info("pod.running", pod=f"{meta['namespace']}/{meta['name']}", node=node)
        except ApiException as exc:
            if exc.status != 404:
                raise

    # --- exec ------------------------------------------------------------------------------------------

    def resolve_exec(
        self, namespace: str, name: str, container_name: str, command: list[str], stdin: bool
    ) -> exec_server.ExecTarget:
        """What an exec session into ``namespace/name``'s container runs, and with which mounts; refused
        as a kubelet refuses it for a pod that is not running here or a container it does not have."""
        try:
            response = self.core.read_namespaced_pod(name, namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                raise exec_server.ExecRefused(f'pod "{name}" not found') from None
            raise
        pod: dict[str, Any] = json.loads(response.data)
        if pod["spec"].get("nodeName") not in self.nodes:
            raise exec_server.ExecRefused(f'pod "{name}" is not on a node of this kubelet')
        if (pod.get("status") or {}).get("phase") != "Running" or pod["metadata"].get("deletionTimestamp"):
            raise exec_server.ExecRefused(f'container not found ("{container_name}"): the pod is not running')
        container = next((c for c in pod["spec"].get("containers", []) if c["name"] == container_name), None)
        if container is None:
            raise exec_server.ExecRefused(f'container not found ("{container_name}")')
        return self._sandbox_target(pod, container, command, stdin)

    def _sandbox_target(
        self, pod: dict[str, Any], container: dict[str, Any], command: list[str], stdin: bool
    ) -> exec_server.ExecTarget:
        """``command`` in ``container`` of ``pod``: the container's volumes at their mount paths, its
        literal environment and its own /tmp."""
        namespace, name = pod["metadata"]["namespace"], pod["metadata"]["name"]
        container_name = container["name"]
        volume_dirs = self._create_volume_dirs(pod)
        mounts = []
        for mount in container.get("volumeMounts") or []:
            source = volume_dirs.get(mount.get("name", ""))
            path = str(mount.get("mountPath", ""))
            if source is None or not path.startswith("/"):
                log.warning("exec.mount_skipped", pod=f"{namespace}/{name}", mount=mount.get("name"))
                continue
            if path == "/" or any(path == top or path.startswith(top + "/") for top in _SANDBOX_READ_ONLY):
                # The sandbox shares the machine's /usr and /etc read-only: nothing can be mounted there.
                log.warning(
                    "exec.mount_skipped", pod=f"{namespace}/{name}", mount=mount.get("name"), path=path
                )
                continue
            if mount.get("subPath"):
                resolved = (source / mount["subPath"]).resolve()
                if not resolved.is_relative_to(source.resolve()):
                    raise exec_server.ExecRefused(f"subPath {mount['subPath']!r} leaves its volume")
                resolved.mkdir(parents=True, exist_ok=True)
                source = resolved
            mounts.append(exec_server.Mount(source, path, bool(mount.get("readOnly"))))
        env = {e["name"]: str(e["value"]) for e in container.get("env") or [] if "name" in e and "value" in e}
        uid = pod["metadata"]["uid"]
        return exec_server.ExecTarget(
            namespace=namespace, pod=name, pod_uid=uid, container=container_name, command=command,
            mounts=mounts, env=env, stdin=stdin,
            tmp=self.pod_dir(uid) / "containers" / container_name / "tmp",
        )  # fmt: skip

    # --- the restore's init container ----------------------------------------------------------------

    def _hold_for_restore(self, pod: dict[str, Any], node: str, volume_dirs: dict[str, Path]) -> None:
        """Run ``davit-restore-wait`` as a kubelet would: the pod stays Pending, initialising, until the
        node agent's marker is in every volume the container mounts (see ``davit.restore.init_container``)."""
        uid = pod["metadata"]["uid"]
        with self._restore_lock:
            wait = self._restore_waits.get(uid)
            if wait is None:
                wait = self._restore_waits[uid] = _RestoreWait.start(pod, node)
            wait.pod = pod
            if wait.outcome == "completed":
                # Still Pending: the Running write failed, or this event was sent before it landed (or the
                # hooks' init containers after it are running).
                self._start(pod, node, wait)
                return
            if wait.outcome == "failed":
                return
            wait.dirs = _mounted_dirs(pod, volume_dirs)
            if wait.dirs is None:
                log.warning("init_container.unknown_volume", pod=wait.pod_name, mounts=wait.mount_names)
            self._advance_restore(wait)

    def _advance_restore(self, wait: _RestoreWait) -> None:
        """One look at a held pod, under ``_restore_lock``: finish, fail or (once) report it waiting."""
        if wait.usage_error:
            self._fail_restore(wait, init_container.EXIT_USAGE, wait.usage_error)
        elif wait.dirs is not None and all(
            init_container.is_restored(d, wait.restore_uid) for d in wait.dirs
        ):
            # What the container does before it exits 0; the data is the restore's alone afterwards.
            for volume_dir in wait.dirs:
                init_container.consume_marker(volume_dir, wait.restore_uid)
            wait.finished = _now()
            wait.outcome = "completed"
            log.info("init_container.completed", pod=wait.pod_name, restore=wait.restore_uid)
            self._start(wait.pod, wait.node, wait)
        elif wait.deadline is not None and datetime.datetime.now(datetime.UTC) >= wait.deadline:
            message = f"restore {wait.restore_uid}: no data after {wait.timeout:g}s"
            self._fail_restore(wait, init_container.EXIT_TIMEOUT, message)
        elif not wait.reported:
            self._write_initialising(wait, {"running": {"startedAt": wait.started}}, phase="Pending")
            wait.reported = True
            log.info("init_container.waiting", pod=wait.pod_name, restore=wait.restore_uid)

    def _fail_restore(self, wait: _RestoreWait, exit_code: int, message: str) -> None:
        """The container exited non-zero: a pod that is never restarted fails; any other is left
        initialising with the failure shown (the dev kubelet does not restart containers)."""
        restart_policy = wait.pod["spec"].get("restartPolicy", "Always")
        terminated = {"exitCode": exit_code, "reason": "Error", "message": message,
                      "startedAt": wait.started, "finishedAt": _now()}  # fmt: skip
        phase = "Failed" if restart_policy == "Never" else "Pending"
        self._write_initialising(wait, {"terminated": terminated}, phase=phase)
        wait.outcome = "failed"
        log.warning("init_container.failed", pod=wait.pod_name, exit_code=exit_code, reason=message)

    def _write_initialising(self, wait: _RestoreWait, state: dict[str, Any], phase: str) -> None:
        """The status of a pod whose init containers have not all completed, with the restore's
        container in ``state``: those before it completed, those after it and the app not started."""
        meta, spec = wait.pod["metadata"], wait.pod["spec"]
        init_containers = spec.get("initContainers", []) or []
        names = [c["name"] for c in init_containers]
        position = names.index(init_container.CONTAINER_NAME)
        not_started = {"waiting": {"reason": "PodInitializing"}}
        init_statuses = []
        for index, container in enumerate(init_containers):
            if index < position:
                done = {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": wait.started,
                                       "finishedAt": wait.started}}  # fmt: skip
                init_statuses.append(_container_status(meta["uid"], container, done, ready=True))
            elif index == position:
                init_statuses.append(_container_status(meta["uid"], container, state, ready=False,
                                                       started="running" in state))  # fmt: skip
            else:
                init_statuses.append(_container_status(meta["uid"], container, not_started, ready=False))
        containers = spec.get("containers", [])
        incomplete = f"containers with incomplete status: [{' '.join(names[position:])}]"
        unready = f"containers with unready status: [{' '.join(c['name'] for c in containers)}]"
        pod_ip = self._pod_ip(wait.node, meta["uid"])
        status = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": wait.started,
            "conditions": [
                {"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized",
                 "message": incomplete, "lastTransitionTime": wait.started},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": unready,
                 "lastTransitionTime": wait.started},
                {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady",
                 "message": unready, "lastTransitionTime": wait.started},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": wait.started},
            ],
            "initContainerStatuses": init_statuses,
            "containerStatuses": [
                _container_status(meta["uid"], c, not_started, ready=False, started=False) for c in containers
            ],
        }  # fmt: skip
        try:
            self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": status})
        except ApiException as exc:
            if exc.status != 404:
                raise

    def check_restore_waits(self) -> None:
        """Look for the markers of every held pod: a stat per mounted volume, no API call until one
        finishes."""
        with self._restore_lock:
            waiting = [w for w in self._restore_waits.values() if w.outcome is None]
        for wait in waiting:
            with self._restore_lock:
                if self._restore_waits.get(wait.pod_uid) is not wait or wait.outcome is not None:
                    continue  # removed or finished since the list was taken
                try:
                    self._advance_restore(wait)
                except Exception as exc:
                    log.warning("init_container.check_failed", pod=wait.pod_name, error=str(exc))

    def restore_wait_loop(self, stop: threading.Event) -> None:
        while not stop.wait(RESTORE_CHECK_SECONDS):
            self.check_restore_waits()

    # --- volumes -----------------------------------------------------------------------------------

    def handle_claim(self, pvc: dict[str, Any]) -> None:
        spec, meta = pvc.get("spec", {}), pvc["metadata"]
        if spec.get("storageClassName") != STORAGE_CLASS or spec.get("volumeName"):
            return
        if meta.get("deletionTimestamp") or pvc.get("status", {}).get("phase") != "Pending":
            return
        node = (meta.get("annotations") or {}).get(SELECTED_NODE)
        if node not in self.nodes:
            return
        pv_name = f"pvc-{meta['uid']}"
        path = self.volumes / node / pv_name
        # Seeded once: an event for the claim that comes before the PV controller binds it (the claim
        # still Pending) must not write the files again under a pod that may already be using them.
        fresh = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        seed = (meta.get("annotations") or {}).get(SEED_ANNOTATION)
        # A restored claim keeps the annotation, but its data is the restore's: seeding it would mix
        # invented files into what the node agent writes back.
        restored = RESTORE_LABEL in (meta.get("labels") or {})
        if seed and not restored and fresh:
            seed_volume(path, seed)
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": pv_name, "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER}},
            "spec": {
                "capacity": {"storage": spec.get("resources", {}).get("requests", {}).get("storage", "1Gi")},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": STORAGE_CLASS,
                "volumeMode": spec.get("volumeMode", "Filesystem"),
                "claimRef": {
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": meta["namespace"],
                    "name": meta["name"], "uid": meta["uid"],
                },
                "local": {"path": str(path)},
                "nodeAffinity": {
                    "required": {
                        "nodeSelectorTerms": [
                            {"matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                            ]}
                        ]
                    }
                },
            },
        }  # fmt: skip
        try:
            self.core.create_persistent_volume(body)
            log.info("volume.provisioned", pv=pv_name, claim=f"{meta['namespace']}/{meta['name']}", node=node)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def handle_volume(self, pv: dict[str, Any]) -> None:
        meta, spec = pv["metadata"], pv.get("spec", {})
        if (meta.get("annotations") or {}).get("pv.kubernetes.io/provisioned-by") != PROVISIONER:
            return
        if pv.get("status", {}).get("phase") != "Released":
            return
        if spec.get("persistentVolumeReclaimPolicy") != "Delete":
            return
        path = Path(spec.get("local", {}).get("path", ""))
        if path.is_relative_to(self.volumes):
            shutil.rmtree(path, ignore_errors=True)
        try:
            self.core.delete_persistent_volume(meta["name"])
            log.info("volume.deleted", pv=meta["name"])
        except ApiException as exc:
            if exc.status != 404:
                raise

    def ensure_storage_class(self) -> None:
        body = {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": STORAGE_CLASS},
            "provisioner": PROVISIONER,
            "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer",
        }
        try:
            self.storage.create_storage_class(body)
        except ApiException as exc:
            if exc.status != 409:
                raise

    # --- running -----------------------------------------------------------------------------------

    def _safe(self, what: str, handler: Any) -> Any:
        def call(obj: dict[str, Any]) -> None:
            try:
                handler(obj)
            except Exception as exc:
                meta = obj.get("metadata", {})
                log.warning(f"{what}.failed", name=meta.get("name"), error=str(exc))

        return call

    def watches(self) -> list[ListWatch]:
        def each(handler: Any) -> Any:
            return lambda items: [handler(i) for i in items]

        pod = self._safe("pod", self.handle_pod)
        claim = self._safe("claim", self.handle_claim)
        volume = self._safe("volume", self.handle_volume)
        return [
            ListWatch("pods", self.core.list_pod_for_all_namespaces, self.handle_pod_list,
                      lambda _t, o: pod(o), 30),
            ListWatch(
                "persistentvolumeclaims",
                self.core.list_persistent_volume_claim_for_all_namespaces,
                each(claim),
                lambda _t, o: claim(o),
                30,
            ),
            ListWatch("persistentvolumes", self.core.list_persistent_volume, each(volume),
                      lambda _t, o: volume(o), 30),
        ]  # fmt: skip

    def run(self, stop: threading.Event) -> None:
        self.ensure_storage_class()
        self.register_nodes()
        threads = [
            threading.Thread(target=self.heartbeat_loop, args=(stop,), daemon=True),
            threading.Thread(target=self.restore_wait_loop, args=(stop,), daemon=True),
        ]
        threads += [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in self.watches()]
        if self.exec_server is not None:
            threads.append(threading.Thread(target=self.exec_server.serve_forever, daemon=True))
        for t in threads:
            t.start()
        log.info(
            "kubelet.started", nodes=self.nodes, root=str(self.root),
            exec_port=self.exec_server.port if self.exec_server else None,
        )  # fmt: skip
        stop.wait()
        if self.exec_server is not None:
            self.exec_server.shutdown()
        for t in threads:
            t.join(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description="davit dev kubelet and local-path provisioner")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--nodes", required=True, help="comma-separated node names")
    parser.add_argument("--root", required=True, type=Path, help="kubelet root directory")
    parser.add_argument("--volumes", required=True, type=Path, help="directory for provisioned volumes")
    parser.add_argument(
        "--exec-pki",
        type=Path,
        help="directory of the exec endpoint's certificates (devstack.pki.ensure_kubelet_pki)",
    )
    args = parser.parse_args()
    logs.configure("dev-kubelet")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    kubelet = DevKubelet(
        clients.api_client(args.kubeconfig),
        args.nodes.split(","),
        args.root.resolve(),
        args.volumes.resolve(),
        pki.ensure_kubelet_pki(args.exec_pki) if args.exec_pki else None,
    )
    kubelet.run(stop)


if __name__ == "__main__":
    main()
