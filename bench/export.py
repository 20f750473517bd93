"""Benchmark (SPEC §9): back up a namespace of 10,000 ConfigMaps and Secrets of ~2 KB and compare the
time from CR creation to Successful with a raw paginated list of the same objects.

Target: backup <= 2 x list + 1 s. Run with ``make bench-export``; results go to bench/results/ as JSON.
The stack is the local one (``.dev-bench/``), with every service as its own process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client

from davit.kube import clients
from devstack.stack import Stack

RESULTS = Path(__file__).resolve().parent / "results"


def populate(api: client.CoreV1Api, namespace: str, count: int) -> None:
    payload = "x" * 2000

    def create(i: int) -> None:
        body = {"metadata": {"name": f"obj-{i:05d}"}, "data": {"v": payload}}
        if i % 2:
            api.create_namespaced_config_map(namespace, body)
        else:
            api.create_namespaced_secret(namespace, {**body, "stringData": body.pop("data")})

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(create, range(count)))


def raw_list(api_client: client.ApiClient, namespace: str) -> tuple[float, int]:
    """The reference: a paginated list of both kinds, as JSON, 500 per page."""
    started = time.perf_counter()
    total = 0
    for plural in ("configmaps", "secrets"):
        token = None
        while True:
            query: list[tuple[str, Any]] = [("limit", 500)] + ([("continue", token)] if token else [])
            response = api_client.call_api(
                f"/api/v1/namespaces/{namespace}/{plural}", "GET", query_params=query,
                header_params={"Accept": "application/json"}, auth_settings=["BearerToken"],
                _preload_content=False, _return_http_data_only=True,
            )  # fmt: skip
            body = json.loads(response.data)
            total += len(body["items"])
            token = body["metadata"].get("continue")
            if not token:
                break
    return time.perf_counter() - started, total


def backup(custom: client.CustomObjectsApi, namespace: str, store: Path) -> tuple[float, dict[str, Any]]:
    custom.create_namespaced_custom_object(
        "davit.dev", "v1alpha1", namespace, "backuplocations",
        {"apiVersion": "davit.dev/v1alpha1", "kind": "BackupLocation", "metadata": {"name": "bench"},
         "location": {"type": "local", "path": str(store)}},
    )  # fmt: skip
    name = f"bench-{uuid.uuid4().hex[:6]}"
    started = time.perf_counter()
    custom.create_namespaced_custom_object(
        "davit.dev", "v1alpha1", namespace, "applicationbackups",
        {"apiVersion": "davit.dev/v1alpha1", "kind": "ApplicationBackup", "metadata": {"name": name},
         "spec": {"backupLocation": "bench", "namespaces": [namespace]}},
    )  # fmt: skip
    while True:
        obj = custom.get_namespaced_custom_object(
            "davit.dev", "v1alpha1", namespace, "applicationbackups", name
        )
        status = obj.get("status") or {}
        if status.get("stage") == "Final":
            return time.perf_counter() - started, status
        time.sleep(0.05)  # polling for the end state; the interval bounds the measurement's resolution


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=Path(".dev-bench"))
    args = parser.parse_args()

    stack = Stack(args.dir)
    state = stack.up(clusters=1, with_services=True)
    env = stack.env(state)
    api_client = clients.api_client(env["KUBECONFIG"])
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        populate(core, namespace, args.objects)
        raw_list(api_client, namespace)  # warm the API server's caches once, as the backup would find them
        list_seconds, listed = raw_list(api_client, namespace)
        store = args.dir.resolve() / "local-store" / namespace
        store.mkdir(parents=True)
        backup_seconds, status = backup(custom, namespace, store)
    finally:
        core.delete_namespace(namespace)
    target = 2 * list_seconds + 1
    result = {
        "benchmark": "export",
        "objects": args.objects,
        "listed": listed,
        "raw_list_seconds": round(list_seconds, 3),
        "backup_seconds": round(backup_seconds, 3),
        "target_seconds": round(target, 3),
        "within_target": backup_seconds <= target,
        "backup_status": status.get("status"),
        "resource_count": status.get("resourceCount"),
        "total_size": status.get("totalSize"),
        "stored_size": status.get("storedSize"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"export-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {out}")
    return 0 if result["within_target"] and status.get("status") == "Successful" else 1


if __name__ == "__main__":
    raise SystemExit(main())
