"""Benchmark (SPEC §9): restore a backup of 10,000 ConfigMaps and Secrets of ~2 KB into a new namespace
and compare the time from CR creation to Final with a parallel create of the same objects (8 threads).

Target: restore <= 1.0 x the parallel create (as fast as the API server lets the best parallel
client go). Run with ``make bench-restore``; results go to bench/results/ as JSON. The stack is the local
one (``.dev-bench/``), with every service as its own process. The create and the restore alternate for
``--rounds`` rounds (3) on one stack, each into fresh namespaces, and the medians are compared: on a
2-core machine the same create took 11.8 s in one round and 16.2 s in the next. Every round records the
CPU seconds the API server, etcd, Redis, the watcher, the restore worker and the create's client (this
process) spent, since on two cores the client's CPU is CPU the API server does not get. The namespaces
are deleted at the end, not between rounds: deleting 10,000 objects would load the next round.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
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
from bench.export import cpu_seconds, cpu_spent, populate
from davit.api.objects import RawObject
from davit.restore.fields import strip_server_assigned

RESULTS = Path(__file__).resolve().parent / "results"
#: Where backups and restores live: the admin namespace, the only one that may restore into another.
#: The reference's parallelism (SPEC §9), the same as the restore's creates per task.
THREADS = 8
TARGET_RATIO = 1.0
#: A backup or restore still running after this long is stuck, not slow (each takes seconds here).
TIMEOUT_SECONDS = 600.0
#: The processes whose CPU time each round records (their names in the stack's ``pids/``).
PROCESSES = ("a-kube-apiserver", "a-etcd", "a-redis", "a-watcher", "a-restore")


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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(".dev-bench"))
    args = parser.parse_args()

    bench = cluster.start(args.dir)
    stack_dir = args.dir.resolve()
    env, api_client = bench.env, bench.api_client
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    suffix = uuid.uuid4().hex[:6]
    source = location = backup_name = f"bench-{suffix}"
    core.create_namespace({"metadata": {"name": source}})
    made_namespaces = [source]
    rounds: list[dict[str, Any]] = []
    try:
        populate(core, source, args.objects)
        store = stack_dir / "local-store" / source
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
        objects = source_objects(api_client, source)
        load_before = [round(x, 2) for x in os.getloadavg()]
        for number in range(1, args.rounds + 1):
            reference, target = f"{source}-create-{number}", f"{source}-restore-{number}"
            restore_name = f"{source}-{number}"
            bodies = creatable(objects, reference)
            core.create_namespace({"metadata": {"name": reference}})
            made_namespaces += [reference, target]
            cpu_before = cpu_seconds(stack_dir, PROCESSES)
            create_seconds = parallel_create(api_client, bodies)
            cpu_created = cpu_seconds(stack_dir, PROCESSES)
            created_at = time.time()
            started = time.perf_counter()
            create_operation(custom, "applicationrestores", "ApplicationRestore", restore_name,
                             {"backupName": backup_name, "backupLocation": location,
                              "namespaceMapping": {source: target}})  # fmt: skip
            restore_seconds, status = wait_final(
                custom, "applicationrestores", restore_name, started, TIMEOUT_SECONDS
            )
            cpu_restored = cpu_seconds(stack_dir, PROCESSES)
            restored = count_restored(api_client, target)
            rounds.append({
                "parallel_create_seconds": round(create_seconds, 3),
                "restore_seconds": round(restore_seconds, 3),
                "ratio": round(restore_seconds / create_seconds, 3), "restore_status": status.get("status"),
                "restore_reason": status.get("reason") or "",
                "resources_by_kind": status.get("resourcesByKind") or {},
                "restored_objects_found": restored,
                "restore_log_seconds_after_creation": phases(env, restore_name, created_at),
                # "bench" is this process: the parallel create's client, then idle while the restore runs.
                "cpu_seconds_create": cpu_spent(cpu_before, cpu_created),
                "cpu_seconds_restore": cpu_spent(cpu_created, cpu_restored),
            })  # fmt: skip
            print(f"round {number}: create {create_seconds:.3f} s, restore {restore_seconds:.3f} s "
                  f"({restore_seconds / create_seconds:.2f} x), {status.get('status')}, {restored:,} found",
                  flush=True)  # fmt: skip
    finally:
        for namespace in made_namespaces:
            try:
                core.delete_namespace(namespace)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
    create_median = statistics.median(r["parallel_create_seconds"] for r in rounds)
    restore_median = statistics.median(r["restore_seconds"] for r in rounds)
    ratio = restore_median / create_median
    complete = all(r["restore_status"] == "Successful" and r["restored_objects_found"] == args.objects
                   for r in rounds)  # fmt: skip
    result = {
        "objects": args.objects,
        "rounds": len(rounds),
        "parallel_create_threads": THREADS,
        "parallel_create_seconds": round(create_median, 3),
        "restore_seconds": round(restore_median, 3),
        "ratio": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "within_target": ratio <= TARGET_RATIO,
        "restore_status": "Successful" if complete else "not every restore Successful and complete",
        "load_average_at_start": load_before,
        "every_round": rounds,
        "backup_seconds": round(backup_seconds, 3),
    }
    peer = f"create, {THREADS} threads"
    each = ", ".join(f"{r['ratio']:.2f}" for r in rounds)
    found = min(r["restored_objects_found"] for r in rounds)
    write_result("restore", result, [
        Row(f"restore of {args.objects:,} ConfigMaps/Secrets (median of {len(rounds)})",
            round(restore_median, 3), "s", round(create_median, 3), peer, f"<= {TARGET_RATIO} x peer",
            ratio <= TARGET_RATIO, f"{ratio:.2f} x the create (medians); each round: {each}"),
        Row("every object restored, status Successful (every round)",
            f"{found:,} / {result['restore_status']}", target=f"{args.objects:,} / Successful", met=complete),
    ])  # fmt: skip
    print(
        f"parallel create ({THREADS} threads): {create_median:.3f} s, restore: {restore_median:.3f} s, "
        f"ratio {ratio:.3f} (medians of {len(rounds)}; target <= {TARGET_RATIO})"
    )
    return 0 if result["within_target"] and complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
