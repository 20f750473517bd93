"""What a worker's handlers need from outside, as narrow interfaces: the API server (``Cluster``), the
backup locations (``Stores``), the scratch state (``Scratch``), where messages go (``Dispatch``) and,
for expiry, the time (``davit.clocks.Clock``).

A handler takes the ones it uses instead of the whole ``Runtime``; the services build the real ones
(``davit.kube.cluster.KubeCluster`` over ``Operations``; the ``Runtime`` itself is a ``Stores``;
``davit.operations.adapters.RedisScratch`` over the Runtime's Redis; ``Runtime.dispatch``), unit tests
the in-memory fakes in ``tests.fakes`` (``FakeCluster``, ``LocalStores``, ``ScratchFactory``,
``FakeDispatch``).

Errors are the real layer's everywhere: a missing object read with ``require``, ``patch`` or ``delete``
raises ``davit.kube.operations.NotFound`` (an ``ApiException`` with status 404); a write conditional on
the version read (``check_version``, the finalizer methods) raises ``ApiException`` with status 409 when
the object changed since; the ``get``-style reads return None for a missing object.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from davit import clocks
from davit.api.objects import RawObject
from davit.backup import exec_rules
from davit.backup.selection import ApiResource, ClusterRef
from davit.constants import Kind
from davit.format.repository import BackupRepository
from davit.operations.dispatch import Dispatch
from davit.operations.scratch import (
    BackupScratch,
    CloneScratch,
    OperationState,
    RecordedMetrics,
    RestoreScratch,
    RetentionDeletions,
)
from davit.settings import Settings
from davit.volumes.claims import VolumePlan

if TYPE_CHECKING:
    from davit.kube.discovery import Page
    from davit.kube.events import EventType

__all__ = [
    "BackupScratch",
    "CloneScratch",
    "Cluster",
    "Dispatch",
    "Moving",
    "OperationState",
    "Ports",
    "RestoreScratch",
    "RetentionDeletions",
    "Scratch",
    "Stores",
]


class Cluster(Protocol):
    """The API server as the handlers use it. Davit's own objects go through the methods named after
    ``davit.kube.operations.Operations`` (same arguments, same results, same errors); core objects,
    discovery, CSI snapshots, Events and exec have a method each. Every object is raw JSON
    (``RawObject``), as the API server stores it."""

    # --- Davit's custom resources (``Operations``) ------------------------------------------------

    def get(self, kind: Kind, namespace: str, name: str) -> RawObject | None:
        """The object, or None; an operation whose spec changed after acceptance raises SpecChanged."""

    def get_as_is(self, kind: Kind, namespace: str, name: str) -> RawObject | None:
        """The object as it is (no acceptance check), or None."""

    def require(self, kind: Kind, namespace: str, name: str) -> RawObject:
        """The object as it is; NotFound when there is none."""

    def current(
        self, kind: Kind, namespace: str, name: str, uid: str, stage: str | None = None
    ) -> RawObject | None:
        """The object a message is about if it still is that object (``uid``) and, given ``stage``, in
        that stage; None for a stale message."""

    def list_all(
        self, kind: Kind, namespace: str | None, label_selector: str | None = None, sort: bool = True
    ) -> list[RawObject]:
        """Every object of ``kind`` in ``namespace`` (all namespaces for None) that ``label_selector``
        matches; sorted by namespace and name unless ``sort`` is false."""

    def create(self, kind: Kind, namespace: str, body: RawObject) -> RawObject:
        """Create the object; ApiException 409 when one of that name exists."""

    def patch(self, kind: Kind, namespace: str, name: str, body: RawObject) -> RawObject:
        """JSON merge patch of the object; NotFound when there is none."""

    def patch_status(
        self, kind: Kind, obj: RawObject, status: dict[str, Any], check_version: bool = False
    ) -> RawObject:
        """Merge ``status`` into the object's status; with ``check_version``, 409 if it changed since
        ``obj`` was read."""

    def delete(self, kind: Kind, namespace: str, name: str, uid: str | None = None) -> None:
        """Delete the object (with ``uid``: only that incarnation, else 409); NotFound when none."""

    def add_finalizer(self, kind: Kind, obj: RawObject, finalizer: str) -> RawObject:
        """Add ``finalizer`` unless present; 409 if the object changed since ``obj`` was read."""

    def remove_finalizer(self, kind: Kind, obj: RawObject, finalizer: str) -> None:
        """Remove ``finalizer``; 409 if the object changed since read; nothing when it is gone."""

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's values, decoded; None when it does not exist."""

    # ``davit.validation.Lookup``: what an operation refers to, as it is (None for an empty name).

    def location(self, namespace: str, name: str) -> RawObject | None: ...

    def rule(self, namespace: str, name: str) -> RawObject | None: ...

    def backup(self, namespace: str, name: str) -> RawObject | None: ...

    # --- Events -----------------------------------------------------------------------------------

    def record_event(
        self, obj: RawObject, event_type: EventType, reason: str, message: str, component: str
    ) -> None:
        """A core/v1 Event about ``obj``; never raises (``davit.kube.events.record``)."""

    # --- core objects (``davit.kube.core``) -------------------------------------------------------

    def read_claim(self, namespace: str, name: str) -> RawObject | None:
        """The PersistentVolumeClaim, or None."""

    def read_volume(self, name: str) -> RawObject | None:
        """The PersistentVolume, or None."""

    def list_claims(self, namespace: str, label_selector: str = "") -> list[RawObject]:
        """The namespace's PersistentVolumeClaims (those ``label_selector`` matches, when given)."""

    def list_pods(self, namespace: str) -> list[RawObject]:
        """Every Pod of the namespace."""

    def namespaces_matching(self, label_selector: str) -> list[str]:
        """The names of the namespaces ``label_selector`` matches, sorted."""

    def node_names(self) -> set[str]:
        """The names of the cluster's Nodes."""

    # --- discovery and any resource (``davit.kube.discovery``): the export and the restore's apply

    def discover(self, made_since: float | None = None) -> list[ApiResource]:
        """Every resource the API server serves, each once (its group's preferred version first). Given
        ``made_since`` (epoch seconds), this process's last discovery when it was made since then: some
        40 requests (every version of every group) are not made twice for one backup."""

    def list_page(
        self,
        resource: ApiResource,
        namespace: str | None,
        label_selector: str | None,
        limit: int,
        continue_token: str | None,
    ) -> Page:
        """One page of a list, items with ``apiVersion`` and ``kind``; ``continue_token`` None at the end."""

    def get_cluster_object(self, ref: ClusterRef) -> RawObject | None:
        """A cluster-scoped object, or None."""

    def find_object(self, resource: ApiResource, namespace: str, name: str) -> RawObject | None:
        """A namespaced object read by name through a list (``metadata.name`` field selector), with
        ``apiVersion`` and ``kind``, or None: how the export, whose account may only list namespaced
        objects, reads one again. Names are checked as for ``get_object``."""

    def get_object(self, resource: ApiResource, namespace: str | None, name: str) -> RawObject | None:
        """Any object (``namespace`` None for a cluster-scoped one), or None. Names and namespaces are
        checked (``davit.tenancy.resource_path``): UnsafeName for one that could address another object."""

    def create_object(self, resource: ApiResource, namespace: str | None, body: RawObject) -> RawObject:
        """Create any object; the API server's refusal as ApiException (409 when it exists)."""

    def patch_object(
        self, resource: ApiResource, namespace: str | None, name: str, body: RawObject
    ) -> RawObject:
        """JSON merge patch of any object; NotFound when there is none."""

    def delete_object(
        self, resource: ApiResource, namespace: str | None, name: str, propagation: str = "Foreground"
    ) -> None:
        """Delete any object (with its dependents, as ``propagation`` says); NotFound when none."""

    # --- CSI snapshots (``davit.kube.csi``) -------------------------------------------------------

    def snapshot_drivers(self) -> set[str]:
        """Drivers that have a VolumeSnapshotClass (none without the snapshot CRDs)."""

    def snapshot_volume(
        self,
        plan: VolumePlan,
        backup_name: str,
        backup_uid: str,
        timeout_seconds: float,
        heartbeat: Callable[[], None] | None = None,
    ) -> dict[str, Any]:
        """Snapshot ``plan``'s claim and wait until ready; the volume's manifest entry. SnapshotError
        (SnapshotTimeout) with the reason otherwise."""

    def delete_backup_snapshots(self, namespaces: list[str], backup_uid: str) -> list[str]:
        """Delete the backup's VolumeSnapshots in ``namespaces``; ``namespace/name`` of each."""

    # --- the data mover (``davit.kube.mover``) ----------------------------------------------------

    def expose_snapshot(
        self,
        plan: VolumePlan,
        snapshot: str,
        restore_size: int,
        backup_name: str,
        backup_uid: str,
        image: str,
        timeout_seconds: float,
        heartbeat: Callable[[], None] | None = None,
    ) -> VolumePlan:
        """Mount the ready VolumeSnapshot through a temporary claim and a helper pod; the plan to read it
        by. MoverError with the reason otherwise."""

    def create_helper_pod(self, body: RawObject) -> RawObject:
        """Create the helper pod, or take over this operation's of that name; MoverError otherwise."""

    def list_temporary(self) -> list[RawObject]:
        """Every helper pod and temporary claim of the data mover, ``kind`` set on each."""

    def delete_temporary(self, namespace: str, label_selector: str) -> list[str]:
        """Delete the helper pods and temporary claims matching the selector; ``Kind ns/name`` of each."""

    # --- exec in pods (the backup's rules) --------------------------------------------------------

    def executor(self) -> exec_rules.Executor:
        """Runs commands in pods (``pods/exec``) for ``davit.backup.exec_rules``."""


class Stores(Protocol):
    """The backup locations' repositories. ``Runtime`` is one (``Runtime.repository``)."""

    def repository(self, namespace: str, location_name: str, verify: bool = False) -> BackupRepository:
        """The repository of BackupLocation ``location_name`` as seen from ``namespace`` (its own, else
        one the admin namespace shares with it); ``verify`` checks the store first. LocationUnavailable
        (``davit.operations.runtime``) when it is missing or its store refuses."""


class Scratch(Protocol):
    """An operation's scratch state by uid, the retention counters and the recorded metrics
    (``davit.operations.scratch``).
    Real: ``davit.operations.adapters.RedisScratch``; tests: ``tests.fakes.scratch.ScratchFactory``."""

    def backup(self, uid: str) -> BackupScratch: ...

    def restore(self, uid: str) -> RestoreScratch: ...

    def clone(self, uid: str) -> CloneScratch: ...

    def operation(self, uid: str) -> OperationState: ...

    def deletions(self) -> RetentionDeletions: ...

    def metrics(self) -> RecordedMetrics: ...


class Moving(Protocol):
    """What moving an operation through its stages needs (``davit.operations.progress``): the API
    server for the status write and its Event, where the next message goes, and the scratch state that
    ends at Final (None where a process has no Redis, e.g. the CLI)."""

    @property
    def cluster(self) -> Cluster: ...

    @property
    def dispatch(self) -> Dispatch: ...

    @property
    def scratch(self) -> Scratch | None: ...


@dataclass(frozen=True)
class Ports:
    """The narrow interfaces a handler is given instead of the whole process runtime. Services build it
    from their ``Runtime`` (``Runtime.ports``), unit tests from the fakes in ``tests.fakes``."""

    cluster: Cluster
    scratch: Scratch
    dispatch: Dispatch
    stores: Stores
    settings: Settings
    #: What "now" is for expiry (``davit.clocks``): the real time except in tests.
    clock: clocks.Clock = clocks.SYSTEM
