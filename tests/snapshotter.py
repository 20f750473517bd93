"""A small stand-in for the CSI external-snapshotter and a CSI driver's snapshot call, for tests.

It watches VolumeSnapshots and, for one whose VolumeSnapshotClass names the driver it handles, does what
the snapshot-controller, the csi-snapshotter sidecar and the driver together would: creates the
VolumeSnapshotContent (``snapcontent-<snapshot uid>``, bound both ways: ``spec.volumeSnapshotRef`` on the
content, ``status.boundVolumeSnapshotContentName`` on the snapshot), then reports the snapshot cut: the
content's ``status`` (``snapshotHandle``, ``creationTime`` in ns, ``restoreSize`` in bytes, ready) and the
snapshot's (``creationTime``, ``restoreSize`` as a quantity, ``readyToUse: true``). When a snapshot is
deleted, its content goes too if the content's deletionPolicy is Delete. A VolumeSnapshot of a
pre-provisioned content (``spec.source.volumeSnapshotContentName``, as a restore's copy into another
namespace makes) is bound to it when the content points back at it and is of this driver, and reported
ready with the content's handle. Nothing more: no finalizers, no default-class lookup.

``Provisioner`` stands in for the driver's external-provisioner: a claim of a StorageClass whose
provisioner is the driver gets a CSI PersistentVolume pre-bound to it (the PV controller binds the pair),
empty, or, for a claim whose ``dataSource`` is a VolumeSnapshot, made from that snapshot once it is ready:
the PV records the snapshot's handle in ``spec.csi.volumeAttributes`` (``SOURCE_HANDLE_ATTRIBUTE``), which
is what a test can check the data came from.

With ``data_root`` (the dev kubelet's ``--volumes`` directory) the stand-ins keep real data, as the dev
kubelet expects a CSI driver to (``devstack.kubelet.csi_volume_dir``): cutting a snapshot copies the
source volume's directory to ``<data_root>/csi-snapshots/<snapshot handle>``, and a volume made from a
snapshot starts as a copy of that. A pod mounting the volume then sees the snapshot's files.

Tests steer it through ``mode``: ``ready`` (the default; after ``delay`` seconds when set), ``never``
(bound but never ready: the driver is still cutting) or ``error`` (``status.error`` with
``error_message``, as the snapshotter reports a failed CreateSnapshot call).
"""

from __future__ import annotations

import datetime
import json
import shutil
import socket
import threading
import time
from pathlib import Path
from typing import Any, Literal

import structlog
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from davit.api.objects import RawObject
from davit.kube.csi import parse_quantity
from davit.kube.watching import ListWatch
from devstack.kubelet import csi_volume_dir

log = structlog.get_logger("tests.snapshotter")
Mode = Literal["ready", "never", "error"]

GROUP = "snapshot.storage.k8s.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
DRIVER = "dev.csi.davit.dev"
#: Where a volume made from a snapshot records that snapshot's handle.
SOURCE_HANDLE_ATTRIBUTE = "dev.davit.dev/snapshot-handle"


def _rfc3339_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def binary_quantity(size: int) -> str:
    """Bytes as the snapshot-controller writes them (``resource.NewQuantity(n, BinarySI)``): the largest
    binary suffix that divides the size exactly."""
    for suffix, factor in (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20),
                           ("Ki", 2**10)):  # fmt: skip
        if size and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def snapshot_data_dir(data_root: Path, handle: str) -> Path:
    """Where the stand-in driver keeps the files of the snapshot ``handle`` (made by this module)."""
    return data_root / "csi-snapshots" / handle


class SnapshotController:
    """The test controller; ``start()`` runs it in a thread, ``stop()`` ends it."""

    def __init__(self, api: client.ApiClient, driver: str = DRIVER, data_root: Path | None = None) -> None:
        self.api = api
        self.driver = driver
        self.data_root = data_root
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.mode: Mode = "ready"
        self.delay = 0.0
        self.error_message = (
            "CreateSnapshot failed: rpc error: code = Internal desc = the test driver refused"
        )
        #: Contents this controller created (tests delete what is left).
        self.contents: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.RLock()
        self._thread: threading.Thread | None = None
        self._timers: dict[str, threading.Timer] = {}
        self._response: Any = None

    def behave(self, mode: Mode, delay: float = 0.0, error_message: str | None = None) -> None:
        """How snapshots created from now on are answered."""
        with self._lock:
            self.mode, self.delay = mode, delay
            if error_message is not None:
                self.error_message = error_message

    # --- running -----------------------------------------------------------------------------------

    def _list_call(self, **kwargs: Any) -> Any:
        response = self.custom.list_cluster_custom_object(GROUP, VERSION, "volumesnapshots", **kwargs)
        if kwargs.get("watch"):
            self._response = response  # so that stop() can end a quiet watch at once
        return response

    def start(self) -> None:
        def on_list(items: list[RawObject]) -> None:
            for item in items:
                self._safe(self.reconcile, item)

        def on_event(kind: str, obj: RawObject) -> None:
            self._safe(self.forget if kind == "DELETED" else self.reconcile, obj)

        watch = ListWatch("volumesnapshots", self._list_call, on_list, on_event)
        self._thread = threading.Thread(target=watch.run, args=(self._stop,), daemon=True, name="snapshotter")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()
        # End a quiet watch at once: shut its socket down (closing the response would wait for the
        # watch thread's blocked read to return).
        connection = getattr(self._response, "connection", None) or getattr(
            self._response, "_connection", None
        )
        sock = getattr(connection, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:  # already closed by the server
                log.debug("snapshotter.shutdown", error=str(exc))
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _safe(self, handler: Any, obj: RawObject) -> None:
        if self._stop.is_set():
            return
        try:
            with self._lock:
                handler(obj)
        except Exception as exc:
            meta = obj.get("metadata") or {}
            log.warning("snapshotter.failed", namespace=meta.get("namespace"), name=meta.get("name"),
                        error=str(exc))  # fmt: skip

    # --- the controller ----------------------------------------------------------------------------

    def _get(self, plural: str, name: str, namespace: str | None = None) -> RawObject | None:
        try:
            if namespace is None:
                response = self.custom.get_cluster_custom_object(
                    GROUP, VERSION, plural, name, _preload_content=False
                )
            else:
                response = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, plural, name, _preload_content=False
                )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        obj: RawObject = json.loads(response.data)
        return obj

    def _patch_snapshot_status(self, snapshot: RawObject, status: RawObject) -> None:
        meta = snapshot["metadata"]
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, meta["namespace"], "volumesnapshots", meta["name"], {"status": status}
        )

    def _source_volume(self, snapshot: RawObject) -> tuple[str, int]:
        """The CSI volume handle and size of the snapshot's claim; ValueError when it has none."""
        namespace, claim = (
            snapshot["metadata"]["namespace"],
            snapshot["spec"]["source"]["persistentVolumeClaimName"],
        )
        try:
            pvc = json.loads(
                self.core.read_namespaced_persistent_volume_claim(
                    claim, namespace, _preload_content=False
                ).data
            )
        except ApiException as exc:
            if exc.status == 404:
                raise ValueError(f"PersistentVolumeClaim {namespace}/{claim} not found") from exc
            raise
        volume = (pvc.get("spec") or {}).get("volumeName")
        if not volume or (pvc.get("status") or {}).get("phase") != "Bound":
            raise ValueError(f"PersistentVolumeClaim {namespace}/{claim} is not bound")
        pv = json.loads(self.core.read_persistent_volume(volume, _preload_content=False).data)
        csi = (pv.get("spec") or {}).get("csi") or {}
        if csi.get("driver") != self.driver:
            raise ValueError(f"PersistentVolume {volume} is not a {self.driver} volume")
        return str(csi.get("volumeHandle") or volume), parse_quantity(
            (pv["spec"].get("capacity") or {}).get("storage")
        )

    def reconcile(self, snapshot: RawObject) -> None:
        meta, spec = snapshot["metadata"], snapshot.get("spec") or {}
        status = snapshot.get("status") or {}
        if meta.get("deletionTimestamp") or status.get("readyToUse") is True or status.get("error"):
            return
        pre_provisioned = (spec.get("source") or {}).get("volumeSnapshotContentName")
        if pre_provisioned:
            self._bind_pre_provisioned(snapshot, str(pre_provisioned))
            return
        claim = (spec.get("source") or {}).get("persistentVolumeClaimName")
        class_name = spec.get("volumeSnapshotClassName")
        if not claim or not class_name:
            return
        snapshot_class = self._get("volumesnapshotclasses", class_name)
        if snapshot_class is None or snapshot_class.get("driver") != self.driver:
            return
        if self.mode == "error":
            self._fail(snapshot, self.error_message)
            return
        try:
            handle, size = self._source_volume(snapshot)
        except ValueError as exc:
            self._fail(snapshot, f"failed to get input parameters to create snapshot {meta['name']}: {exc}")
            return
        content = self._ensure_content(snapshot, snapshot_class, handle)
        if status.get("boundVolumeSnapshotContentName") != content:
            self._patch_snapshot_status(
                snapshot, {"boundVolumeSnapshotContentName": content, "readyToUse": False}
            )
        if self.mode == "never":
            return
        if self.delay > 0:
            uid = meta["uid"]
            if uid not in self._timers:
                timer = threading.Timer(
                    self.delay, self._complete_later, (meta["namespace"], meta["name"], size, handle)
                )
                timer.daemon = True
                self._timers[uid] = timer
                timer.start()
            return
        self._complete(snapshot, content, size, handle)

    def _bind_pre_provisioned(self, snapshot: RawObject, content_name: str) -> None:
        """A snapshot of an existing content: bound once the content names it back (the controller then
        fills in the snapshot's uid) and of this driver, ready with the content's handle and the size of
        the snapshot of that handle."""
        meta = snapshot["metadata"]
        content = self._get("volumesnapshotcontents", content_name)
        if content is None:
            return  # the real controller waits for it as well
        spec = content.get("spec") or {}
        ref = spec.get("volumeSnapshotRef") or {}
        if spec.get("driver") != self.driver:
            return
        named = (ref.get("namespace"), ref.get("name")) == (meta["namespace"], meta["name"])
        if not named or ref.get("uid") not in (None, "", meta["uid"]):
            self._fail(snapshot, f"VolumeSnapshotContent {content_name} is bound to another VolumeSnapshot")
            return
        handle = str((spec.get("source") or {}).get("snapshotHandle") or "")
        if not handle:
            self._fail(snapshot, f"VolumeSnapshotContent {content_name} has no snapshotHandle")
            return
        size = 0
        listed = self.custom.list_cluster_custom_object(GROUP, VERSION, "volumesnapshotcontents")
        for other in listed.get("items", []):
            if (other.get("status") or {}).get("snapshotHandle") == handle:
                size = max(size, int((other.get("status") or {}).get("restoreSize") or 0))
        if not ref.get("uid"):
            self.custom.patch_cluster_custom_object(
                GROUP, VERSION, "volumesnapshotcontents", content_name,
                {"spec": {"volumeSnapshotRef": {"uid": meta["uid"]}}},
            )  # fmt: skip
        created_ns = time.time_ns()
        self.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "volumesnapshotcontents", content_name,
            {"status": {"snapshotHandle": handle, "creationTime": created_ns, "restoreSize": size,
                        "readyToUse": True}},
        )  # fmt: skip
        created = datetime.datetime.fromtimestamp(created_ns / 1e9, datetime.UTC)
        self._patch_snapshot_status(snapshot, {
            "boundVolumeSnapshotContentName": content_name,
            "creationTime": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "restoreSize": binary_quantity(size),
            "readyToUse": True,
        })  # fmt: skip
        log.info("snapshotter.bound_pre_provisioned", snapshot=f"{meta['namespace']}/{meta['name']}",
                 content=content_name)  # fmt: skip

    def _fail(self, snapshot: RawObject, message: str) -> None:
        log.info("snapshotter.error", name=snapshot["metadata"]["name"], message=message)
        self._patch_snapshot_status(
            snapshot, {"readyToUse": False, "error": {"message": message, "time": _rfc3339_now()}}
        )

    def _ensure_content(self, snapshot: RawObject, snapshot_class: RawObject, handle: str) -> str:
        meta = snapshot["metadata"]
        name = f"snapcontent-{meta['uid']}"
        body = {
            "apiVersion": API_VERSION,
            "kind": "VolumeSnapshotContent",
            "metadata": {"name": name},
            "spec": {
                "deletionPolicy": snapshot_class.get("deletionPolicy", "Delete"),
                "driver": self.driver,
                "source": {"volumeHandle": handle},
                "volumeSnapshotClassName": snapshot_class["metadata"]["name"],
                "volumeSnapshotRef": {
                    "apiVersion": API_VERSION, "kind": "VolumeSnapshot", "namespace": meta["namespace"],
                    "name": meta["name"], "uid": meta["uid"], "resourceVersion": meta["resourceVersion"],
                },
            },
        }  # fmt: skip
        try:
            self.custom.create_cluster_custom_object(GROUP, VERSION, "volumesnapshotcontents", body)
            log.info(
                "snapshotter.content_created", content=name, snapshot=f"{meta['namespace']}/{meta['name']}"
            )
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.contents.add(name)
        return name

    def _complete_later(self, namespace: str, name: str, size: int, source: str) -> None:
        def complete(snapshot: RawObject) -> None:
            self._timers.pop(snapshot["metadata"]["uid"], None)
            current = self._get("volumesnapshots", name, namespace)
            if current is None or current["metadata"]["uid"] != snapshot["metadata"]["uid"]:
                return
            content = (current.get("status") or {}).get("boundVolumeSnapshotContentName")
            if content and not (current.get("status") or {}).get("readyToUse"):
                self._complete(current, content, size, source)

        snapshot = self._get("volumesnapshots", name, namespace)
        if snapshot is not None:
            self._safe(complete, snapshot)

    def _complete(self, snapshot: RawObject, content: str, size: int, source: str) -> None:
        """The driver's CreateSnapshot returned ready: the volume's files copied (with ``data_root``), the
        content's status, then the snapshot's."""
        meta = snapshot["metadata"]
        if self.data_root is not None:
            volume = csi_volume_dir(self.data_root, source)
            cut = snapshot_data_dir(self.data_root, f"snap-{meta['uid']}")
            if volume.is_dir() and not cut.exists():
                shutil.copytree(volume, cut, symlinks=True)
        created_ns = time.time_ns()
        self.custom.patch_cluster_custom_object_status(
            GROUP, VERSION, "volumesnapshotcontents", content,
            {"status": {"snapshotHandle": f"snap-{meta['uid']}", "creationTime": created_ns,
                        "restoreSize": size, "readyToUse": True}},
        )  # fmt: skip
        created = datetime.datetime.fromtimestamp(created_ns / 1e9, datetime.UTC)
        self._patch_snapshot_status(
            snapshot,
            {
                "boundVolumeSnapshotContentName": content,
                "creationTime": created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "restoreSize": binary_quantity(size),
                "readyToUse": True,
            },
        )
        log.info("snapshotter.ready", snapshot=f"{meta['namespace']}/{meta['name']}", content=content)

    def forget(self, snapshot: RawObject) -> None:
        """A deleted snapshot takes its content along when the content's deletionPolicy is Delete."""
        meta = snapshot["metadata"]
        timer = self._timers.pop(meta["uid"], None)
        if timer is not None:
            timer.cancel()
        name = (snapshot.get("status") or {}).get(
            "boundVolumeSnapshotContentName"
        ) or f"snapcontent-{meta['uid']}"
        content = self._get("volumesnapshotcontents", name)
        if content is None or content["spec"].get("deletionPolicy") != "Delete":
            return
        if (content["spec"].get("volumeSnapshotRef") or {}).get("uid") != meta["uid"]:
            return
        try:
            self.custom.delete_cluster_custom_object(GROUP, VERSION, "volumesnapshotcontents", name)
        except ApiException as exc:
            if exc.status != 404:
                raise
        self.contents.discard(name)


class Provisioner:
    """The stand-in external-provisioner of the driver (see the module's docstring); ``start()`` runs it
    in a thread, ``stop()`` ends it and deletes the volumes it made (their claims, gone or not, are the
    tests')."""

    #: How often pending claims are looked at again (a snapshot may become ready after its claim came).
    RESYNC_SECONDS = 1.0

    def __init__(self, api: client.ApiClient, driver: str = DRIVER, data_root: Path | None = None) -> None:
        self.api = api
        self.driver = driver
        self.data_root = data_root
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.storage = client.StorageV1Api(api)
        #: Volumes this provisioner created.
        self.volumes: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._response: Any = None

    def _list_call(self, **kwargs: Any) -> Any:
        response = self.core.list_persistent_volume_claim_for_all_namespaces(**kwargs)
        if kwargs.get("watch"):
            self._response = response
        return response

    def start(self) -> None:
        def on_list(items: list[RawObject]) -> None:
            for item in items:
                self._safe(item)

        def on_event(kind: str, obj: RawObject) -> None:
            if kind != "DELETED":
                self._safe(obj)

        watch = ListWatch("claims", self._list_call, on_list, on_event, resync_seconds=self.RESYNC_SECONDS)
        self._thread = threading.Thread(target=watch.run, args=(self._stop,), daemon=True, name="provisioner")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        connection = getattr(self._response, "connection", None) or getattr(
            self._response, "_connection", None
        )
        sock = getattr(connection, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError as exc:
                log.debug("provisioner.shutdown", error=str(exc))
        if self._thread is not None:
            self._thread.join(timeout=10)
        for name in sorted(self.volumes):
            try:
                self.core.delete_persistent_volume(name)
            except ApiException as exc:
                if exc.status != 404:
                    raise

    def _safe(self, claim: RawObject) -> None:
        if self._stop.is_set():
            return
        try:
            with self._lock:
                self.provision(claim)
        except Exception as exc:
            meta = claim.get("metadata") or {}
            log.warning("provisioner.failed", namespace=meta.get("namespace"), name=meta.get("name"),
                        error=str(exc))  # fmt: skip

    def _ours(self, class_name: str) -> bool:
        try:
            storage_class = self.storage.read_storage_class(class_name, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return bool(json.loads(storage_class.data).get("provisioner") == self.driver)

    def _snapshot_handle(self, namespace: str, name: str) -> str | None:
        """The handle of a ready VolumeSnapshot's content; None while there is none."""
        try:
            snapshot = json.loads(self.custom.get_namespaced_custom_object(
                GROUP, VERSION, namespace, "volumesnapshots", name, _preload_content=False
            ).data)  # fmt: skip
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        status = snapshot.get("status") or {}
        content = status.get("boundVolumeSnapshotContentName")
        if status.get("readyToUse") is not True or not content:
            return None
        found = json.loads(self.custom.get_cluster_custom_object(
            GROUP, VERSION, "volumesnapshotcontents", content, _preload_content=False
        ).data)  # fmt: skip
        handle = (found.get("status") or {}).get("snapshotHandle")
        return str(handle) if handle else None

    def provision(self, claim: RawObject) -> None:
        meta, spec = claim["metadata"], claim.get("spec") or {}
        if spec.get("volumeName") or meta.get("deletionTimestamp"):
            return
        if (claim.get("status") or {}).get("phase") not in (None, "Pending"):
            return
        class_name = spec.get("storageClassName")
        if not class_name or not self._ours(str(class_name)):
            return
        attributes: dict[str, str] = {}
        source = spec.get("dataSource") or {}
        if source:
            if (source.get("apiGroup"), source.get("kind")) != (GROUP, "VolumeSnapshot"):
                return  # clones of claims are not simulated
            handle = self._snapshot_handle(meta["namespace"], str(source.get("name")))
            if handle is None:
                return  # not ready yet: the resync looks again
            attributes[SOURCE_HANDLE_ATTRIBUTE] = handle
        name = f"pvc-{meta['uid']}"
        handle = f"vol-{name}"
        if self.data_root is not None and SOURCE_HANDLE_ATTRIBUTE in attributes:
            # The new volume starts as the snapshot's files, as a driver restoring a snapshot makes it.
            cut = snapshot_data_dir(self.data_root, attributes[SOURCE_HANDLE_ATTRIBUTE])
            volume = csi_volume_dir(self.data_root, handle)
            if cut.is_dir() and not volume.exists():
                shutil.copytree(cut, volume, symlinks=True)
        requested = (spec.get("resources") or {}).get("requests", {}).get("storage", "1Gi")
        body = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": self.driver}},
            "spec": {
                "capacity": {"storage": requested},
                "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": class_name,
                "volumeMode": spec.get("volumeMode", "Filesystem"),
                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                             "namespace": meta["namespace"], "name": meta["name"], "uid": meta["uid"]},
                "csi": {"driver": self.driver, "volumeHandle": handle, "volumeAttributes": attributes},
            },
        }  # fmt: skip
        try:
            self.core.create_persistent_volume(body)
            log.info("provisioner.provisioned", pv=name, claim=f"{meta['namespace']}/{meta['name']}",
                     source=attributes.get(SOURCE_HANDLE_ATTRIBUTE, ""))  # fmt: skip
        except ApiException as exc:
            if exc.status != 409:
                raise
        self.volumes.add(name)
