"""The Davit dashboard: what an SRE watches while backups run and after they ran.

Rows: operations (in flight by stage, results, success ratio, durations by stage, last success per
namespace and schedule, schedules), data (bytes read and stored, dedup ratio, node agents' throughput),
queues and workers (queue lengths, task throughput, failures and retries, task durations), locations and
retention. Every query is evaluated against a real Prometheus during a real backup by
tests/integration/test_dashboard.py, which asserts each returns data.

Queries use two Grafana variables only: ``$namespace`` (a regex over the namespaces the exporter reports)
and ``$__rate_interval``; the test substitutes both.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from grafana_foundation_sdk.builders import dashboard, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUTPUT: Final = Path(__file__).resolve().parents[1] / "deploy" / "monitoring" / "dashboards" / "davit.json"
UID: Final = "davit-overview"
#: The data source is chosen on the dashboard (``$datasource``), as kube-prometheus' dashboards do.
DATASOURCE: Final = DataSourceRef(type_val="prometheus", uid="${datasource}")
NS: Final = 'namespace=~"$namespace"'
BACKUP: Final = 'kind="ApplicationBackup"'


def query(expr: str, legend: str = "", instant: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).legend_format(legend or "__auto")
    return q.instant() if instant else q.range()


def series(title: str, unit: str, *queries: prometheus.Dataquery, description: str = "") -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).datasource(DATASOURCE).height(8).span(12)
    if description:
        panel = panel.description(description)
    for q in queries:
        panel = panel.with_target(q)
    return panel


def single(title: str, unit: str, expr: str, description: str = "") -> stat.Panel:
    panel = stat.Panel().title(title).unit(unit).datasource(DATASOURCE).height(4).span(6)
    if description:
        panel = panel.description(description)
    return panel.with_target(query(expr, instant=True))


def listing(title: str, expr: str, description: str = "") -> table.Panel:
    panel = table.Panel().title(title).datasource(DATASOURCE).height(8).span(12)
    if description:
        panel = panel.description(description)
    return panel.with_target(prometheus.Dataquery().expr(expr).instant().format(PromQueryFormat.TABLE))


def build() -> dashboard.Dashboard:
    rate = "$__rate_interval"
    board = (
        dashboard.Dashboard("Davit")
        .uid(UID)
        .tags(["davit", "backup"])
        .description("Backups, restores and clones: progress, results, data, queues and locations.")
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            dashboard.QueryVariable("namespace")
            .label("Namespace")
            .datasource(DATASOURCE)
            .query("label_values(davit_operations_completed_total, namespace)")
            .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
    )
    board = board.with_row(dashboard.Row("Operations"))
    board = (
        board.with_panel(
            single(
                "Backups succeeded (24h)",
                "short",
                f'sum(increase(davit_operations_completed_total{{{BACKUP},result="Successful",{NS}}}[24h]))'
                " or vector(0)",
            )
        )
        .with_panel(
            single(
                "Backups failed or partial (24h)",
                "short",
                f'sum(increase(davit_operations_completed_total{{{BACKUP},result!="Successful",{NS}}}[24h]))'
                " or vector(0)",
            )
        )
        .with_panel(
            single(
                "Backup success ratio (24h)",
                "percentunit",
                f'sum(increase(davit_operations_completed_total{{{BACKUP},result="Successful",{NS}}}[24h]))'
                f" / sum(increase(davit_operations_completed_total{{{BACKUP},{NS}}}[24h]))",
                "Successful backups among all that ended in the last 24 hours.",
            )
        )
        .with_panel(single("Operations in flight", "short", "sum(davit_operations_in_flight)"))
        .with_panel(
            series(
                "Operations in flight by stage",
                "short",
                query("sum by (kind, stage) (davit_operations_in_flight)", "{{kind}} {{stage}}"),
            )
        )
        .with_panel(
            series(
                "Operations ended, by result",
                "short",
                query(
                    f"sum by (kind, result) (increase(davit_operations_completed_total{{{NS}}}[{rate}]))",
                    "{{kind}} {{result}}",
                ),
            )
        )
        .with_panel(
            series(
                "Backup stage duration (p90)",
                "s",
                query(
                    "histogram_quantile(0.9, sum by (le, stage) "
                    f"(rate(davit_stage_duration_seconds_bucket{{{BACKUP}}}[{rate}])))",
                    "{{stage}}",
                ),
                description="Initial is the time waiting to be accepted and picked up.",
            )
        )
        .with_panel(
            series(
                "Operation duration (average)",
                "s",
                query(
                    f"sum by (kind) (rate(davit_operation_duration_seconds_sum[{rate}]))"
                    f" / sum by (kind) (rate(davit_operation_duration_seconds_count[{rate}]))",
                    "{{kind}}",
                ),
            )
        )
        .with_panel(
            listing(
                "Time since the last successful backup",
                f"time() - davit_last_successful_backup_timestamp_seconds{{{NS}}}",
                "Per namespace and schedule (empty: manual backups), in seconds.",
            )
        )
        .with_panel(
            listing(
                "Schedules",
                f"davit_schedule_info{{{NS}}}",
                "Every ApplicationBackupSchedule and whether it is suspended; DavitScheduleOverdue fires for "
                "one that has not succeeded since it last fired.",
            )
        )
    )
    board = board.with_row(dashboard.Row("Data"))
    board = (
        board.with_panel(
            series(
                "Bytes read and stored by backups",
                "Bps",
                query(
                    f"sum by (namespace) (rate(davit_backup_bytes_read_total{{{NS}}}[{rate}]))",
                    "read {{namespace}}",
                ),
                query(
                    f"sum by (namespace) (rate(davit_backup_bytes_stored_total{{{NS}}}[{rate}]))",
                    "stored {{namespace}}",
                ),
            )
        )
        .with_panel(
            series(
                "Deduplication ratio",
                "none",
                query(f"davit_backup_dedup_ratio{{{NS}}}", "{{namespace}}"),
                description="Bytes read per byte stored since the counters began.",
            )
        )
        .with_panel(
            series(
                "Node agent throughput",
                "Bps",
                query(
                    f"sum by (node, direction) (rate(davit_node_agent_bytes_total[{rate}]))",
                    "{{node}} {{direction}}",
                ),
            )
        )
    )
    board = board.with_row(dashboard.Row("Queues and workers"))
    board = (
        board.with_panel(series("Queue length", "short", query("davit_queue_length", "{{queue}}")))
        .with_panel(
            series(
                "Tasks per second",
                "ops",
                query(f"sum by (queue) (rate(davit_task_duration_seconds_count[{rate}]))", "{{queue}}"),
            )
        )
        .with_panel(
            series(
                "Task failures and retries per second",
                "ops",
                query(
                    f"sum by (queue) (rate(davit_task_failures_total[{rate}]))"
                    f" or sum by (queue) (rate(davit_task_duration_seconds_count[{rate}])) * 0",
                    "failed {{queue}}",
                ),
                query(
                    f"sum by (queue) (rate(davit_task_retries_total[{rate}]))"
                    f" or sum by (queue) (rate(davit_task_duration_seconds_count[{rate}])) * 0",
                    "retried {{queue}}",
                ),
            )
        )
        .with_panel(
            series(
                "Task duration (p90)",
                "s",
                query(
                    "histogram_quantile(0.9, sum by (le, queue) "
                    f"(rate(davit_task_duration_seconds_bucket[{rate}])))",
                    "{{queue}}",
                ),
            )
        )
    )
    board = board.with_row(dashboard.Row("Locations and retention"))
    board = (
        board.with_panel(
            listing("Backup locations", "davit_location_available", "1: Available, 0: Unavailable.")
        )
        .with_panel(
            series(
                "Retention deletions",
                "short",
                query(
                    f"sum by (reason) (increase(davit_retention_deletions_total{{{NS}}}[{rate}]))"
                    " or vector(0)",
                    "{{reason}}",
                ),
            )
        )
        .with_panel(
            single(
                "Operations failed with lost state (24h)",
                "short",
                "sum(increase(davit_operations_state_lost_total[24h]))",
            )
        )
    )
    return board


def render() -> str:
    """The dashboard as Grafana's JSON model, stable for review (sorted keys, a trailing newline)."""
    model = json.loads(json.dumps(build().build(), cls=JSONEncoder))
    for number, panel in enumerate(model["panels"], start=1):  # Grafana wants each panel's id unique
        panel["id"] = number
    return json.dumps(model, indent=2, sort_keys=True) + "\n"


def queries(model: dict[str, object]) -> list[tuple[str, str]]:
    """(panel title, expression) of every query in a rendered dashboard."""
    found: list[tuple[str, str]] = []
    for panel in model.get("panels") or []:  # type: ignore[attr-defined]
        for target in panel.get("targets") or []:
            found.append((panel["title"], target["expr"]))
    return found
