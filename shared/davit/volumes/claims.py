"""Which volumes a backup covers and how each is read (pure).

Per PVC in scope the mode is chosen from the backup's ``volumeMode`` (auto | filesystem | snapshot |
skip), overridable by the PVC annotation ``davit.dev/volume-mode``:

* ``filesystem``: the node agent on the node of a pod that mounts the claim reads the files — from the
  PV's own path for ``local`` and ``hostPath`` volumes (what the kubelet would bind-mount), otherwise from
  the kubelet's pod volume directory ``<kubeletRoot>/pods/<podUID>/volumes/<plugin>/<pvName>``.
* ``snapshot``: a CSI VolumeSnapshot, when a VolumeSnapshotClass exists for the PV's driver.
* ``datamover``: snapshot mode with the backup's ``snapshotMoveData``: the snapshot's files are read
  through a temporary claim made from it (``davit.volumes.mover``) and stored like a filesystem volume's.
* ``skip``: not backed up, with the reason in ``status.volumes[]``.

``auto`` means filesystem when a running pod mounts the claim or the volume is node-local (readable
without a pod), snapshot when a snapshot class exists for its driver, else skip with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from davit import constants
from davit.api.objects import RawObject

Mode = Literal["filesystem", "snapshot", "datamover", "skip"]

_MODES = ("auto", "filesystem", "snapshot", "skip")


@dataclass(frozen=True)
class VolumePlan:
    namespace: str
    claim: str
    volume: str
    driver: str
    mode: Mode
    #: filesystem: the node whose agent reads it, and where.
    node: str = ""
    pod_uid: str = ""
    #: "local": ``path`` is the PV's directory; "pod": under the kubelet's pod volume directory.
    source: Literal["local", "pod", ""] = ""
    path: str = ""
    plugin_dir: str = ""
    reason: str = ""
    #: datamover, once the snapshot is ready: the temporary claim whose directory the node agent reads
    #: (``node``, ``pod_uid``, ``volume`` and ``plugin_dir`` are then its helper pod's and its volume's).
    read_claim: str = ""

    @property
    def part(self) -> str:
        return f"{self.namespace}/{self.claim}"

    def status_entry(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "persistentVolumeClaim": self.claim,
            "volume": self.volume,
            "driver": self.driver,
            "mode": self.mode,
            "status": "Pending" if self.mode != "skip" else "Successful",
            "reason": self.reason,
            "totalSize": 0,
            "bytesDone": 0,
        }


#: In-tree volume sources and the kubelet's directory name for their plugin.
_IN_TREE = ("nfs", "awsElasticBlockStore", "gcePersistentDisk", "azureDisk", "iscsi", "rbd", "cephfs")


def _plugin_dir(pv_spec: RawObject) -> str:
    """The kubelet's plugin directory under ``pods/<uid>/volumes/`` for a PV (``kubernetes.io~csi``...)."""
    if "csi" in pv_spec:
        return "kubernetes.io~csi"
    plugin_names = {
        "awsElasticBlockStore": "aws-ebs",
        "gcePersistentDisk": "gce-pd",
        "azureDisk": "azure-disk",
    }
    source = next((k for k in _IN_TREE if k in pv_spec), "unknown")
    return f"kubernetes.io~{plugin_names.get(source, source)}"


#: The plugin directory of a PV, for the node agent's check of a plan against the API.
plugin_dir = _plugin_dir


def driver_of(pv: RawObject | None) -> str:
    spec = (pv or {}).get("spec") or {}
    if "csi" in spec:
        return str(spec["csi"].get("driver", "csi"))
    for kind in ("local", "hostPath", "nfs", "awsElasticBlockStore", "gcePersistentDisk", "azureDisk"):
        if kind in spec:
            return f"kubernetes.io/{kind}"
    return "unknown"


def _mounting_pods(claim: str, pods: list[RawObject]) -> list[RawObject]:
    found = []
    for pod in pods:
        if (pod.get("status") or {}).get("phase") != "Running" or not (pod.get("spec") or {}).get("nodeName"):
            continue
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            if (volume.get("persistentVolumeClaim") or {}).get("claimName") == claim:
                found.append(pod)
                break
    return sorted(found, key=lambda p: p["metadata"]["name"])


def _node_affinity_node(pv: RawObject) -> str:
    terms = (
        (((pv.get("spec") or {}).get("nodeAffinity") or {}).get("required") or {}).get("nodeSelectorTerms")
    ) or []
    for term in terms:
        for expression in term.get("matchExpressions") or []:
            if expression.get("key") == "kubernetes.io/hostname" and expression.get("values"):
                return str(expression["values"][0])
    return ""


def plan_volume(
    pvc: RawObject,
    pv: RawObject | None,
    pods: list[RawObject],
    volume_mode: str | None,
    snapshot_drivers: set[str],
    move_data: bool = False,
) -> VolumePlan:
    meta = pvc["metadata"]
    namespace, claim = meta["namespace"], meta["name"]
    annotated = (meta.get("annotations") or {}).get(constants.VOLUME_MODE_ANNOTATION)
    wanted = (annotated or volume_mode or "auto").lower()
    if wanted not in _MODES:
        wanted = "auto"
    volume = ((pvc.get("spec") or {}).get("volumeName")) or ""
    driver = driver_of(pv)
    base = {"namespace": namespace, "claim": claim, "volume": volume, "driver": driver}
    if wanted == "skip":
        # Say which of the two asked for it: the claim's annotation wins over the backup's volumeMode.
        chosen_by = f"annotation {constants.VOLUME_MODE_ANNOTATION}" if annotated else "volumeMode"
        return VolumePlan(**base, mode="skip", reason=f"{chosen_by} skip")
    if pv is None or not volume:
        return VolumePlan(**base, mode="skip", reason="the claim is not bound to a volume")

    spec = pv.get("spec") or {}
    node_local = spec.get("local") or spec.get("hostPath")
    mounted_by = _mounting_pods(claim, pods)
    if wanted in ("auto", "filesystem"):
        if node_local:
            path = str(node_local.get("path", ""))
            node = mounted_by[0]["spec"]["nodeName"] if mounted_by else _node_affinity_node(pv)
            if node:
                return VolumePlan(**base, mode="filesystem", node=node, source="local", path=path,
                                  pod_uid=mounted_by[0]["metadata"]["uid"] if mounted_by else "")  # fmt: skip
        if mounted_by:
            pod = mounted_by[0]
            return VolumePlan(
                **base, mode="filesystem", node=pod["spec"]["nodeName"], pod_uid=pod["metadata"]["uid"],
                source="pod", plugin_dir=_plugin_dir(spec),
            )  # fmt: skip
        if wanted == "filesystem":
            return VolumePlan(
                **base, mode="skip", reason="volumeMode filesystem, but no running pod mounts it"
            )
    if wanted in ("auto", "snapshot"):
        if driver in snapshot_drivers:
            return VolumePlan(**base, mode="datamover" if move_data else "snapshot")
        if wanted == "snapshot":
            return VolumePlan(**base, mode="skip", reason=f"no VolumeSnapshotClass for driver {driver}")
    return VolumePlan(
        **base, mode="skip", reason=f"no running pod mounts it and no VolumeSnapshotClass exists for {driver}"
    )


def restore_target(pvc: RawObject, pv: RawObject, pod: RawObject) -> VolumePlan:
    """Where the node agent writes a restored claim's data: the directory ``pod`` (scheduled, perhaps
    still held by the restore's init container) sees the claim's new volume at, on the pod's node."""
    meta = pvc["metadata"]
    spec = pv.get("spec") or {}
    base = {"namespace": meta["namespace"], "claim": meta["name"], "volume": pv["metadata"]["name"],
            "driver": driver_of(pv), "mode": "filesystem", "node": pod["spec"]["nodeName"],
            "pod_uid": pod["metadata"]["uid"]}  # fmt: skip
    node_local = spec.get("local") or spec.get("hostPath")
    if node_local:
        return VolumePlan(**base, source="local", path=str(node_local.get("path", "")))
    return VolumePlan(**base, source="pod", plugin_dir=_plugin_dir(spec))
