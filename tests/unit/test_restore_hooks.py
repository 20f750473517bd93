"""Restore hooks, the pure part: which pods get which init containers and in what order, and how a
restored pod's state reads for its hooks."""

from __future__ import annotations

from typing import Any

from davit.restore import hooks, init_container
from davit.restore.fields import RESTORE_UID_ANNOTATION


def pod(labels: dict[str, str], init: list[str] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "db-0", "namespace": "shop", "labels": labels,
                     "annotations": {RESTORE_UID_ANNOTATION: "r-1"}},
        "spec": {"initContainers": [{"name": n, "image": "x"} for n in init or []],
                 "containers": [{"name": "db", "image": "mysql"}]},
        "status": status,
    }  # fmt: skip


SPEC = {
    "postExecRule": "warm-up",
    "initContainerHooks": [
        {"name": "migrate", "podSelector": {"app": "db"},
         "containersToAdd": [{"name": "migrate", "image": "mysql", "command": ["sh", "-c", "true"]}]},
        {"name": "everywhere", "containersToAdd": [{"name": "note", "image": "busybox"}]},
    ],
}  # fmt: skip


def test_hook_containers_go_after_the_restore_wait_and_before_the_pods_own() -> None:
    restored = pod({"app": "db"}, init=["setup", init_container.CONTAINER_NAME])
    hooked = hooks.add_init_containers(restored, hooks.init_hooks(SPEC))
    names = [c["name"] for c in hooked["spec"]["initContainers"]]
    assert names == [init_container.CONTAINER_NAME, "migrate", "note", "setup"]
    assert [hooks.hook_of(c) for c in hooked["spec"]["initContainers"]] == [
        None,
        "migrate",
        "everywhere",
        None,
    ]
    assert restored["spec"]["initContainers"][0]["name"] == "setup", "the original is left as it was"


def test_a_selector_chooses_the_pods_and_no_match_leaves_the_pod_alone() -> None:
    web = pod({"app": "web"})
    hooked = hooks.add_init_containers(web, hooks.init_hooks(SPEC))
    assert [c["name"] for c in hooked["spec"]["initContainers"]] == ["note"], "only the hook without selector"
    only_selected = hooks.init_hooks({"initContainerHooks": SPEC["initContainerHooks"][:1]})
    assert hooks.add_init_containers(web, only_selected) is web


def test_a_hook_container_that_exited_non_zero_fails_its_pod_naming_the_hook() -> None:
    hooked = hooks.add_init_containers(pod({"app": "db"}), hooks.init_hooks(SPEC))
    hooked["status"] = {
        "phase": "Pending",
        "initContainerStatuses": [
            {"name": "migrate", "state": {"terminated": {"exitCode": 4, "message": "schema too new\n"}}},
            {"name": "note", "state": {"waiting": {"reason": "PodInitializing"}}},
        ],
    }
    state = hooks.pod_state(hooked)
    assert state.state == "failed"
    assert state.reason == (
        "initContainerHooks migrate: pod shop/db-0: init container migrate exited with 4: schema too new"
    )


def test_a_pod_of_its_own_init_container_failing_is_not_a_hook_failure() -> None:
    failed_setup = [{"name": "setup", "state": {"terminated": {"exitCode": 1}}}]
    own = pod({"app": "db"}, init=["setup"], phase="Pending", initContainerStatuses=failed_setup)
    assert hooks.pod_state(own).state == "waiting"
    assert hooks.pod_state(pod({}, phase="Running")).state == "running"


def test_only_the_restores_own_hooked_pods_are_waited_for() -> None:
    hooked = hooks.add_init_containers(pod({"app": "db"}), hooks.init_hooks(SPEC))
    other_restore = {
        **hooked,
        "metadata": {**hooked["metadata"], "annotations": {RESTORE_UID_ANNOTATION: "r-2"}},
    }
    plain = pod({"app": "db"})
    assert hooks.hooked_pods([hooked, other_restore, plain], "r-1") == [hooked]


def test_hooks_are_requested_by_a_rule_or_init_hooks_but_not_in_a_dry_run() -> None:
    assert hooks.requested(SPEC)
    assert hooks.requested({"postExecRule": "r"})
    assert not hooks.requested({})
    assert not hooks.requested({**SPEC, "dryRun": True})
