"""The resource writer (davit_services.resources.export) on the in-memory fakes, writing into a real
local repository: the plan, the pages (each once, however often delivered), the cluster-scoped part, the
move on to PostExecRule, and the refusal of scratch state that names what the backup may not read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from davit.api.objects import RawObject
from davit.constants import Kind, Queue
from davit.format.layout import BackupRef
from davit.kube.client import ApiException
from davit.operations.messages import Message
from davit.operations.ports import Ports
from davit.settings import Settings
from davit_services.resources import export
from tests.fakes import cluster as k
from tests.fakes.dispatch import FakeDispatch
from tests.fakes.scratch import ScratchFactory
from tests.fakes.stores import LocalStores

BACKUP = Kind.APPLICATION_BACKUP
UID = "uid-b1"
REF = BackupRef("app", "b1", UID)
CONFIGMAPS = "app/v1/configmaps"


@pytest.fixture
def fake() -> k.FakeCluster:
    cluster = k.FakeCluster()
    cluster.put(k.location("loc", "app"), k.namespace("app"), k.namespace("other"))
    for i in range(5):
        cluster.put({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": f"cm-{i}", "namespace": "app", "managedFields": [{"x": 1}]},
                     "data": {"i": str(i)}})  # fmt: skip
    other = {"name": "secret-plans", "namespace": "other"}
    cluster.put(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": other, "data": {"plans": "OTHER-TENANT-DATA"}}
    )
    return cluster


@pytest.fixture
def stores(fake: k.FakeCluster, tmp_path: Path) -> LocalStores:
    return LocalStores(tmp_path / "locations", cluster=fake)


@pytest.fixture
def ports(fake: k.FakeCluster, scratch_factory: ScratchFactory, stores: LocalStores) -> Ports:
    return Ports(fake, scratch_factory, FakeDispatch(), stores, Settings(export_page_size=2))


@pytest.fixture(autouse=True)
def laid_out(scratch_factory: ScratchFactory) -> None:
    """The backup's scratch state as its Volumes stage leaves it: laid out (a state without its marker is
    a lost one, tests/unit/test_state_loss.py)."""
    scratch_factory.backup(UID).lay_out("Volumes")


def sent(ports: Ports) -> FakeDispatch:
    assert isinstance(ports.dispatch, FakeDispatch)
    return ports.dispatch


def applications(fake: k.FakeCluster, **spec: Any) -> RawObject:
    spec.setdefault("resourceTypes", ["configmaps"])
    return fake.put(
        k.backup("b1", stage="Applications", status="Pending", uid=UID, backupLocation="loc", **spec)
    )


def message(part: str = "") -> Message:
    return Message(BACKUP, "app", "b1", UID, "Applications", part)


def drain(ports: Ports, handled: list[str] | None = None) -> None:
    """Run every message sent to the export queue, in order, until none is left."""
    done = 0
    while done < len(sent(ports).to(Queue.EXPORT.value)):
        queued = sent(ports).to(Queue.EXPORT.value)[done]
        done += 1
        if handled is not None:
            handled.append(queued.part)
        export.handle(ports, queued)


def stored_names(stores: LocalStores) -> list[str]:
    """The names of every object stored in the backup's resource parts (read back from the repository)."""
    repository = stores.repository("app", "loc")
    keys = [info.key for info in repository.store.list(REF.root + "resources/")]
    return sorted(o["metadata"]["name"] for key in keys for o in repository.read_part(key))


def test_the_export_plans_pages_writes_each_into_the_repository_and_moves_on_to_post_exec_rule(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores, scratch_factory: ScratchFactory
) -> None:
    obj = applications(fake)

    export.handle(ports, message())
    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("Applications", "InProgress")
    assert status["reason"] == "exporting 1 resource lists"
    # The planning task lists and writes each first page itself; the pages after it go to the queue.
    assert fake.calls.count("list_page") == 1
    assert [m.part for m in sent(ports).to(Queue.EXPORT.value)] == [f"{CONFIGMAPS}#2"]

    handled: list[str] = []
    drain(ports, handled)

    # The task of the second page lists and writes the third itself.
    assert handled == [f"{CONFIGMAPS}#2", "_cluster"]
    repository = stores.repository("app", "loc")
    pages = [repository.read_part(REF.resource_part(f"{CONFIGMAPS}#{n}")) for n in (1, 2, 3)]
    assert [[o["metadata"]["name"] for o in page] for page in pages] == [
        ["cm-0", "cm-1"],
        ["cm-2", "cm-3"],
        ["cm-4"],
    ]
    assert all("managedFields" not in o["metadata"] for page in pages for o in page)
    cluster_part = repository.read_part(REF.resource_part("_cluster"))
    assert [(o["kind"], o["metadata"]["name"]) for o in cluster_part] == [("Namespace", "app")]
    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("PostExecRule", "Pending")
    assert [m.stage for m in sent(ports).to(Queue.SNAPSHOT.value)] == ["PostExecRule"]
    parts = scratch_factory.backup(UID).parts()
    assert sorted(parts) == ["_cluster", f"{CONFIGMAPS}#1", f"{CONFIGMAPS}#2", f"{CONFIGMAPS}#3"]
    assert sum(p["count"] for p in parts.values()) == 6


def more_configmaps(fake: k.FakeCluster, count: int) -> None:
    for i in range(5, 5 + count):
        meta = {"name": f"cm-{i}", "namespace": "app"}
        fake.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"i": str(i)}})


def test_a_page_task_goes_on_through_its_list_up_to_its_budget_then_hands_the_rest_to_the_queue(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(export, "PAGES_PER_TASK", 3)
    more_configmaps(fake, 9)  # 14 ConfigMaps: 7 pages of 2
    obj = applications(fake)

    export.handle(ports, message())
    handled: list[str] = []
    drain(ports, handled)

    assert handled == [f"{CONFIGMAPS}#2", f"{CONFIGMAPS}#5", "_cluster"]
    assert fake.calls.count("list_page") == 7  # each page listed once
    assert fake.status(obj)["stage"] == "PostExecRule"
    assert stored_names(stores) == sorted(["app"] + [f"cm-{i}" for i in range(14)])


def test_a_page_task_failing_on_a_page_it_went_on_to_sends_that_page_to_the_queue(
    fake: k.FakeCluster,
    ports: Ports,
    stores: LocalStores,
    scratch_factory: ScratchFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The retry of the task's own message finds its first page done and does nothing: the page that
    failed gets its own message, and the backup ends with every object stored and counted once."""
    more_configmaps(fake, 3)  # 8 ConfigMaps: 4 pages of 2
    applications(fake)
    export.handle(ports, message())
    write_page = export._write_page
    failed: list[str] = []

    def failing_once(*args: Any) -> None:
        if args[4] == f"{CONFIGMAPS}#3" and not failed:
            failed.append(args[4])
            raise OSError("the store went away")
        write_page(*args)

    monkeypatch.setattr(export, "_write_page", failing_once)
    with pytest.raises(OSError, match="went away"):
        export.handle(ports, message(f"{CONFIGMAPS}#2"))
    assert [m.part for m in sent(ports).to(Queue.EXPORT.value)] == [f"{CONFIGMAPS}#2", f"{CONFIGMAPS}#3"]

    export.handle(ports, message(f"{CONFIGMAPS}#2"))  # the retry: its page is done
    handled: list[str] = []
    drain(ports, handled)

    assert handled[:2] == [f"{CONFIGMAPS}#2", f"{CONFIGMAPS}#3"] and handled[-1] == "_cluster"
    parts = scratch_factory.backup(UID).parts()
    assert sum(p["count"] for p in parts.values() if p["part"] != "_cluster") == 8
    assert stored_names(stores) == sorted(["app"] + [f"cm-{i}" for i in range(8)])


def test_a_page_task_whose_list_fails_ahead_sends_that_page_to_the_queue(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page listed ahead (while the task's own was written) fails to list: recorded outstanding with
    its continue token, it gets a message of its own, and nothing is written twice or lost."""
    more_configmaps(fake, 3)  # 8 ConfigMaps: 4 pages of 2
    obj = applications(fake)
    export.handle(ports, message())
    list_page = fake.list_page
    calls: list[str | None] = []

    def second_list_fails(*args: Any) -> Any:
        calls.append(args[-1])
        if len(calls) == 2:
            raise OSError("connection reset by peer")
        return list_page(*args)

    monkeypatch.setattr(fake, "list_page", second_list_fails)
    with pytest.raises(OSError, match="reset"):
        export.handle(ports, message(f"{CONFIGMAPS}#2"))
    assert [m.part for m in sent(ports).to(Queue.EXPORT.value)] == [f"{CONFIGMAPS}#2", f"{CONFIGMAPS}#3"]
    assert ports.scratch.backup(UID).pending() == [f"{CONFIGMAPS}#3"]

    handled: list[str] = []
    drain(ports, handled)

    assert handled == [f"{CONFIGMAPS}#2", f"{CONFIGMAPS}#3", "_cluster"]  # the first: done already
    assert fake.status(obj)["stage"] == "PostExecRule"
    assert stored_names(stores) == sorted(["app"] + [f"cm-{i}" for i in range(8)])


def test_a_page_task_that_dies_on_a_page_it_went_on_to_leaves_it_for_the_stall_re_send(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed mid-list sends nothing: the page it was on stays outstanding with its continue
    token, and the plan run again (the watcher's stall re-send) sends it."""
    more_configmaps(fake, 3)
    obj = applications(fake)
    export.handle(ports, message())
    write_page = export._write_page

    def killed_on_the_third(*args: Any) -> None:
        if args[4] == f"{CONFIGMAPS}#3":
            raise KeyboardInterrupt  # not an Exception: nothing of the task runs after it
        write_page(*args)

    monkeypatch.setattr(export, "_write_page", killed_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        export.handle(ports, message(f"{CONFIGMAPS}#2"))
    monkeypatch.setattr(export, "_write_page", write_page)
    # The fourth was listed while the third was written: outstanding too, with its token.
    assert ports.scratch.backup(UID).pending() == [f"{CONFIGMAPS}#3", f"{CONFIGMAPS}#4"]

    export.handle(ports, message())  # the stall re-send
    drain(ports)

    assert fake.status(obj)["stage"] == "PostExecRule"
    assert stored_names(stores) == sorted(["app"] + [f"cm-{i}" for i in range(8)])


def test_first_pages_beyond_what_the_plan_lists_itself_go_to_the_queue(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A backup of many namespaces has more first pages than the planning task takes on: the rest are
    queued for every export worker to share, and the backup ends the same."""
    monkeypatch.setattr(export, "FIRST_PAGES_IN_PLAN", 0)
    obj = applications(fake)

    export.handle(ports, message())
    assert fake.calls.count("list_page") == 0
    assert [m.part for m in sent(ports).to(Queue.EXPORT.value)] == [f"{CONFIGMAPS}#1"]
    drain(ports)

    assert fake.status(obj)["stage"] == "PostExecRule"
    assert stored_names(stores) == ["app", "cm-0", "cm-1", "cm-2", "cm-3", "cm-4"]


def test_a_plan_message_delivered_again_plans_nothing_new_and_resends_what_is_outstanding(
    fake: k.FakeCluster, ports: Ports
) -> None:
    obj = applications(fake)
    export.handle(ports, message())
    discovered = fake.calls.count("discover")

    export.handle(ports, message())

    assert fake.calls.count("discover") == discovered
    assert fake.calls.count("list_page") == 1  # the first page is done: not listed again
    assert [m.part for m in sent(ports).to(Queue.EXPORT.value)] == [f"{CONFIGMAPS}#2"] * 2
    # Applications Pending → InProgress is no change of stage: no Event either time.
    assert fake.events == [] and fake.status(obj)["status"] == "InProgress"


def test_a_planning_task_that_fails_half_way_leaves_nothing_and_the_next_one_plans(
    fake: k.FakeCluster, ports: Ports, scratch_factory: ScratchFactory
) -> None:
    """Seen with Redis restarting under the planning task: a plan marked made before it was written
    left a stage with nothing outstanding, and every re-send of the stage sent nothing, for ever."""
    obj = applications(fake)
    fake.fail_next("discover")

    with pytest.raises(ApiException):
        export.handle(ports, message())
    assert not scratch_factory.backup(UID).is_planned()

    export.handle(ports, message())  # the task's retry, or the watcher's stall re-send
    assert [m.part for m in sent(ports).to(Queue.EXPORT.value)] == [f"{CONFIGMAPS}#2"]
    drain(ports)
    assert fake.status(obj)["stage"] == "PostExecRule"


def test_a_volume_handed_out_again_late_neither_holds_up_the_export_nor_reaches_its_queue(
    fake: k.FakeCluster, ports: Ports
) -> None:
    """A stall re-send of the Volumes stage that raced the last volume's finish leaves a volume part
    outstanding after the backup moved on: it is in the volumes' own group, so the export's re-sends
    never carry it and the last page still moves the backup on."""
    obj = applications(fake)
    state = ports.scratch.backup(UID)
    state.add_pending(["volume:app/data"], group=state.VOLUMES_PENDING)

    export.handle(ports, message())
    export.handle(ports, message())  # the Applications stage's own stall re-send
    assert {m.part for m in sent(ports).to(Queue.EXPORT.value)} == {f"{CONFIGMAPS}#2"}
    drain(ports)

    assert fake.status(obj)["stage"] == "PostExecRule"


def test_a_page_delivered_twice_is_written_and_recorded_once(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores, scratch_factory: ScratchFactory
) -> None:
    obj = applications(fake)
    export.handle(ports, message())
    first = message(f"{CONFIGMAPS}#1")

    export.handle(ports, first)
    export.handle(ports, first)

    assert fake.calls.count("list_page") == 1
    state = scratch_factory.backup(UID)
    assert list(state.parts()) == [f"{CONFIGMAPS}#1"]
    assert fake.status(obj)["resourceCount"] == 2
    assert [m.part for m in sent(ports).to(Queue.EXPORT.value)].count(f"{CONFIGMAPS}#2") == 1
    assert stored_names(stores) == ["cm-0", "cm-1"]


def test_a_page_task_failing_after_its_write_runs_again_and_the_backup_still_counts_each_object_once(
    fake: k.FakeCluster,
    ports: Ports,
    stores: LocalStores,
    scratch_factory: ScratchFactory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(export, "PROGRESS_SECONDS", 0)  # every page writes its progress
    applications(fake)
    export.handle(ports, message())
    fake.fail_next("patch_status")  # the page's heartbeat: the task fails after writing its part
    with pytest.raises(Exception, match=r"Internal Server Error|500"):
        export.handle(ports, message(f"{CONFIGMAPS}#2"))

    export.handle(ports, message(f"{CONFIGMAPS}#2"))  # the retry
    drain(ports)

    parts = scratch_factory.backup(UID).parts()
    assert sum(p["count"] for p in parts.values() if p["part"] != "_cluster") == 5
    assert stored_names(stores) == ["app", "cm-0", "cm-1", "cm-2", "cm-3", "cm-4"]


def tamper(scratch_factory: ScratchFactory, namespace: str, selector: str | None = None) -> None:
    """Scratch state (Redis, not trusted) that names a list target in ``namespace``."""
    state = scratch_factory.backup(UID)
    base = f"{namespace}/v1/configmaps"
    state.save_list_targets(
        {
            base: {
                "group": "",
                "version": "v1",
                "plural": "configmaps",
                "kind": "ConfigMap",
                "namespace": namespace,
                "selector": selector,
            }
        }
    )
    state.add_pending([f"{base}#1"])


def test_a_list_target_outside_the_backup_is_refused_and_nothing_of_it_is_read_or_written(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores, scratch_factory: ScratchFactory
) -> None:
    obj = applications(fake)
    tamper(scratch_factory, "other")

    export.handle(ports, message("other/v1/configmaps#1"))

    status = fake.status(obj)
    assert (status["stage"], status["status"]) == ("Final", "Failed")
    assert "outside its accepted spec" in status["reason"] and "namespace other" in status["reason"]
    assert [e.reason for e in fake.events] == ["ScopeRefused"]
    assert fake.events[0].type == "Warning"
    assert "list_page" not in fake.calls
    assert stored_names(stores) == []
    files = [p for p in stores.directory("app", "loc").rglob("*") if p.is_file()]
    assert not any(b"OTHER-TENANT-DATA" in p.read_bytes() for p in files)
    assert any('"export.refused"' in line for line in scratch_factory.backup(UID).log_lines())


def test_a_list_target_with_another_selector_is_refused(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores, scratch_factory: ScratchFactory
) -> None:
    obj = applications(fake, selectors={"tier": "web"})
    tamper(scratch_factory, "app", selector=None)
    export.handle(ports, message("app/v1/configmaps#1"))
    assert fake.status(obj)["status"] == "Failed" and fake.reasons() == ["ScopeRefused"]
    assert "list_page" not in fake.calls and stored_names(stores) == []


def test_recorded_namespaces_outside_the_backup_refuse_the_cluster_part(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores, scratch_factory: ScratchFactory
) -> None:
    obj = applications(fake)
    state = scratch_factory.backup(UID)
    state.save_namespaces(["app", "other"])
    state.add_pending(["_cluster"])

    export.handle(ports, message("_cluster"))

    assert fake.status(obj)["status"] == "Failed" and fake.reasons() == ["ScopeRefused"]
    assert "['other']" in fake.status(obj)["reason"]
    assert "get_cluster_object" not in fake.calls
    assert stored_names(stores) == []


def test_an_admin_backup_may_read_the_namespaces_its_selector_matches(
    fake: k.FakeCluster, ports: Ports, stores: LocalStores, scratch_factory: ScratchFactory
) -> None:
    """In the admin namespace a namespaceSelector widens what the backup reads; the namespaces are
    checked against the cluster, not taken from the scratch state."""
    admin = ports.settings.admin_namespace
    fake.put(k.location("loc", admin), k.namespace("team", labels={"team": "yes"}))
    fake.put({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "team-cm", "namespace": "team"}})
    obj = fake.put(
        k.backup(
            "b1",
            admin,
            stage="Applications",
            status="Pending",
            uid=UID,
            backupLocation="loc",
            namespaces=[],
            namespaceSelector="team=yes",
            resourceTypes=["configmaps"],
        )
    )
    plan = Message(BACKUP, admin, "b1", UID, "Applications", "")
    export.handle(ports, plan)
    done = 0
    while done < len(sent(ports).to(Queue.EXPORT.value)):
        export.handle(ports, sent(ports).to(Queue.EXPORT.value)[done])
        done += 1
    assert fake.status(obj)["stage"] == "PostExecRule"
    repository = stores.repository(admin, "loc")
    ref = BackupRef(admin, "b1", UID)
    assert [
        o["metadata"]["name"] for o in repository.read_part(ref.resource_part("team/v1/configmaps#1"))
    ] == ["team-cm"]


def test_a_message_for_a_backup_not_in_applications_does_nothing(fake: k.FakeCluster, ports: Ports) -> None:
    fake.put(k.backup("b1", stage="PostExecRule", status="Pending", uid=UID, backupLocation="loc"))
    before = fake.find(BACKUP, "app", "b1")
    for part in ("", f"{CONFIGMAPS}#1", "_cluster"):
        export.handle(ports, message(part))
    assert fake.find(BACKUP, "app", "b1") == before
    assert sent(ports).sent == [] and fake.events == []
