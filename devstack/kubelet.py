"""A dev kubelet and local-path provisioner for a control plane without real nodes.

What it simulates, and nothing more (there are no containers, images, probes or networking):

* **Nodes**: registers one Node per name in ``--nodes`` (Ready, with capacity and the usual labels),
  renews each node's Lease in ``kube-node-lease`` every 10 s and refreshes the Ready condition every 60 s,
  so the node lifecycle controller keeps the nodes schedulable.
* **Pods** scheduled to those nodes: creates the pod's volume directories under ``--root`` in the
  kubelet's layout (``pods/<podUID>/volumes/<plugin>/<name>``) and marks the pod Running and Ready (init
  containers reported as completed). A PVC-backed volume's directory is a symlink to the PV's directory,
  where a real kubelet would bind-mount it; emptyDir, configMap, secret and projected volumes get empty
  directories. Pods being deleted are removed with their directories, as a kubelet does after their
  containers stop.
* **Provisioning** for StorageClass ``davit-dev`` (provisioner ``davit.dev/dev-local``,
  WaitForFirstConsumer): for a PVC the scheduler has given a node (``volume.kubernetes.io/selected-node``)
  it creates a directory for that node and a ``local`` PV with node affinity, like a local-path
  provisioner; the PV controller binds them. Released PVs with reclaim policy Delete are deleted with
  their directory.
* **Seed data**: a PVC annotated ``dev.davit.dev/seed-data: "24Mi"`` gets its new volume filled with about
  that much application-like data, since there are no containers to write any.

Run as ``python -m devstack.kubelet --kubeconfig K --nodes a,b --root DIR --volumes DIR``.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from davit import logs
from davit.kube import clients
from davit.kube.watching import ListWatch

log = structlog.get_logger("devstack.kubelet")

STORAGE_CLASS = "davit-dev"
PROVISIONER = "davit.dev/dev-local"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
KUBELET_VERSION = "v1.20.2"
LEASE_SECONDS = 40
LEASE_RENEW_SECONDS = 10.0
STATUS_REFRESH_SECONDS = 60.0

#: A PVC annotated with this gets a freshly provisioned volume filled with that much data (e.g. "24Mi"),
#: standing in for an application's writes: there are no containers to write real data.
SEED_ANNOTATION = "dev.davit.dev/seed-data"

_PLUGIN_DIRS = {
    "emptyDir": "kubernetes.io~empty-dir",
    "configMap": "kubernetes.io~configmap",
    "secret": "kubernetes.io~secret",
    "projected": "kubernetes.io~projected",
    "downwardAPI": "kubernetes.io~downward-api",
}


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


class DevKubelet:
    def __init__(self, api: client.ApiClient, nodes: list[str], root: Path, volumes: Path) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.storage = client.StorageV1Api(api)
        self.nodes = nodes
        self.root = root
        self.volumes = volumes
        self._pod_ips: dict[str, str] = {}
        self._lock = threading.Lock()

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
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
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
        self._create_volume_dirs(pod)
        self._mark_running(pod, node)

    def _remove_pod(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
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

    def _create_volume_dirs(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        volumes_dir = self.pod_dir(meta["uid"]) / "volumes"
        for volume in pod["spec"].get("volumes", []) or []:
            claim = volume.get("persistentVolumeClaim")
            if claim:
                self._link_claim(volumes_dir, meta["namespace"], claim["claimName"])
                continue
            for source, plugin in _PLUGIN_DIRS.items():
                if source in volume:
                    (volumes_dir / plugin / volume["name"]).mkdir(parents=True, exist_ok=True)

    def _link_claim(self, volumes_dir: Path, namespace: str, claim_name: str) -> None:
        try:
            pvc = self.core.read_namespaced_persistent_volume_claim(claim_name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return
            raise
        pv_name = pvc.spec.volume_name
        if not pv_name:
            return
        pv = self.core.read_persistent_volume(pv_name)
        if pv.spec.local is not None:
            plugin, target = "kubernetes.io~local-volume", Path(pv.spec.local.path)
        elif pv.spec.host_path is not None:
            return  # hostPath volumes are not materialised under the pod directory by a kubelet either
        elif pv.spec.csi is not None:
            (volumes_dir / "kubernetes.io~csi" / pv_name / "mount").mkdir(parents=True, exist_ok=True)
            return
        else:
            return
        link = volumes_dir / plugin / pv_name
        link.parent.mkdir(parents=True, exist_ok=True)
        target.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)

    def _mark_running(self, pod: dict[str, Any], node: str) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        now = _now()

        def running(container: dict[str, Any]) -> dict[str, Any]:
            return {
                "name": container["name"], "image": container.get("image", ""), "imageID": "",
                "containerID": f"dev://{meta['uid']}/{container['name']}", "ready": True, "started": True,
                "restartCount": 0, "state": {"running": {"startedAt": now}},
            }  # fmt: skip

        def completed(container: dict[str, Any]) -> dict[str, Any]:
            return {
                "name": container["name"], "image": container.get("image", ""), "imageID": "",
                "containerID": f"dev://{meta['uid']}/{container['name']}", "ready": True,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now,
                                         "finishedAt": now}},
            }  # fmt: skip

        pod_ip = self._pod_ip(node, meta["uid"])
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": pod_ip,
            "podIPs": [{"ip": pod_ip}],
            "startTime": now,
            "conditions": [
                {"type": t, "status": "True", "lastTransitionTime": now}
                for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
            ],
            "containerStatuses": [running(c) for c in spec.get("containers", [])],
            "initContainerStatuses": [completed(c) for c in spec.get("initContainers", []) or []],
        }
        try:
            self.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": status})
            log.info("pod.running", pod=f"{meta['namespace']}/{meta['name']}", node=node)
        except ApiException as exc:
            if exc.status != 404:
                raise

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
        path.mkdir(parents=True, exist_ok=True)
        seed = (meta.get("annotations") or {}).get(SEED_ANNOTATION)
        if seed:
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
            ListWatch("pods", self.core.list_pod_for_all_namespaces, each(pod), lambda _t, o: pod(o), 30),
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
        threads = [threading.Thread(target=self.heartbeat_loop, args=(stop,), daemon=True)]
        threads += [threading.Thread(target=w.run, args=(stop,), daemon=True) for w in self.watches()]
        for t in threads:
            t.start()
        log.info("kubelet.started", nodes=self.nodes, root=str(self.root))
        stop.wait()
        for t in threads:
            t.join(timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description="davit dev kubelet and local-path provisioner")
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--nodes", required=True, help="comma-separated node names")
    parser.add_argument("--root", required=True, type=Path, help="kubelet root directory")
    parser.add_argument("--volumes", required=True, type=Path, help="directory for provisioned volumes")
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
    )
    kubelet.run(stop)


if __name__ == "__main__":
    main()
