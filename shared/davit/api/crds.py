"""Generates the CustomResourceDefinitions in ``deploy/crds/`` from the pydantic models in ``types``.

Run ``python -m davit.api.crds deploy/crds`` after changing a model; a unit test fails while the committed
YAML and the models disagree. pydantic's JSON Schema is close to what the API server wants; the differences
that matter for a structural schema are handled here: ``$ref`` is inlined, ``X | None`` becomes
``nullable: true`` (so Stork's examples with empty ``selectors:`` are accepted; an enum's null is pruned
instead), ``const`` becomes a one-value ``enum``, and titles and defaults are dropped (defaults are applied
in Python, where they are documented, not by the API server).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import TypeAdapter

from davit import constants
from davit.api import types
from davit.constants import Kind

JSONSchema = dict[str, Any]

_DROPPED_KEYS = frozenset({"title", "default"})


def _inline(schema: JSONSchema, defs: dict[str, JSONSchema]) -> JSONSchema:
    """Turn pydantic's JSON Schema node into a structural OpenAPI v3 node."""
    if "$ref" in schema:
        target = defs[schema["$ref"].rsplit("/", 1)[-1]]
        merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return _inline(merged, defs)
    if "anyOf" in schema:
        options = [o for o in schema["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(schema["anyOf"])
        if len(options) != 1:
            raise ValueError(f"cannot express a union of {len(options)} types structurally: {schema}")
        rest = {k: v for k, v in schema.items() if k != "anyOf"}
        inlined = _inline({**options[0], **rest}, defs)
        # kube-apiserver (1.20) checks a null against ``enum`` even with ``nullable: true`` and refuses it;
        # without ``nullable`` it prunes the null before validating, which means "unset" as in the model.
        if nullable and "enum" not in inlined:
            inlined["nullable"] = True
        return inlined
    node: JSONSchema = {}
    for key, value in schema.items():
        if key in _DROPPED_KEYS or key == "$defs":
            continue
        if key == "const":
            node["enum"] = [value]
        elif key == "properties":
            node["properties"] = {name: _inline(sub, defs) for name, sub in value.items()}
        elif key == "additionalProperties" and value is True:
            # A model that keeps unknown fields (extra="allow") says so with
            # x-kubernetes-preserve-unknown-fields: a structural schema may not have both this and properties.
            continue
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            node[key] = _inline(value, defs)
        else:
            node[key] = value
    if node.get("type") == "object" and "properties" not in node and "additionalProperties" not in node:
        # A free-form object: keep it rather than prune it empty.
        node["x-kubernetes-preserve-unknown-fields"] = True
    return node


def openapi_schema(model: Any) -> JSONSchema:
    """The structural OpenAPI v3 schema of a pydantic model or type, as a CRD accepts it."""
    raw = TypeAdapter(model).json_schema(by_alias=True, mode="validation")
    return _inline(raw, raw.get("$defs", {}))


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: Literal["string", "integer", "date", "boolean"] = "string"

    def render(self) -> dict[str, str]:
        return {"name": self.name, "type": self.type, "jsonPath": self.json_path}


_OPERATION_COLUMNS = (
    PrinterColumn("Stage", ".status.stage"),
    PrinterColumn("Status", ".status.status"),
    PrinterColumn("Volumes", ".status.volumesProgress"),
    PrinterColumn("Resources", ".status.resourceCount", "integer"),
    PrinterColumn("Created", ".metadata.creationTimestamp", "date"),
    PrinterColumn("Elapsed", ".status.elapsed"),
)


@dataclass(frozen=True)
class KindDefinition:
    """How one kind is laid out: its top-level fields (Stork puts some outside ``spec``) and its status."""

    kind: Kind
    scope: Literal["Namespaced", "Cluster"]
    top_level: dict[str, Any]
    required: tuple[str, ...]
    status: Any | None = None
    short_names: tuple[str, ...] = ()
    columns: tuple[PrinterColumn, ...] = ()
    categories: tuple[str, ...] = ("davit",)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def plural(self) -> str:
        return constants.PLURALS[self.kind]

    def schema(self) -> JSONSchema:
        properties: dict[str, JSONSchema] = {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
        }
        for name, model in self.top_level.items():
            properties[name] = openapi_schema(model)
            if name not in self.required:
                properties[name]["nullable"] = True
        if self.status is not None:
            properties["status"] = openapi_schema(self.status)
        schema: JSONSchema = {"type": "object", "properties": properties}
        if self.required:
            schema["required"] = list(self.required)
        return schema

    def crd(self) -> dict[str, Any]:
        version: dict[str, Any] = {
            "name": constants.API_VERSION,
            "served": True,
            "storage": True,
            "schema": {"openAPIV3Schema": self.schema()},
        }
        if self.status is not None:
            version["subresources"] = {"status": {}}
        if self.columns:
            version["additionalPrinterColumns"] = [c.render() for c in self.columns]
        names: dict[str, Any] = {
            "kind": self.kind.value,
            "listKind": f"{self.kind.value}List",
            "plural": self.plural,
            "singular": self.kind.value.lower(),
            "categories": list(self.categories),
        }
        if self.short_names:
            names["shortNames"] = list(self.short_names)
        return {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{self.plural}.{constants.API_GROUP}"},
            "spec": {
                "group": constants.API_GROUP,
                "names": names,
                "scope": self.scope,
                "versions": [version],
            },
        }


DEFINITIONS: tuple[KindDefinition, ...] = (
    KindDefinition(
        Kind.BACKUP_LOCATION,
        "Namespaced",
        top_level={"location": types.LocationSpec},
        required=("location",),
        status=types.BackupLocationStatus,
        short_names=("bl",),
        columns=(
            PrinterColumn("Type", ".location.type"),
            PrinterColumn("Path", ".location.path"),
            PrinterColumn("Phase", ".status.phase"),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    ),
    KindDefinition(
        Kind.APPLICATION_BACKUP,
        "Namespaced",
        top_level={"spec": types.ApplicationBackupSpec},
        required=("spec",),
        status=types.ApplicationBackupStatus,
        short_names=("backup", "backups"),
        columns=_OPERATION_COLUMNS,
    ),
    KindDefinition(
        Kind.APPLICATION_RESTORE,
        "Namespaced",
        top_level={"spec": types.ApplicationRestoreSpec},
        required=("spec",),
        status=types.ApplicationRestoreStatus,
        short_names=("restore", "restores"),
        columns=_OPERATION_COLUMNS,
    ),
    KindDefinition(
        Kind.APPLICATION_CLONE,
        "Namespaced",
        top_level={"spec": types.ApplicationCloneSpec},
        required=("spec",),
        status=types.ApplicationCloneStatus,
        short_names=("clone", "clones"),
        columns=_OPERATION_COLUMNS,
    ),
    KindDefinition(
        Kind.SCHEDULE_POLICY,
        "Cluster",
        top_level={"policy": types.PolicySpec},
        required=("policy",),
        short_names=("schedpolicy", "sp"),
        columns=(PrinterColumn("Age", ".metadata.creationTimestamp", "date"),),
    ),
    KindDefinition(
        Kind.APPLICATION_BACKUP_SCHEDULE,
        "Namespaced",
        top_level={"spec": types.ApplicationBackupScheduleSpec},
        required=("spec",),
        status=types.ApplicationBackupScheduleStatus,
        short_names=("backupschedule", "backupschedules"),
        columns=(
            PrinterColumn("Policy", ".spec.schedulePolicyName"),
            PrinterColumn("Suspend", ".spec.suspend", "boolean"),
            PrinterColumn("Last-Success", ".status.lastSuccessTime", "date"),
            PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        ),
    ),
    KindDefinition(
        Kind.RULE,
        "Namespaced",
        top_level={"rules": list[types.RuleItem]},
        required=("rules",),
        columns=(PrinterColumn("Age", ".metadata.creationTimestamp", "date"),),
    ),
)


def definition(kind: Kind) -> KindDefinition:
    return next(d for d in DEFINITIONS if d.kind == kind)


class _PlainDumper(yaml.SafeDumper):
    """Writes repeated sub-schemas out in full rather than as YAML anchors and aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


#: The kustomization that lists the CRDs (deploy/base includes the directory).
KUSTOMIZATION = "kustomization.yaml"


def render_all() -> dict[str, str]:
    """File name → YAML text of every CRD, and of the kustomization listing them."""
    header = "# Generated by `python -m davit.api.crds deploy/crds` from davit/api/types.py. Do not edit.\n"
    files = {
        f"{d.plural}.yaml": header + yaml.dump(d.crd(), Dumper=_PlainDumper, sort_keys=False, width=110)
        for d in DEFINITIONS
    }
    listing = {"resources": sorted(files)}
    files[KUSTOMIZATION] = header + yaml.safe_dump(listing, sort_keys=False)
    return files


def main(argv: list[str]) -> int:
    out = Path(argv[0] if argv else "deploy/crds")
    out.mkdir(parents=True, exist_ok=True)
    for name, text in render_all().items():
        (out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
