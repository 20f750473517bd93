"""The watcher process: list-and-watch the operation kinds while leading, apply each decision.

Applying a decision is always in this order: write the status (with the resourceVersion the decision was
based on, so a stale view loses), then enqueue, then record the Event. A crash between the write and the
enqueue leaves an accepted operation without a message, which the next resync notices and repairs.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import structlog

from davit import clocks, constants, health, logs, timeutil
from davit.api.objects import RawObject
from davit.api.types import Stage
from davit.constants import Kind
from davit.kube import client, events
from davit.kube.client import ApiException
from davit.kube.cluster import KubeCluster
from davit.kube.operations import Operations
from davit.kube.watching import EventType, ListWatch
from davit.operations import queueing, recording, scratch
from davit.operations.messages import Message
from davit.settings import Settings
from davit.storage.factory import LocationPolicy
from davit.validation import validate
from davit.volumes import mover
from davit_services.watcher import clones, decisions
from davit_services.watcher.copies import CopySweeper
from davit_services.watcher.in_place import InPlaceSweeper
from davit_services.watcher.leader import LeaseElector
from davit_services.watcher.locations import LocationChecker
from davit_services.watcher.movers import MoverSweeper
from davit_services.watcher.schedules import Scheduler

log = structlog.get_logger(__name__)


class Watcher:
    def __init__(
        self,
        settings: Settings,
        api: client.ApiClient,
    ) -> None:
        self.settings = settings
        self.api = api
        self.lookup = Operations(api)
        self.celery = queueing.create_app(settings.redis_url, "davit-watcher")
        self.redis = scratch.connect(settings.redis_url)
        self.queues = scratch.QueueState(self.redis)
        self.elector = self._elector()
        #: When slots are due and backups expire (``davit.clocks``): the real time except in tests.
        self.clock = clocks.from_settings(settings, "watcher")
        self.scheduler = Scheduler(api, self.celery, settings.schedule_tick_seconds, self.clock)
        self.clones = clones.CloneDriver(
            read=lambda namespace, name: self.lookup.get_as_is(Kind.APPLICATION_CLONE, namespace, name),
            send=lambda message, queue: queueing.send(self.celery, message, queue),
            # Progress reaches the clone well within the stall detection's patience.
            heartbeat_seconds=min(clones.HEARTBEAT_SECONDS, settings.stall_seconds / 3),
        )
        self.copies = CopySweeper(KubeCluster(self.lookup), settings.snapshot_copy_grace_seconds)
        self.movers = MoverSweeper(KubeCluster(self.lookup), settings.mover_grace_seconds)
        self.in_place = InPlaceSweeper(KubeCluster(self.lookup), settings.mover_grace_seconds)
        self.locations = LocationChecker(
            api,
            settings.location_check_seconds,
            self.elector.is_leader,
            celery=self.celery,
            gc_interval_seconds=settings.gc_interval_seconds,
            policy=LocationPolicy.from_settings(settings),
        )

    def _elector(self) -> LeaseElector:
        settings = self.settings
        return LeaseElector(
            self.api,
            settings.lease_namespace,
            settings.lease_name,
            settings.identity,
            settings.lease_duration_seconds,
            settings.lease_renew_deadline_seconds,
            settings.lease_retry_seconds,
        )

    # --- running -----------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        log.info("watcher.started", identity=self.settings.identity)
        heartbeat = health.Heartbeat(self.settings.heartbeat_file)
        try:
            self.elector.run(stop, self.lead, tick=heartbeat.beat)
        finally:
            heartbeat.stop()
        log.info("watcher.stopped")

    def lead(self, lost: threading.Event) -> None:
        """While leading: one list-and-watch loop per operation kind."""
        threads = [
            threading.Thread(target=lw.run, args=(lost,), name=f"watch-{lw.name}", daemon=True)
            for lw in self.list_watches()
        ]
        threads.append(
            threading.Thread(target=self.scheduler.run, args=(lost,), name="schedules", daemon=True)
        )
        for thread in threads:
            thread.start()
        lost.wait()
        for thread in threads:
            thread.join(timeout=10)

    def list_watches(self) -> list[ListWatch]:
        watches = [self._location_watch()]
        for kind in constants.OPERATION_KINDS:
            watches.append(
                ListWatch(
                    name=constants.PLURALS[kind],
                    list_call=self.lookup.list_call(kind),
                    on_list=functools.partial(self.resync, kind),
                    on_event=functools.partial(self.on_event, kind),
                    resync_seconds=self.settings.resync_seconds,
                )
            )
        return watches

    def _location_watch(self) -> ListWatch:
        return ListWatch(
            name=constants.PLURALS[Kind.BACKUP_LOCATION],
            list_call=self.lookup.list_call(Kind.BACKUP_LOCATION),
            on_list=self.locations.on_list,
            on_event=self.locations.on_event,
            resync_seconds=self.settings.resync_seconds,
        )

    # --- reconciling -------------------------------------------------------------------------------

    def resync(self, kind: Kind, items: list[RawObject]) -> None:
        """Reconcile every object of ``kind``, re-sending stage messages that are no longer in flight."""
        in_flight = self.queues.in_flight_task_ids([q.value for q in constants.Queue])
        for obj in items:
            obj.setdefault("apiVersion", constants.API_GROUP_VERSION)
            obj.setdefault("kind", kind.value)
            self.reconcile(kind, obj, resync=True, in_flight=in_flight)
        if kind == Kind.APPLICATION_RESTORE:
            self.copies.sweep(items)
            self.movers.sweep(mover.RESTORE, items)
            self.in_place.sweep(items)
        elif kind == Kind.APPLICATION_BACKUP:
            self.movers.sweep(mover.BACKUP, items)
        log.info("resync.done", kind=kind.value, objects=len(items))

    def on_event(self, kind: Kind, event: EventType, obj: RawObject) -> None:
        if event in ("ADDED", "MODIFIED"):
            self.reconcile(kind, obj, resync=False, in_flight=set())
            if kind in clones.STAGING_KINDS:
                self.drive_clone(kind, obj)

    def drive_clone(self, kind: Kind, staging: RawObject) -> None:
        """A clone's staging backup or restore changed: the clone's task may move on
        (``davit_services.watcher.clones``)."""
        if not self.elector.is_leader.is_set():
            return
        try:
            message = self.clones.on_change({"kind": kind.value, **staging})
        except Exception:
            log.exception("clone.drive_failed", staging=staging["metadata"].get("name"))
            return
        if message is not None:
            log.info("message.sent", key=message.key, why="the clone's staging operation changed")

    def reconcile(self, kind: Kind, obj: RawObject, resync: bool, in_flight: set[str]) -> None:
        meta = obj["metadata"]
        if meta.get("deletionTimestamp") and not resync:
            # Deletions are rare and each brings a burst of MODIFIED events: look at the queues first.
            in_flight = self.queues.in_flight_task_ids([constants.Queue.RETENTION.value])
        with logs.operation_context(
            kind=kind.value, namespace=meta.get("namespace"), name=meta["name"], uid=meta.get("uid")
        ):
            try:
                decision = decisions.decide(
                    kind,
                    obj,
                    lambda: validate(kind, obj, self.lookup, self.settings.admin_namespace),
                    now=timeutil.utcnow(),
                    resync=resync,
                    in_flight=in_flight.__contains__,
                    requeue_grace_seconds=self.settings.requeue_grace_seconds,
                    stall_seconds=self.settings.stall_seconds,
                    expiry_now=self.clock.now(),
                )
                self.apply(kind, obj, decision)
            except Exception:
                log.exception("reconcile.failed")

    def apply(self, kind: Kind, obj: RawObject, decision: decisions.Decision) -> None:
        if decision.status is None and decision.enqueue is None:
            return
        if not self.elector.is_leader.is_set():
            log.info("reconcile.skipped", why="not the leader")
            return
        meta = obj["metadata"]
        if decision.status is not None and not self._write_status(kind, obj, decision.status):
            return
        status = decision.status or {}
        if status.get("stage") == Stage.FINAL.value:
            ended = {**obj, "status": {**(obj.get("status") or {}), **status}}
            recording.try_record_outcome(scratch.RecordedMetrics(self.redis), kind, ended)
            self._clear_scratch(meta["uid"])
        stage = decision.message_stage or status.get("stage") or (obj.get("status") or {}).get("stage", "")
        if decision.enqueue is not None:
            message = Message(kind, meta["namespace"], meta["name"], meta["uid"], stage)
            queueing.send(self.celery, message, decision.enqueue.value)
            log.info("message.sent", queue=decision.enqueue.value, key=message.key, why=decision.why)
        else:
            log.info("status.written", why=decision.why, stage=stage, status=status.get("status"))
        if decision.event is not None:
            events.record(
                self.api, obj, decision.event.type, decision.event.reason, decision.event.message,
                constants.COMPONENT_WATCHER,
            )  # fmt: skip

    def _clear_scratch(self, uid: str) -> None:
        """The watcher ended the operation (failed it): its scratch state goes as at any Final
        (``davit.operations.scratch``); the log stays for ``davit <kind> logs`` until its TTL."""
        try:
            scratch.OperationState(self.redis, uid).clear_at_final()
        except scratch.RedisError as exc:
            log.warning("scratch.not_cleared", error=str(exc))  # the keys' TTL ends them anyway

    def _write_status(self, kind: Kind, obj: RawObject, status: dict[str, Any]) -> bool:
        """Write ``status`` if the object is still as read; False when it changed or went away."""
        try:
            self.lookup.patch_status(kind, obj, status, check_version=True)
        except ApiException as exc:
            if exc.status in (404, 409):
                # Changed or deleted since we looked: the event for that change brings a fresh decision.
                log.info("reconcile.stale", status=exc.status)
                return False
            raise
        return True
