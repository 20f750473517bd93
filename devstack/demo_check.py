"""The check behind ``make demo``: did a restore bring back every object and every byte of an application?

``record`` waits until the application in a namespace runs, then writes down every object of the
namespace, normalised as ``davit.restore.normalize`` documents, and a manifest of every entry of every
volume its claims are bound to (path, type, mode, size, mtime, sha256, symlink target). ``compare``, once
the namespace was deleted and restored, waits until the application runs again, records it the same way
and compares the two records: it prints a summary and exits 1 on any difference.

What is compared: every object of every kind the API server lists in the namespace, and the Namespace
itself. Only counted are the runtime objects that the cluster and the controllers make again (Leases,
Endpoints, EndpointSlices, ServiceAccount token Secrets, ``kube-root-ca.crt``, and the Pods, ReplicaSets,
ControllerRevisions and Jobs a controller owns) and Davit's own kinds, which a restore never writes; the
pods among them must be Ready again before the comparison starts. Events are left out: a record of the
past, to which the deletion and the restore add their own.

Volumes are read where the dev kubelet keeps them (a ``local`` or ``hostPath`` PersistentVolume's path),
so this runs on the machine of the local stack. A volume's root directory itself is not compared, only
what is below it: the restore's marker passes through the root (``docs/architecture.md``, "Volume
restore handshake"), which changes its mtime.

    python -m devstack.demo_check record demo --out .dev/demo/before.json
    python -m devstack.demo_check compare demo --before .dev/demo/before.json --backup B --restore R
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import stat
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from davit import constants, timeutil
from davit.api.objects import RawObject
from davit.backup.selection import ApiResource, ClusterRef
from davit.kube import clients, discovery
from davit.restore.normalize import normalize
from davit.restore.tiers import group_kind
from davit.restore.transform import ROOT_CA_CONFIG_MAP, TOKEN_SECRET_TYPE
from davit_cli import output

T = TypeVar("T")

DESCRIPTION = "Record an application, and after its restore compare it with the record (make demo)."

#: Left out altogether (see the module docstring).
EVENTS = frozenset({("", "events"), ("events.k8s.io", "events")})
#: Kinds the cluster keeps or makes itself, whatever the restore does.
MADE_BY_THE_CLUSTER = frozenset(
    {("coordination.k8s.io", "Lease"), ("", "Endpoints"), ("discovery.k8s.io", "EndpointSlice")}
)
#: Kinds whose objects a controller makes for its owner: compared through that owner.
MADE_BY_A_CONTROLLER = frozenset(
    {("", "Pod"), ("apps", "ReplicaSet"), ("apps", "ControllerRevision"), ("batch", "Job")}
)

#: How long the application may take to run again: the dev kubelet releases a restored pod within a
#: second of the node agent's marker, so this only bounds a restore that went wrong.
READY_TIMEOUT_SECONDS = 300.0
POLL_SECONDS = 0.5
#: Differences listed in full; beyond that they are counted, so one broken volume does not flood the screen.
SHOWN_DIFFERENCES = 25
HASH_BLOCK = 1024 * 1024

EntryType = Literal["file", "dir", "symlink", "other"]


# --- records (pure) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One entry below a volume's root, as the comparison sees it."""

    path: str
    type: EntryType
    mode: str
    mtime_ns: int
    size: int | None = None
    sha256: str | None = None
    target: str | None = None


@dataclass
class Record:
    """An application as it was at one moment: its objects, normalised, and its volumes' contents."""

    namespace: str
    taken: str
    #: ``object_key`` → the object after ``normalize``.
    objects: dict[str, RawObject] = field(default_factory=dict)
    #: ``uncompared`` → how many objects exist that are counted but not compared.
    not_compared: dict[str, int] = field(default_factory=dict)
    #: Claim name → every entry below its volume's root, sorted by path.
    volumes: dict[str, list[FileEntry]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Record:
        body = json.loads(text)
        volumes = {claim: [FileEntry(**e) for e in entries] for claim, entries in body["volumes"].items()}
        return cls(body["namespace"], body["taken"], body["objects"], body["not_compared"], volumes)


def object_key(obj: RawObject) -> str:
    """``Deployment.apps web``, ``ConfigMap web-config``: kind, group and name, unique in a namespace."""
    group, kind = group_kind(obj)
    return f"{kind}.{group} {obj['metadata']['name']}" if group else f"{kind} {obj['metadata']['name']}"


def kind_of_key(key: str) -> str:
    return key.split(" ", 1)[0].split(".", 1)[0]


def uncompared(obj: RawObject) -> str | None:
    """None when the restore is what brings ``obj`` back, so it is compared; else what it is counted
    as (see the module docstring)."""
    group, kind = group_kind(obj)
    meta = obj.get("metadata") or {}
    if group == constants.API_GROUP:
        return f"{kind} (Davit's, never restored)"
    if (group, kind) in MADE_BY_THE_CLUSTER:
        return kind
    if (group, kind) == ("", "Secret") and obj.get("type") == TOKEN_SECRET_TYPE:
        return "Secret (token)"
    if (group, kind) == ("", "ConfigMap") and meta.get("name") == ROOT_CA_CONFIG_MAP:
        return f"ConfigMap {ROOT_CA_CONFIG_MAP}"
    owned = any(ref.get("controller") for ref in meta.get("ownerReferences") or [])
    if (group, kind) in MADE_BY_A_CONTROLLER and owned:
        return kind
    return None


def field_differences(before: Any, after: Any, path: str = "") -> list[str]:
    """The paths at which two JSON values differ, as ``spec.replicas: 2 → 3``."""
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            where = f"{path}.{key}" if path else str(key)
            if key not in after:
                found.append(f"{where}: missing")
            elif key not in before:
                found.append(f"{where}: added {_short(after[key])}")
            else:
                found += field_differences(before[key], after[key], where)
        return found
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        found = []
        for index, (a, b) in enumerate(zip(before, after, strict=True)):
            found += field_differences(a, b, f"{path}[{index}]")
        return found
    return [] if before == after else [f"{path or '(object)'}: {_short(before)} → {_short(after)}"]


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def object_differences(before: Mapping[str, RawObject], after: Mapping[str, RawObject]) -> list[str]:
    found = [f"{key}: missing after the restore" for key in sorted(set(before) - set(after))]
    found += [f"{key}: exists only after the restore" for key in sorted(set(after) - set(before))]
    for key in sorted(set(before) & set(after)):
        found += [f"{key}: {difference}" for difference in field_differences(before[key], after[key])]
    return found


def volume_differences(
    before: Mapping[str, list[FileEntry]], after: Mapping[str, list[FileEntry]]
) -> list[str]:
    found = [f"volume {claim}: missing after the restore" for claim in sorted(set(before) - set(after))]
    found += [f"volume {claim}: exists only after the restore" for claim in sorted(set(after) - set(before))]
    for claim in sorted(set(before) & set(after)):
        old = {e.path: e for e in before[claim]}
        new = {e.path: e for e in after[claim]}
        found += [f"volume {claim}: {path} missing" for path in sorted(set(old) - set(new))]
        found += [f"volume {claim}: {path} is extra" for path in sorted(set(new) - set(old))]
        for path in sorted(set(old) & set(new)):
            a, b = asdict(old[path]), asdict(new[path])
            changed = [name for name in a if a[name] != b[name]]
            if changed:
                found.append(f"volume {claim}: {path} differs in {', '.join(changed)}")
    return found


def volume_totals(entries: list[FileEntry]) -> tuple[int, int]:
    """(files, bytes) of a volume: regular files and their sizes."""
    files = [e for e in entries if e.type == "file"]
    return len(files), sum(e.size or 0 for e in files)


def seconds_between(start: str | None, end: str | None) -> float | None:
    begin, finish = timeutil.parse_time(start), timeutil.parse_time(end)
    return None if begin is None or finish is None else (finish - begin).total_seconds()


def operation_line(label: str, obj: RawObject) -> str:
    """``backup  demo-1: Successful in 7s, 2/2 volumes, 32.4 MiB of data (12.3 MiB stored)``."""
    status = obj.get("status") or {}
    took = seconds_between(status.get("triggerTimestamp"), status.get("finishTimestamp"))
    parts = [f"{status.get('status') or 'unknown'}" + (f" in {took:.0f}s" if took is not None else "")]
    if status.get("volumesProgress"):
        parts.append(f"{status['volumesProgress']} volumes")
    if status.get("totalSize"):
        stored = f" ({output.size(status['storedSize'])} stored)" if status.get("storedSize") else ""
        parts.append(f"{output.size(status['totalSize'])} of data{stored}")
    return f"{label:8} {obj['metadata']['name']}: {', '.join(parts)}"


def restored_per_kind(restore: RawObject) -> str:
    """``ConfigMap 1, Deployment 1, ...`` from the restore's own counts (retained, replaced and failed
    objects are named when there are any)."""
    by_kind: dict[str, dict[str, int]] = (restore.get("status") or {}).get("resourcesByKind") or {}
    parts = []
    for kind in sorted(by_kind):
        counts = by_kind[kind]
        others = [f"{counts[k]} {k}" for k in ("retained", "replaced", "failed") if counts.get(k)]
        parts.append(f"{kind} {counts.get('restored', 0)}" + (f" ({', '.join(others)})" if others else ""))
    return ", ".join(parts) or "(none reported)"


def summary(
    before: Record,
    after: Record,
    backup: RawObject,
    restore: RawObject,
    running_again_seconds: float,
    differences: list[str],
) -> str:
    lines = [
        operation_line("backup", backup),
        operation_line("restore", restore),
        f"         application running again {running_again_seconds:.0f}s after the restore was created",
        f"restored per kind: {restored_per_kind(restore)}",
    ]
    compared_kinds = Counter(kind_of_key(key) for key in before.objects)
    equal = sum(1 for key, obj in before.objects.items() if after.objects.get(key) == obj)
    lines.append(
        f"objects: {equal} of {len(before.objects)} equal after normalization "
        f"({', '.join(f'{kind} {n}' for kind, n in sorted(compared_kinds.items()))})"
    )
    if before.not_compared:
        made = ", ".join(
            f"{kind} {before.not_compared[kind]}→{after.not_compared.get(kind, 0)}"
            for kind in sorted(before.not_compared)
        )
        lines.append(f"runtime objects, counted not compared: {made}")
    all_files, all_bytes = 0, 0
    for claim in sorted(before.volumes):
        files, size = volume_totals(before.volumes[claim])
        all_files, all_bytes = all_files + files, all_bytes + size
        same = claim in after.volumes and not volume_differences(
            {claim: before.volumes[claim]}, {claim: after.volumes[claim]}
        )
        verdict = "identical" if same else "DIFFERENT"
        lines.append(
            f"volume {claim}: {len(before.volumes[claim])} entries, {files} files, "
            f"{output.size(size)} ({size:,} bytes): {verdict}"
        )
    lines.append(f"volumes: {len(before.volumes)}, {all_files} files, {all_bytes:,} bytes compared by sha256")
    if not differences:
        lines.append("everything came back")
        return "\n".join(lines)
    lines.append(f"{len(differences)} difference(s):")
    lines += [f"  {difference}" for difference in differences[:SHOWN_DIFFERENCES]]
    if len(differences) > SHOWN_DIFFERENCES:
        lines.append(f"  ... and {len(differences) - SHOWN_DIFFERENCES} more")
    return "\n".join(lines)


# --- reading the cluster and the volumes ---------------------------------------------------------------


def manifest(root: Path) -> list[FileEntry]:
    """Every entry below ``root``, never following a symlink, sorted by path."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            entries.append(_entry(path, path.relative_to(root).as_posix()))
    return sorted(entries, key=lambda e: e.path)


def _entry(path: Path, relative: str) -> FileEntry:
    st = os.lstat(path)
    mode, mtime = f"{stat.S_IMODE(st.st_mode):04o}", st.st_mtime_ns
    if stat.S_ISLNK(st.st_mode):
        return FileEntry(relative, "symlink", mode, mtime, target=os.readlink(path))
    if stat.S_ISDIR(st.st_mode):
        return FileEntry(relative, "dir", mode, mtime)
    if stat.S_ISREG(st.st_mode):
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while block := f.read(HASH_BLOCK):
                digest.update(block)
        return FileEntry(relative, "file", mode, mtime, size=st.st_size, sha256=digest.hexdigest())
    return FileEntry(relative, "other", mode, mtime)


def _list(api: client.ApiClient, resource: ApiResource, namespace: str) -> Iterator[RawObject]:
    token = None
    while True:
        page = discovery.list_page(api, resource, namespace, None, 500, token)
        yield from page.items
        if page.continue_token is None:
            return
        token = page.continue_token


def _volume_dir(api: client.ApiClient, claim: RawObject) -> Path:
    name = claim["metadata"]["name"]
    if (claim.get("status") or {}).get("phase") != "Bound":
        raise CheckError(f"claim {name} is not bound")
    volume_name = claim["spec"]["volumeName"]
    pv = discovery.get_cluster_object(api, ClusterRef("v1", "persistentvolumes", volume_name)) or {}
    spec = pv.get("spec") or {}
    path = (spec.get("local") or spec.get("hostPath") or {}).get("path")
    if not path:
        raise CheckError(f"the volume {volume_name} of claim {name} is not a local directory")
    return Path(path)


def take_record(api: client.ApiClient, namespace: str) -> Record:
    record = Record(namespace, timeutil.format_time(timeutil.utcnow()))
    namespace_object = discovery.get_cluster_object(api, ClusterRef("v1", "namespaces", namespace))
    if namespace_object is None:
        raise CheckError(f"namespace {namespace} does not exist")
    namespace_object.update(apiVersion="v1", kind="Namespace")
    record.objects[object_key(namespace_object)] = normalize(namespace_object, {})
    not_compared: Counter[str] = Counter()
    for resource in discovery.discover(api):
        listable = resource.namespaced and "list" in resource.verbs and "/" not in resource.plural
        if not listable or (resource.group, resource.plural) in EVENTS:
            continue
        for obj in _list(api, resource, namespace):
            key = object_key(obj)
            if key in record.objects:
                continue  # the same object served by a second group (Ingress in extensions, 1.20)
            counted_as = uncompared(obj)
            if counted_as is not None:
                not_compared[counted_as] += 1
                continue
            record.objects[key] = normalize(obj, {})
            if obj["kind"] == "PersistentVolumeClaim" and group_kind(obj)[0] == "":
                record.volumes[obj["metadata"]["name"]] = manifest(_volume_dir(api, obj))
    record.not_compared = dict(not_compared)
    return record


def _ready(pod: RawObject) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def running(api: client.ApiClient, namespace: str) -> int | None:
    """The number of Ready pods once every Deployment and StatefulSet has all its replicas Ready and
    every pod is Ready; None before."""
    apps = client.AppsV1Api(api)
    workloads = [*apps.list_namespaced_deployment(namespace).items]
    workloads += apps.list_namespaced_stateful_set(namespace).items
    for workload in workloads:
        wanted = workload.spec.replicas if workload.spec.replicas is not None else 1
        if (workload.status.ready_replicas or 0) < wanted:
            return None
    pods = client.CoreV1Api(api).list_namespaced_pod(namespace, _preload_content=False)
    live = [p for p in json.loads(pods.data)["items"] if not p["metadata"].get("deletionTimestamp")]
    return len(live) if all(_ready(p) for p in live) else None


def wait_for(what: str, check: Callable[[], T | None], timeout: float) -> T:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except ApiException as exc:
            if exc.status != 404:
                raise
            result = None  # not there yet
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise CheckError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(POLL_SECONDS)


def operation(api: client.ApiClient, plural: str, ref: str) -> RawObject:
    """The backup or restore ``ref`` (``NAMESPACE/NAME``) as it is now."""
    namespace, _, name = ref.partition("/")
    if not name:
        raise CheckError(f"{ref!r} is not NAMESPACE/NAME")
    found: RawObject = client.CustomObjectsApi(api).get_namespaced_custom_object(
        constants.API_GROUP, constants.API_VERSION, namespace, plural, name
    )
    return found


class CheckError(Exception):
    """The check could not be made (as opposed to a difference found)."""


# --- commands --------------------------------------------------------------------------------------


def record_command(api: client.ApiClient, namespace: str, out: Path) -> int:
    pods = wait_for(f"the application in {namespace} to run", lambda: running(api, namespace),
                    READY_TIMEOUT_SECONDS)  # fmt: skip
    record = take_record(api, namespace)
    out.parent.mkdir(parents=True, exist_ok=True)
    # It holds the application's Secrets as the API server returned them.
    out.touch(mode=0o600)
    out.write_text(record.to_json())
    files = sum(volume_totals(entries)[0] for entries in record.volumes.values())
    size = sum(volume_totals(entries)[1] for entries in record.volumes.values())
    print(
        f"recorded {len(record.objects)} objects ({pods} pods Ready) and {len(record.volumes)} volumes: "
        f"{files} files, {output.size(size)}, each with its sha256 → {out}"
    )
    return 0


def compare_command(
    api: client.ApiClient, namespace: str, before_file: Path, backup_ref: str, restore_ref: str
) -> int:
    before = Record.from_json(before_file.read_text())
    backup = operation(api, "applicationbackups", backup_ref)
    restore = operation(api, "applicationrestores", restore_ref)
    wait_for(f"the application in {namespace} to run again", lambda: running(api, namespace),
             READY_TIMEOUT_SECONDS)  # fmt: skip
    created = timeutil.parse_time(restore["metadata"]["creationTimestamp"]) or timeutil.utcnow()
    running_again = (timeutil.utcnow() - created).total_seconds()
    after = take_record(api, namespace)
    differences = object_differences(before.objects, after.objects)
    differences += volume_differences(before.volumes, after.volumes)
    print(summary(before, after, backup, restore, running_again, differences))
    return 1 if differences else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.demo_check", description=DESCRIPTION)
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), help="default $KUBECONFIG")
    sub = parser.add_subparsers(dest="command", required=True)
    record = sub.add_parser("record", help="wait until the application runs, then record it")
    record.add_argument("namespace")
    record.add_argument("--out", type=Path, required=True)
    compare = sub.add_parser("compare", help="wait until it runs again, record it, compare, summarise")
    compare.add_argument("namespace")
    compare.add_argument("--before", type=Path, required=True, help="the file `record` wrote")
    compare.add_argument("--backup", required=True, metavar="NAMESPACE/NAME")
    compare.add_argument("--restore", required=True, metavar="NAMESPACE/NAME")
    args = parser.parse_args(argv)
    api = clients.api_client(args.kubeconfig)
    try:
        if args.command == "record":
            return record_command(api, args.namespace, args.out)
        return compare_command(api, args.namespace, args.before, args.backup, args.restore)
    except CheckError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
