"""Benchmark (SPEC §9): horizontal scaling. Many namespaces of ConfigMaps and Secrets (~2 KB each) are
backed up, one ApplicationBackup per namespace, all created at once, first with one resource-export
worker and then with two; then restored (one ApplicationRestore per namespace, into new namespaces) with
one restore worker and then with two. Each time is from creating the first custom resource to all of
them Final, and every one must be Successful.

The backups go to an S3 location (the stack's S3 emulator) through a loopback proxy that delays every
request by ``--latency-ms`` (``bench.latency_proxy``), so that the work is bound by the store's round
trips as against a cloud store, not by a loopback store answering in microseconds; the injected latency
is checked by timing HEAD requests with and without the proxy.

Target: two workers at least 1.6x as fast as one, for backup and for restore. Alongside: every stack
process' CPU time during each run (from ``/proc/<pid>/stat``, so the next bottleneck can be named) and
the peak resident memory of the workers, the watcher and Redis. Run with ``make bench-scaling``
(50 namespaces x 2,000 objects); ``python -m bench.scaling --namespaces 10 --objects 500`` for a quick
one. Results go to bench/results/ as JSON.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from kubernetes import client

from bench import cluster, latency_proxy
from bench.cluster import ADMIN
from bench.common import Row, peak_rss_mb, reset_peak_rss, write_result
from bench.export import populate
from bench.restore import count_restored
from davit.operations import queueing
from davit.settings import Settings
from devstack.net import free_port, port_open, wait_until
from devstack.stack import REPO_ROOT, Stack, StackState

#: Where the backups and restores live: the admin namespace, which may back up and restore any other.
GROUP, VERSION = "davit.dev", "v1alpha1"
TARGET_SPEEDUP = 1.6
#: The process name of the latency proxy in the stack's process table: ``devstack down`` stops it too.
PROXY_PROCESS = "bench-latency-proxy"
#: The services scaled, by the queue they consume: resource-export (backups), restore.
EXPORT_SERVICE, RESTORE_SERVICE = "resources", "restore"
#: A phase still running after this long is stuck, not slow.
TIMEOUT_SECONDS = 3600.0
#: The label that tells one run's operations from another's.
RUN_LABEL = "bench.davit.dev/scaling"
#: Where a process' peak memory is compared with SPEC §9's limit (for a 100,000-object namespace).
RSS_LIMIT_MB = 300.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- CPU and memory of the stack's processes ------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads), from ``/proc/<pid>/stat``."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15


def run_queue_wait_seconds(pid: int) -> float | None:
    """Seconds the process' threads spent runnable but waiting for a CPU (``/proc/<pid>/task/*/schedstat``,
    second field), summed: how much a busy machine held the process back, apart from its own I/O waits.
    A thread that ends between two readings takes its share with it."""
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return total / 1e9


def machine_busy_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores (``/proc/stat``)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    total = sum(values[:8])  # up to steal; guest time is already counted in user
    return (total - idle) / CLOCK_TICKS, total / CLOCK_TICKS


def stack_pids(stack: Stack) -> dict[str, int]:
    """The live processes of the stack's process table by name, and this benchmark's own process."""
    pids = {record.name: record.pid for record in stack.procs.all() if record.alive()}
    pids["bench-driver"] = os.getpid()
    return pids


@dataclass
class CpuSample:
    pids: dict[str, int]
    started: float = field(default_factory=time.perf_counter)
    before: dict[str, float] = field(default_factory=dict)
    waited_before: dict[str, float] = field(default_factory=dict)
    machine_before: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        self.before = {n: s for n, pid in self.pids.items() if (s := cpu_seconds(pid)) is not None}
        self.waited_before = {
            n: w for n, pid in self.pids.items() if (w := run_queue_wait_seconds(pid)) is not None
        }
        self.machine_before = machine_busy_seconds()

    def finish(self) -> dict[str, Any]:
        """CPU per process over the sample as percent of one core (100 = one core busy all along), the
        busiest first, and the whole machine's busy share (of all its cores)."""
        wall = time.perf_counter() - self.started
        used, waited = {}, {}
        for name, pid in self.pids.items():
            after = cpu_seconds(pid)
            if after is not None and name in self.before:
                used[name] = after - self.before[name]
            waited_after = run_queue_wait_seconds(pid)
            if waited_after is not None and name in self.waited_before:
                waited[name] = waited_after - self.waited_before[name]
        busy_after, total_after = machine_busy_seconds()
        busy = busy_after - self.machine_before[0]
        total = total_after - self.machine_before[1]
        ranked = sorted(used.items(), key=lambda item: item[1], reverse=True)
        return {
            "wall_seconds": round(wall, 3),
            "cpu_seconds": {n: round(s, 2) for n, s in ranked},
            "cpu_percent_of_one_core": {n: round(100 * s / wall, 1) for n, s in ranked if wall > 0},
            "stack_cpu_seconds": round(sum(used.values()), 2),
            # Thread-seconds runnable but not running: a process held back by the machine, not by I/O.
            "run_queue_wait_seconds": {n: round(waited[n], 2) for n, _ in ranked if n in waited},
            "machine_busy_percent": round(100 * busy / total, 1) if total > 0 else None,
            "machine_cores": os.cpu_count(),
        }


def memory_pids(stack: Stack) -> dict[str, int]:
    """The processes whose peak memory SPEC §9 limits: the workers, the watcher and Redis."""
    names = {"a-watcher", "a-redis"}
    return {
        n: pid
        for n, pid in stack_pids(stack).items()
        if n in names or n.startswith((f"a-{EXPORT_SERVICE}", f"a-{RESTORE_SERVICE}", "a-backup"))
    }


# --- the location and its latency ---------------------------------------------------------------


def start_proxy(stack: Stack, upstream: str, latency_ms: float) -> tuple[str, Path]:
    """The latency proxy as a process of the stack (so ``down`` stops it); returns its URL and stats
    file."""
    stack.procs.stop(PROXY_PROCESS)  # one left by an earlier run on a stack kept running
    port = free_port()
    stats_file = stack.dir / "latency-proxy.json"
    stats_file.unlink(missing_ok=True)
    stack.procs.start(
        PROXY_PROCESS,
        [sys.executable, "-m", "bench.latency_proxy", "--upstream", upstream, "--port", str(port),
         "--delay-ms", str(latency_ms), "--stats-file", str(stats_file)],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, cwd=REPO_ROOT,
    )  # fmt: skip
    wait_until("latency proxy", lambda: port_open(port), 20, lambda: stack.procs.log_tail(PROXY_PROCESS))
    return f"http://127.0.0.1:{port}", stats_file


def head_milliseconds(env: dict[str, str], endpoint: str, bucket: str, times: int = 30) -> list[float]:
    """Times of signed HEADs of the bucket at ``endpoint`` on a warm connection, in ms, sorted."""
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name=env["S3_REGION"],
        aws_access_key_id=env["S3_ACCESS_KEY"], aws_secret_access_key=env["S3_SECRET_KEY"],
        config=Config(retries={"max_attempts": 1}),
    )  # fmt: skip
    s3.head_bucket(Bucket=bucket)  # the connection, and botocore's first-call work, before timing
    taken = []
    for _ in range(times):
        started = time.perf_counter()
        s3.head_bucket(Bucket=bucket)
        taken.append(1000 * (time.perf_counter() - started))
    return sorted(taken)


def create_location(custom: client.CustomObjectsApi, env: dict[str, str], name: str, endpoint: str) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, ADMIN, "backuplocations", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "BackupLocation",
        "metadata": {"name": name, "namespace": ADMIN},
        "location": {
            "type": "s3", "path": env["S3_BUCKET"], "prefix": name,
            "s3Config": {"region": env["S3_REGION"], "endpoint": endpoint, "disableSSL": True,
                         "accessKeyID": env["S3_ACCESS_KEY"], "secretAccessKey": env["S3_SECRET_KEY"]},
        },
    })  # fmt: skip

    def available() -> bool:
        obj = custom.get_namespaced_custom_object(GROUP, VERSION, ADMIN, "backuplocations", name)
        return (obj.get("status") or {}).get("phase") == "Available"

    wait_until(f"BackupLocation {name} to be Available", available, 300)


# --- workers ------------------------------------------------------------------------------------


def wait_workers(redis_url: str, service: str, replicas: int, timeout: float = 120.0) -> list[str]:
    """Wait until ``replicas`` Celery workers of ``service`` answer a ping: a worker started a moment ago
    takes no task before its consumer is up, and would make the first seconds of a run one worker
    short. Returns their names."""
    app = queueing.create_app(redis_url, "davit-bench")
    answered: list[str] = []

    def enough() -> bool:
        nonlocal answered
        replies = app.control.ping(timeout=1.0) or []
        answered = sorted(name for reply in replies for name in reply if name.startswith(f"{service}@"))
        return len(answered) >= replicas

    try:
        wait_until(f"{replicas} {service} worker(s)", enough, timeout, lambda: f"answered: {answered}")
    finally:
        app.close()
    return answered


def scale(stack: Stack, state: StackState, env: dict[str, str], service: str, replicas: int) -> list[str]:
    stack.scale(state, service, replicas)
    return wait_workers(env["REDIS_URL"], service, replicas)


# --- operations ---------------------------------------------------------------------------------


def create_all(custom: client.CustomObjectsApi, plural: str, kind: str, specs: dict[str, dict[str, Any]],
               phase: str) -> None:  # fmt: skip
    """Create one operation per entry of ``specs`` (name → spec), all at once (16 in flight)."""

    def create(item: tuple[str, dict[str, Any]]) -> None:
        name, spec = item
        custom.create_namespaced_custom_object(GROUP, VERSION, ADMIN, plural, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": kind,
            "metadata": {"name": name, "labels": {RUN_LABEL: phase}}, "spec": spec,
        })  # fmt: skip

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(create, specs.items()))


def wait_all_final(
    custom: client.CustomObjectsApi, plural: str, phase: str, expected: int, started: float
) -> tuple[float, dict[str, dict[str, Any]], list[float]]:
    """Poll the phase's operations until all are Final; returns the seconds from ``started`` to the last,
    each one's status and the seconds at which each was first seen Final (sorted)."""
    finished: dict[str, float] = {}
    statuses: dict[str, dict[str, Any]] = {}
    deadline = started + TIMEOUT_SECONDS
    while time.perf_counter() < deadline:
        items = custom.list_namespaced_custom_object(
            GROUP, VERSION, ADMIN, plural, label_selector=f"{RUN_LABEL}={phase}"
        )["items"]
        now = time.perf_counter() - started
        for item in items:
            status = item.get("status") or {}
            name = item["metadata"]["name"]
            if status.get("stage") == "Final" and name not in finished:
                finished[name] = now
                statuses[name] = status
        if len(finished) >= expected:
            return max(finished.values()), statuses, sorted(finished.values())
        time.sleep(0.25)  # polling for the end state; the interval bounds the measurement's resolution
    raise SystemExit(f"{plural} of {phase}: {len(finished)}/{expected} Final after {TIMEOUT_SECONDS:.0f} s")


@contextmanager
def measured(stack: Stack, proxy_stats: Path) -> Iterator[dict[str, Any]]:
    """CPU of every stack process, peak memory of the workers, the watcher and Redis, the requests
    through the latency proxy and the load average, over the ``with`` block; filled into the dict."""
    out: dict[str, Any] = {}
    watched = memory_pids(stack)
    reset = {name: reset_peak_rss(pid) for name, pid in watched.items()}
    requests_before = latency_proxy.read_stats(proxy_stats).get("requests", 0)
    out["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    sample = CpuSample(stack_pids(stack))
    yield out
    out["cpu"] = sample.finish()
    out["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    time.sleep(latency_proxy.STATS_SECONDS * 1.5)  # the proxy writes its counts once a second
    out["store_requests"] = int(latency_proxy.read_stats(proxy_stats).get("requests", 0)) - int(
        requests_before
    )
    out["peak_rss_mb"] = {name: peak_rss_mb(pid) for name, pid in watched.items()}
    out["peak_rss_since_process_start"] = [name for name, ok in reset.items() if not ok]


def run_phase(
    stack: Stack, proxy_stats: Path, custom: client.CustomObjectsApi, plural: str, kind: str,
    specs: dict[str, dict[str, Any]], phase: str,
) -> dict[str, Any]:  # fmt: skip
    with measured(stack, proxy_stats) as out:
        started = time.perf_counter()
        create_all(custom, plural, kind, specs, phase)
        seconds, statuses, finished = wait_all_final(custom, plural, phase, len(specs), started)
    failed = {n: s for n, s in statuses.items() if s.get("status") != "Successful"}
    out.update(
        seconds=round(seconds, 3),
        operations=len(specs),
        successful=len(statuses) - len(failed),
        failed={n: f"{s.get('status')}: {s.get('reason', '')}"[:300] for n, s in list(failed.items())[:5]},
        first_final_seconds=round(finished[0], 3),
        median_final_seconds=round(statistics.median(finished), 3),
        statuses=statuses,
    )
    return out


# --- the run ------------------------------------------------------------------------------------


def populate_namespaces(core: client.CoreV1Api, names: list[str], objects: int, run: str) -> float:
    started = time.perf_counter()
    for namespace in names:
        core.create_namespace({"metadata": {"name": namespace, "labels": {RUN_LABEL: run}}})
        populate(core, namespace, objects)
    return time.perf_counter() - started


def restored_objects(api_client: client.ApiClient, namespaces: list[str]) -> int:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return sum(pool.map(lambda ns: count_restored(api_client, ns), namespaces))


def speedup_rows(what: str, service: str, one: float, two: float) -> list[Row]:
    ratio = one / two if two > 0 else 0.0
    return [
        Row(f"{what}, 1 {service} worker", round(one, 2), "s"),
        Row(f"{what}, 2 {service} workers", round(two, 2), "s"),
        Row(f"{what} speed-up with 2 {service} workers", round(ratio, 2), "x",
            target=f">= {TARGET_SPEEDUP}", met=ratio >= TARGET_SPEEDUP),
    ]  # fmt: skip


def bottleneck(cpu: dict[str, Any]) -> str:
    """The busiest processes of a phase and whether a single-threaded one (Redis, the S3 emulator, a
    Python process at one core: the GIL) or the machine itself ran out of CPU."""
    percent: dict[str, float] = cpu["cpu_percent_of_one_core"]
    top = ", ".join(f"{n} {p:.0f}%" for n, p in list(percent.items())[:5])
    saturated = [n for n, p in percent.items() if p >= 85.0 and not n.endswith(("apiserver", "etcd"))]
    machine = cpu.get("machine_busy_percent") or 0.0
    verdict = []
    if machine >= 90.0:
        verdict.append(f"the machine's {cpu['machine_cores']} cores are {machine:.0f}% busy")
    if saturated:
        verdict.append(f"near one full core (single-threaded or GIL-bound): {', '.join(saturated)}")
    waited = cpu.get("run_queue_wait_seconds") or {}
    workers = [n for n in waited if n.startswith((f"a-{EXPORT_SERVICE}", f"a-{RESTORE_SERVICE}"))]
    if workers:
        on_cpu = sum(cpu["cpu_seconds"].get(n, 0.0) for n in workers)
        held = sum(waited[n] for n in workers)
        verdict.append(f"the workers ran {on_cpu:.1f} CPU-s and waited {held:.1f} thread-s for a CPU")
    return f"busiest (% of one core): {top}. " + ("; ".join(verdict) or "nothing saturated")


def backup_phases(
    stack: Stack, state: StackState, env: dict[str, str], custom: client.CustomObjectsApi, proxy_stats: Path,
    location: str, sources: list[str], run: str, phases: dict[str, dict[str, Any]],
) -> dict[str, str]:  # fmt: skip
    """Every namespace backed up by one export worker, then by two; returns the second run's backups by
    namespace."""
    backups: dict[str, str] = {}
    for workers in (1, 2):
        names = scale(stack, state, env, EXPORT_SERVICE, workers)
        backups = {ns: f"{ns}-b{workers}" for ns in sources}
        specs = {name: {"backupLocation": location, "namespaces": [ns]} for ns, name in backups.items()}
        phase = run_phase(stack, proxy_stats, custom, "applicationbackups", "ApplicationBackup", specs,
                          f"{run}-backup-{workers}")  # fmt: skip
        phase["workers"] = names
        counts = [int(s.get("resourceCount") or 0) for s in phase.pop("statuses").values()]
        phase["resource_count_min"] = min(counts)
        phases[f"backup-{workers}"] = phase
    scale(stack, state, env, EXPORT_SERVICE, 1)  # an idle replica would only blur the next CPU tables
    return backups


def restore_phases(
    stack: Stack, state: StackState, env: dict[str, str], api_client: client.ApiClient,
    proxy_stats: Path, location: str, backups: dict[str, str], run: str,
    phases: dict[str, dict[str, Any]], made: list[str],
) -> None:  # fmt: skip
    """Every backup restored into a new namespace by one restore worker, then by two."""
    custom = client.CustomObjectsApi(api_client)
    for workers in (1, 2):
        names = scale(stack, state, env, RESTORE_SERVICE, workers)
        mapping = {ns: f"{ns}-r{workers}" for ns in backups}
        made += mapping.values()
        specs = {
            target: {"backupName": backups[ns], "backupLocation": location, "namespaceMapping": {ns: target}}
            for ns, target in mapping.items()
        }
        phase = run_phase(stack, proxy_stats, custom, "applicationrestores", "ApplicationRestore", specs,
                          f"{run}-restore-{workers}")  # fmt: skip
        phase["workers"] = names
        phase.pop("statuses")
        phase["restored_objects"] = restored_objects(api_client, list(mapping.values()))
        phases[f"restore-{workers}"] = phase
    scale(stack, state, env, RESTORE_SERVICE, 1)


def check_latency(env: dict[str, str], proxy_url: str, latency_ms: float) -> dict[str, float]:
    """HEAD round trips without and with the proxy: the proxy must add about ``latency_ms``. Compared by
    their fastest (the least disturbed by other load on the machine) and reported with their medians."""
    direct = head_milliseconds(env, env["S3_ENDPOINT"], env["S3_BUCKET"])
    proxied = head_milliseconds(env, proxy_url, env["S3_BUCKET"])
    injected = proxied[0] - direct[0]
    if injected < 0.8 * latency_ms:
        raise SystemExit(f"the proxy adds {injected:.1f} ms, not {latency_ms} ms")
    return {
        "direct_fastest": round(direct[0], 2),
        "direct_median": round(statistics.median(direct), 2),
        "through_proxy_fastest": round(proxied[0], 2),
        "through_proxy_median": round(statistics.median(proxied), 2),
        "injected": round(injected, 2),
    }


def result_rows(phases: dict[str, dict[str, Any]]) -> list[Row]:
    rows = speedup_rows("backup", "export", phases["backup-1"]["seconds"], phases["backup-2"]["seconds"])
    rows += speedup_rows("restore", "restore", phases["restore-1"]["seconds"], phases["restore-2"]["seconds"])
    peaks: dict[str, float] = {}
    for phase in phases.values():
        for name, mb in phase["peak_rss_mb"].items():
            if mb is not None:
                peaks[name] = max(peaks.get(name, 0.0), mb)
    limit = f"< {RSS_LIMIT_MB:.0f} MB"
    rows += [
        Row(f"peak RSS {name}", mb, "MB", target=limit, met=mb < RSS_LIMIT_MB)
        for name, mb in sorted(peaks.items())
    ]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--namespaces", type=int, default=50)
    parser.add_argument("--objects", type=int, default=2_000, help="ConfigMaps and Secrets per namespace")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="delay per object-store request")
    parser.add_argument("--dir", type=Path, default=Path(".dev-bench"))
    args = parser.parse_args()

    bench = cluster.start(args.dir)
    stack, state, env, api_client = bench.stack, bench.state, bench.env, bench.api_client
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    run = uuid.uuid4().hex[:6]
    sources = [f"scale-{run}-{i:03d}" for i in range(args.namespaces)]
    made = list(sources)
    threads = state.service_settings.get("DAVIT_WORKER_CONCURRENCY", Settings.worker_concurrency)
    result: dict[str, Any] = {
        "namespaces": args.namespaces,
        "objects_per_namespace": args.objects,
        "latency_ms": args.latency_ms,
        "worker_threads": int(threads),
    }
    phases: dict[str, dict[str, Any]] = {}
    try:
        for service in (EXPORT_SERVICE, RESTORE_SERVICE):
            scale(stack, state, env, service, 1)  # a stack kept from an earlier run may have more
        proxy_url, proxy_stats = start_proxy(stack, env["S3_ENDPOINT"], args.latency_ms)
        result["head_ms"] = check_latency(env, proxy_url, args.latency_ms)
        location = f"scaling-{run}"
        create_location(custom, env, location, proxy_url)
        result["populate_seconds"] = round(populate_namespaces(core, sources, args.objects, run), 1)
        backups = backup_phases(stack, state, env, custom, proxy_stats, location, sources, run, phases)
        restore_phases(stack, state, env, api_client, proxy_stats, location, backups, run, phases, made)
    finally:
        for namespace in made:
            try:
                core.delete_namespace(namespace)
            except client.ApiException as exc:
                if exc.status != 404:
                    raise
    for phase in phases.values():
        phase["bottleneck"] = bottleneck(phase["cpu"])
    result["phases"] = phases
    expected = args.namespaces * args.objects
    complete = (
        all(p["successful"] == p["operations"] for p in phases.values())
        and all(phases[f"restore-{w}"]["restored_objects"] == expected for w in (1, 2))
        and all(phases[f"backup-{w}"]["resource_count_min"] >= args.objects for w in (1, 2))
    )
    result["complete"] = complete
    rows = result_rows(phases)
    write_result("scaling", result, rows)
    for name, phase in phases.items():
        print(f"{name}: {phase['seconds']:.1f} s, {phase['successful']}/{phase['operations']} Successful, "
              f"{phase['store_requests']} store requests; {phase['bottleneck']}")  # fmt: skip
    met = all(row.met for row in rows if row.met is not None and "speed-up" in row.measure)
    return 0 if complete and met else 1


if __name__ == "__main__":
    raise SystemExit(main())
