"""Benchmark: the memory of planning a restore, part by part against whole, without a stack.

Each mode runs in a process of its own over the same backup of ``--objects`` objects, made as the export
stores them (one kind per part, pages of 500: 91% ConfigMaps and Secrets of ~2 KB, 3% each Deployments,
Services and Pods) and generated part by part as a reader would fetch them, so that the only bodies in
memory are the ones the planner keeps. Measured: the process' peak RSS and the bytes the plan puts into the
scratch state (Redis), for ``plan_parts`` with objects created by reference (what the restore service does)
and for ``plan_restore`` over the whole backup in memory (what it did before, and what clones still do).

Target: the part-by-part plan of 100,000 objects keeps the planning worker under 300 MB with the service's
own ~140 MB of code and libraries (so under 160 MB here). Run with ``make bench-plan``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import time
from typing import Any

from bench.common import Row, write_result

PAGE = 500
NAMESPACE = "big"
#: What one of the services weighs before it does anything (watcher, workers: 137-144 MB measured by
#: ``make bench-large``): the planner's own peak is added to it.
SERVICE_BASELINE_MB = 145.0
TARGET_MB = 300.0


def make(i: int) -> dict[str, Any]:
    meta = {"name": f"obj-{i:06d}", "namespace": NAMESPACE, "uid": f"uid-{i}", "resourceVersion": "1"}
    bucket = i % 100
    if bucket < 91:
        kind = "ConfigMap" if i % 2 else "Secret"
        return {"apiVersion": "v1", "kind": kind, "metadata": meta, "data": {"v": f"{i:08d}" * 240}}
    if bucket < 94:
        labels = {"app": f"app-{i}"}
        template = {
            "metadata": {"labels": labels},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }
        spec = {"replicas": 0, "selector": {"matchLabels": labels}, "template": template}
        return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}
    if bucket < 97:
        return {"apiVersion": "v1", "kind": "Service", "metadata": meta,
                "spec": {"clusterIP": "None", "ports": [{"port": 80}]}}  # fmt: skip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "status": {"phase": "Pending"},
            "spec": {"schedulerName": "none", "containers": [{"name": "c", "image": "busybox"}]}}  # fmt: skip


def parts_of(count: int) -> dict[str, range | list[int]]:
    by_kind: dict[str, list[int]] = {}
    for i in range(count):
        by_kind.setdefault(str(make(i)["kind"]), []).append(i)
    return {
        f"{kind}#{p // PAGE}": ids[p : p + PAGE]
        for kind, ids in by_kind.items()
        for p in range(0, len(ids), PAGE)
    }


def measure(mode: str, count: int) -> dict[str, Any]:
    """One mode, in this process (run by ``main`` in a child of its own)."""
    from davit.restore.plan import kept_whole, plan_parts, plan_restore

    parts = parts_of(count)

    def read(key: str) -> tuple[list[dict[str, Any]], str]:
        raw = json.dumps([make(i) for i in parts[key]]).encode()
        return json.loads(raw), hashlib.blake2b(raw, digest_size=16).hexdigest()

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    spec = {"namespaceMapping": {NAMESPACE: f"{NAMESPACE}-copy"}}
    names: dict[str, Any] = {
        "backup_name": "b",
        "backup_uid": "b-uid",
        "restore_name": "r",
        "restore_uid": "r-uid",
    }
    if mode == "parts":
        streamed = plan_parts(list(parts), read, spec, cluster_scoped_allowed=True, chunk_objects=500,
                              by_reference=lambda g, k: not kept_whole(g, k), **names)  # fmt: skip
        planned = streamed.count
        scratch = sum(len(json.dumps(c.to_dict())) for c in streamed.referenced)
        scratch += len(json.dumps([{"object": o} for o in streamed.plan.objects]))
    else:
        everything = [o for key in parts for o in read(key)[0]]
        plan = plan_restore(everything, spec, cluster_scoped_allowed=True, **names)
        planned = len(plan.objects)
        scratch = len(json.dumps([{"object": o} for o in plan.objects]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = round(time.perf_counter() - started, 2)
    return {"mode": mode, "objects": count, "planned": planned, "seconds": seconds,
            "peak_rss_mb": round(peak * 1024 / 1e6, 1), "rss_before_mb": round(before * 1024 / 1e6, 1),
            "scratch_state_bytes": scratch}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--measure", choices=("parts", "whole"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.objects)))
        return 0
    runs = {}
    for mode in ("parts", "whole"):
        out = subprocess.run([sys.executable, "-m", "bench.plan_memory", "--measure", mode, "--objects",
                              str(args.objects)], capture_output=True, text=True, check=True)  # fmt: skip
        runs[mode] = json.loads(out.stdout.strip().splitlines()[-1])
    parts, whole = runs["parts"], runs["whole"]
    grown = parts["peak_rss_mb"] - parts["rss_before_mb"]
    worker = SERVICE_BASELINE_MB + grown
    rows = [
        Row(f"planning {args.objects:,} objects: peak RSS of the planner", parts["peak_rss_mb"], "MB",
            whole["peak_rss_mb"], "the whole backup in memory", note=f"{grown:.0f} MB above the interpreter"),
        Row("a restore worker planning them (service baseline + planner)", round(worker, 1), "MB",
            target=f"< {TARGET_MB:.0f} MB", met=worker < TARGET_MB),
        Row("scratch state the plan writes to Redis", round(parts["scratch_state_bytes"] / 1e6, 1), "MB",
            round(whole["scratch_state_bytes"] / 1e6, 1), "every body in Redis"),
        Row("planning time", parts["seconds"], "s", whole["seconds"], "the whole backup in memory"),
    ]  # fmt: skip
    write_result("plan-memory", {"objects": args.objects, "runs": runs,
                                 "service_baseline_mb": SERVICE_BASELINE_MB}, rows)  # fmt: skip
    return 0 if worker < TARGET_MB and parts["planned"] == whole["planned"] == args.objects else 1


if __name__ == "__main__":
    raise SystemExit(main())
