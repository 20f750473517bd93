"""Leader election on a coordination.k8s.io/v1 Lease, the way client-go's leaderelection does it.

Expiry is judged by how long *this* process has seen the Lease unchanged, not by comparing the holder's
``renewTime`` with the local clock, so clock skew between machines cannot hand leadership to two
processes. Every write carries the resourceVersion it was based on, so of two candidates only one wins.
"""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import structlog

from davit.kube import client
from davit.kube.client import ApiException

log = structlog.get_logger(__name__)


class Action(StrEnum):
    #: Create the Lease, or take over one that expired or was released.
    ACQUIRE = "acquire"
    #: We hold it: renew.
    RENEW = "renew"
    #: Someone else holds it and has renewed recently.
    WAIT = "wait"


@dataclass(frozen=True)
class LeaseRecord:
    holder: str
    duration_seconds: float
    renew_time: str
    acquire_time: str
    transitions: int
    resource_version: str

    @classmethod
    def from_raw(cls, raw: dict[str, Any]) -> LeaseRecord:
        spec = raw.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration_seconds=float(spec.get("leaseDurationSeconds") or 0),
            renew_time=spec.get("renewTime") or "",
            acquire_time=spec.get("acquireTime") or "",
            transitions=int(spec.get("leaseTransitions") or 0),
            resource_version=raw["metadata"]["resourceVersion"],
        )


def decide(record: LeaseRecord | None, identity: str, unchanged_for_seconds: float) -> Action:
    """Pure: what a candidate should do, given the Lease and how long it has looked the same to us."""
    if record is None or not record.holder:
        return Action.ACQUIRE
    if record.holder == identity:
        return Action.RENEW
    if unchanged_for_seconds >= record.duration_seconds:
        return Action.ACQUIRE
    return Action.WAIT


def _micro_now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaseElector:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        duration_seconds: float,
        renew_deadline_seconds: float,
        retry_seconds: float,
    ) -> None:
        self.api = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration_seconds
        self.renew_deadline = renew_deadline_seconds
        self.retry = retry_seconds
        self._observed: tuple[str, str, str] | None = None
        self._observed_at = time.monotonic()
        self.is_leader = threading.Event()

    def _read(self) -> LeaseRecord | None:
        try:
            response = self.api.read_namespaced_lease(self.name, self.namespace, _preload_content=False)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return LeaseRecord.from_raw(json.loads(response.data))

    def _observe(self, record: LeaseRecord | None) -> float:
        key = (record.holder, record.renew_time, record.resource_version) if record else None
        now = time.monotonic()
        if key != self._observed:
            self._observed, self._observed_at = key, now
        return now - self._observed_at

    def _body(self, record: LeaseRecord | None, holder: str, duration: float) -> dict[str, Any]:
        now = _micro_now()
        taking_over = record is None or record.holder != holder
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if record is not None:
            metadata["resourceVersion"] = record.resource_version
        transitions = record.transitions if record else 0
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": max(1, int(duration)),
                "acquireTime": now if taking_over or record is None else record.acquire_time or now,
                "renewTime": now,
                "leaseTransitions": transitions + 1 if taking_over and record is not None else transitions,
            },
        }

    def try_acquire_or_renew(self) -> bool:
        record = self._read()
        action = decide(record, self.identity, self._observe(record))
        if action is Action.WAIT:
            return False
        body = self._body(record, self.identity, self.duration)
        try:
            if record is None:
                self.api.create_namespaced_lease(self.namespace, body)
            else:
                self.api.replace_namespaced_lease(self.name, self.namespace, body)
        except ApiException as exc:
            if exc.status in (409, 422):  # someone else wrote first
                return False
            raise
        if action is Action.ACQUIRE:
            log.info("leader.acquired", lease=f"{self.namespace}/{self.name}", identity=self.identity)
        return True

    def release(self) -> None:
        """Hand the Lease back so a standby takes over at once instead of after it expires."""
        try:
            record = self._read()
            if record is None or record.holder != self.identity:
                return
            self.api.replace_namespaced_lease(self.name, self.namespace, self._body(record, "", 1))
            log.info("leader.released", lease=f"{self.namespace}/{self.name}")
        except Exception as exc:
            log.warning("leader.release_failed", error=str(exc))

    def _attempt(self) -> bool:
        try:
            return self.try_acquire_or_renew()
        except Exception as exc:
            log.warning("leader.lease_error", error=str(exc))
            return False

    def run(
        self,
        stop: threading.Event,
        lead: Callable[[threading.Event], None],
        tick: Callable[[], None] = lambda: None,
    ) -> None:
        """Campaign until ``stop``; while leading, run ``lead(lost)`` in a thread. ``lost`` is set when
        leadership ends (renewals failed for ``renew_deadline``, or shutdown), and ``lead`` must return.
        ``tick`` is called on every round, leading or not (the watcher's heartbeat)."""
        while not stop.is_set():
            tick()
            if not self._attempt():
                stop.wait(self.retry)
                continue
            lost = threading.Event()
            self.is_leader.set()
            worker = threading.Thread(target=lead, args=(lost,), name="leading", daemon=True)
            worker.start()
            last_renewal = time.monotonic()
            while not stop.is_set():
                tick()
                stop.wait(self.retry)
                if stop.is_set():
                    break
                if self._attempt():
                    last_renewal = time.monotonic()
                elif time.monotonic() - last_renewal > self.renew_deadline:
                    log.warning("leader.lost", lease=f"{self.namespace}/{self.name}")
                    break
            self.is_leader.clear()
            lost.set()
            worker.join()
        self.release()
