"""Resource modifiers: JSON patches (RFC 6902) applied to restored objects before they are created (pure).

The rules come from a ConfigMap the restore names (``spec.resourceModifier``), in Velero's format, so a
Velero user's ConfigMap works as it is::

    version: v1
    resourceModifierRules:
    - conditions:
        groupResource: deployments.apps      # "*" for every kind; Velero's older `groupKind` too
        resourceNameRegex: "^web-.*$"        # RE2 syntax, searched (not anchored), as Velero's Go regexp
        namespaces: [shop]                   # namespaces in the backup, before namespaceMapping
        labelSelector: {matchLabels: {tier: front}}
      patches:
      - {operation: replace, path: /spec/replicas, value: "1"}

The ConfigMap is the tenant's input: it is parsed with bounds (the API server keeps it under 1 MiB; the
number of values it expands to and the length of a regex are bounded here) and its regexes run on RE2,
whose matching time is linear in the name, so no rule can hold a worker. What a patch produces is
checked afterwards by the restore's guard like every other object (``davit.tenancy.RestoreGuard``): a
patch cannot move an object out of the restore's reach.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import jsonpatch
import re2
import yaml

from davit import errors
from davit.api.objects import RawObject
from davit.backup import selection
from davit.restore.transform import ObjectKey

#: The format version Velero writes (and the only one it reads).
FORMAT_VERSION: Final = "v1"
#: The RFC 6902 operations.
OPERATIONS: Final = frozenset({"add", "remove", "replace", "copy", "move", "test"})
#: At most this many values (maps, lists, scalars) in the parsed rules, counted through YAML aliases, so
#: a small document that expands to a huge one (aliases of aliases) is refused before it is used.
MAX_VALUES: Final = 100_000
#: The longest regex accepted: far more than any name pattern needs.
MAX_REGEX_LENGTH: Final = 1024
_CONDITION_FIELDS: Final = frozenset({"groupResource", "groupKind", "resourceNameRegex", "namespaces",
                                      "labelSelector"})  # fmt: skip
_RULE_FIELDS: Final = frozenset({"conditions", "patches"})
_PATCH_FIELDS: Final = frozenset({"operation", "path", "from", "value"})


class ModifiersInvalid(errors.Invalid):
    """The resource modifiers ConfigMap cannot be used: the restore fails before writing anything."""


class PatchFailed(errors.Invalid):
    """A rule's patches could not be applied to one object: that object is not restored."""


@dataclass(frozen=True)
class Rule:
    """One ``resourceModifierRules`` entry, checked."""

    index: int
    group_resource: str
    name_regex: Any | None
    namespaces: frozenset[str]
    match_labels: Mapping[str, str]
    patch: jsonpatch.JsonPatch

    def selects(self, source: ObjectKey, obj: RawObject, plural: str) -> bool:
        """Whether the rule applies to ``obj`` (as restored), ``source`` being its key in the backup."""
        if self.group_resource != "*":
            version = str(obj.get("apiVersion", "")).rpartition("/")[2]
            resource = selection.ApiResource(
                source.group, version, plural, source.kind, bool(source.namespace), frozenset()
            )
            if not resource.matches(self.group_resource):
                return False
        if self.namespaces and source.namespace not in self.namespaces:
            return False
        if self.name_regex is not None and not self.name_regex.search(source.name):
            return False
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(labels.get(key) == value for key, value in self.match_labels.items())


@dataclass(frozen=True)
class Modifiers:
    """The rules of one ConfigMap, in order."""

    rules: tuple[Rule, ...] = ()

    def apply(self, source: ObjectKey, obj: RawObject, plural: str) -> RawObject:
        """``obj`` with every rule that selects it applied in order (a new object; ``obj`` is not changed).
        PatchFailed when a patch cannot be applied (a path that does not exist, a bad index)."""
        for rule in self.rules:
            if not rule.selects(source, obj, plural):
                continue
            try:
                obj = rule.patch.apply(obj)
            except jsonpatch.JsonPatchTestFailed:
                continue  # Velero's rule: a failing `test` means the rule does not apply to this object
            except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError) as exc:
                raise PatchFailed(
                    f"resource modifier rule {rule.index}: its patch could not be applied to {source}: {exc}"
                ) from exc
            meta = obj.get("metadata") if isinstance(obj, dict) else None
            if not (
                isinstance(meta, dict)
                and all(isinstance(obj.get(f), str) and obj[f] for f in ("apiVersion", "kind"))
                and isinstance(meta.get("name"), str)
                and isinstance(meta.get("namespace", ""), str)
            ):
                raise PatchFailed(f"resource modifier rule {rule.index}: its patch left {source} without a "
                                  "string apiVersion, kind and metadata.name")  # fmt: skip
        return obj


# --- parsing ---------------------------------------------------------------------------------------


def parse_config_map(config_map: RawObject) -> Modifiers:
    """The rules of a resource modifiers ConfigMap: one data key (any name, as ``kubectl create configmap
    --from-file`` writes it) holding the YAML. ModifiersInvalid, with what is wrong, otherwise."""
    meta = config_map.get("metadata") or {}
    where = f"ConfigMap {meta.get('namespace')}/{meta.get('name')}"
    data = config_map.get("data") or {}
    if len(data) != 1:
        raise ModifiersInvalid(f"{where}: resource modifiers must be the one key of its data, found "
                               f"{len(data)} key(s)")  # fmt: skip
    ((key, text),) = data.items()
    return parse(str(text), f"{where} key {key}")


def parse(text: str, where: str = "resource modifiers") -> Modifiers:
    """The rules of a resource modifiers document (YAML or JSON)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ModifiersInvalid(f"{where}: not valid YAML: {_first_line(exc)}") from exc
    _check_size(document, where)
    if not isinstance(document, dict):
        raise ModifiersInvalid(f"{where}: expected a map with version and resourceModifierRules")
    if document.get("version") != FORMAT_VERSION:
        raise ModifiersInvalid(
            f"{where}: version must be {FORMAT_VERSION!r}, found {document.get('version')!r}"
        )
    unknown = sorted(set(document) - {"version", "resourceModifierRules"})
    if unknown:
        raise ModifiersInvalid(f"{where}: unsupported field(s) {', '.join(map(str, unknown))}")
    entries = document.get("resourceModifierRules")
    if not isinstance(entries, list) or not entries:
        raise ModifiersInvalid(f"{where}: resourceModifierRules must be a non-empty list")
    return Modifiers(tuple(_rule(index, entry, where) for index, entry in enumerate(entries)))


def _rule(index: int, entry: Any, where: str) -> Rule:
    at = f"{where}: resourceModifierRules[{index}]"
    if not isinstance(entry, dict):
        raise ModifiersInvalid(f"{at}: expected a map with conditions and patches")
    _no_unknown(entry, _RULE_FIELDS, at, hint=" (only JSON patches are supported: mergePatches and "
                                              "strategicPatches are not)")  # fmt: skip
    conditions = entry.get("conditions")
    if not isinstance(conditions, dict):
        raise ModifiersInvalid(f"{at}.conditions: expected a map")
    _no_unknown(conditions, _CONDITION_FIELDS, f"{at}.conditions")
    group_resource = conditions.get("groupResource", conditions.get("groupKind"))
    if not isinstance(group_resource, str) or not group_resource:
        raise ModifiersInvalid(f"{at}.conditions.groupResource: required, e.g. deployments.apps or *")
    namespaces = conditions.get("namespaces") or []
    if not isinstance(namespaces, list) or not all(isinstance(n, str) for n in namespaces):
        raise ModifiersInvalid(f"{at}.conditions.namespaces: expected a list of namespace names")
    patches = entry.get("patches")
    if not isinstance(patches, list) or not patches:
        raise ModifiersInvalid(f"{at}.patches: expected a non-empty list of JSON patch operations")
    operations = [_operation(i, p, f"{at}.patches") for i, p in enumerate(patches)]
    return Rule(
        index=index,
        group_resource=group_resource.lower(),
        name_regex=_regex(conditions.get("resourceNameRegex"), f"{at}.conditions.resourceNameRegex"),
        namespaces=frozenset(namespaces),
        match_labels=_match_labels(conditions.get("labelSelector"), f"{at}.conditions.labelSelector"),
        patch=jsonpatch.JsonPatch(operations),
    )


def _operation(index: int, patch: Any, where: str) -> dict[str, Any]:
    at = f"{where}[{index}]"
    if not isinstance(patch, dict):
        raise ModifiersInvalid(f"{at}: expected a map with operation, path and value")
    _no_unknown(patch, _PATCH_FIELDS, at)
    operation = patch.get("operation")
    if operation not in OPERATIONS:
        known = ", ".join(sorted(OPERATIONS))
        raise ModifiersInvalid(f"{at}.operation: {operation!r} is not one of {known}")
    op: dict[str, Any] = {"op": operation}
    for field in ("path", "from") if operation in ("copy", "move") else ("path",):
        pointer = patch.get(field)
        if not isinstance(pointer, str) or not (pointer == "" or pointer.startswith("/")):
            raise ModifiersInvalid(f"{at}.{field}: a JSON pointer such as /spec/replicas is required")
        op[field] = pointer
    if operation in ("add", "replace", "test"):
        if "value" not in patch:
            raise ModifiersInvalid(f"{at}.value: required for {operation}")
        op["value"] = patch_value(patch["value"])
    try:
        jsonpatch.JsonPatch([op])  # the library's own check of the operation's shape
    except (jsonpatch.InvalidJsonPatch, jsonpatch.JsonPointerException) as exc:
        raise ModifiersInvalid(f"{at}: {exc}") from exc
    return op


def patch_value(value: Any) -> Any:
    """A patch's ``value`` as Velero reads it: Velero's field is a string, taken as JSON when it parses
    as JSON (numbers, true/false/null, objects, arrays, a quoted string) and as the string itself
    otherwise. Values written as YAML maps, lists, numbers or booleans are taken as they are."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _regex(pattern: Any, where: str) -> Any | None:
    if pattern is None or pattern == "":
        return None
    if not isinstance(pattern, str) or len(pattern) > MAX_REGEX_LENGTH:
        raise ModifiersInvalid(f"{where}: expected a regular expression of at most {MAX_REGEX_LENGTH} "
                               "characters")  # fmt: skip
    try:
        return re2.compile(pattern)
    except re2.error as exc:
        raise ModifiersInvalid(f"{where}: {pattern!r} is not a valid RE2 regular expression: {exc}") from exc


def _match_labels(selector: Any, where: str) -> Mapping[str, str]:
    if selector is None:
        return {}
    if not isinstance(selector, dict) or set(selector) - {"matchLabels"}:
        raise ModifiersInvalid(f"{where}: only matchLabels is supported")
    labels = selector.get("matchLabels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ModifiersInvalid(f"{where}.matchLabels: expected a map of label names to string values")
    return {str(k): v for k, v in labels.items()}


def _no_unknown(entry: Mapping[str, Any], known: frozenset[str], where: str, hint: str = "") -> None:
    # A condition or operation this version does not know is refused rather than ignored: ignoring a
    # condition would apply the patch to more objects than the rule says.
    unknown = sorted(str(k) for k in set(entry) - known)
    if unknown:
        raise ModifiersInvalid(f"{where}: unsupported field(s) {', '.join(unknown)}{hint}")


def _check_size(document: Any, where: str) -> None:
    """Refuse a document of more than MAX_VALUES values, counting a value each time an alias repeats it."""
    budget = MAX_VALUES
    stack: list[Any] = [document]
    while stack:
        value = stack.pop()
        budget -= 1
        if budget < 0:
            raise ModifiersInvalid(f"{where}: more than {MAX_VALUES} values (after expanding YAML aliases)")
        if isinstance(value, dict):
            stack.extend(value.keys())
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
