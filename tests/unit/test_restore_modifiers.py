"""Resource modifiers (``davit.restore.modifiers``): Velero's ConfigMap format parsed with bounds, rules
selecting objects by resource, namespace, name and labels, RFC 6902 patches applied in order, Velero's
conditional ``test``, and the failures a restore reports."""

from __future__ import annotations

import time
from typing import Any

import pytest

from davit.api.objects import RawObject
from davit.restore.modifiers import (
    MAX_VALUES,
    Modifiers,
    ModifiersInvalid,
    PatchFailed,
    parse,
    parse_config_map,
    patch_value,
)
from davit.restore.transform import ObjectKey

VELERO_EXAMPLE = """
version: v1
resourceModifierRules:
- conditions:
    groupResource: persistentvolumeclaims
    resourceNameRegex: "^mysql.*$"
    namespaces: [bar, foo]
  patches:
  - operation: replace
    path: "/spec/storageClassName"
    value: "premium"
  - operation: remove
    path: "/metadata/labels/test"
"""


def claim(name: str, namespace: str = "foo", storage_class: str = "standard") -> RawObject:
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": namespace, "labels": {"test": "yes", "app": "db"}},
            "spec": {"storageClassName": storage_class}}  # fmt: skip


def deployment(name: str, namespace: str = "shop", replicas: int = 3) -> RawObject:
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": {"tier": "front"}},
            "spec": {"replicas": replicas,
                     "template": {"spec": {"containers": [{"name": "web"}]}}}}  # fmt: skip


def apply(modifiers: Modifiers, obj: RawObject, plural: str) -> RawObject:
    return modifiers.apply(ObjectKey.of(obj), obj, plural)


def test_velero_example_patches_the_claims_it_selects_and_no_others() -> None:
    modifiers = parse(VELERO_EXAMPLE)
    chosen = claim("mysql-data")
    patched = apply(modifiers, chosen, "persistentvolumeclaims")
    assert patched["spec"]["storageClassName"] == "premium"
    assert patched["metadata"]["labels"] == {"app": "db"}
    assert chosen["spec"]["storageClassName"] == "standard", "the input is not changed"
    for other in (claim("web-data"), claim("mysql-data", namespace="elsewhere")):
        assert apply(modifiers, other, "persistentvolumeclaims") == other


@pytest.mark.parametrize(
    ("group_resource", "selected"),
    [
        ("deployments.apps", True),
        ("Deployment", True),
        ("deployments", True),
        ("*", True),
        ("statefulsets.apps", False),
        ("deployments.extensions", False),
    ],
)
def test_group_resource_names_a_resource_as_resource_types_do(group_resource: str, selected: bool) -> None:
    modifiers = parse(f"""
version: v1
resourceModifierRules:
- conditions: {{groupResource: "{group_resource}"}}
  patches: [{{operation: replace, path: /spec/replicas, value: "1"}}]
""")
    patched = apply(modifiers, deployment("web"), "deployments")
    assert patched["spec"]["replicas"] == (1 if selected else 3)


def test_rules_apply_in_order_and_labels_select() -> None:
    modifiers = parse("""
version: v1
resourceModifierRules:
- conditions: {groupKind: deployments.apps, labelSelector: {matchLabels: {tier: front}}}
  patches:
  - {operation: add, path: /metadata/labels/restored, value: "yes"}
  - {operation: copy, from: /metadata/labels/tier, path: /metadata/annotations}
- conditions: {groupResource: deployments.apps}
  patches:
  - {operation: move, from: /metadata/labels/restored, path: /metadata/labels/copied}
- conditions: {groupResource: deployments.apps, labelSelector: {matchLabels: {tier: back}}}
  patches:
  - {operation: replace, path: /spec/replicas, value: 0}
""")
    patched = apply(modifiers, deployment("web"), "deployments")
    assert patched["metadata"]["labels"] == {"tier": "front", "copied": "yes"}
    assert patched["metadata"]["annotations"] == "front"
    assert patched["spec"]["replicas"] == 3, "the third rule's labels do not match"


def test_a_failing_test_operation_skips_the_rule_for_that_object() -> None:
    modifiers = parse("""
version: v1
resourceModifierRules:
- conditions: {groupResource: persistentvolumeclaims}
  patches:
  - {operation: test, path: /spec/storageClassName, value: premium}
  - {operation: replace, path: /spec/storageClassName, value: standard}
""")
    assert apply(modifiers, claim("a", storage_class="premium"), "persistentvolumeclaims")["spec"] == {
        "storageClassName": "standard"
    }
    fast = claim("b", storage_class="fast")
    assert apply(modifiers, fast, "persistentvolumeclaims") == fast


@pytest.mark.parametrize(
    ("patch", "says"),
    [
        ("{operation: remove, path: /spec/missing}", "could not be applied"),
        (
            "{operation: replace, path: /spec/template/spec/containers/5/image, value: x}",
            "could not be applied",
        ),
        ("{operation: remove, path: /metadata/name}", "without a string apiVersion, kind and metadata.name"),
        ("{operation: replace, path: /metadata/namespace, value: {a: 1}}", "without a string"),
    ],
)
def test_a_patch_that_cannot_be_applied_fails_that_object(patch: str, says: str) -> None:
    modifiers = parse(f"""
version: v1
resourceModifierRules:
- conditions: {{groupResource: deployments.apps}}
  patches: [{patch}]
""")
    with pytest.raises(PatchFailed, match=says) as failed:
        apply(modifiers, deployment("web"), "deployments")
    assert "resource modifier rule 0" in str(failed.value) and "Deployment.apps shop/web" in str(failed.value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("premium", "premium"),
        ("3", 3),
        ("true", True),
        ("null", None),
        ('"3"', "3"),
        (
            '{"name": "nginx", "ports": [{"containerPort": 80}]}',
            {"name": "nginx", "ports": [{"containerPort": 80}]},
        ),
        ({"name": "nginx"}, {"name": "nginx"}),
        (5, 5),
    ],
)
def test_values_are_read_as_velero_reads_its_string_field(value: Any, expected: Any) -> None:
    assert patch_value(value) == expected


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("version: v1\nresourceModifierRules: [", "not valid YAML"),
        ("- a\n- b", "expected a map"),
        ("version: v2\nresourceModifierRules: []", "version must be 'v1'"),
        ("version: v1\nresourceModifierRules: []", "non-empty list"),
        ("version: v1\nrules: []", "unsupported field(s) rules"),
        ("version: v1\nresourceModifierRules: [{patches: [{operation: remove, path: /a}]}]", "conditions"),
        (
            "version: v1\nresourceModifierRules: [{conditions: {namespaces: [a]}, patches: []}]",
            "groupResource",
        ),
        (
            "version: v1\nresourceModifierRules: [{conditions: {groupResource: pods}, patches: []}]",
            "non-empty",
        ),
        (
            "version: v1\nresourceModifierRules: [{conditions: {groupResource: pods, matches: [{path: /a}]},"
            " patches: [{operation: remove, path: /a}]}]",
            "unsupported field(s) matches",
        ),
        (
            "version: v1\nresourceModifierRules: [{conditions: {groupResource: pods},"
            " mergePatches: [{patchData: '{}'}], patches: [{operation: remove, path: /a}]}]",
            "mergePatches",
        ),
        (
            "version: v1\nresourceModifierRules: [{conditions: {groupResource: pods},"
            " patches: [{operation: delete, path: /a}]}]",
            "'delete' is not one of",
        ),
        (
            "version: v1\nresourceModifierRules: [{conditions: {groupResource: pods},"
            " patches: [{operation: remove, path: spec}]}]",
            "JSON pointer",
        ),
        (
            "version: v1\nresourceModifierRules: [{conditions: {groupResource: pods},"
            " patches: [{operation: copy, path: /a}]}]",
            ".from: a JSON pointer",
        ),
        (
            "version: v1\nresourceModifierRules: [{conditions: {groupResource: pods},"
            " patches: [{operation: add, path: /a}]}]",
            "value: required",
        ),
        (
            "version: v1\nresourceModifierRules: [{conditions: {groupResource: pods,"
            " resourceNameRegex: '(a'}, patches: [{operation: remove, path: /a}]}]",
            "not a valid RE2 regular expression",
        ),
        (
            "version: v1\nresourceModifierRules: [{conditions: {groupResource: pods,"
            " labelSelector: {matchExpressions: []}}, patches: [{operation: remove, path: /a}]}]",
            "matchLabels",
        ),
    ],
)
def test_a_malformed_document_is_refused_saying_where(text: str, says: str) -> None:
    with pytest.raises(ModifiersInvalid) as refused:
        parse(text, "ConfigMap t/mods key rules.yaml")
    assert says in str(refused.value)
    assert str(refused.value).startswith("ConfigMap t/mods key rules.yaml")


def test_the_config_map_holds_the_rules_under_its_one_key() -> None:
    config_map = {"metadata": {"namespace": "t", "name": "mods"}, "data": {"rules.yaml": VELERO_EXAMPLE}}
    assert len(parse_config_map(config_map).rules) == 1
    for data in ({}, {"a": VELERO_EXAMPLE, "b": VELERO_EXAMPLE}):
        with pytest.raises(ModifiersInvalid, match=r"ConfigMap t/mods: .* one key of its data"):
            parse_config_map({**config_map, "data": data})


def test_aliases_that_expand_past_the_bound_are_refused() -> None:
    # Nine levels of ten aliases each: a few hundred bytes that stand for a billion values.
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    text = "\n".join(lines) + "\nversion: v1\nresourceModifierRules: *a8\n"
    with pytest.raises(ModifiersInvalid, match=f"more than {MAX_VALUES} values"):
        parse(text)


def test_a_regex_that_backtracks_exponentially_elsewhere_runs_in_linear_time() -> None:
    modifiers = parse("""
version: v1
resourceModifierRules:
- conditions: {groupResource: "*", resourceNameRegex: "^(a+)+$"}
  patches: [{operation: add, path: /metadata/labels/hit, value: "yes"}]
""")
    name = "a" * 200 + "!"  # Python's re takes longer than the age of the universe on this
    started = time.monotonic()
    obj = deployment(name)
    assert apply(modifiers, obj, "deployments") == obj
    assert time.monotonic() - started < 1.0
