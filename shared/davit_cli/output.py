"""Rendering for the ``davit`` CLI: tables as kubectl and storkctl print them, ``describe`` text, JSON and
YAML, and the one-line progress of ``--wait``.

Pure: every function takes the objects (raw JSON as the API server returns them) and the time "now",
and returns text, so all of it is unit-tested without a cluster. Credentials never get through: objects
are redacted (``davit.logs.redact``) before JSON/YAML output, and masked as ``(set)`` in describe text.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from davit import logs, timeutil
from davit.api.objects import RawObject
from davit.api.types import DailyPolicy, IntervalPolicy, MonthlyPolicy, PolicySpec, WeeklyPolicy
from davit.backup import schedules

OutputFormat = Literal["table", "json", "yaml"]
OUTPUT_FORMATS: tuple[str, ...] = ("table", "json", "yaml")

#: The printer columns of every operation kind: backups, restores and clones (SPEC §3).
OPERATION_COLUMNS = ("NAME", "STAGE", "STATUS", "VOLUMES", "RESOURCES", "CREATED", "ELAPSED")
BACKUP_COLUMNS = OPERATION_COLUMNS
KIND_COUNT_COLUMNS = ("KIND", "RESTORED", "RETAINED", "REPLACED", "UPDATED", "FAILED")
LOCATION_COLUMNS = ("NAME", "TYPE", "PATH", "PHASE", "AGE")
POLICY_COLUMNS = ("NAME", "TYPES", "TIMEZONE", "AGE")
SCHEDULE_COLUMNS = ("NAME", "POLICY", "SUSPENDED", "LAST SUCCESS", "AGE")
#: A policy's entries in describe: what each fires on, what it keeps, and when it fires next.
POLICY_ENTRY_COLUMNS = ("TYPE", "SCHEDULE", "RETAIN", "EXPIRE AFTER", "MIN RETAIN", "NEXT TRIGGER")
#: A schedule's policy types in describe.
SCHEDULE_TYPE_COLUMNS = ("TYPE", "SCHEDULE", "BACKUPS", "LAST SUCCESS", "NEXT TRIGGER")
SCHEDULED_BACKUP_COLUMNS = ("TYPE", "NAME", "STATUS", "CREATED", "FINISHED")
REMOTE_COLUMNS = ("NAMESPACE", "NAME", "UID", "FINISHED", "RESOURCES", "STORED", "ENCRYPTED")

#: What describe shows for a credential that is set (the value itself never appears).
MASK = "(set)"
#: kubectl writes the whole applied object, credentials included, into this annotation.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: Column gap, as kubectl's tabwriter prints it.
_GAP = "   "


# --- values --------------------------------------------------------------------------------------


def created(timestamp: str | None) -> str:
    """storkctl's CREATED column: Go's ``02 Jan 06 15:04 MST`` in UTC, e.g. ``11 Sep 19 22:10 UTC``."""
    moment = timeutil.parse_time(timestamp)
    if moment is None:
        return ""
    return moment.astimezone(datetime.UTC).strftime("%d %b %y %H:%M UTC")


def age(timestamp: str | None, now: datetime.datetime) -> str:
    """kubectl's AGE column (``45s``, ``12m``, ``5h``, ``3d``, ``2y``), from a creation timestamp."""
    moment = timeutil.parse_time(timestamp)
    if moment is None:
        return "<unknown>"
    return human_duration((now - moment).total_seconds())


def human_duration(seconds: float) -> str:
    """kubectl's short duration (apimachinery's HumanDuration, to the precision it prints)."""
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        rest = seconds % 60
        return f"{minutes}m{rest}s" if rest else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        rest = (seconds % 3600) // 60
        return f"{hours}h{rest}m" if rest else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if days < 8:
        rest = hours % 24
        return f"{days}d{rest}h" if rest else f"{days}d"
    if days < 730:
        return f"{days}d"
    if days < 365 * 8:
        rest = days % 365
        return f"{days // 365}y{rest}d" if rest else f"{days // 365}y"
    return f"{days // 365}y"


def elapsed(obj: RawObject, now: datetime.datetime) -> str:
    """How long an operation ran (finished) or has been running (in flight), like storkctl's ELAPSED.

    Measured from ``triggerTimestamp`` (when it was accepted; else the object's creation) to
    ``finishTimestamp``, or to ``now`` while it runs. ``status.elapsed`` as the workers last wrote it is
    the fallback when the timestamps are missing.
    """
    status = obj.get("status") or {}
    start = timeutil.parse_time(status.get("triggerTimestamp")) or timeutil.parse_time(
        (obj.get("metadata") or {}).get("creationTimestamp")
    )
    if status.get("stage") == "Final":
        end = timeutil.parse_time(status.get("finishTimestamp"))
        if start is not None and end is not None:
            return timeutil.format_elapsed((end - start).total_seconds())
        return str(status.get("elapsed") or "")
    if start is None:
        return str(status.get("elapsed") or "")
    return timeutil.format_elapsed((now - start).total_seconds())


def volumes(obj: RawObject) -> str:
    """``done/total`` volumes: the status' own ``volumesProgress``, else counted from ``volumes``."""
    status = obj.get("status") or {}
    if status.get("volumesProgress"):
        return str(status["volumesProgress"])
    listed = status.get("volumes")
    if listed is None:
        return ""
    done = sum(1 for v in listed if v.get("status") in ("Successful", "PartialSuccess", "Failed"))
    return f"{done}/{len(listed)}"


def size(value: Any) -> str:
    """Bytes for people: ``512 B``, ``1.5 KiB``, ``3.2 GiB``."""
    if value is None or value == "":
        return ""
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{int(amount)} {unit}" if unit == "B" else f"{amount:.1f} {unit}"
        amount /= 1024
    return ""  # pragma: no cover - the loop always returns


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --- tables --------------------------------------------------------------------------------------


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns three spaces apart, no trailing blanks: what kubectl prints."""
    body = [[_text(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [list(headers), *body]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append(_GAP.join(cells).rstrip())
    return "\n".join(lines)


def _with_namespace(
    headers: Sequence[str], rows: list[list[Any]], objs: Sequence[RawObject], all_namespaces: bool
) -> tuple[Sequence[str], list[list[Any]]]:
    if not all_namespaces:
        return headers, rows
    namespaces = [(o.get("metadata") or {}).get("namespace", "") for o in objs]
    return ("NAMESPACE", *headers), [[ns, *row] for ns, row in zip(namespaces, rows, strict=True)]


def operation_table(objs: Sequence[RawObject], now: datetime.datetime, all_namespaces: bool = False) -> str:
    """Backups, restores or clones: ``NAME STAGE STATUS VOLUMES RESOURCES CREATED ELAPSED`` (NAMESPACE
    first with ``-A``)."""
    rows = []
    for obj in objs:
        status = obj.get("status") or {}
        meta = obj.get("metadata") or {}
        rows.append(
            [
                meta.get("name", ""),
                status.get("stage", ""),
                status.get("status", ""),
                volumes(obj),
                status.get("resourceCount", ""),
                created(meta.get("creationTimestamp")),
                elapsed(obj, now),
            ]
        )
    headers, rows = _with_namespace(OPERATION_COLUMNS, rows, objs, all_namespaces)
    return format_table(headers, rows)


def location_table(objs: Sequence[RawObject], now: datetime.datetime, all_namespaces: bool = False) -> str:
    """``NAME TYPE PATH PHASE AGE`` (NAMESPACE first with ``-A``); never a credential."""
    rows = []
    for obj in objs:
        location = obj.get("location") or {}
        meta = obj.get("metadata") or {}
        rows.append(
            [
                meta.get("name", ""),
                location.get("type", ""),
                location.get("path", ""),
                (obj.get("status") or {}).get("phase", ""),
                age(meta.get("creationTimestamp"), now),
            ]
        )
    headers, rows = _with_namespace(LOCATION_COLUMNS, rows, objs, all_namespaces)
    return format_table(headers, rows)


def policy_table(objs: Sequence[RawObject], now: datetime.datetime, all_namespaces: bool = False) -> str:
    """SchedulePolicies: ``NAME TYPES TIMEZONE AGE`` (cluster-scoped: no NAMESPACE, even with ``-A``)."""
    rows = []
    for obj in objs:
        body = obj.get("policy") or {}
        meta = obj.get("metadata") or {}
        types = ",".join(t for t in schedules.POLICY_TYPES if body.get(t)) or "<none>"
        rows.append(
            [
                meta.get("name", ""),
                types,
                body.get("timeZone") or "UTC",
                age(meta.get("creationTimestamp"), now),
            ]
        )
    return format_table(POLICY_COLUMNS, rows)


def schedule_table(objs: Sequence[RawObject], now: datetime.datetime, all_namespaces: bool = False) -> str:
    """ApplicationBackupSchedules: ``NAME POLICY SUSPENDED LAST SUCCESS AGE`` (NAMESPACE first with
    ``-A``), the times as ages as kubectl prints the printer columns."""
    rows = []
    for obj in objs:
        spec = obj.get("spec") or {}
        meta = obj.get("metadata") or {}
        last_success = (obj.get("status") or {}).get("lastSuccessTime")
        rows.append(
            [
                meta.get("name", ""),
                spec.get("schedulePolicyName", ""),
                bool(spec.get("suspend")),
                age(last_success, now) if last_success else "<none>",
                age(meta.get("creationTimestamp"), now),
            ]
        )
    headers, rows = _with_namespace(SCHEDULE_COLUMNS, rows, objs, all_namespaces)
    return format_table(headers, rows)


def remote_backup_entry(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What ``backups list-remote`` reports of one backup, from its manifest."""
    meta = (manifest.get("backup") or {}).get("metadata") or {}
    summary = manifest.get("summary") or {}
    return {
        "namespace": meta.get("namespace"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "finishedAt": summary.get("finishedAt"),
        "resourceCount": summary.get("resourceCount"),
        "storedSize": summary.get("storedSize"),
        "encrypted": bool(summary.get("encrypted")),
    }


def remote_table(entries: Sequence[Mapping[str, Any]]) -> str:
    """``NAMESPACE NAME UID FINISHED RESOURCES STORED ENCRYPTED``."""
    rows = [
        [
            e.get("namespace"),
            e.get("name"),
            e.get("uid"),
            created(e.get("finishedAt")),
            e.get("resourceCount"),
            size(e.get("storedSize")),
            e.get("encrypted"),
        ]
        for e in entries
    ]
    return format_table(REMOTE_COLUMNS, rows)


# --- redaction -----------------------------------------------------------------------------------


def _scrub_last_applied(obj: Any, scrub: Callable[[Any], Any]) -> Any:
    """kubectl's last-applied annotation holds the applied object as a JSON string: scrub inside it."""
    if not isinstance(obj, dict):
        return obj
    annotations = (obj.get("metadata") or {}).get("annotations")
    if not isinstance(annotations, dict) or LAST_APPLIED not in annotations:
        return obj
    try:
        applied = json.loads(annotations[LAST_APPLIED])
        replacement = json.dumps(scrub(applied), sort_keys=True)
    except (TypeError, ValueError):
        replacement = MASK
    return {
        **obj,
        "metadata": {**obj["metadata"], "annotations": {**annotations, LAST_APPLIED: replacement}},
    }


def redact_object(obj: Any) -> Any:
    """``obj`` fit for printing as JSON/YAML: credential values replaced (``davit.logs.redact``),
    inside kubectl's last-applied annotation too, and without ``managedFields`` (as kubectl ≥ 1.21)."""
    clean = _scrub_last_applied(logs.redact(obj), logs.redact)
    if isinstance(clean, dict) and isinstance(clean.get("metadata"), dict):
        clean["metadata"].pop("managedFields", None)
    return clean


def mask_credentials(value: Any) -> Any:
    """``value`` with every set credential shown as ``(set)`` (unset ones stay empty), for describe."""
    if isinstance(value, dict):
        masked = {
            k: (MASK if v not in (None, "") else v) if logs.is_secret_key(str(k)) else mask_credentials(v)
            for k, v in value.items()
        }
        return _scrub_last_applied(masked, mask_credentials)
    if isinstance(value, list | tuple):
        return [mask_credentials(v) for v in value]
    return value


# --- json / yaml ---------------------------------------------------------------------------------


def as_list(items: Sequence[Any]) -> dict[str, Any]:
    """A kubectl-style ``List`` wrapper for several objects."""
    return {"apiVersion": "v1", "kind": "List", "items": list(items)}


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False, default=str)


def to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False, allow_unicode=True).rstrip("\n")


def render_data(value: Any, fmt: str) -> str:
    """JSON or YAML of ``value``, redacted."""
    clean = redact_object(value)
    if isinstance(clean, dict) and isinstance(clean.get("items"), list):
        clean = {**clean, "items": [redact_object(i) for i in clean["items"]]}
    return to_yaml(clean) if fmt == "yaml" else to_json(clean)


# --- describe ------------------------------------------------------------------------------------


def _title(key: str) -> str:
    """``backupLocation`` → ``Backup Location``, ``accessKeyID`` → ``Access Key ID`` (as kubectl does)."""
    words: list[str] = []
    current = ""
    for i, ch in enumerate(key):
        boundary = (
            ch.isupper()
            and current
            and (not current[-1].isupper() or (i + 1 < len(key) and key[i + 1].islower()))
        )
        if boundary:
            words.append(current)
            current = ""
        current += ch
    if current:
        words.append(current)
    return " ".join(w[:1].upper() + w[1:] for w in words)


def _field_lines(value: Mapping[str, Any], indent: int) -> list[str]:
    """A mapping as ``Key:  value`` lines, nested mappings and lists indented below their key."""
    pad = " " * indent
    scalars = [(k, v) for k, v in value.items() if not isinstance(v, dict | list)]
    width = max((len(_title(k)) for k, _ in scalars), default=0) + 2
    lines: list[str] = []
    for key, item in value.items():
        label = _title(key) + ":"
        if isinstance(item, dict):
            lines.append(f"{pad}{label}")
            lines.extend(_field_lines(item, indent + 2) if item else [f"{pad}  <none>"])
        elif isinstance(item, list):
            if not item:
                lines.append(f"{pad}{label.ljust(width)}<none>")
            elif all(not isinstance(i, dict | list) for i in item):
                lines.append(f"{pad}{label.ljust(width)}{', '.join(_text(i) for i in item)}")
            else:
                lines.append(f"{pad}{label}")
                for entry in item:
                    sub = _field_lines(entry, indent + 4) if isinstance(entry, dict) else []
                    if sub:
                        lines.append(f"{pad}  - {sub[0].lstrip()}")
                        lines.extend(sub[1:])
        else:
            lines.append(f"{pad}{label.ljust(width)}{_text(item)}")
    return lines


def _section(title: str, body: list[str]) -> list[str]:
    return [f"{title}:", *(body or ["  <none>"])]


def _labels(meta: Mapping[str, Any], key: str) -> list[str]:
    values = {k: v for k, v in (meta.get(key) or {}).items() if k != LAST_APPLIED}
    return [f"{k}={v}" for k, v in sorted(values.items())] or ["<none>"]


def _header(obj: RawObject) -> list[str]:
    meta = obj.get("metadata") or {}
    labels, annotations = _labels(meta, "labels"), _labels(meta, "annotations")
    rows = [
        ("Name:", meta.get("name", "")),
        *([("Namespace:", meta["namespace"])] if meta.get("namespace") else []),
        ("Kind:", obj.get("kind", "")),
        ("UID:", meta.get("uid", "")),
        ("Created:", created(meta.get("creationTimestamp"))),
        ("Labels:", labels[0]),
    ]
    lines = [f"{k:<14}{v}" for k, v in rows]
    lines.extend(f"{'':<14}{v}" for v in labels[1:])
    lines.append(f"{'Annotations:':<14}{annotations[0]}")
    lines.extend(f"{'':<14}{v}" for v in annotations[1:])
    return lines


def _event_time(event: RawObject) -> str:
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or (event.get("metadata") or {}).get("creationTimestamp")
        or ""
    )


def _event_source(event: RawObject) -> str:
    return str((event.get("source") or {}).get("component") or event.get("reportingComponent") or "")


def _event_message(event: RawObject) -> str:
    return " ".join(str(event.get("message") or "").split())


def oldest_first(events: Sequence[RawObject]) -> list[RawObject]:
    """Events in the order they happened."""

    def order(event: RawObject) -> tuple[str, int]:
        # Timestamps have one-second resolution; the resourceVersion breaks ties in creation order.
        version = str((event.get("metadata") or {}).get("resourceVersion") or "0")
        return _event_time(event), int(version) if version.isdigit() else 0

    return sorted(events, key=order)


def event_table(events: Sequence[RawObject], now: datetime.datetime) -> list[str]:
    """kubectl describe's Events block: ``Type Reason Age From Message``, oldest first."""
    if not events:
        return ["Events:  <none>"]
    rows = []
    for event in oldest_first(events):
        count = int(event.get("count") or 1)
        when = _event_time(event)
        shown_age = age(when, now)
        if count > 1:
            shown_age += f" (x{count} over {age(event.get('firstTimestamp') or when, now)})"
        row = [event.get("type", ""), event.get("reason", ""), shown_age, _event_source(event)]
        rows.append([*row, _event_message(event)])
    headers = ("Type", "Reason", "Age", "From", "Message")
    table = format_table(headers, [["-" * len(h) for h in headers], *rows])
    return ["Events:", *("  " + line for line in table.splitlines())]


def _indented_table(headers: Sequence[str], rows: list[list[Any]]) -> list[str]:
    return ["  " + line for line in format_table(headers, rows).splitlines()] if rows else []


def kind_counts_table(by_kind: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """A restore's or clone's ``resourcesByKind``: ``KIND RESTORED RETAINED REPLACED UPDATED FAILED``, one
    row a kind by name, and a TOTAL row when there are several."""
    counted = ("restored", "retained", "replaced", "updated", "failed")
    rows: list[list[Any]] = [
        [kind, *(int(by_kind[kind].get(c) or 0) for c in counted)] for kind in sorted(by_kind)
    ]
    if len(rows) > 1:
        rows.append(["TOTAL", *(sum(row[i + 1] for row in rows) for i in range(len(counted)))])
    return _indented_table(KIND_COUNT_COLUMNS, rows)


def describe_operation(obj: RawObject, events: Sequence[RawObject], now: datetime.datetime) -> str:
    """Everything about one backup, restore or clone: spec, status, counts per kind (restores and
    clones), volumes, conditions and its Events."""
    status = dict(obj.get("status") or {})
    volume_list = status.pop("volumes", None) or []
    conditions = status.pop("conditions", None) or []
    by_kind = status.pop("resourcesByKind", None)
    status.pop("volumesProgress", None)
    summary = {
        "stage": status.pop("stage", None),
        "status": status.pop("status", None),
        "reason": status.pop("reason", None),
        "resourceCount": status.pop("resourceCount", None),
        "volumes": volumes(obj),
        "totalSize": size(status.pop("totalSize", None)),
        "storedSize": size(status.pop("storedSize", None)),
        "elapsed": elapsed(obj, now),
    }
    status.pop("elapsed", None)
    summary.update(status)
    summary = {k: v for k, v in summary.items() if v not in (None, "")}
    lines = _header(obj)
    spec = _ordered(
        _flag_syntax(mask_credentials(obj.get("spec") or {})), _SPEC_ORDER.get(str(obj.get("kind")), ())
    )
    lines += _section("Spec", _field_lines(spec, 2))
    lines += _section("Status", _field_lines(summary, 2))
    if by_kind is not None or obj.get("kind") in _COUNTED_KINDS:
        lines += _section("Resources By Kind", kind_counts_table(by_kind or {}))
    volume_rows = [
        [
            v.get("namespace"),
            v.get("persistentVolumeClaim"),
            v.get("volume"),
            v.get("driver"),
            v.get("mode"),
            v.get("status"),
            size(v.get("totalSize")),
            size(v.get("bytesDone")),
            v.get("reason"),
        ]
        for v in volume_list
    ]
    volume_headers = ("NAMESPACE", "PVC", "VOLUME", "DRIVER", "MODE", "STATUS", "SIZE", "DONE", "REASON")
    lines += _section("Volumes", _indented_table(volume_headers, volume_rows))
    lines += _conditions(conditions)
    lines += event_table(events, now)
    return "\n".join(lines)


def _conditions(conditions: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [
        [c.get("type"), c.get("status"), c.get("reason"), c.get("message"), c.get("lastTransitionTime")]
        for c in conditions
    ]
    headers = ("TYPE", "STATUS", "REASON", "MESSAGE", "LAST TRANSITION")
    return _section("Conditions", _indented_table(headers, rows))


def _flag_syntax(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with its maps of names (mappings, label selectors) written as the flags take them,
    ``shop:shop2, web:web2``: their keys are names, not fields to title-case."""
    return {
        key: ", ".join(f"{k}{_NAME_MAPS[key]}{v}" for k, v in value.items())
        if key in _NAME_MAPS and isinstance(value, dict)
        else value
        for key, value in spec.items()
    }


def _ordered(value: Mapping[str, Any], first: Sequence[str]) -> dict[str, Any]:
    """``value`` with the keys in ``first`` leading (the API server returns keys sorted)."""
    return {**{k: value[k] for k in first if k in value}, **value}


_LOCATION_ORDER = ("type", "path", "prefix", "sync", "secretConfig", "encryptionKey", "allowedNamespaces")
_BACKUP_ORDER = (
    "backupLocation", "namespaces", "excludeNamespaces", "namespaceSelector", "selectors", "resourceTypes",
)  # fmt: skip
_RESTORE_ORDER = ("backupName", "backupLocation", "namespaceMapping", "replacePolicy", "resourceTypes")
_CLONE_ORDER = ("sourceNamespace", "destinationNamespace", "selectors", "replacePolicy")
#: Spec fields that map names to names, and how their flags write a pair.
_NAME_MAPS = {"namespaceMapping": ":", "storageClassMapping": ":", "nodeMapping": ":", "selectors": "="}
#: Kinds whose status counts what happened to each kind of resource (``resourcesByKind``).
_COUNTED_KINDS = ("ApplicationRestore", "ApplicationClone")
#: What describe shows first in each operation kind's spec: what it works on, then how.
_SPEC_ORDER = {
    "ApplicationBackup": _BACKUP_ORDER,
    "ApplicationRestore": _RESTORE_ORDER,
    "ApplicationClone": _CLONE_ORDER,
}


def describe_location(obj: RawObject, events: Sequence[RawObject], now: datetime.datetime) -> str:
    """Everything about one BackupLocation; every credential shown as ``(set)``, never its value."""
    masked = mask_credentials(obj)
    lines = _header(masked)
    lines += _section("Location", _field_lines(_ordered(masked.get("location") or {}, _LOCATION_ORDER), 2))
    lines += _section("Status", _field_lines(masked.get("status") or {}, 2))
    lines += event_table(events, now)
    return "\n".join(lines)


# --- schedules -----------------------------------------------------------------------------------

#: What describe shows first in a schedule's spec.
_SCHEDULE_ORDER = ("schedulePolicyName", "suspend", "reclaimPolicy", "template")


def _every(minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"every {minutes}m"
    return f"every {hours}h{rest}m" if rest else f"every {hours}h"


def entry_schedule(entry: schedules.PolicyEntry) -> str:
    """When a policy entry fires, in words: ``every 30m``, ``every day at 10:14PM``, ``Sunday at
    10:14PM``, ``day 15 at 10:14PM`` or the cron expression."""
    if isinstance(entry, IntervalPolicy):
        return _every(entry.interval_minutes)
    if isinstance(entry, DailyPolicy):
        return f"every day at {entry.time}"
    if isinstance(entry, WeeklyPolicy):
        return f"{entry.day} at {entry.time}"
    if isinstance(entry, MonthlyPolicy):
        return f"day {entry.date} at {entry.time}"
    return entry.schedule


def policy_entries(body: Mapping[str, Any]) -> list[tuple[schedules.PolicyType, schedules.PolicyEntry | str]]:
    """A SchedulePolicy's ``policy:`` entries by type; one the API model refuses (the API server checks
    the same, so only an object written past it) comes as the reason, so describe shows the others."""
    found: list[tuple[schedules.PolicyType, schedules.PolicyEntry | str]] = []
    for policy_type in schedules.POLICY_TYPES:
        if not body.get(policy_type):
            continue
        try:
            spec = PolicySpec.model_validate({policy_type: body[policy_type]})
        except ValidationError as exc:
            found.append((policy_type, f"invalid: {exc.errors()[0]['msg']}"))
            continue
        found.append((policy_type, schedules.entries(spec)[policy_type]))
    return found


def next_trigger(
    policy_type: schedules.PolicyType,
    entry: schedules.PolicyEntry,
    time_zone: str | None,
    now: datetime.datetime,
) -> str:
    """When the entry fires next, on the policy's wall clock with its UTC offset and how far off:
    ``2019-09-12T22:14:00+02:00 (in 23h)``; why it never fires, when it cannot."""
    try:
        moment = schedules.next_trigger(policy_type, entry, time_zone, now)
        local = moment.astimezone(schedules.zone(time_zone))
    except schedules.ScheduleError as exc:
        return f"never: {exc}"
    return f"{local.isoformat()} (in {human_duration((moment - now).total_seconds())})"


def _dash(value: Any) -> Any:
    return "-" if value is None else value


def describe_policy(obj: RawObject, events: Sequence[RawObject], now: datetime.datetime) -> str:
    """Everything about one SchedulePolicy: its time zone and each entry with its retention and the next
    time it fires after ``now``."""
    body = obj.get("policy") or {}
    time_zone = body.get("timeZone")
    rows: list[list[Any]] = []
    for policy_type, entry in policy_entries(body):
        if isinstance(entry, str):
            rows.append([policy_type, entry, "-", "-", "-", "-"])
            continue
        retention = [_dash(entry.retain), _dash(entry.expire_after), _dash(entry.min_retain)]
        rows.append(
            [policy_type, entry_schedule(entry), *retention, next_trigger(policy_type, entry, time_zone, now)]
        )
    lines = [*_header(obj), f"{'Time Zone:':<14}{time_zone or 'UTC'}"]
    lines += _section("Entries", _indented_table(POLICY_ENTRY_COLUMNS, rows))
    lines += event_table(events, now)
    return "\n".join(lines)


def _when(timestamp: str | None, now: datetime.datetime) -> str:
    """``11 Sep 19 22:11 UTC (4m ago)``."""
    return f"{created(timestamp)} ({age(timestamp, now)} ago)" if timestamp else ""


def _last_success(backups: Sequence[Mapping[str, Any]]) -> str | None:
    finished = [b.get("finishTimestamp") for b in backups if b.get("status") == "Successful"]
    return max((f for f in finished if f), default=None)


def _schedule_types(
    spec: Mapping[str, Any],
    policy: RawObject | None,
    items: Mapping[str, Sequence[Mapping[str, Any]]],
    now: datetime.datetime,
) -> list[str]:
    """Per policy type: when it fires, the backups kept, the last success and the next trigger (from the
    policy, as the watcher computes it)."""
    if policy is None:
        return [f"  SchedulePolicy {spec.get('schedulePolicyName')} not found: nothing is scheduled"]
    body = policy.get("policy") or {}
    rows: list[list[Any]] = []
    in_policy = policy_entries(body)
    for policy_type, entry in in_policy:
        kept = items.get(policy_type) or []
        if isinstance(entry, str):
            when, trigger = entry, "-"
        else:
            when = entry_schedule(entry)
            trigger = next_trigger(policy_type, entry, body.get("timeZone"), now)
        if spec.get("suspend"):
            trigger = "none (suspended)"
        rows.append([policy_type, when, len(kept), created(_last_success(kept)) or "<none>", trigger])
    named = {policy_type for policy_type, _ in in_policy}
    for other_type, kept in sorted(items.items()):
        if other_type not in named:  # backups of a type the policy no longer has
            rows.append(
                [other_type, "not in the policy", len(kept), created(_last_success(kept)) or "<none>", "-"]
            )
    return _indented_table(SCHEDULE_TYPE_COLUMNS, rows)


def describe_schedule(
    obj: RawObject, policy: RawObject | None, events: Sequence[RawObject], now: datetime.datetime
) -> str:
    """Everything about one ApplicationBackupSchedule: spec, last success, each policy type of its
    SchedulePolicy (``policy``, None when it does not exist) with its next trigger, the backups kept per
    type, conditions and Events."""
    spec = mask_credentials(obj.get("spec") or {})
    status = dict(obj.get("status") or {})
    items: dict[str, list[RawObject]] = status.pop("items", None) or {}
    conditions = status.pop("conditions", None) or []
    # The watcher's copies of what Policy Types shows, computed afresh from the policy.
    status.pop("nextTrigger", None)
    status.pop("lastTriggered", None)
    template = _ordered(_flag_syntax((spec.get("template") or {}).get("spec") or {}), _BACKUP_ORDER)
    shown_spec = _ordered({**spec, "template": {"spec": template}}, _SCHEDULE_ORDER)
    summary = {
        "lastSuccessfulBackup": status.pop("lastSuccessfulBackup", None),
        "lastSuccessTime": _when(status.pop("lastSuccessTime", None), now),
        "lastSuccessDuration": status.pop("lastSuccessDuration", None),
        **status,
    }
    summary = {k: v for k, v in summary.items() if v not in (None, "")}
    backup_rows = [
        [
            policy_type,
            b.get("name"),
            b.get("status") or "Pending",
            created(b.get("creationTimestamp")),
            created(b.get("finishTimestamp")) or "-",
        ]
        for policy_type in sorted(items, key=_policy_type_order)
        for b in items[policy_type]
    ]
    lines = _header(obj)
    lines += _section("Spec", _field_lines(shown_spec, 2))
    lines += _section("Status", _field_lines(summary, 2))
    lines += _section("Policy Types", _schedule_types(spec, policy, items, now))
    lines += _section("Backups", _indented_table(SCHEDULED_BACKUP_COLUMNS, backup_rows))
    lines += _conditions(conditions)
    lines += event_table(events, now)
    return "\n".join(lines)


def _policy_type_order(policy_type: str) -> tuple[int, str]:
    known: tuple[str, ...] = schedules.POLICY_TYPES
    return (known.index(policy_type) if policy_type in known else len(known), policy_type)


# --- --wait --------------------------------------------------------------------------------------


def progress_line(obj: RawObject, now: datetime.datetime) -> str:
    """One line of ``--wait``: where the operation is and how long it has taken."""
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    parts = [
        f"{obj.get('kind', 'ApplicationBackup')} {meta.get('namespace')}/{meta.get('name')}",
        f"stage {status.get('stage') or '-'}",
        f"status {status.get('status') or '-'}",
        f"resources {status.get('resourceCount') if status.get('resourceCount') is not None else '-'}",
        f"volumes {volumes(obj) or '-'}",
    ]
    if status.get("totalSize") is not None:
        parts.append(f"size {size(status.get('totalSize'))}")
    parts.append(f"elapsed {elapsed(obj, now) or '-'}")
    return "  ".join(parts)


# --- logs ----------------------------------------------------------------------------------------


def event_log_lines(events: Sequence[RawObject]) -> list[str]:
    """An operation's Events as log lines (``time``, ``type``, ``reason``, ``source``, ``message``), oldest
    first: the log of an operation whose services keep no log of their own."""
    return [
        json.dumps(
            {
                "time": _event_time(event),
                "type": event.get("type", ""),
                "event": event.get("reason", ""),
                "source": _event_source(event),
                "message": _event_message(event),
                **({"count": int(event["count"])} if int(event.get("count") or 1) > 1 else {}),
            },
            separators=(",", ":"),
        )
        for event in oldest_first(events)
    ]


def log_line(line: str) -> str | None:
    """One stored log line as one JSON line, redacted; None for a blank line. A line that is not a
    JSON object (never written by Davit, but a location is shared) is wrapped as ``{"message": …}``."""
    if not line.strip():
        return None
    try:
        event = json.loads(line)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        event = {"message": line}
    return json.dumps(logs.redact(event), sort_keys=True, separators=(",", ":"), default=str)


def stored_contents(manifest: RawObject, fmt: str = "table") -> str:
    """A backup's manifest as ``describe --details`` shows it: its resources by kind (every name), and
    its volumes with their mode, result and size. JSON or YAML: the two lists as they are stored."""
    resources = [r for r in manifest.get("resources") or [] if isinstance(r, dict)]
    volumes = [v for v in manifest.get("volumes") or [] if isinstance(v, dict)]
    if fmt != "table":
        return render_data({"resources": resources, "volumes": volumes}, fmt)
    by_kind: dict[str, list[str]] = {}
    for resource in resources:
        kind = f"{resource.get('kind')}.{resource.get('apiVersion')}"
        where = f"{resource['namespace']}/" if resource.get("namespace") else ""
        by_kind.setdefault(kind, []).append(f"{where}{resource.get('name')}")
    lines = [f"Stored resources: {len(resources)}"]
    for kind in sorted(by_kind):
        names = sorted(by_kind[kind])
        lines.append(f"  {kind} ({len(names)})")
        lines += [f"    {name}" for name in names]
    lines.append(f"Stored volumes: {len(volumes)}")
    for volume in volumes:
        claim = f"{volume.get('namespace')}/{volume.get('persistentVolumeClaim')}"
        stored = size(volume.get("totalSize")) or "-"
        lines.append(f"  {claim}  {volume.get('mode') or '-'}  {volume.get('status') or '-'}  {stored}")
    return "\n".join(lines)
