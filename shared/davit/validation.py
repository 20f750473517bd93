"""What the watcher checks before any work starts (pure: lookups are injected).

The multi-tenancy rule is Stork's: outside the admin namespace an operation may only read from and write
to its own namespace; clones exist only in the admin namespace. References (locations, rules, backups)
must resolve. The API server has already checked types, enums and patterns (the CRD schemas); what is
left here needs other objects or the namespace an object lives in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from davit.api.objects import RawObject
from davit.api.types import Stage, Status
from davit.backup import selection
from davit.constants import Kind
from davit.retention import rules


class Lookup(Protocol):
    """Reads the objects a reference points to; None when absent."""

    def location(self, namespace: str, name: str) -> RawObject | None: ...

    def rule(self, namespace: str, name: str) -> RawObject | None: ...

    def backup(self, namespace: str, name: str) -> RawObject | None: ...


@dataclass(frozen=True)
class Verdict:
    """Accepted (``problems`` empty and not ``waiting``), rejected (``problems``), or not yet decidable."""

    problems: tuple[str, ...] = ()
    #: Why the operation cannot start yet although nothing is wrong with it (e.g. its backup still runs).
    waiting: str | None = None

    @property
    def accepted(self) -> bool:
        return not self.problems and self.waiting is None


def resolve_location(lookup: Lookup, namespace: str, name: str, admin_namespace: str) -> RawObject | None:
    """The BackupLocation ``name`` as seen from ``namespace``: its own first, then one in the admin
    namespace that lists ``namespace`` (or ``*``) in ``allowedNamespaces``."""
    own = lookup.location(namespace, name)
    if own is not None or namespace == admin_namespace:
        return own
    shared = lookup.location(admin_namespace, name)
    if shared is None:
        return None
    allowed = (shared.get("location") or {}).get("allowedNamespaces") or []
    return shared if namespace in allowed or "*" in allowed else None


def missing_location(namespace: str, name: str, admin_namespace: str) -> str:
    """Why ``resolve_location`` found nothing, naming both places it looked. The same words whether or
    not the admin namespace has a location of that name, so a tenant cannot probe for one."""
    problem = f"spec.backupLocation: BackupLocation {namespace}/{name} not found"
    if namespace == admin_namespace:
        return problem
    return (
        f"{problem}, nor one named {name} in the admin namespace {admin_namespace} that lists {namespace} "
        "in allowedNamespaces"
    )


def _rules(lookup: Lookup, namespace: str, spec: RawObject) -> list[str]:
    problems = []
    for field in ("preExecRule", "postExecRule"):
        name = spec.get(field)
        if name and lookup.rule(namespace, name) is None:
            problems.append(f"spec.{field}: Rule {namespace}/{name} not found")
    return problems


def _namespace_problems(spec: RawObject) -> list[str]:
    """Patterns Velero would refuse too, and an exclusion that leaves nothing of the names given."""
    problems = []
    for field in ("namespaces", "excludeNamespaces"):
        for index, entry in enumerate(spec.get(field) or []):
            problem = selection.namespace_pattern_problem(str(entry))
            if problem:
                problems.append(f"spec.{field}[{index}]: {problem}")
    named = spec.get("namespaces") or []
    patterns = any(map(selection.is_namespace_pattern, named))
    only_names = named and not spec.get("namespaceSelector") and not patterns
    if only_names and not any(selection.namespace_in_scope(spec, ns) for ns in named):
        problems.append(
            f"spec.excludeNamespaces: excludes every namespace spec.namespaces names "
            f"({', '.join(named)}): the backup would cover nothing"
        )
    return problems


def validate_backup(obj: RawObject, lookup: Lookup, admin_namespace: str) -> Verdict:
    namespace = obj["metadata"]["namespace"]
    spec = obj.get("spec") or {}
    problems: list[str] = []
    namespaces = spec.get("namespaces") or []
    if not namespaces and not spec.get("namespaceSelector"):
        problems.append("spec.namespaces: name at least one namespace (or a namespaceSelector)")
    problems += _namespace_problems(spec)
    if namespace != admin_namespace:
        patterns = sorted(e for e in namespaces if selection.is_namespace_pattern(e))
        foreign = sorted(set(namespaces) - {namespace} - set(patterns))
        if patterns:
            # A pattern is resolved against every namespace of the cluster: only the admin namespace's
            # backups may cover more than their own.
            problems.append(
                f"spec.namespaces: a backup in namespace {namespace} may only cover {namespace}; the "
                f"pattern(s) {', '.join(patterns)} need a backup in the admin namespace {admin_namespace}"
            )
        if foreign:
            problems.append(
                f"spec.namespaces: a backup in namespace {namespace} may only cover {namespace}; "
                f"{', '.join(foreign)} need a backup in the admin namespace {admin_namespace}"
            )
        if spec.get("namespaceSelector"):
            problems.append(
                f"spec.namespaceSelector: only allowed for backups in the admin namespace {admin_namespace}"
            )
        for index, ref in enumerate(spec.get("includeResources") or []):
            if ref.get("namespace") not in (None, namespace):
                problems.append(
                    f"spec.includeResources[{index}].namespace: {ref['namespace']} is outside {namespace}"
                )
        if spec.get("includeClusterResources") is True:
            problems.append(
                f"spec.includeClusterResources: true (every cluster-scoped object) is only allowed for "
                f"backups in the admin namespace {admin_namespace}; leave it unset to back up the "
                f"cluster-scoped objects {namespace}'s own objects need"
            )
    location = spec.get("backupLocation")
    if location and resolve_location(lookup, namespace, location, admin_namespace) is None:
        problems.append(missing_location(namespace, location, admin_namespace))
    if spec.get("ttl"):
        try:
            rules.parse_duration(str(spec["ttl"]))
        except ValueError as exc:
            problems.append(f"spec.ttl: {exc}")
    problems += _rules(lookup, namespace, spec)
    return Verdict(tuple(problems))


def validate_restore(obj: RawObject, lookup: Lookup, admin_namespace: str) -> Verdict:
    own_namespace = obj["metadata"]["namespace"]
    spec = obj.get("spec") or {}
    # The backup, and the location it was written to, are looked up in the backup's namespace: the
    # restore's own, or (from the admin namespace only) the one spec.backupNamespace names.
    namespace = spec.get("backupNamespace") or own_namespace
    if own_namespace not in (namespace, admin_namespace):
        return Verdict((
            f"spec.backupNamespace: a restore in namespace {own_namespace} may only restore its own "
            f"namespace's backups; only a restore in the admin namespace {admin_namespace} may name a "
            f"backup in {namespace}",
        ))  # fmt: skip
    problems: list[str] = []
    if spec.get("inPlaceVolumes"):
        # An in-place restore writes no object: options about objects would silently do nothing, and a
        # dry run would still have to stop the workloads to tell anything true.
        unused = ["dryRun", "initContainerHooks", "resourceModifier", "includeResources", "resourceTypes"]
        if spec.get("replacePolicy") not in (None, "Retain"):
            unused.append("replacePolicy")
        problems += [
            f"spec.{field}: not used by an in-place restore (spec.inPlaceVolumes), which writes no object"
            for field in unused
            if spec.get(field)
        ]
    location = spec.get("backupLocation")
    if location and resolve_location(lookup, namespace, location, admin_namespace) is None:
        problems.append(missing_location(namespace, location, admin_namespace))
    backup = lookup.backup(namespace, spec.get("backupName", ""))
    if backup is None:
        problems.append(f"spec.backupName: ApplicationBackup {namespace}/{spec.get('backupName')} not found")
        return Verdict(tuple(problems))
    written_to = (backup.get("spec") or {}).get("backupLocation")
    if location and written_to and location != written_to:
        problems.append(
            f"spec.backupLocation: ApplicationBackup {namespace}/{spec.get('backupName')} was written to "
            f"BackupLocation {written_to}, not {location}; a restore reads a backup where it was written"
        )
    mapping: dict[str, str] = spec.get("namespaceMapping") or {}
    if own_namespace != admin_namespace:
        sources = (backup.get("spec") or {}).get("namespaces") or []
        targets = {mapping.get(s, s) for s in sources} | set(mapping.values())
        foreign = sorted(targets - {namespace})
        if foreign:
            problems.append(
                f"spec.namespaceMapping: a restore in namespace {namespace} may only write to {namespace}; "
                f"it would write to {', '.join(foreign)}"
            )
    if problems:
        return Verdict(tuple(problems))
    status = backup.get("status") or {}
    if status.get("stage") == Stage.FINAL:
        if status.get("status") in (Status.SUCCESSFUL, Status.PARTIAL_SUCCESS):
            return Verdict()
        outcome = f"{status.get('status')}: {status.get('reason') or 'no reason given'}"
        return Verdict((f"spec.backupName: ApplicationBackup {namespace}/{spec['backupName']} "
                        f"did not succeed ({outcome})",))  # fmt: skip
    return Verdict(waiting=f"waiting for ApplicationBackup {namespace}/{spec['backupName']} to complete")


def validate_clone(obj: RawObject, lookup: Lookup, admin_namespace: str) -> Verdict:
    namespace = obj["metadata"]["namespace"]
    spec = obj.get("spec") or {}
    problems: list[str] = []
    if namespace != admin_namespace:
        problems.append(
            "metadata.namespace: an ApplicationClone must be created in the admin namespace "
            f"{admin_namespace}"
        )
    if spec.get("sourceNamespace") == spec.get("destinationNamespace"):
        problems.append("spec.destinationNamespace: must differ from spec.sourceNamespace")
    problems += _rules(lookup, namespace, spec)
    return Verdict(tuple(problems))


VALIDATORS = {
    Kind.APPLICATION_BACKUP: validate_backup,
    Kind.APPLICATION_RESTORE: validate_restore,
    Kind.APPLICATION_CLONE: validate_clone,
}


def validate(kind: Kind, obj: RawObject, lookup: Lookup, admin_namespace: str) -> Verdict:
    return VALIDATORS[kind](obj, lookup, admin_namespace)
