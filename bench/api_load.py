"""Benchmark: what an idle watcher and exporter ask of the API server with 5,000 finished backups.

Ten idle minutes (``--minutes``) of a watcher and an exporter, each its own process with the default
resync of 60 s; then the LISTs of applicationbackups are counted twice, by the API server itself: its
``apiserver_request_total`` (every LIST request, pages included) and its audit log (per component, by
user agent: lists begun, pages, and requests without a ``limit``). Target: at most 2 lists per component,
every request with ``limit``.

``--code`` runs the services from another checkout's ``shared/`` and ``services/`` (e.g. a worktree of
an earlier commit), so the same stack measures before and after. ``make bench-api``; results go to
bench/results/ as JSON.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from bench.common import Row, write_result
from davit import timeutil
from davit.constants import API_GROUP, API_VERSION, PLURALS, Kind
from davit.kube import clients
from devstack.audit import count_lists
from devstack.net import free_port
from devstack.stack import Stack

PLURAL = PLURALS[Kind.APPLICATION_BACKUP]
TARGET_LISTS = 2


def populate(custom: client.CustomObjectsApi, namespace: str, count: int) -> None:
    finished = timeutil.format_time(timeutil.utcnow())

    def make(i: int) -> None:
        name = f"b{i:05d}"
        body = {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": "ApplicationBackup",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"backupLocation": "loc", "namespaces": [namespace]}}  # fmt: skip
        custom.create_namespaced_custom_object(API_GROUP, API_VERSION, namespace, PLURAL, body)
        status = {"stage": "Final", "status": "Successful", "triggerTimestamp": finished,
                  "finishTimestamp": finished, "totalSize": 1000, "storedSize": 100}  # fmt: skip
        custom.patch_namespaced_custom_object_status(
            API_GROUP, API_VERSION, namespace, PLURAL, name, {"status": status}
        )

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(make, range(count)))


def list_requests(api: client.ApiClient) -> float:
    """apiserver_request_total of LISTs of applicationbackups so far, every code and scope."""
    response = api.call_api("/metrics", "GET", auth_settings=["BearerToken"], _preload_content=False,
                            _return_http_data_only=True)  # fmt: skip
    total = 0.0
    for family in text_string_to_metric_families(response.data.decode()):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "apiserver_request_total"
                and labels.get("resource") == PLURAL
                and labels.get("verb") == "LIST"
            ):
                total += sample.value
    return total


def start(module: str, env: dict[str, str], code: Path | None, log: Path) -> subprocess.Popen[bytes]:
    if code is not None:
        env = {**env, "PYTHONPATH": f"{code / 'shared'}{os.pathsep}{code / 'services'}"}
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", module], env=env, stdout=out, stderr=subprocess.STDOUT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backups", type=int, default=5000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--dir", type=Path, default=Path(".dev-bench"))
    parser.add_argument("--code", type=Path, default=None, help="run the services from this checkout")
    parser.add_argument("--label", default="", help="a name for this run in the results")
    args = parser.parse_args()

    stack = Stack(args.dir)
    state = stack.up(clusters=1, with_services=False)
    env = stack.env(state)
    api = clients.api_client(env["KUBECONFIG"], qps=0)  # populating 5,000 backups is not what is measured
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    namespace = f"bench-api-{int(time.time())}"
    core.create_namespace({"metadata": {"name": namespace}})
    populate(custom, namespace, args.backups)

    log_dir = args.dir / "bench-api-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    since = timeutil.utcnow().isoformat().replace("+00:00", "Z")
    before = list_requests(api)
    service_env = {
        **os.environ,
        "DAVIT_KUBECONFIG": env["KUBECONFIG"],
        "DAVIT_REDIS_URL": env["REDIS_URL"],
        "DAVIT_LEASE_NAME": f"davit-bench-{namespace}",
        "DAVIT_METRICS_ADDRESS": f"127.0.0.1:{free_port()}",
        "DAVIT_HEARTBEAT_FILE": str(log_dir / "heartbeat"),
    }
    procs = [
        start("davit_services.watcher", service_env, args.code, log_dir / "watcher.log"),
        start("davit_services.exporter", service_env, args.code, log_dir / "exporter.log"),
    ]
    started = time.monotonic()
    try:
        while time.monotonic() - started < args.minutes * 60:
            if any(p.poll() is not None for p in procs):
                raise SystemExit(f"a service exited; logs in {log_dir}")
            time.sleep(5)  # the measurement is of idle time itself
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
    after = list_requests(api)
    counted = count_lists(Path(env["AUDIT_LOG"]), PLURAL, since=since)
    core.delete_namespace(namespace)

    components: dict[str, Any] = {
        name: {"lists": c.lists, "pages": c.pages, "requests_without_limit": c.unlimited}
        for name, c in sorted(counted.items())
        # Every client that listed, Davit's by their user agent (earlier releases sent the client
        # library's default); the controller manager's list is the namespace deletion's.
        if not name.startswith("kube-")
    }
    within = all(
        c["lists"] <= TARGET_LISTS and c["requests_without_limit"] == 0 for c in components.values()
    ) and {"davit-watcher", "davit-exporter"} <= set(components)
    result = {
        "label": args.label,
        "backups": args.backups,
        "idle_minutes": args.minutes,
        "apiserver_request_total_list_delta": after - before,
        "components": components,
        "target": f"<= {TARGET_LISTS} lists per component, each with limit",
        "within_target": within,
    }
    rows = [
        Row(f"LISTs by {name} in {args.minutes:g} idle minutes, {args.backups:,} finished backups",
            c["lists"], target=f"<= {TARGET_LISTS}, each paginated",
            met=c["lists"] <= TARGET_LISTS and c["requests_without_limit"] == 0,
            note=f"{c['pages']} pages, {c['requests_without_limit']} without limit")
        for name, c in components.items()
    ]  # fmt: skip
    write_result("api-load", result, rows)
    return 0 if within else 1


if __name__ == "__main__":
    raise SystemExit(main())
