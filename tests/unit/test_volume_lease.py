"""One task at a time per volume part: the lease in a backup's scratch state (taken once, renewed and
released only by its owner, free again when its holder stops renewing it), and the node agent dropping a
volume or shard message whose part another task is storing, so duplicates never store chunks twice."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from davit.api.types import Stage
from davit.constants import Kind
from davit.operations.messages import Message
from davit.volumes.claims import VolumePlan
from davit_services.uploader import agent, leases
from tests.fakes.scratch import ScratchFactory

PART = "volume:team-a/data"


def test_a_lease_is_taken_once_with_a_short_ttl_in_the_operations_keys(
    scratch_factory: ScratchFactory,
) -> None:
    state = scratch_factory.backup("uid-1")
    assert state.take_lease(PART, "a", 30)
    assert not state.take_lease(PART, "b", 30)
    assert scratch_factory.names("uid-1") == [f"lease:{PART}"]
    assert 0 < scratch_factory.ttls()[f"davit:op:uid-1:lease:{PART}"] <= 30
    # Another volume, or another shard of the same volume, has a lease of its own.
    assert state.take_lease(PART + "#1", "b", 30)


def test_only_the_owner_renews_or_releases_a_lease(scratch_factory: ScratchFactory) -> None:
    state = scratch_factory.backup("uid-1")
    assert state.take_lease(PART, "a", 5)
    assert not state.renew_lease(PART, "b", 60)
    state.release_lease(PART, "b")
    assert not state.take_lease(PART, "b", 30)
    assert state.renew_lease(PART, "a", 60)
    assert scratch_factory.ttls()[f"davit:op:uid-1:lease:{PART}"] > 5
    state.release_lease(PART, "a")
    assert not state.renew_lease(PART, "a", 60)
    assert state.take_lease(PART, "b", 30)


def test_a_lease_whose_holder_stopped_renewing_it_expires(scratch_factory: ScratchFactory) -> None:
    state = scratch_factory.backup("uid-1")
    assert state.take_lease(PART, "dead", 0.05)
    time.sleep(0.15)
    assert state.take_lease(PART, "alive", 30)


def test_held_keeps_its_lease_past_the_ttl_and_frees_it_after(scratch_factory: ScratchFactory) -> None:
    state = scratch_factory.backup("uid-1")
    with leases.held(state, PART, seconds=0.2, renew_every=0.03) as mine:
        assert mine
        time.sleep(0.5)  # more than twice the TTL: only the renewals keep it
        with leases.held(state, PART) as other:
            assert not other
    assert scratch_factory.names("uid-1") == []
    with leases.held(state, PART) as again:
        assert again


def _plan() -> VolumePlan:
    return VolumePlan("team-a", "data", "pv-1", "ebs.csi.aws.com", "filesystem", node="node-a",
                      pod_uid="uid-1", source="pod", plugin_dir="kubernetes.io~csi")  # fmt: skip


@pytest.mark.parametrize("part", [PART, PART + "#2"])
def test_the_agent_drops_a_duplicate_message_while_another_task_stores_the_part(
    scratch_factory: ScratchFactory, monkeypatch: pytest.MonkeyPatch, part: str
) -> None:
    state = scratch_factory.backup("uid-1")
    state.save_volume_plans({"team-a/data": _plan().__dict__})
    state.add_pending([PART], group=state.VOLUMES_PENDING)
    started = threading.Event()
    release = threading.Event()
    runs: list[str] = []

    class Volume:
        def __init__(self, *args: Any) -> None:
            pass

        def _run(self, what: str) -> None:
            runs.append(what)
            started.set()
            assert release.wait(5)

        def start(self) -> None:
            self._run("volume")

        def store_shard(self, shard: int) -> None:
            self._run(f"shard {shard}")

    monkeypatch.setattr(agent, "_Volume", Volume)
    obj = {"metadata": {"uid": "uid-1"}, "spec": {"backupLocation": "loc"}}
    ports: Any = SimpleNamespace(scratch=scratch_factory, cluster=SimpleNamespace(current=lambda *a: obj))
    message = Message(Kind.APPLICATION_BACKUP, "team-a", "b", "uid-1", Stage.VOLUMES.value, part)

    first = threading.Thread(target=agent.handle, args=(ports, message))
    first.start()
    assert started.wait(5)
    agent.handle(ports, message)  # the same message again (a re-drive): dropped, not run alongside
    release.set()
    first.join(5)
    assert runs == ["shard 2" if "#" in part else "volume"]
    assert scratch_factory.names("uid-1") == ["volumes", "volumes-pending"]  # the lease went with its task
