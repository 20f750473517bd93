"""Benchmark (SPEC §9): restore a backup of 10,000 ConfigMaps and Secrets of ~2 KB into a new namespace
and compare the time from CR creation to Final with a parallel create of the same objects (8 threads).

Target: restore <= 1.0 x the parallel create (as fast as the API server lets the best parallel
client go). Run with ``make bench-restore``; results go to
bench/results/ as JSON. The stack is the local one (``.dev-bench/``), with every service as its own
process. Both are measured in the same run on the same stack, the parallel create first, each into a
fresh namespace.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kubernetes import client

from bench import cluster
from bench.cluster import ADMIN, wait_final
from bench.common import Row, write_result
from bench.export import populate
from davit.api.objects import RawObject
from davit.restore.fields import strip_server_assigned

RESULTS = Path(__file__).resolve().parent / "results"
#: Where backups and restores live: the admin namespace, the only one that may restore into another.
#: The reference's parallelism (SPEC §9), the same as the restore's creates per task.
THREADS = 8
TARGET_RATIO = 1.0
#: A backup or restore still running after this long is stuck, not slow (each takes seconds here).
TIMEOUT_SECONDS = 600.0


def _call(api_client: client.ApiClient, method: str, path: str, **kwargs: Any) -> Any:
    """Raw JSON in and out, as the restore itself talks to the API server."""
    response = api_client.call_api(
        path, method, header_params={"Accept": "application/json", "Content-Type": "application/json"},
        auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True, **kwargs,
    )  # fmt: skip
    return json.loads(response.data) if response.data else None


def source_objects(api_client: client.ApiClient, namespace: str) -> list[RawObject]:
    """The benchmark's objects as the API server holds them (what the backup read)."""
    found: list[RawObject] = []
    for plural, kind in (("configmaps", "ConfigMap"), ("secrets", "Secret")):
        token = None
        while True:
            query: list[tuple[str, Any]] = [("limit", 500)] + ([("continue", token)] if token else [])
            body = _call(api_client, "GET", f"/api/v1/namespaces/{namespace}/{plural}", query_params=query)
            for item in body["items"]:
                if item["metadata"]["name"].startswith("obj-"):
                    found.append({**item, "apiVersion": "v1", "kind": kind})
            token = body["metadata"].get("continue")
            if not token:
                break
    return found


def creatable(objects: list[RawObject], namespace: str) -> list[tuple[str, RawObject]]:
    """(collection path, body) per object: without what the API server assigns, in ``namespace`` (what
    the restore creates, less its provenance labels and annotations)."""
    bodies = []
    for obj in objects:
        body = copy.deepcopy(obj)
        strip_server_assigned(body)
        body["metadata"]["namespace"] = namespace
        plural = "configmaps" if body["kind"] == "ConfigMap" else "secrets"
        bodies.append((f"/api/v1/namespaces/{namespace}/{plural}", body))
    return bodies


def parallel_create(api_client: client.ApiClient, bodies: list[tuple[str, RawObject]]) -> float:
    """The reference: every object POSTed, ``THREADS`` in flight over one connection pool."""

    def create(entry: tuple[str, RawObject]) -> None:
        path, body = entry
        _call(api_client, "POST", path, body=body)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(create, bodies))
    return time.perf_counter() - started


def create_operation(
    custom: client.CustomObjectsApi, plural: str, kind: str, name: str, spec: RawObject
) -> None:
    body = {"apiVersion": "davit.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}
    custom.create_namespaced_custom_object("davit.dev", "v1alpha1", ADMIN, plural, body)


def phases(env: dict[str, str], name: str, created: float) -> dict[str, float]:
    """Seconds from the restore's creation to each step of its own log (``davit restore logs``): where
    the time went, for when the target is missed."""
    out = subprocess.run(
        [env["DAVIT"], "restore", "logs", name, "-n", ADMIN],
        env={**os.environ, "KUBECONFIG": env["KUBECONFIG"], "REDIS_URL": env["REDIS_URL"]},
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    found: dict[str, float] = {}
    for line in out.stdout.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event", "").startswith("restore.") and "time" in entry:
            found.setdefault(entry["event"], round(float(entry["time"]) - created, 3))
    return found


def count_restored(api_client: client.ApiClient, namespace: str) -> int:
    return len(source_objects(api_client, namespace))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=Path(".dev-bench"))
    args = parser.parse_args()

    bench = cluster.start(args.dir)
    env, api_client = bench.env, bench.api_client
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    suffix = uuid.uuid4().hex[:6]
    source, reference, target = f"bench-{suffix}", f"bench-{suffix}-create", f"bench-{suffix}-restore"
    location, backup_name, restore_name = f"bench-{suffix}", f"bench-{suffix}", f"bench-{suffix}"
    core.create_namespace({"metadata": {"name": source}})
    made_namespaces = [source]
    try:
        populate(core, source, args.objects)
        store = args.dir.resolve() / "local-store" / source
        store.mkdir(parents=True)
        custom.create_namespaced_custom_object(
            "davit.dev", "v1alpha1", ADMIN, "backuplocations",
            {"apiVersion": "davit.dev/v1alpha1", "kind": "BackupLocation", "metadata": {"name": location},
             "location": {"type": "local", "path": str(store)}},
        )  # fmt: skip
        started = time.perf_counter()
        create_operation(custom, "applicationbackups", "ApplicationBackup", backup_name,
                         {"backupLocation": location, "namespaces": [source]})  # fmt: skip
        backup_seconds, backup_status = wait_final(
            custom, "applicationbackups", backup_name, started, TIMEOUT_SECONDS
        )
        if backup_status.get("status") != "Successful":
            raise SystemExit(f"the backup did not succeed: {backup_status}")

        bodies = creatable(source_objects(api_client, source), reference)
        core.create_namespace({"metadata": {"name": reference}})
        made_namespaces.append(reference)
        create_seconds = parallel_create(api_client, bodies)

        made_namespaces.append(target)
        created_at = time.time()
        started = time.perf_counter()
        create_operation(custom, "applicationrestores", "ApplicationRestore", restore_name,
                         {"backupName": backup_name, "backupLocation": location,
                          "namespaceMapping": {source: target}})  # fmt: skip
        restore_seconds, status = wait_final(
            custom, "applicationrestores", restore_name, started, TIMEOUT_SECONDS
        )
        restored = count_restored(api_client, target)
        steps = phases(env, restore_name, created_at)
    finally:
        for namespace in made_namespaces:
            try:
                core.delete_namespace(namespace)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
    ratio = restore_seconds / create_seconds
    by_kind = status.get("resourcesByKind") or {}
    result = {
        "objects": args.objects,
        "parallel_create_threads": THREADS,
        "parallel_create_seconds": round(create_seconds, 3),
        "restore_seconds": round(restore_seconds, 3),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "within_target": ratio <= TARGET_RATIO,
        "restore_status": status.get("status"),
        "restore_reason": status.get("reason") or "",
        "resources_by_kind": by_kind,
        "restored_objects_found": restored,
        "restore_log_seconds_after_creation": steps,
        "backup_seconds": round(backup_seconds, 3),
    }
    complete = status.get("status") == "Successful" and restored == args.objects
    peer = f"create, {THREADS} threads"
    write_result("restore", result, [
        Row(f"restore of {args.objects:,} ConfigMaps/Secrets", round(restore_seconds, 3), "s",
            round(create_seconds, 3), peer, f"<= {TARGET_RATIO} x peer", ratio <= TARGET_RATIO,
            f"ratio {ratio:.2f}"),
        Row("every object restored, status Successful", f"{restored:,} / {status.get('status')}",
            target=f"{args.objects:,} / Successful", met=complete),
    ])  # fmt: skip
    print(
        f"parallel create ({THREADS} threads): {create_seconds:.3f} s, restore: {restore_seconds:.3f} s, "
        f"ratio {ratio:.3f} (target <= {TARGET_RATIO})"
    )
    return 0 if result["within_target"] and complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
