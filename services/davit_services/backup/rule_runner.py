"""Running a backup's pre- and post-exec rules (davit.backup.exec_rules) against the pods of its
namespaces."""

from __future__ import annotations

from davit import errors, tenancy
from davit.api.objects import RawObject
from davit.backup import exec_rules
from davit.operations.ports import Cluster


class RuleStepFailed(errors.Permanent):
    """A rule could not be planned or run; the message is the backup's failure reason."""


def run(
    cluster: Cluster, admin_namespace: str, obj: RawObject, field: str, executor: exec_rules.Executor
) -> exec_rules.RuleRun | None:
    """Run the Rule named by ``spec.<field>`` (preExecRule / postExecRule) with ``executor``; None when
    none is named.

    Background actions are allowed only before the volumes (they hold until released). An item must
    match a running pod in at least one of the backup's namespaces.
    """
    meta, spec = obj["metadata"], obj.get("spec") or {}
    name = spec.get(field)
    if not name:
        return None
    rule = cluster.rule(meta["namespace"], name)
    if rule is None:
        raise RuleStepFailed(f"{field}: Rule {meta['namespace']}/{name} not found")
    planned: list[exec_rules.PlannedAction] = []
    problems: list[str] = []
    try:
        items = exec_rules.rule_items(rule)
        for namespace in sorted(set(spec.get("namespaces") or [meta["namespace"]])):
            if not tenancy.backup_may_read(
                meta["namespace"], admin_namespace, {"namespaces": [namespace]}, namespace
            ):
                # Validated at acceptance, and the spec is the accepted one; checked again here because
                # this is where a command runs in someone's pod.
                raise RuleStepFailed(f"{field} {name}: namespace {namespace} is outside {meta['namespace']}")
            pods = cluster.list_pods(namespace)
            try:
                planned += exec_rules.plan(items, pods, namespace, background_allowed=field == "preExecRule")
            except exec_rules.RulePlanError as exc:
                problems.append(str(exc))
        if not planned:
            raise RuleStepFailed(f"{field} {name}: " + "; ".join(problems or ["nothing to run"]))
        return exec_rules.run_rule(executor, planned, token=f"{meta['uid']}-{field.lower()}")
    except (exec_rules.RuleError, exec_rules.ExecError) as exc:
        raise RuleStepFailed(f"{field} {name}: {exc}") from exc
