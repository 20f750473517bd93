"""Location sync, pure: what a sync imports, under which names, what it removes, what each import holds,
and when the watcher asks for a sync."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from davit.api.types import DNS1123_SUBDOMAIN
from davit.constants import Kind
from davit.format.layout import BackupRef
from davit.retention.location_sync import (
    IMPORTED_FROM_ANNOTATION,
    MAX_NAME,
    SOURCE_BACKUP_ANNOTATION,
    SYNC_STAGE,
    Conflict,
    Import,
    Removal,
    SyncPlan,
    data_ref,
    format_source,
    import_name,
    imported_backup,
    imported_status,
    is_imported,
    parse_source,
    plan,
    scope,
    source_of,
)
from davit_services.watcher.locations import sync_message

ADMIN = "kube-system"
LOC = "loc"
APP = "app"


def ref(name: str, uid: str, namespace: str = APP) -> BackupRef:
    return BackupRef(namespace, name, uid)


def backup(name: str, uid: str, namespace: str = APP, status: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": name, "namespace": namespace, "uid": uid}, "spec": {}}
    if status is not None:
        obj["status"] = status
    return obj


def imported(
    name: str,
    source: BackupRef,
    namespace: str = APP,
    location: str = LOC,
    uid: str = "",
    final: bool = True,
    **metadata: Any,
) -> dict[str, Any]:
    obj = backup(name, uid or f"imp-{source.uid}", namespace, {"stage": "Final"} if final else None)
    obj["metadata"]["annotations"] = {
        IMPORTED_FROM_ANNOTATION: location,
        SOURCE_BACKUP_ANNOTATION: format_source(source),
    }
    obj["metadata"].update(metadata)
    return obj


def plan_for(
    present: list[BackupRef], existing: list[dict[str, Any]], namespace: str = APP, location: str = LOC
) -> SyncPlan:
    return plan(namespace, location, ADMIN, present, existing)


# --- names and scope ---------------------------------------------------------------------------------


def test_scope_is_the_namespace_or_everything_in_the_admin_namespace() -> None:
    assert scope(APP, ADMIN) == APP
    assert scope(ADMIN, ADMIN) is None


def test_import_keeps_the_name_outside_the_admin_namespace() -> None:
    assert import_name(ref("nightly.1", "u"), APP, ADMIN) == "nightly.1"


def test_admin_namespace_imports_are_prefixed_with_their_namespace() -> None:
    assert import_name(ref("daily", "u", namespace="shop"), ADMIN, ADMIN) == "shop.daily"
    assert import_name(ref("daily", "u", namespace=ADMIN), ADMIN, ADMIN) == "kube-system.daily"


def test_admin_namespace_names_cannot_collide() -> None:
    """Namespaces hold no dots, so ``<ns>.<name>`` tells ("a", "b.c") from ("a.b", "c") and the admin
    namespace's own "shop.daily" from namespace shop's "daily"."""
    refs = [
        ref("b-c", "1", "a"),
        ref("c", "2", "a-b"),
        ref("shop.daily", "3", ADMIN),
        ref("daily", "4", "shop"),
    ]
    names = [import_name(r, ADMIN, ADMIN) for r in refs]
    assert len(set(names)) == len(names)


def test_long_names_are_cut_to_the_limit_and_stay_distinct_and_valid() -> None:
    import re

    long_a = ref("x" * 250, "1", "ns-a")
    long_b = ref("x" * 249 + "y", "2", "ns-a")
    name_a, name_b = (import_name(r, ADMIN, ADMIN) for r in (long_a, long_b))
    assert len(name_a) <= MAX_NAME and len(name_b) <= MAX_NAME
    assert name_a != name_b
    assert name_a.startswith("ns-a.xxx")
    assert re.fullmatch(DNS1123_SUBDOMAIN, name_a) and re.fullmatch(DNS1123_SUBDOMAIN, name_b)
    assert import_name(long_a, ADMIN, ADMIN) == name_a, "stable across syncs"


def test_a_cut_ending_in_a_dot_still_gives_a_valid_name() -> None:
    import re

    # The cut falls right after a dot: the name may not end a label with it.
    cut_at = MAX_NAME - 11 - len("ns.")
    name = import_name(ref("a" * (cut_at - 1) + "." + "b" * 40, "1", "ns"), ADMIN, ADMIN)
    assert re.fullmatch(DNS1123_SUBDOMAIN, name), name


def test_sources_round_trip_and_junk_is_no_source() -> None:
    source = ref("daily", "0b7e-uid")
    assert parse_source(format_source(source)) == source
    for junk in (None, "", "a/b", "a//c", "a/b/c/d"):
        assert parse_source(junk) is None


def test_imports_are_recognised_by_their_annotation() -> None:
    source = ref("daily", "u1")
    obj = imported("daily", source)
    assert is_imported(obj) and source_of(obj) == source
    assert data_ref(obj) == source, "an import's data is the source backup's"
    own = backup("mine", "u2")
    assert not is_imported(own) and source_of(own) is None
    assert data_ref(own) == ref("mine", "u2")


# --- the plan ------------------------------------------------------------------------------------------


def test_new_backups_in_scope_are_imported_under_their_names() -> None:
    present = [ref("b", "2"), ref("a", "1"), ref("other", "3", namespace="elsewhere")]
    assert plan_for(present, []) == SyncPlan(create=(Import("a", ref("a", "1")), Import("b", ref("b", "2"))))


def test_admin_location_imports_every_namespace() -> None:
    present = [ref("daily", "1", "shop"), ref("nightly", "2", ADMIN)]
    result = plan_for(present, [], namespace=ADMIN)
    assert result.create == (
        Import("kube-system.nightly", ref("nightly", "2", ADMIN)),
        Import("shop.daily", ref("daily", "1", "shop")),
    )


def test_backups_this_cluster_made_are_not_imported() -> None:
    """Same uid as a CR here: the cluster's own backup (for the admin location, in any namespace)."""
    own = [backup("a", "1"), backup("daily", "2", namespace="shop")]
    assert plan_for([ref("a", "1")], own) == SyncPlan()
    assert plan_for([ref("daily", "2", "shop")], own, namespace=ADMIN) == SyncPlan()


def test_already_imported_backups_are_left_alone() -> None:
    source = ref("a", "1")
    assert plan_for([source], [imported("a", source)]) == SyncPlan()
    # Imported by another location of the namespace (say, on the same bucket): not twice.
    assert plan_for([source], [imported("a", source, location="other")]) == SyncPlan()


def test_imports_whose_backup_left_the_location_are_removed() -> None:
    gone, kept = ref("gone", "1"), ref("kept", "2")
    existing = [imported("gone", gone, uid="x1"), imported("kept", kept)]
    assert plan_for([kept], existing) == SyncPlan(delete=(Removal("gone", "x1", gone),))


def test_only_this_locations_imports_are_removed() -> None:
    """Another location's imports, and backups made here, are never touched by this location's sync."""
    existing = [imported("theirs", ref("theirs", "1"), location="other"), backup("mine", "2")]
    assert plan_for([], existing) == SyncPlan()


def test_imports_already_being_deleted_are_not_deleted_again() -> None:
    existing = [imported("gone", ref("gone", "1"), deletionTimestamp="2024-05-01T12:00:00Z")]
    assert plan_for([], existing) == SyncPlan()


def test_an_empty_location_removes_every_import() -> None:
    existing = [imported(n, ref(n, u)) for n, u in (("a", "1"), ("b", "2"))]
    assert [r.name for r in plan_for([], existing).delete] == ["a", "b"]


def test_a_name_taken_by_a_backup_made_here_is_a_conflict() -> None:
    source = ref("daily", "remote")
    result = plan_for([source], [backup("daily", "local")])
    assert result.create == ()
    assert result.conflicts == (Conflict("daily", source, "an ApplicationBackup made in this cluster"),)


def test_a_name_taken_by_another_import_is_a_conflict() -> None:
    held = ref("daily", "1")
    source = ref("daily", "2")
    # The same name through another location of the namespace (another bucket, say).
    result = plan_for([source], [imported("daily", held, location="other")])
    assert result.conflicts == (Conflict("daily", source, f"an import of {format_source(held)}"),)


def test_a_backup_replaced_under_the_same_name_replaces_its_import() -> None:
    """The origin deleted "daily" and made a new one: the old import goes and frees the name."""
    old, new = ref("daily", "1"), ref("daily", "2")
    result = plan_for([new], [imported("daily", old, uid="x1")])
    assert result.delete == (Removal("daily", "x1", old),)
    assert result.create == (Import("daily", new),)
    assert result.conflicts == ()


def test_two_backups_wanting_one_name_import_one_and_report_the_other() -> None:
    """Two clusters writing "daily" from namespace app into one location: only one "daily" here."""
    first, second = ref("daily", "1"), ref("daily", "2")
    result = plan_for([second, first], [])
    assert result.create == (Import("daily", first),)
    assert result.conflicts == (
        Conflict("daily", second, f"the import of {format_source(first)} in this sync"),
    )


def test_an_existing_import_keeps_its_name_against_a_newcomer() -> None:
    held, newcomer = ref("daily", "2"), ref("daily", "1")
    result = plan_for([newcomer, held], [imported("daily", held)])
    assert result.create == ()
    assert [c.source for c in result.conflicts] == [newcomer]


def test_imports_without_status_are_completed() -> None:
    source = ref("a", "1")
    result = plan_for([source], [imported("a", source, final=False)])
    assert result == SyncPlan(complete=(Import("a", source),))
    assert result.changes


def test_plan_is_the_same_whatever_the_listing_order() -> None:
    present = [ref(n, str(i)) for i, n in enumerate("dcba")]
    assert plan_for(present, []) == plan_for(list(reversed(present)), [])
    assert not plan_for([], []).changes


# --- the import itself ---------------------------------------------------------------------------------

MANIFEST: dict[str, Any] = {
    "formatVersion": 1,
    "backup": {
        "metadata": {"name": "daily", "namespace": "shop", "uid": "u1"},
        "spec": {
            "backupLocation": "their-location",
            "namespaces": ["shop"],
            "reclaimPolicy": "Delete",
            "ttl": "72h",
            "volumeMode": "filesystem",
        },
    },
    "summary": {
        "resourceCount": 12,
        "totalSize": 2048,
        "storedSize": 900,
        "startedAt": "2024-05-01T11:58:00Z",
        "finishedAt": "2024-05-01T12:00:05Z",
    },
    "volumes": [
        {"namespace": "shop", "persistentVolumeClaim": "data", "status": "Successful", "totalSize": 2000,
         "bytesDone": 2000, "storedSize": 850, "snapshot": {"tree": "abc"}},
    ],
}  # fmt: skip


def test_the_imported_object_points_at_the_syncing_location_and_retains_data() -> None:
    source = ref("daily", "u1", "shop")
    obj = imported_backup(ADMIN, "mirror", Import("shop.daily", source), MANIFEST)
    assert obj["kind"] == Kind.APPLICATION_BACKUP.value and obj["apiVersion"] == "davit.dev/v1alpha1"
    assert obj["metadata"] == {
        "name": "shop.daily",
        "namespace": ADMIN,
        "annotations": {IMPORTED_FROM_ANNOTATION: "mirror", SOURCE_BACKUP_ANNOTATION: "shop/daily/u1"},
    }
    assert obj["spec"] == {
        "backupLocation": "mirror",
        "namespaces": ["shop"],
        "reclaimPolicy": "Retain",
        "volumeMode": "filesystem",
    }
    assert is_imported(obj) and source_of(obj) == source
    assert MANIFEST["backup"]["spec"]["reclaimPolicy"] == "Delete", "the manifest is not changed"


def test_the_imported_status_is_final_and_says_where_it_came_from() -> None:
    status = imported_status(
        "mirror", MANIFEST, "s3://bucket/p/backups/shop/daily/u1/", "2024-05-02T00:00:00Z"
    )
    assert status == {
        "stage": "Final",
        "status": "Successful",
        "reason": "imported from BackupLocation mirror",
        "resourceCount": 12,
        "volumes": [{"namespace": "shop", "persistentVolumeClaim": "data", "status": "Successful",
                     "totalSize": 2000, "bytesDone": 2000}],
        "volumesProgress": "1/1",
        "totalSize": 2048,
        "storedSize": 900,
        "backupPath": "s3://bucket/p/backups/shop/daily/u1/",
        "lastUpdateTimestamp": "2024-05-02T00:00:00Z",
        "triggerTimestamp": "2024-05-01T11:58:00Z",
        "finishTimestamp": "2024-05-01T12:00:05Z",
        "elapsed": "2m5s",
    }  # fmt: skip


def test_failed_volumes_make_a_partial_success_as_the_original_ended() -> None:
    manifest = {**MANIFEST, "volumes": [{"persistentVolumeClaim": "a", "status": "Failed", "reason": "x"},
                                        {"persistentVolumeClaim": "b", "status": "Successful"}]}  # fmt: skip
    status = imported_status("mirror", manifest, "p", "now")
    assert status["status"] == "PartialSuccess"
    assert status["reason"] == "imported from BackupLocation mirror; 1 of 2 volume(s) failed"
    assert status["volumesProgress"] == "2/2"


def test_a_sparse_manifest_still_gives_a_status() -> None:
    status = imported_status("mirror", {"formatVersion": 1}, "p", "now")
    assert status["stage"] == "Final" and status["status"] == "Successful"
    assert status["resourceCount"] == 0 and status["volumes"] == []
    assert "elapsed" not in status and "triggerTimestamp" not in status


# --- when the watcher asks for a sync --------------------------------------------------------------------

NOW = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)


def location(sync: bool | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "s3", "path": "bucket"}
    if sync is not None:
        spec["sync"] = sync
    return {"metadata": {"name": LOC, "namespace": APP, "uid": "loc-uid"}, "location": spec}


@pytest.mark.parametrize("sync", [None, False])
def test_no_sync_message_without_sync(sync: bool | None) -> None:
    assert sync_message(location(sync), NOW, 300) is None


def test_sync_message_names_the_location_and_its_interval() -> None:
    message = sync_message(location(True), NOW, 300)
    assert message is not None
    assert (message.kind, message.namespace, message.name, message.uid, message.stage) == (
        Kind.BACKUP_LOCATION, APP, LOC, "loc-uid", SYNC_STAGE,
    )  # fmt: skip
    same_interval = sync_message(location(True), NOW + datetime.timedelta(seconds=299), 300)
    next_interval = sync_message(location(True), NOW + datetime.timedelta(seconds=300), 300)
    assert same_interval is not None and next_interval is not None
    assert same_interval.key == message.key, "two checks in one interval: the same message"
    assert next_interval.key != message.key, "the next interval's sync is a new message"
