"""The restore service's ApplicationRestore handler on in-memory ports: a real backup in a real local
repository, the API server faked (``FakeCluster``), scratch state over fakeredis, messages recorded. Each
test drives the handler message by message, as the workers would, re-delivery and stale messages
included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from davit.api.types import Stage
from davit.constants import Kind, Queue, node_queue
from davit.format.layout import BackupRef, restore_log
from davit.operations.messages import Message
from davit.restore import fields
from davit.tenancy import RESTORE_REFUSED
from davit.volumes import mover, restore_stage
from davit_services.restore import apply, restore
from tests.fakes import cluster as fakes
from tests.fakes.cluster import api_error
from tests.fakes.scratch import ScratchFactory
from tests.unit.restore_world import (
    BACKUP,
    BACKUP_UID,
    LOCATION,
    NAMESPACE,
    RESTORE,
    RESTORE_UID,
    World,
    configmap,
    live_configmap,
)

EMPTY = {"restored": 0, "retained": 0, "replaced": 0, "updated": 0, "failed": 0}


@pytest.fixture
def world(tmp_path: Path, scratch_factory: ScratchFactory, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setattr("davit_services.restore.apply.time.sleep", lambda _seconds: None)  # create backoff
    return World.create(tmp_path, scratch_factory)


def chunk_message(step: int = 0, chunk: int = 0) -> Message:
    return Message(Kind.APPLICATION_RESTORE, NAMESPACE, RESTORE, RESTORE_UID, Stage.APPLICATIONS.value,
                   f"step:{step}:{chunk}")  # fmt: skip


def counts(**outcomes: int) -> dict[str, int]:
    return {**EMPTY, **outcomes}


# --- Initial ---------------------------------------------------------------------------------------


def test_a_restore_from_initial_plans_its_steps_and_sends_the_first(world: World) -> None:
    world.write_backup([configmap("a"), configmap("b"), configmap("c")])
    world.deliver(world.new_restore())

    status = world.status()
    assert (status["stage"], status["status"], status["resourceCount"]) == ("Applications", "InProgress", 3)
    assert world.scratch.restore(RESTORE_UID).step_layout() == [1]  # one step of one chunk
    assert [(m.stage, m.part) for m in world.sent()] == [("Applications", "step:0:0")]
    assert world.objects() == {}  # nothing is written before its step's message


def test_the_initial_message_delivered_twice_plans_once(world: World) -> None:
    world.write_backup([configmap("a")])
    initial = world.new_restore()
    world.deliver(initial)
    world.deliver(initial)  # the restore left Initial: the second delivery is stale
    assert [(m.stage, m.part) for m in world.sent()] == [("Applications", "step:0:0")]


def test_a_restore_of_a_missing_backup_fails_in_initial(world: World) -> None:
    world.deliver(world.new_restore())  # no backup written
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert status["reason"] == f"ApplicationBackup {NAMESPACE}/b1 not found"
    assert world.sent() == []


def test_an_unavailable_location_fails_the_restore_with_its_reason(world: World) -> None:
    world.write_backup([configmap("a")])
    world.stores.unavailable[(NAMESPACE, LOCATION)] = "the store refused: AccessDenied"
    world.deliver(world.new_restore())
    assert (world.status()["status"], world.status()["reason"]) == (
        "Failed",
        "the store refused: AccessDenied",
    )


# --- Applications ----------------------------------------------------------------------------------


def test_a_chunk_applied_creates_its_objects_and_counts_them(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restore, "CHUNK_OBJECTS", 2)
    world.write_backup([configmap("a"), configmap("b"), configmap("c")])
    world.deliver(world.new_restore())
    assert world.scratch.restore(RESTORE_UID).step_layout() == [2]
    assert sorted(m.part for m in world.sent()) == ["step:0:0", "step:0:1"]

    world.deliver(chunk_message(0, 0))
    created = world.objects()
    assert sorted(created) == ["a", "b"]
    assert created["a"]["metadata"]["annotations"]["davit.dev/restore-uid"] == RESTORE_UID
    assert "resourceVersion" in created["a"]["metadata"] and created["a"]["metadata"]["uid"] != "old-a"
    status = world.status()
    assert status["stage"] == "Applications"  # one chunk of the step is still out
    assert status["resourcesByKind"] == {"ConfigMap": counts(restored=2)}
    assert world.sent() == []


def test_the_same_chunk_delivered_twice_creates_and_counts_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restore, "CHUNK_OBJECTS", 2)
    world.write_backup([configmap("a"), configmap("b"), configmap("c")])
    world.deliver(world.new_restore())
    world.sent()
    world.deliver(chunk_message(0, 0))
    world.deliver(chunk_message(0, 0))
    assert world.cluster.calls.count("create_object") == 2
    assert world.status()["resourcesByKind"] == {"ConfigMap": counts(restored=2)}

    world.deliver(chunk_message(0, 1))
    world.deliver(chunk_message(0, 1))  # after the restore ended: stale
    assert world.cluster.calls.count("create_object") == 3
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Successful")
    assert status["resourcesByKind"] == {"ConfigMap": counts(restored=3)}


def test_a_chunk_whose_task_failed_half_way_runs_again_without_counting_twice(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(restore, "CHUNK_OBJECTS", 2)
    world.write_backup([configmap("a"), configmap("b"), configmap("c")])
    world.deliver(world.new_restore())
    world.sent()
    # The objects are created and counted, then the status write fails: the task fails before it
    # finishes its chunk, and the chunk is delivered again.
    world.cluster.fail_next("patch_status")
    with pytest.raises(Exception, match="Internal Server Error"):
        world.deliver(chunk_message(0, 0))
    assert sorted(world.objects()) == ["a", "b"]

    world.deliver(chunk_message(0, 0))
    # This restore made them: counted as restored (not retained), and not added to the first count.
    assert world.status()["resourcesByKind"] == {"ConfigMap": counts(restored=2)}
    world.deliver(chunk_message(0, 1))
    assert world.status()["resourcesByKind"] == {"ConfigMap": counts(restored=3)}
    assert world.status()["status"] == "Successful"


def test_a_message_for_a_stage_the_restore_has_left_does_nothing(world: World) -> None:
    world.write_backup([configmap("a")])
    initial = world.new_restore()
    world.deliver(initial)
    world.run()
    assert world.status()["stage"] == "Final"
    before, calls = world.restore(), len(world.cluster.calls)

    for message in (initial, chunk_message(0, 0),
                    Message(Kind.APPLICATION_RESTORE, NAMESPACE, RESTORE, RESTORE_UID, Stage.VOLUMES.value,
                            restore_stage.FINISH_PART)):  # fmt: skip
        world.deliver(message)
    assert world.restore() == before
    assert world.sent() == []
    assert "create_object" not in world.cluster.calls[calls:]
    assert "patch_status" not in world.cluster.calls[calls:]


def test_a_message_for_another_restore_of_the_same_name_does_nothing(world: World) -> None:
    world.write_backup([configmap("a")])
    world.new_restore()
    world.deliver(Message(Kind.APPLICATION_RESTORE, NAMESPACE, RESTORE, "another-uid", Stage.INITIAL.value))
    assert world.status()["stage"] == "Initial"
    assert world.sent() == []


def test_a_create_the_api_server_refuses_is_counted_failed_with_its_reason(world: World) -> None:
    world.write_backup([configmap("a"), configmap("b")])
    world.deliver(world.new_restore())
    world.cluster.fail_next("create_object", api_error(422, "Unprocessable Entity", "data: Invalid value"))
    world.run()
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "PartialSuccess")
    assert status["resourcesByKind"] == {"ConfigMap": counts(restored=1, failed=1)}
    assert "data: Invalid value" in status["reason"]
    assert len(world.objects()) == 1
    assert world.cluster.calls.count("create_object") == 2  # not retried


def test_a_throttled_create_is_tried_again(world: World) -> None:
    world.write_backup([configmap("a")])
    world.deliver(world.new_restore())
    world.cluster.fail_next("create_object", api_error(429), times=3)
    world.run()
    assert world.cluster.calls.count("create_object") == 4
    assert world.status()["resourcesByKind"] == {"ConfigMap": counts(restored=1)}
    assert world.status()["status"] == "Successful"


def test_a_create_throttled_every_time_fails_after_its_attempts(world: World) -> None:
    world.write_backup([configmap("a")])
    world.deliver(world.new_restore())
    world.cluster.fail_next("create_object", api_error(503), times=apply.CREATE_ATTEMPTS)
    world.run()
    assert world.cluster.calls.count("create_object") == apply.CREATE_ATTEMPTS
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert status["resourcesByKind"] == {"ConfigMap": counts(failed=1)}
    assert world.objects() == {}


# --- replacePolicy ---------------------------------------------------------------------------------


def test_retain_keeps_an_object_that_is_already_there(world: World) -> None:
    world.write_backup([configmap("a", key="from-backup"), configmap("b")])
    world.cluster.put(live_configmap("a"))
    world.deliver(world.new_restore(replacePolicy="Retain"))
    world.run()
    assert world.objects()["a"]["data"] == {"key": "live"}
    assert world.objects()["b"]["data"] == {"key": "b"}
    status = world.status()
    assert status["resourcesByKind"] == {"ConfigMap": counts(restored=1, retained=1)}
    assert status["status"] == "Successful"
    assert "delete_object" not in world.cluster.calls


def test_delete_replaces_an_object_that_is_already_there(world: World) -> None:
    world.write_backup([configmap("a", key="from-backup"), configmap("b")])
    world.cluster.put(live_configmap("a"))
    world.deliver(world.new_restore(replacePolicy="Delete"))
    assert world.cluster.calls.count("delete_object") == 1  # deleted in Initial, before any create
    assert world.objects() == {}
    world.run()
    assert world.objects()["a"]["data"] == {"key": "from-backup"}
    status = world.status()
    assert status["resourcesByKind"] == {"ConfigMap": counts(restored=1, replaced=1)}
    assert status["status"] == "Successful"


def test_a_dry_run_counts_what_it_would_do_and_writes_nothing(world: World) -> None:
    world.write_backup([configmap("a"), configmap("b")])
    world.cluster.put(live_configmap("a"))
    world.deliver(world.new_restore(dryRun=True, replacePolicy="Delete"))
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Successful")
    assert status["resourcesByKind"] == {"ConfigMap": counts(restored=1, replaced=1)}
    assert world.objects()["a"]["data"] == {"key": "live"} and "b" not in world.objects()
    assert "create_object" not in world.cluster.calls and "delete_object" not in world.cluster.calls


# --- the guard -------------------------------------------------------------------------------------


def test_the_guard_refuses_a_restore_into_another_namespace_and_nothing_is_written(world: World) -> None:
    world.write_backup([configmap("a"), configmap("b")])
    world.deliver(world.new_restore(namespaceMapping={NAMESPACE: "other"}))
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert status["reason"].startswith(f"{RESTORE_REFUSED}: the backup holds 2 object(s)")
    assert "namespace other is outside app" in status["reason"]
    assert world.objects(namespace=None) == {}
    assert world.sent() == []
    assert "create_object" not in world.cluster.calls
    assert RESTORE_REFUSED in world.cluster.reasons()


def test_the_guard_refuses_a_chunk_whose_objects_were_rewritten_in_the_scratch_state(world: World) -> None:
    world.write_backup([configmap("a")])
    world.deliver(world.new_restore())
    world.sent()
    # The scratch state is not trusted: an object moved into another namespace there is still refused.
    state = world.scratch.restore(RESTORE_UID)
    state.save_steps([[[{"object": {**configmap("a", namespace="other"), "metadata": {
        "name": "a", "namespace": "other"}}, "replacing": False}]]])  # fmt: skip
    world.deliver(chunk_message(0, 0))
    assert world.objects(namespace=None) == {}
    assert "create_object" not in world.cluster.calls
    status = world.status()
    assert status["resourcesByKind"] == {"ConfigMap": counts(failed=1)}
    assert "refused: ConfigMap other/a: namespace other is outside app" in status["reason"]


# --- Volumes and the end ---------------------------------------------------------------------------


def test_the_last_volume_done_hands_over_to_finish(world: World) -> None:
    world.write_backup([configmap("a")])
    world.deliver(world.new_restore())
    world.run()
    # As if the restore had two volumes to write: put it back in Volumes with them outstanding.
    obj = world.restore()
    world.cluster.put({**obj, "status": {**obj["status"], "stage": "Volumes", "status": "InProgress",
                                         "volumes": [], "resourcesByKind": {}}})  # fmt: skip
    state = world.scratch.restore(RESTORE_UID)
    state.lay_out("Volumes")
    state.record_chunk("step:0:0", {"ConfigMap|restored": 1}, [])
    parts = [restore_stage.PART_PREFIX + f"{NAMESPACE}/{claim}" for claim in ("data", "logs")]
    state.add_pending(parts, group=restore_stage.GROUP)

    restore_stage.volume_done(world.ports, world.restore(), state, parts[0])
    assert world.sent() == []  # one volume is still being written
    restore_stage.volume_done(world.ports, world.restore(), state, parts[0])  # reported twice
    assert world.sent() == []
    restore_stage.volume_done(world.ports, world.restore(), state, parts[1])
    finish = world.sent()
    assert [(m.stage, m.part) for m in finish] == [("Volumes", restore_stage.FINISH_PART)]

    world.deliver(finish[0])
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Successful")
    assert status["resourcesByKind"] == {"ConfigMap": counts(restored=1)}
    world.deliver(finish[0])  # delivered again: the restore ended, nothing changes
    assert world.status() == status


def test_a_stall_with_every_volume_done_finishes_the_restore(world: World) -> None:
    """The node agent that wrote the last volume died before it asked for the finish: the watcher's
    re-drive (a Volumes message without a part) finishes the restore."""
    world.write_backup([configmap("a")])
    world.deliver(world.new_restore())
    world.run()
    obj = world.restore()
    world.cluster.put({**obj, "status": {**obj["status"], "stage": "Volumes", "status": "InProgress",
                                         "volumes": [], "resourcesByKind": {}}})  # fmt: skip
    state = world.scratch.restore(RESTORE_UID)
    state.lay_out("Volumes")
    state.record_chunk("step:0:0", {"ConfigMap|restored": 1}, [])
    part = restore_stage.PART_PREFIX + f"{NAMESPACE}/data"
    state.add_pending([part], group=restore_stage.GROUP)
    state.finish(part, group=restore_stage.GROUP)  # done, and no finish asked for

    world.deliver(Message(Kind.APPLICATION_RESTORE, NAMESPACE, RESTORE, RESTORE_UID, Stage.VOLUMES.value))

    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Successful")
    assert status["resourcesByKind"] == {"ConfigMap": counts(restored=1)}


def test_a_failed_volume_makes_the_restore_a_partial_success(world: World) -> None:
    world.write_backup([configmap("a")])
    world.deliver(world.new_restore())
    world.run()
    obj = world.restore()
    entry = {"namespace": NAMESPACE, "persistentVolumeClaim": "data", "status": "InProgress", "reason": ""}
    world.cluster.put({**obj, "status": {**obj["status"], "stage": "Volumes", "status": "InProgress",
                                         "volumes": [entry]}})  # fmt: skip
    state = world.scratch.restore(RESTORE_UID)
    state.lay_out("Volumes")
    state.record_chunk("step:0:0", {"ConfigMap|restored": 1}, [])
    part = restore_stage.PART_PREFIX + f"{NAMESPACE}/data"
    state.add_pending([part], group=restore_stage.GROUP)

    restore_stage.fail_volume(world.ports, world.restore(), state, part, "the node agent gave up")
    assert world.status()["volumes"][0]["status"] == "Failed"
    world.run()
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "PartialSuccess")
    assert status["reason"] == f"volume {NAMESPACE}/data: the node agent gave up"


def test_finish_writes_final_with_counts_per_kind_and_keeps_the_log(world: World) -> None:
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": NAMESPACE},
              "data": {"k": "dg=="}}  # fmt: skip
    world.write_backup([configmap("a"), configmap("b"), secret])
    world.cluster.put(live_configmap("b"))
    world.deliver(world.new_restore())
    world.run()
    status = world.status()
    assert (status["stage"], status["status"], status["reason"]) == ("Final", "Successful", "")
    assert status["resourcesByKind"] == {
        "ConfigMap": counts(restored=1, retained=1),
        "Secret": counts(restored=1),
    }
    repository = world.stores.repository(NAMESPACE, LOCATION)
    log = repository.get(restore_log(NAMESPACE, RESTORE, RESTORE_UID)).decode()
    assert "restore.started" in log and "restore.finished" in log
    assert world.scratch.names(RESTORE_UID) == []  # the scratch state ends with the restore


def test_the_restore_service_queue_gets_every_step(world: World) -> None:
    world.write_backup([configmap("a")])
    world.deliver(world.new_restore())
    assert [queue for queue, _ in world.dispatch.sent] == [Queue.RESTORE.value]


def test_the_target_nodes_come_from_the_cluster(world: World) -> None:
    def claim(name: str, node: str) -> dict[str, object]:
        built = fakes.claim(name, NAMESPACE)
        built["metadata"]["annotations"] = {fields.SELECTED_NODE_ANNOTATION: node}
        return built

    world.write_backup([claim("here", "node-1"), claim("gone", "node-gone")])
    world.deliver(world.new_restore())
    world.run()
    assert "node_names" in world.cluster.calls
    created = world.objects("PersistentVolumeClaim")
    # A selected node the target cluster has stays; one it does not have is dropped.
    assert created["here"]["metadata"]["annotations"][fields.SELECTED_NODE_ANNOTATION] == "node-1"
    assert fields.SELECTED_NODE_ANNOTATION not in created["gone"]["metadata"]["annotations"]


def _in_volumes(world: World, claims: tuple[str, ...]) -> list[str]:
    """The ended restore put back in Volumes with ``claims``' data outstanding (and one ConfigMap
    restored); their parts."""
    obj = world.restore()
    entries = [{"namespace": NAMESPACE, "persistentVolumeClaim": c, "volume": "", "driver": "",
                "status": "Pending", "reason": ""} for c in claims]  # fmt: skip
    world.cluster.put({**obj, "status": {**obj["status"], "stage": "Volumes", "status": "InProgress",
                                         "volumes": entries}})  # fmt: skip
    state = world.scratch.restore(RESTORE_UID)
    state.lay_out("Volumes")
    state.record_chunk("step:0:0", {"ConfigMap|restored": 1}, [])  # its Applications stage's count
    state.save_volume_targets({f"{NAMESPACE}/{c}": {"tree": f"tree-{c}"} for c in claims})
    parts = [restore_stage.PART_PREFIX + f"{NAMESPACE}/{c}" for c in claims]
    state.add_pending(parts, group=restore_stage.GROUP)
    return parts


def test_a_volume_is_handed_to_the_node_agent_of_the_pod_that_mounts_it(world: World) -> None:
    world.write_backup([configmap("a")])
    world.deliver(world.new_restore())
    world.run()
    parts = _in_volumes(world, ("data",))
    world.cluster.put(
        fakes.claim("data", NAMESPACE, volume="pv-1"),
        fakes.volume("pv-1", claim=(NAMESPACE, "data"), driver="csi.example.com"),
        fakes.pod("p", NAMESPACE, claims=["data"], node="node-1", uid="pod-uid"),
    )
    volumes_message = Message(Kind.APPLICATION_RESTORE, NAMESPACE, RESTORE, RESTORE_UID, Stage.VOLUMES.value)
    world.deliver(volumes_message)

    sent = world.dispatch.to(node_queue("node-1"))
    assert [(m.stage, m.part) for m in sent] == [("Volumes", parts[0])]
    entry = world.status()["volumes"][0]
    assert (entry["status"], entry["volume"], entry["driver"]) == ("InProgress", "pv-1", "csi.example.com")
    plan = world.scratch.restore(RESTORE_UID).volume_target(f"{NAMESPACE}/data")["plan"]
    assert (plan["node"], plan["pod_uid"]) == ("node-1", "pod-uid")

    # Again (the watcher saw the stage stall): the task that handed it out may have died before its
    # message went out, so it goes once more, to the same node (whose agent drops it if the volume's
    # writer lives or finished); the target is not looked for again.
    world.dispatch.clear()
    reads = world.cluster.calls.count("list_pods")
    world.deliver(volumes_message)
    assert [(q, m.part) for q, m in world.dispatch.sent] == [(node_queue("node-1"), parts[0])]
    assert world.cluster.calls.count("list_pods") == reads


def test_a_volume_no_pod_mounts_in_time_fails_and_the_restore_finishes(
    tmp_path: Path, scratch_factory: ScratchFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("davit_services.restore.volumes.time.sleep", lambda _seconds: None)
    world = World.create(tmp_path, scratch_factory, stall_seconds=0.0)
    world.write_backup([configmap("a")])
    world.deliver(world.new_restore())
    world.run()
    _in_volumes(world, ("data",))
    world.cluster.put(fakes.claim("data", NAMESPACE))  # never bound
    world.deliver(Message(Kind.APPLICATION_RESTORE, NAMESPACE, RESTORE, RESTORE_UID, Stage.VOLUMES.value))
    assert world.status()["volumes"][0]["status"] == "Failed"
    world.run()  # the last volume done asked for the finish
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "PartialSuccess")
    assert status["reason"] == f"volume {NAMESPACE}/data: no pod that mounts the claim was scheduled in time"


# --- claims no restored pod mounts ---------------------------------------------------------------------


def claim_object(name: str) -> dict[str, object]:
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}  # fmt: skip


def test_a_data_mover_volume_is_written_back_and_gets_a_helper_pod_when_no_restored_pod_mounts_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stopped at the start of the Volumes stage (the fake has no provisioner: its claims never bind).
    monkeypatch.setattr("davit_services.restore.volumes.hand_out", lambda *_args: None)
    pod = fakes.pod("app-0", NAMESPACE, claims=["mounted"], node="node-1", uid="pod-app")
    volumes = [{"namespace": NAMESPACE, "persistentVolumeClaim": c, "mode": "datamover",
                "status": "Successful", "tree": f"tree-{c}", "totalSize": 10}
               for c in ("alone", "mounted")]  # fmt: skip
    world.write_backup([claim_object("alone"), claim_object("mounted"), pod], volumes)
    world.deliver(world.new_restore())
    world.run()

    state = world.scratch.restore(RESTORE_UID)
    assert state.volume_target(f"{NAMESPACE}/alone") == {"tree": "tree-alone", "helper": True}
    assert state.volume_target(f"{NAMESPACE}/mounted") == {"tree": "tree-mounted"}
    modes = {v["persistentVolumeClaim"]: v["mode"] for v in world.status()["volumes"]}
    assert modes == {"alone": "datamover", "mounted": "datamover"}


def test_the_helper_pod_is_where_the_data_goes_and_goes_when_the_restore_ends(world: World) -> None:
    world.write_backup([configmap("a")])
    world.deliver(world.new_restore())
    world.run()
    (part,) = _in_volumes(world, ("data",))
    state = world.scratch.restore(RESTORE_UID)
    state.set_volume_target(f"{NAMESPACE}/data", {"tree": "tree-data", "helper": True})
    world.cluster.put(
        fakes.claim("data", NAMESPACE, volume="pv-1"),
        fakes.volume("pv-1", claim=(NAMESPACE, "data"), driver="csi.example.com"),
    )
    volumes_message = Message(Kind.APPLICATION_RESTORE, NAMESPACE, RESTORE, RESTORE_UID, Stage.VOLUMES.value)

    world.deliver(volumes_message)

    (helper,) = world.cluster.list_temporary()
    assert helper["metadata"]["labels"][mover.RESTORE_UID_LABEL] == RESTORE_UID
    assert [v["persistentVolumeClaim"]["claimName"] for v in helper["spec"]["volumes"]] == ["data"]
    assert [m.part for m in world.dispatch.to(node_queue(world.cluster.mover_node))] == [part]
    plan = state.volume_target(f"{NAMESPACE}/data")["plan"]
    assert plan["pod_uid"] == helper["metadata"]["uid"]

    restore_stage.volume_done(world.ports, world.restore(), state, part)
    world.run()
    assert world.status()["stage"] == "Final"
    assert world.cluster.list_temporary() == []


# --- PostExecRule: restore hooks ---------------------------------------------------------------------

WARM_UP = [{"podSelector": {"app": "db"}, "container": "app",
            "actions": [{"type": "command", "value": "warm up the cache"}]}]  # fmt: skip


def test_a_restore_with_a_post_exec_rule_runs_it_in_the_running_pods_then_succeeds(world: World) -> None:
    world.write_backup([configmap("a")])
    world.cluster.put(fakes.rule("warm-up", NAMESPACE, WARM_UP), fakes.pod("db-0", labels={"app": "db"}))
    world.deliver(world.new_restore(postExecRule="warm-up"))
    world.run()
    status = world.status()
    assert (status["stage"], status["status"], status["reason"]) == ("Final", "Successful", "")
    assert [h["stage"] for h in status["stageHistory"]][-2:] == ["Applications", "PostExecRule"]
    ran = [(c.pod, c.container, c.command) for c in world.cluster.exec.calls if not c.control]
    assert ran == [("db-0", "app", "warm up the cache")]
    assert status["resourcesByKind"] == {"ConfigMap": counts(restored=1)}


def test_a_failing_post_exec_rule_makes_a_partial_success_naming_the_pod_and_command(world: World) -> None:
    world.write_backup([configmap("a")])
    world.cluster.put(fakes.rule("warm-up", NAMESPACE, WARM_UP), fakes.pod("db-0", labels={"app": "db"}))
    world.cluster.exec.results["warm up the cache"] = (2, "cache server refused")
    world.deliver(world.new_restore(postExecRule="warm-up"))
    world.run()
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "PartialSuccess")
    assert status["reason"].startswith("postExecRule warm-up: rules[0] (podSelector app=db) actions[0]")
    assert f"pod {NAMESPACE}/db-0" in status["reason"] and "exit code 2" in status["reason"]
    assert "cache server refused" in status["reason"]
    assert world.objects()["a"]["data"] == {"key": "a"}, "the objects stay restored"


def test_a_post_exec_rule_that_does_not_exist_is_named_and_the_objects_stay(world: World) -> None:
    world.write_backup([configmap("a")])
    world.deliver(world.new_restore(postExecRule="missing"))
    world.run()
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "PartialSuccess")
    assert status["reason"] == f"postExecRule: Rule {NAMESPACE}/missing not found"
    assert "a" in world.objects()


# --- Objects created by reference: the part is read again ------------------------------------------


def _rewrite_part(world: World, objects: list[dict[str, object]]) -> None:
    """The tenant rewrites the backup's part in their bucket (they hold the location's key)."""

    repository = world.stores.repository(NAMESPACE, LOCATION)
    repository.write_part(BackupRef(NAMESPACE, BACKUP, BACKUP_UID), f"{NAMESPACE}/v1/objects", objects)


def test_a_chunk_created_by_reference_holds_no_bodies_in_the_scratch_state(world: World) -> None:
    world.write_backup([configmap("a"), configmap("b")])
    world.deliver(world.new_restore())
    saved = world.scratch.restore(RESTORE_UID).chunk(0, 0)
    assert isinstance(saved, dict) and sorted(saved) == ["flags", "reference"]
    assert [key[3] for key in saved["reference"]["keys"]] == ["a", "b"]
    assert "data" not in str(saved)  # positions and names, never the objects' content
    world.deliver(chunk_message(0, 0))
    assert sorted(world.objects()) == ["a", "b"]
    assert world.status()["resourcesByKind"] == {"ConfigMap": counts(restored=2)}


def test_a_part_rewritten_after_planning_is_not_created(world: World) -> None:
    world.write_backup([configmap("a"), configmap("b")])
    world.deliver(world.new_restore())
    # Between planning and creating, the part is swapped for one naming another namespace and a new name.
    _rewrite_part(world, [configmap("a", namespace="other"), configmap("evil")])
    world.deliver(chunk_message(0, 0))
    # Listed in the fake API server: nothing anywhere.
    assert world.objects(namespace=None) == {}
    status = world.status()
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert status["resourcesByKind"] == {"ConfigMap": counts(failed=2)}
    assert "changed since the restore was planned" in status["reason"]


def test_a_chunk_naming_a_part_of_another_backup_in_the_scratch_state_is_refused(world: World) -> None:
    world.write_backup([configmap("a")])
    world.deliver(world.new_restore())
    state = world.scratch.restore(RESTORE_UID)
    saved = state.chunk(0, 0)
    saved["reference"]["part"] = "backups/other-tenant/b9/uid/resources/x.bin"
    state.redis.set(state.key(state.chunk_name(0, 0)), json.dumps(saved))
    world.deliver(chunk_message(0, 0))
    assert world.objects(namespace=None) == {}
    assert "is not a part of backup" in world.status()["reason"]


def test_planning_does_not_keep_the_manifests_list_of_every_object(world: World) -> None:
    """The manifest lists every object stored (100,000 dicts for 100,000 objects): the restore reads the
    parts themselves, so the list is dropped as soon as the manifest is read, and the restore is whole."""
    world.write_backup([configmap("a"), configmap("b")])
    repository = world.stores.repository(NAMESPACE, LOCATION)
    ref = BackupRef(NAMESPACE, BACKUP, BACKUP_UID)
    stored = repository.read_manifest(ref)
    listed = [{"apiVersion": "v1", "kind": "ConfigMap", "namespace": NAMESPACE, "name": n} for n in "ab"]
    repository.write_manifest(ref, {**stored, "resources": listed})
    assert repository.read_manifest(ref)["resources"] == listed

    world.new_restore()
    _repository, _ref, manifest = restore.locate_backup(world.ports, NAMESPACE, world.restore()["spec"])
    assert "resources" not in manifest and manifest["parts"] == stored["parts"]

    world.deliver(world.new_restore())
    world.run()
    assert sorted(world.objects()) == ["a", "b"]
    assert world.status()["status"] == "Successful"
