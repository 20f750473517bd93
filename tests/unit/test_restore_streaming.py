"""A restore planned part by part (``plan_parts``): objects created by reference come out exactly as the
whole-backup plan makes them, from their part and their chunk's scope slice alone; a part that changes
between reads is noticed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from davit.api.objects import RawObject
from davit.restore.modifiers import parse
from davit.restore.plan import (
    PartChanged,
    ReferencedChunk,
    StreamedPlan,
    context_for,
    kept_whole,
    plan_parts,
    plan_restore,
    transform_referenced,
)
from davit.restore.transform import Provenance
from tests.unit.test_restoring_plan import MOVE, backup

NAMES: dict[str, Any] = {
    "backup_name": "nightly",
    "backup_uid": "uid-b",
    "restore_name": "r1",
    "restore_uid": "uid-r",
}
MODIFIERS = """
version: v1
resourceModifierRules:
- conditions: {groupResource: configmaps, resourceNameRegex: "^settings$"}
  patches: [{operation: add, path: /metadata/labels/patched, value: "yes"}]
"""


def parts_of(objects: list[RawObject], size: int) -> dict[str, list[RawObject]]:
    return {f"part-{i:03d}": objects[i : i + size] for i in range(0, len(objects), size)}


def streamed(parts: dict[str, list[RawObject]], spec: dict[str, Any], **options: Any) -> StreamedPlan:
    return plan_parts(
        list(parts), lambda key: (parts[key], f"digest-{key}"), spec, cluster_scoped_allowed=True,
        by_reference=lambda group, kind: not kept_whole(group, kind), chunk_objects=3, **NAMES, **options,
    )  # fmt: skip


def created(chunk: ReferencedChunk, parts: dict[str, list[RawObject]], spec: dict[str, Any],
            **options: Any) -> list[RawObject]:  # fmt: skip
    """What creating ``chunk`` makes, from its part and its serialised form (as the task reads it)."""
    chunk = ReferencedChunk.from_dict(json.loads(json.dumps(chunk.to_dict())))
    ctx = context_for(spec, Provenance("nightly", "uid-b", "r1", "uid-r"), cluster_scoped_allowed=True)
    bodies, problems = transform_referenced(parts[chunk.part], chunk, ctx, options.get("modifiers"), {})
    assert problems == []
    return bodies


def canonical(objects: list[RawObject]) -> list[str]:
    return sorted(json.dumps(o, sort_keys=True) for o in objects)


@pytest.mark.parametrize("size", [1, 4, 100])
@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"namespaceMapping": MOVE},
        {"namespaceMapping": MOVE, "resourceTypes": ["configmaps", "deployments"]},
    ],
)
def test_objects_created_by_reference_come_out_as_planned_whole(size: int, spec: dict[str, Any]) -> None:
    objects = backup()
    whole = plan_restore(objects, spec, cluster_scoped_allowed=True, **NAMES)
    parts = parts_of(objects, size)
    result = streamed(parts, spec)
    by_reference = [body for chunk in result.referenced for body in created(chunk, parts, spec)]
    assert by_reference, "the shop backup has objects created by reference"
    assert all(not kept_whole(*_group_kind(o)) for o in by_reference)
    assert all(kept_whole(*_group_kind(o)) for o in result.plan.objects)
    assert canonical(result.plan.objects + by_reference) == canonical(whole.objects)
    assert result.count == len(whole.objects)
    assert result.plan.skipped == whole.skipped
    assert result.plan.owned == whole.owned
    assert result.plan.planned_by_kind == whole.planned_by_kind
    # Chunks hold one tier of one part each, at most ``chunk_objects``.
    assert all(0 < len(c.indexes) <= 3 and len(c.indexes) == len(c.keys) for c in result.referenced)


def test_the_scope_slice_holds_only_what_its_objects_looked_up() -> None:
    objects = backup()
    parts = parts_of(objects, 100)
    result = streamed(parts, {"namespaceMapping": MOVE})
    sliced = {k.name for c in result.referenced for k in c.scope.present}
    # The owner of the widget's ConfigMap and the Deployment's ReplicaSets' owner are looked up; the
    # ConfigMaps without owners look nothing up.
    assert sliced and sliced <= {"blue", "web", "db", "nightly", "web-5d9c7", "web-0a1b2"}
    plain = [c for c in result.referenced if {k[1] for k in c.keys} == {"Secret"}]
    assert plain and all(not c.scope.present for c in plain)


def test_modifiers_apply_to_objects_created_by_reference() -> None:
    modifiers = parse(MODIFIERS, "test")
    objects = backup()
    parts = parts_of(objects, 7)
    result = streamed(parts, {}, modifiers=modifiers)
    bodies = [b for c in result.referenced for b in created(c, parts, {}, modifiers=modifiers)]
    settings = [b for b in bodies if b["kind"] == "ConfigMap" and b["metadata"]["name"] == "settings"]
    assert settings and settings[0]["metadata"]["labels"]["patched"] == "yes"


def test_a_part_that_reads_differently_the_second_time_stops_the_plan() -> None:
    objects = backup()
    parts = parts_of(objects, 10)
    reads: dict[str, int] = {}

    def read(key: str) -> tuple[list[RawObject], str]:
        reads[key] = reads.get(key, 0) + 1
        return parts[key], f"{key}-{reads[key]}"  # rewritten between the two passes

    with pytest.raises(PartChanged, match="part-000"):
        plan_parts(list(parts), read, {}, cluster_scoped_allowed=True, **NAMES)


def test_an_object_swapped_in_its_part_is_not_created() -> None:
    objects = backup()
    parts = parts_of(objects, 100)
    result = streamed(parts, {})
    chunk = next(c for c in result.referenced if any(k[1] == "ConfigMap" for k in c.keys))
    tampered = [dict(o) for o in parts[chunk.part]]
    position = chunk.indexes[0]
    tampered[position] = {
        **tampered[position],
        "metadata": {**tampered[position]["metadata"], "name": "evil"},
    }
    ctx = context_for({}, Provenance("nightly", "uid-b", "r1", "uid-r"), cluster_scoped_allowed=True)
    bodies, problems = transform_referenced(tampered, chunk, ctx, None, {})
    assert len(bodies) == len(chunk.indexes) - 1
    assert [kind for kind, _ in problems] == [chunk.keys[0][1]]
    assert "not what was planned" in problems[0][1]
    assert all(b["metadata"]["name"] != "evil" for b in bodies)


def _group_kind(obj: RawObject) -> tuple[str, str]:
    return str(obj["apiVersion"]).rpartition("/")[0], str(obj["kind"])


def test_the_first_pass_shares_what_objects_have_in_common() -> None:
    """The facts of every object are held at once (100,000 of them in a large namespace): objects of one
    namespace share the tuple naming what they need, and objects binding no account one empty set."""
    from davit.restore.plan import RestoreFilter, _facts

    ctx = context_for({}, Provenance("nightly", "uid-b", "r1", "uid-r"), cluster_scoped_allowed=True)
    objects = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": ns, "name": f"c{i}"}}
               for ns in ("shop", "shop", "blog") for i in range(2)]  # fmt: skip
    facts = [_facts(obj, RestoreFilter(), ctx) for obj in objects]
    assert [f.needs[0].name for f in facts] == ["shop"] * 4 + ["blog"] * 2
    assert len({id(f.needs) for f in facts}) == 2
    assert len({id(f.binds) for f in facts}) == 1
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"namespace": "shop", "name": "data"}, "spec": {"volumeName": "pv-1"}}  # fmt: skip
    (own,) = [_facts(claim, RestoreFilter(), ctx)]
    assert [(k.kind, k.name) for k in own.needs] == [("Namespace", "shop"), ("PersistentVolume", "pv-1")]
    assert facts[0].needs == (own.needs[0],)
