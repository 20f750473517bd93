"""Running a backup's pre- and post-exec rules (davit.backup.exec_rules) against the pods of its
namespaces."""

from __future__ import annotations

from davit import errors
from davit.api.objects import RawObject
from davit.backup import exec_rules, scope
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
        # Validated at acceptance, and the spec is the accepted one; ``covered_namespaces`` applies the
        # tenancy rule again (a tenant's backup covers its own namespace only) because this is where a
        # command runs in someone's pod.
        for namespace in scope.covered_namespaces(cluster, obj, admin_namespace):
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
