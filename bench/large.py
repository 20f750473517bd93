"""Benchmark (SPEC §9): back up and restore a namespace of 10,000 and of 100,000 objects, and the memory
every Davit process and Redis needed to do it.

The namespace is mostly ConfigMaps and Secrets of ~2 KB (91%), with Deployments (replicas 0: the
controller adds a ReplicaSet each, no pods), headless Services without a selector (no ClusterIP to
allocate, no Endpoints) and Pods (3% each). The Pods name a scheduler that does not exist, so they stay
Pending and unbound, here and after the restore: no node, and so no dev kubelet, ever sees them (a
``nodeName`` of a missing node would not do: the restore drops ``nodeName``, and the pod garbage
collector deletes pods bound to nodes that do not exist).

For each size, smallest first: populate the namespace (16 threads), back it up (an ApplicationBackup in
the admin namespace to a local BackupLocation), restore it into a new namespace (namespaceMapping),
each timed from CR creation to Final; then count what the target namespace holds per kind against the
source, and delete both namespaces, waiting until they are gone.

Memory: before each phase every process' peak resident set is reset (``clear_refs``), and read after
it, for the watcher, every worker service, each node agent and Redis (the API server and etcd too, for
the record). Redis' own ``used_memory`` at the end of each phase is kept next to its RSS.

Targets: time linear in the number of objects (the 100,000 / 10,000 ratio of each phase at most 12),
and no Davit process or Redis above 300 MB RSS at 100,000 objects. Run with ``make bench-large``;
``--sizes 10000`` runs only the small one. Results go to bench/results/large-<time>.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from kubernetes import client

from bench import cluster
from bench.cluster import ADMIN, wait_final
from bench.common import Row, peak_rss_mb, reset_peak_rss, write_result
from bench.restore import create_operation, phases
from davit.api.objects import RawObject
from devstack.stack import Stack

#: Every object the benchmark makes carries it, and so does its restored copy: what is counted.
BENCH_LABEL = ("app.kubernetes.io/part-of", "davit-bench-large")
POPULATE_THREADS = 16
#: A pod scheduler nobody runs: the pods stay Pending without a node.
NO_SCHEDULER = "davit-bench-no-scheduler"
#: How the namespace is made up; ConfigMaps and Secrets share what is left.
SHARE_DEPLOYMENTS = SHARE_SERVICES = SHARE_PODS = 0.03
PAYLOAD_BYTES = 2000
#: Linear growth makes the 100,000 / 10,000 ratio 10; a little more is allowed for the noise of a
#: loaded 2-core machine and for the larger pages' heavier garbage collection.
MAX_TIME_RATIO = 12.0
MAX_RSS_MB = 300.0
#: A phase still running after this long is stuck, not slow: far beyond the ~1 ms per object seen.
TIMEOUT_SECONDS_PER_OBJECT = 0.05
MIN_TIMEOUT_SECONDS = 600.0
NAMESPACE_GONE_TIMEOUT_SECONDS = 1800.0

#: (plural, kind, path of the collection under a namespace); the kinds counted in source and target.
KINDS: tuple[tuple[str, str, str], ...] = (
    ("configmaps", "ConfigMap", "/api/v1/namespaces/{ns}/configmaps"),
    ("secrets", "Secret", "/api/v1/namespaces/{ns}/secrets"),
    ("deployments", "Deployment", "/apis/apps/v1/namespaces/{ns}/deployments"),
    ("services", "Service", "/api/v1/namespaces/{ns}/services"),
    ("pods", "Pod", "/api/v1/namespaces/{ns}/pods"),
)
PATHS = {plural: path for plural, _, path in KINDS}


def _call(api_client: client.ApiClient, method: str, path: str, **kwargs: Any) -> Any:
    """Raw JSON in and out: the benchmark's own client must not spend the CPU the stack needs on the
    typed client's deserialisation of 100,000 responses."""
    response = api_client.call_api(
        path, method, header_params={"Accept": "application/json", "Content-Type": "application/json"},
        auth_settings=["BearerToken"], _preload_content=False, _return_http_data_only=True, **kwargs,
    )  # fmt: skip
    return json.loads(response.data) if response.data else None


def plan(total: int) -> dict[str, int]:
    """How many objects of each kind make up ``total``."""
    deployments, services, pods = (
        int(total * SHARE_DEPLOYMENTS),
        int(total * SHARE_SERVICES),
        int(total * SHARE_PODS),
    )
    rest = total - deployments - services - pods
    return {
        "configmaps": rest - rest // 2,
        "secrets": rest // 2,
        "deployments": deployments,
        "services": services,
        "pods": pods,
    }


def body(plural: str, index: int, payload: str) -> RawObject:
    labels = {BENCH_LABEL[0]: BENCH_LABEL[1]}
    name = f"{plural[:-1]}-{index:06d}"
    metadata = {"name": name, "labels": labels}
    if plural == "configmaps":
        return {"metadata": metadata, "data": {"v": payload}}
    if plural == "secrets":
        return {"metadata": metadata, "stringData": {"v": payload}}
    container = {"name": "app", "image": "registry.invalid/app:1", "ports": [{"containerPort": 8080}]}
    if plural == "deployments":
        selected = {"app": name}
        return {
            "metadata": metadata,
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": selected},
                "template": {"metadata": {"labels": selected}, "spec": {"containers": [container]}},
            },
        }
    if plural == "services":
        return {
            "metadata": metadata,
            "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        }
    return {
        "metadata": metadata,
        "spec": {
            "schedulerName": NO_SCHEDULER,
            "automountServiceAccountToken": False,
            "containers": [container],
        },
    }


def populate(api_client: client.ApiClient, namespace: str, counts: dict[str, int]) -> float:
    """Create every object, ``POPULATE_THREADS`` in flight; returns the seconds it took."""
    payload = "x" * PAYLOAD_BYTES
    work = [(plural, i) for plural, count in counts.items() for i in range(count)]

    def create(entry: tuple[str, int]) -> None:
        plural, index = entry
        _call(api_client, "POST", PATHS[plural].format(ns=namespace), body=body(plural, index, payload))

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=POPULATE_THREADS) as pool:
        list(pool.map(create, work, chunksize=64))
    return time.perf_counter() - started


def count(api_client: client.ApiClient, namespace: str) -> dict[str, int]:
    """The benchmark's objects per kind in ``namespace`` (paginated, 500 per page)."""
    found: dict[str, int] = {}
    selector = f"{BENCH_LABEL[0]}={BENCH_LABEL[1]}"
    for plural, _, path in KINDS:
        total, token = 0, None
        while True:
            query: list[tuple[str, Any]] = [("limit", 500), ("labelSelector", selector)]
            if token:
                query.append(("continue", token))
            page = _call(api_client, "GET", path.format(ns=namespace), query_params=query)
            total += len(page["items"])
            token = page["metadata"].get("continue")
            if not token:
                break
        found[plural] = total
    return found


def wait_for_service_account(core: client.CoreV1Api, namespace: str, timeout: float = 60.0) -> None:
    """Pods are refused until the namespace's ``default`` ServiceAccount exists (its controller makes it
    a moment after the namespace)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            core.read_namespaced_service_account("default", namespace)
            return
        except client.ApiException as exc:
            if exc.status != 404:
                raise
        time.sleep(0.1)  # no watch for one object that appears within a second
    raise SystemExit(f"no default ServiceAccount in {namespace} after {timeout:.0f} s")


def delete_namespaces(core: client.CoreV1Api, namespaces: list[str]) -> None:
    for namespace in namespaces:
        try:
            core.delete_namespace(namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise


def wait_gone(core: client.CoreV1Api, namespaces: list[str]) -> float:
    """Wait until the API server no longer has ``namespaces``; returns the seconds."""
    started = time.perf_counter()
    remaining = list(namespaces)
    while remaining:
        if time.perf_counter() - started > NAMESPACE_GONE_TIMEOUT_SECONDS:
            raise SystemExit(
                f"namespaces {remaining} still there after {NAMESPACE_GONE_TIMEOUT_SECONDS:.0f} s"
            )
        for namespace in list(remaining):
            try:
                core.read_namespace(namespace)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
                remaining.remove(namespace)
        if remaining:
            time.sleep(1.0)  # the namespace controller deletes 100,000 objects: minutes, not milliseconds
    return time.perf_counter() - started


@dataclass(frozen=True)
class Measured:
    """A process whose memory is measured, by its name in the stack's process table."""

    name: str
    pid: int
    #: In the target: the Davit services and Redis. The API server and etcd are kept for the record.
    counted: bool


class Memory:
    """Peak RSS of the stack's processes over one phase, and Redis' own accounting at its end."""

    def __init__(self, stack: Stack, redis_url: str) -> None:
        self.redis = redis.Redis.from_url(redis_url, socket_timeout=30)
        counted = [*stack.service_processes("a"), Stack.redis_process("a")]
        record_only = ["a-kube-apiserver", "a-etcd"]
        self.processes: list[Measured] = []
        for name in counted + record_only:
            recorded = stack.procs.get(name)
            if recorded is None or not recorded.alive():
                raise SystemExit(f"{name} is not running in {stack.dir}")
            self.processes.append(Measured(name, recorded.pid, name in counted))

    def start(self) -> None:
        for process in self.processes:
            if not reset_peak_rss(process.pid):
                raise SystemExit(f"cannot reset the peak RSS of {process.name} (pid {process.pid})")

    def end(self) -> dict[str, Any]:
        peaks = {process.name: peak_rss_mb(process.pid) for process in self.processes}
        counted = {p.name: peaks[p.name] for p in self.processes if p.counted}
        known = {name: mb for name, mb in counted.items() if mb is not None}
        top = max(known, key=lambda name: known[name]) if known else None
        info = self.redis.info("memory")
        return {
            "peak_rss_mb": peaks,
            "max_peak_rss_mb": known[top] if top else None,
            "max_peak_process": top,
            "redis_used_memory_mb_at_end": round(int(info["used_memory"]) / 1e6, 1),
            # Since Redis started: nothing resets it (CONFIG RESETSTAT leaves it), so only its growth
            # from one phase to the next says something.
            "redis_used_memory_peak_mb_since_start": round(int(info["used_memory_peak"]) / 1e6, 1),
        }


def run_size(
    objects: int,
    stack_dir: Path,
    api_client: client.ApiClient,
    env: dict[str, str],
    memory: Memory,
    wait_for_deletion: bool,
) -> dict[str, Any]:
    """One size end to end. ``wait_for_deletion``: wait until both namespaces are gone, so that the next
    size does not share the API server with the namespace controller's deletes (at 100,000 objects that
    takes longer than the size's own run on a loaded machine, so the last size does not wait)."""
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    counts = plan(objects)
    timeout = max(MIN_TIMEOUT_SECONDS, objects * TIMEOUT_SECONDS_PER_OBJECT)
    suffix = uuid.uuid4().hex[:6]
    source, target = f"large-{suffix}", f"large-{suffix}-restore"
    name = f"large-{suffix}"
    store = stack_dir.resolve() / "local-store" / source
    result: dict[str, Any] = {"objects": objects, "created": counts, "source": source, "target": target}
    core.create_namespace({"metadata": {"name": source}})
    try:
        wait_for_service_account(core, source)
        print(f"[{objects}] populating {source}: {counts}", flush=True)
        result["populate_seconds"] = round(populate(api_client, source, counts), 3)
        result["source_counts"] = count(api_client, source)
        print(
            f"[{objects}] populated in {result['populate_seconds']} s: {result['source_counts']}", flush=True
        )

        store.mkdir(parents=True)
        custom.create_namespaced_custom_object(
            "davit.dev", "v1alpha1", ADMIN, "backuplocations",
            {"apiVersion": "davit.dev/v1alpha1", "kind": "BackupLocation", "metadata": {"name": name},
             "location": {"type": "local", "path": str(store)}},
        )  # fmt: skip

        memory.start()
        started = time.perf_counter()
        create_operation(custom, "applicationbackups", "ApplicationBackup", name,
                         {"backupLocation": name, "namespaces": [source]})  # fmt: skip
        seconds, status = wait_final(custom, "applicationbackups", name, started, timeout)
        result["export"] = {
            "seconds": round(seconds, 3),
            "status": status.get("status"),
            "reason": status.get("reason") or "",
            "resource_count": status.get("resourceCount"),
            "total_size": status.get("totalSize"),
            "stored_size": status.get("storedSize"),
            "memory": memory.end(),
            "load_average": [round(x, 2) for x in _loadavg()],
        }
        print(f"[{objects}] export: {json.dumps(result['export'])}", flush=True)
        if status.get("status") != "Successful":
            raise SystemExit(f"the backup did not succeed: {status}")

        memory.start()
        created_at = time.time()
        started = time.perf_counter()
        create_operation(custom, "applicationrestores", "ApplicationRestore", name,
                         {"backupName": name, "backupLocation": name,
                          "namespaceMapping": {source: target}})  # fmt: skip
        seconds, status = wait_final(custom, "applicationrestores", name, started, timeout)
        result["restore"] = {
            "seconds": round(seconds, 3),
            "status": status.get("status"),
            "reason": status.get("reason") or "",
            "resources_by_kind": status.get("resourcesByKind") or {},
            "memory": memory.end(),
            "load_average": [round(x, 2) for x in _loadavg()],
            "log_seconds_after_creation": phases(env, name, created_at),
        }
        print(f"[{objects}] restore: {json.dumps(result['restore'])}", flush=True)
        result["target_counts"] = count(api_client, target)
        print(f"[{objects}] restored: {result['target_counts']}", flush=True)
        result["complete"] = (
            status.get("status") == "Successful" and result["target_counts"] == result["source_counts"]
        )
    finally:
        delete_namespaces(core, [source, target])
        if wait_for_deletion:
            result["namespace_deletion_seconds"] = round(wait_gone(core, [source, target]), 3)
        shutil.rmtree(store, ignore_errors=True)
    return result


def _loadavg() -> tuple[float, float, float]:
    with open("/proc/loadavg") as f:
        one, five, fifteen = f.read().split()[:3]
    return float(one), float(five), float(fifteen)


def rows(sizes: list[dict[str, Any]]) -> list[Row]:
    out: list[Row] = []
    for size in sizes:
        n = size["objects"]
        for phase in ("export", "restore"):
            if phase not in size:
                continue
            measured = size[phase]
            out.append(
                Row(
                    f"{phase} of {n:,} objects, CR created → Final",
                    measured["seconds"],
                    "s",
                    note=f"{measured['status']}; load {measured['load_average'][0]}",
                )
            )
    by_count = {size["objects"]: size for size in sizes}
    small, large = by_count.get(10_000), by_count.get(100_000)
    for phase in ("export", "restore"):
        if small and large and phase in small and phase in large:
            ratio = large[phase]["seconds"] / small[phase]["seconds"]
            out.append(
                Row(
                    f"{phase}: time at 100,000 / time at 10,000 objects",
                    round(ratio, 2),
                    "x",
                    target=f"<= {MAX_TIME_RATIO:g} (linear: 10)",
                    met=ratio <= MAX_TIME_RATIO,
                )
            )
    biggest = max(sizes, key=lambda size: size["objects"]) if sizes else None
    for phase in ("export", "restore"):
        if biggest is None or phase not in biggest:
            continue
        memory = biggest[phase]["memory"]
        top = memory["max_peak_rss_mb"]
        at_target = biggest["objects"] >= 100_000
        out.append(
            Row(
                f"{phase} of {biggest['objects']:,} objects: max peak RSS of the Davit services and Redis",
                top,
                "MB",
                target=f"< {MAX_RSS_MB:g} MB at 100,000 objects",
                met=(top is not None and top < MAX_RSS_MB) if at_target else None,
                note=f"{memory['max_peak_process']}",
            )
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000])
    parser.add_argument("--dir", type=Path, default=Path(".dev-bench"))
    args = parser.parse_args()

    # The benchmark's own client has no rate limit: populating 100,000 objects at the services' 50
    # requests a second would take half an hour.
    bench = cluster.start(args.dir)
    env, api_client = bench.env, bench.api_client
    memory = Memory(bench.stack, env["REDIS_URL"])

    sizes = sorted(args.sizes)
    results = [
        run_size(objects, args.dir, api_client, env, memory, wait_for_deletion=i < len(sizes) - 1)
        for i, objects in enumerate(sizes)
    ]
    table = rows(results)
    write_result(
        "large", {"sizes": results, "max_rss_mb": MAX_RSS_MB, "max_time_ratio": MAX_TIME_RATIO}, table
    )
    complete = all(size.get("complete") for size in results)
    return 0 if complete and all(row.met is not False for row in table) else 1


if __name__ == "__main__":
    raise SystemExit(main())
