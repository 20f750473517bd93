"""A restore's PostExecRule stage: wait for the restored pods its hooks concern, then run its post-restore
exec rule in them (``davit.restore.hooks`` says what each hook is).

The stage is entered once every object and volume is written. It waits, up to ``spec.hookTimeout`` (5
minutes by default), until every pod this restore created with a hook container has run it (a non-zero
exit is that hook's failure) and every pod the post-restore rule selects is Running, then runs the rule
(foreground actions only: there is nothing to hold a command across). What failed is returned, one
reason each, naming the hook, the pod and the command; the restore then ends PartialSuccess.

One task runs the stage at a time (a lease in the scratch state, renewed with the status heartbeat that
keeps the watcher's stall detection quiet). A task that dies mid-way leaves the lease to expire, and the
watcher's re-sent message runs the stage again: the rule's commands may run twice then, as they may with
Velero's hooks after a restart, so they should be safe to repeat.
"""

from __future__ import annotations

import time
import uuid

import structlog

from davit.api.objects import RawObject
from davit.api.types import RuleItem
from davit.backup import exec_rules
from davit.constants import Kind
from davit.operations import progress
from davit.operations.ports import Ports, RestoreScratch
from davit.restore import hooks
from davit.retention.rules import parse_duration
from davit.tenancy import restore_guard

log = structlog.get_logger(__name__)

KIND = Kind.APPLICATION_RESTORE
LEASE = "hooks"
#: How often the pods are looked at while waiting, and the lease and status renewed.
POLL_SECONDS = 2.0
LEASE_SECONDS = 60.0


def timeout_seconds(spec: RawObject) -> float:
    text = spec.get("hookTimeout")
    if not isinstance(text, str) or not text:
        return hooks.DEFAULT_TIMEOUT_SECONDS
    return parse_duration(text).total_seconds()


def hook_namespaces(ports: Ports, obj: RawObject, state: RestoreScratch) -> list[str] | None:
    """Where the hooks look for pods: the namespaces the restore wrote to, as recorded when it was laid
    out, each checked again against the restore's guard (a command runs in someone's pod here). A
    tenant's restore has only its own namespace. None when the record is lost."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    guard = restore_guard(meta["namespace"], ports.settings.admin_namespace, spec)
    recorded = state.hook_namespaces()
    if not guard.admin:
        return [meta["namespace"]]
    if recorded is None:
        return None
    allowed = []
    for namespace in recorded:
        probe = {"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": namespace, "name": "hook"}}
        if isinstance(namespace, str) and guard.refusal(probe, True) is None:
            allowed.append(namespace)
    return sorted(set(allowed))


def run(ports: Ports, obj: RawObject, state: RestoreScratch) -> list[str] | None:
    """Run the stage; the failures (empty when every hook did its work), or None when another task is
    running it."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    owner = uuid.uuid4().hex
    if not state.take_lease(LEASE, owner, LEASE_SECONDS):
        log.info("hooks.running_elsewhere")
        return None
    try:
        namespaces = hook_namespaces(ports, obj, state)
        if namespaces is None:
            return ["hooks: the restored namespaces were lost with the scratch state; no hook was run"]
        rule = _rule(ports, obj)
        deadline = time.monotonic() + timeout_seconds(spec)
        failures: list[str] = []
        while True:
            pods = [p for ns in namespaces for p in ports.cluster.list_pods(ns)]
            states = [hooks.pod_state(p) for p in hooks.hooked_pods(pods, meta["uid"])]
            waiting = [s for s in states if s.state == "waiting"]
            rule_waiting: list[str] = []
            if isinstance(rule, list):
                rule_waiting = _rule_pods_waiting(rule, pods)
            if not waiting and not rule_waiting:
                break
            if time.monotonic() >= deadline:
                failures += [
                    f"initContainerHooks: {s.reason} after {timeout_seconds(spec):g}s" for s in waiting
                ]
                failures += [
                    f"postExecRule {spec.get('postExecRule')}: {w} after {timeout_seconds(spec):g}s"
                    for w in rule_waiting
                ]
                break
            progress.heartbeat(ports, KIND, obj, {})
            state.renew_lease(LEASE, owner, LEASE_SECONDS)
            time.sleep(POLL_SECONDS)
        failures += [s.reason for s in states if s.state == "failed"]
        if isinstance(rule, str):
            failures.append(rule)
        elif isinstance(rule, list) and not rule_waiting:
            failures += _run_rule(ports, obj, rule, pods, namespaces)
        for failure in failures:
            state.log("hook.failed", reason=failure)
        if not failures:
            state.log("hooks.succeeded")
        return failures
    finally:
        state.release_lease(LEASE, owner)


def _rule(ports: Ports, obj: RawObject) -> list[RuleItem] | str | None:
    """The post-restore rule's items, a failure reason, or None without a rule."""
    meta, spec = obj["metadata"], obj.get("spec") or {}
    name = spec.get("postExecRule")
    if not name:
        return None
    rule = ports.cluster.rule(meta["namespace"], name)
    if rule is None:
        return f"postExecRule: Rule {meta['namespace']}/{name} not found"
    try:
        return exec_rules.rule_items(rule)
    except exec_rules.RuleError as exc:
        return f"postExecRule {name}: {exc}"


def _rule_pods_waiting(items: list[RuleItem], pods: list[RawObject]) -> list[str]:
    """The pods a rule item selects that do not run yet (an item selecting none waits too: the restored
    pods' controllers may not have made them yet)."""
    waiting = []
    for index, item in enumerate(items):
        selector = item.pod_selector or {}
        selected = [
            p for p in pods if hooks.matches(selector, p) and not p["metadata"].get("deletionTimestamp")
        ]
        if not selected:
            waiting.append(f"rules[{index}]: no pod matches {_selector_text(selector)}")
        waiting += [s.reason for s in map(hooks.pod_state, selected) if s.state == "waiting"]
    return waiting


def _selector_text(selector: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "(all pods)"


def _run_rule(
    ports: Ports, obj: RawObject, items: list[RuleItem], pods: list[RawObject], namespaces: list[str]
) -> list[str]:
    meta, spec = obj["metadata"], obj.get("spec") or {}
    name = spec.get("postExecRule")
    planned: list[exec_rules.PlannedAction] = []
    problems: list[str] = []
    for namespace in namespaces:
        in_namespace = [p for p in pods if p["metadata"].get("namespace") == namespace]
        try:
            planned += exec_rules.plan(items, in_namespace, namespace, background_allowed=False)
        except exec_rules.RulePlanError as exc:
            problems.append(str(exc))
    if not planned:
        return [f"postExecRule {name}: " + "; ".join(problems or ["nothing to run"])]
    try:
        with exec_rules.run_rule(ports.cluster.executor(), planned, token=f"{meta['uid']}-postrestore"):
            pass
    except (exec_rules.RuleError, exec_rules.ExecError) as exc:
        return [f"postExecRule {name}: {exc}"]
    return []
