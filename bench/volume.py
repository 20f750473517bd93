"""Benchmark (SPEC §9): volume data, Davit's repository against Debian's ``restic`` on the same directory.

A deterministic dataset of 640 MiB of mixed data (about 40% incompressible random data in a few large
files, 30% compressible logs/JSON/CSV, 20% copies of Python's standard library with variations, 10%
thousands of small files) is generated once into ``<dir>/data`` and reused. Then, side by side, each
with a fresh empty repository on the same disk: a first backup (time and stored size), an unchanged
re-backup (time and added size) and a restore into an empty directory (time). The page cache is dropped
before every timed phase when ``/proc/sys/vm/drop_caches`` is writable. Every phase runs ``--rounds``
times (3 by default; the tools take turns going first) and the medians are compared. Each round's
restores are checked against the dataset: every entry's type, size, mtime and symlink target, and a
sample of files byte for byte.

Targets: first backup at least 2x as fast as restic's with no larger stored size; an unchanged re-backup
no slower than restic's; a restore no slower than restic's. Run with ``make bench-volume``; results go to
bench/results/ as JSON, and the exit status says whether every target was met.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import shutil
import stat
import statistics
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import blake3

from davit.format.repository import BackupRepository
from davit.repo import RepoReader, RepoWriter, load_tree, restore_tree, snapshot_tree
from davit.storage.local import LocalStore

RESULTS = Path(__file__).resolve().parent / "results"
MiB = 1 << 20
TOTAL = 640 * MiB
#: Bumped whenever the generated dataset changes, so a stale one is regenerated.
GENERATOR = 1
SEED = 20240517
#: A fixed base for the dataset's mtimes, so that the dataset is the same wherever it is generated.
MTIME_BASE_NS = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z
RANDOM_SIZES = (96 * MiB, 72 * MiB, 48 * MiB, 40 * MiB)  # 256 MiB, 40%
TEXT_SIZE = 192 * MiB  # 30%
LIBRARY_SIZE = 128 * MiB  # 20%; the small files take what is left (about 10%)
RESTIC_PASSWORD = "davit-bench"  # noqa: S105 - a throwaway repository's password

T = TypeVar("T")


# --- the dataset -------------------------------------------------------------------------------------


class Generator:
    """Writes the dataset, setting every file's mtime to a fixed value as it goes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files = 0
        self.written = 0
        self.parts: dict[str, int] = {}

    def write(self, part: str, rel: str, data: bytes) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self._done(part, path, len(data))

    def _done(self, part: str, path: Path, size: int) -> None:
        mtime = MTIME_BASE_NS + self.files * 10**9
        os.utime(path, ns=(mtime, mtime))
        self.files += 1
        self.written += size
        self.parts[part] = self.parts.get(part, 0) + size

    def random_file(self, rel: str, size: int, seed: str) -> None:
        """Incompressible data: BLAKE3's extendable output, in 8 MiB pieces."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        hasher = blake3.blake3(seed.encode())
        with path.open("wb") as out:
            for offset in range(0, size, 8 * MiB):
                out.write(hasher.digest(length=min(8 * MiB, size - offset), seek=offset))
        self._done("random", path, size)

    def text_file(self, rel: str, size: int, lines: Iterator[str]) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        left = size
        with path.open("wb") as out:
            while left > 0:
                block = "".join(next(lines) for _ in range(4096)).encode()[:left]
                out.write(block)
                left -= len(block)
        self._done("text", path, size)


WORDS = (
    "request",
    "handled",
    "started",
    "finished",
    "user",
    "session",
    "cache",
    "miss",
    "hit",
    "timeout",
    "retry",
    "connection",
    "pool",
    "upstream",
    "downstream",
    "backend",
    "frontend",
    "queue",
    "worker",
    "job",
    "scheduled",
    "completed",
    "failed",
    "volume",
    "snapshot",
    "restore",
    "backup",
    "namespace",
    "pod",
    "deployment",
    "replica",
    "container",
    "image",
    "pulled",
    "mounted",
    "unmounted",
    "token",
    "refresh",
    "expired",
    "granted",
    "denied",
    "latency",
    "bytes",
    "sent",
    "received",
    "checksum",
    "verified",
    "index",
    "compaction",
)
SERVICES = ("api", "auth", "billing", "search", "ingest", "scheduler", "gateway", "storage")
LEVELS = ("INFO", "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR")
PATHS = ("/v1/items", "/v1/users", "/v1/orders", "/healthz", "/metrics", "/v2/search", "/v1/login")


def log_lines(rng: random.Random, service: str) -> Iterator[str]:
    t = 1_714_000_000.0
    choice, rand, bits = rng.choice, rng.random, rng.getrandbits
    while True:
        t += rand() * 0.05
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
        words = " ".join(choice(WORDS) for _ in range(1 + bits(3)))
        yield (
            f"{ts}.{int(t * 1000) % 1000:03d}Z {choice(LEVELS)} [{service}] req={bits(48):012x} "
            f"{choice(PATHS)} {words} user=u{bits(10)} ip=10.{bits(4)}.{bits(8)}.{bits(8)} "
            f"status={choice((200, 200, 200, 201, 204, 304, 404, 500))} latency_ms={bits(9)}\n"
        )


def json_lines(rng: random.Random) -> Iterator[str]:
    n = 0
    choice, bits = rng.choice, rng.getrandbits
    while True:
        n += 1
        yield (
            f'{{"id":{n},"kind":"{choice(WORDS)}","service":"{choice(SERVICES)}","user":"u{bits(12)}",'
            f'"amount":{bits(20) / 100:.2f},"tags":["{choice(WORDS)}","{choice(WORDS)}"],'
            f'"ok":{choice(("true", "false"))},"trace":"{bits(64):016x}"}}\n'
        )


def csv_lines(rng: random.Random) -> Iterator[str]:
    yield "timestamp,host,metric,value,unit\n"
    t = 1_714_000_000
    choice, bits = rng.choice, rng.getrandbits
    while True:
        t += bits(2)
        metric = choice(("cpu", "mem", "disk_read", "disk_write", "net_in", "net_out"))
        yield f"{t},node-{bits(5):02d},{metric},{bits(16) / 10:.1f},{choice(('pct', 'bytes', 'ops'))}\n"


def library_files() -> tuple[Path, list[Path]]:
    """Python's standard library sources (without site-packages), sorted."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "__pycache__"))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return stdlib, found


def vary(data: bytes, copy: int, rng: random.Random) -> bytes:
    """A copy of a library file edited here and there: a header, and about one line in 40 changed."""
    lines = data.split(b"\n")
    for i in range(len(lines)):
        if rng.random() < 0.025:
            lines[i] += b"  # edited in copy %d" % copy
    return b"# variant %d\n" % copy + b"\n".join(lines)


def generate(root: Path) -> dict[str, Any]:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    rng = random.Random(SEED)  # noqa: S311 - a reproducible dataset, no secret
    gen = Generator(root)

    for i, size in enumerate(RANDOM_SIZES):
        gen.random_file(f"media/blob-{i}.bin", size, f"davit-bench-random-{i}")

    text_files = [
        *(f"logs/{s}.log" for s in SERVICES),
        "exports/events.jsonl",
        "exports/events-2.jsonl",
        "exports/metrics.csv",
    ]
    per_file = TEXT_SIZE // len(text_files)
    for i, rel in enumerate(text_files):
        size = per_file if i < len(text_files) - 1 else TEXT_SIZE - per_file * (len(text_files) - 1)
        if rel.endswith(".log"):
            lines = log_lines(rng, Path(rel).stem)
        elif rel.endswith(".jsonl"):
            lines = json_lines(rng)
        else:
            lines = csv_lines(rng)
        gen.text_file(rel, size, lines)

    stdlib, sources = library_files()
    library = 0
    copy = 0
    while library < LIBRARY_SIZE:
        for src in sources:
            data = src.read_bytes()
            if copy >= 2:  # copies 0 and 1 are exact (deduplicated); later ones are edited
                data = vary(data, copy, rng)
            if library + len(data) > LIBRARY_SIZE:
                break
            gen.write("library", f"lib/copy-{copy}/{src.relative_to(stdlib)}", data)
            library += len(data)
        else:
            copy += 1
            continue
        break

    # Small files fill the rest exactly: a third random, the rest small configuration-like text.
    left = TOTAL - gen.written
    n = 0
    while left > 0:
        size = min(left, max(64, int(rng.lognormvariate(8.6, 0.9))))
        rel = f"small/d{n // 100:03d}/f{n:05d}"
        if n % 3 == 0:
            data = blake3.blake3(b"small-%d" % n).digest(length=size)
            rel += ".bin"
        else:
            body = "".join(
                f"{rng.choice(WORDS)}_{i}: {rng.choice(WORDS)}-{rng.getrandbits(16)}\n"
                for i in range(size // 20 + 1)
            )
            data = body.encode()[:size]
            rel += ".yaml"
        gen.write("small", rel, data)
        left -= size
        n += 1
    # A few symlinks, relative and absolute, for the restore to recreate.
    for i in range(20):
        link = root / f"small/d{i:03d}/link-{i}"
        n = i * 100 + 1
        os.symlink(f"f{n:05d}{'.bin' if n % 3 == 0 else '.yaml'}" if i % 2 else "/etc/hostname", link)
        os.utime(link, ns=(MTIME_BASE_NS, MTIME_BASE_NS), follow_symlinks=False)
    for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda w: -w[0].count(os.sep)):
        os.utime(dirpath, ns=(MTIME_BASE_NS, MTIME_BASE_NS))
    return {
        "generator": GENERATOR,
        "bytes": gen.written,
        "files": gen.files,
        "symlinks": 20,
        "parts_bytes": gen.parts,
        "library_source": str(stdlib),
        "library_copies": copy + 1,
    }


def ensure_dataset(workdir: Path) -> tuple[Path, dict[str, Any]]:
    data = workdir / "data"
    marker = workdir / "dataset.json"
    if marker.exists() and data.is_dir():
        info: dict[str, Any] = json.loads(marker.read_text())
        if info.get("generator") == GENERATOR:
            return data, {**info, "reused": True}
    print(f"generating the dataset into {data} (once) ...", flush=True)
    started = time.perf_counter()
    marker.unlink(missing_ok=True)
    info = generate(data)
    marker.write_text(json.dumps(info, indent=2) + "\n")
    print(f"  {info['bytes'] / MiB:.0f} MiB, {info['files']} files in {time.perf_counter() - started:.1f} s")
    return data, {**info, "reused": False}


# --- measuring ---------------------------------------------------------------------------------------


def dir_bytes(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def drop_caches() -> bool:
    """Write back and drop the page cache, dentries and inodes (root only); False if not allowed."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError:
        return False
    return True


def warm(path: Path) -> None:
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(dirpath, name)
            if not os.path.islink(p):
                with open(p, "rb") as f:
                    while f.read(8 * MiB):
                        pass


class Phase:
    """Times a phase, with the CPU it used (this process's threads and its children's)."""

    def __init__(self, cold: bool) -> None:
        self.cold = cold

    def run(self, fn: Callable[[], T]) -> tuple[T, dict[str, Any]]:
        if self.cold:
            drop_caches()
        before_self = resource.getrusage(resource.RUSAGE_SELF)
        before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - started
        after_self = resource.getrusage(resource.RUSAGE_SELF)
        after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = sum(
            (a.ru_utime - b.ru_utime) + (a.ru_stime - b.ru_stime)
            for a, b in ((after_self, before_self), (after_children, before_children))
        )
        return value, {"seconds": round(seconds, 3), "cpu_seconds": round(cpu, 3)}


def davit_backup(repo_dir: Path, data: Path, previous: str | None) -> tuple[str, int]:
    repo = BackupRepository.open(LocalStore(repo_dir), None)
    prev = load_tree(repo.store, repo.sealer, previous) if previous else None
    with RepoWriter(repo.store, repo.sealer) as writer:
        tree = snapshot_tree(data, writer, previous=prev)
    return tree.id, writer.stats.chunks_new


def davit_restore(repo_dir: Path, tree_id: str, target: Path) -> int:
    repo = BackupRepository.open(LocalStore(repo_dir), None, create=False)
    reader = RepoReader(repo.store, repo.sealer)
    tree = load_tree(repo.store, repo.sealer, tree_id)
    return restore_tree(tree, target, reader).files


class Restic:
    def __init__(self, repo: Path, cache: Path) -> None:
        self.env = {
            **os.environ,
            "RESTIC_REPOSITORY": str(repo),
            "RESTIC_PASSWORD": RESTIC_PASSWORD,
            "RESTIC_CACHE_DIR": str(cache),
        }

    def run(self, *args: str) -> str:
        proc = subprocess.run(["restic", *args], env=self.env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SystemExit(f"restic {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc.stdout

    def init(self) -> int:
        """A new repository, in format version 2 (the one with compression) where restic knows it."""
        try:
            self.run("init", "--repository-version", "2")
        except SystemExit:
            self.run("init")
        config = json.loads(self.run("cat", "config"))
        return int(config["version"])

    def backup(self, data: Path) -> dict[str, Any]:
        out = self.run("backup", "--json", str(data))
        summaries = [json.loads(line) for line in out.splitlines() if '"summary"' in line]
        return summaries[-1] if summaries else {}

    def restore(self, target: Path) -> None:
        self.run("restore", "latest", "--target", str(target))


# --- checking ------------------------------------------------------------------------------------


def listing(root: Path) -> dict[str, tuple[str, int, int, str]]:
    """relative path → (kind, size, mtime_ns, symlink target) of everything below ``root``."""
    out: dict[str, tuple[str, int, int, str]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", 0, st.st_mtime_ns, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", 0, st.st_mtime_ns, "")
            else:
                out[rel] = ("file", st.st_size, st.st_mtime_ns, "")
    return out


def same_content(a: Path, b: Path) -> bool:
    with a.open("rb") as fa, b.open("rb") as fb:
        while True:
            x, y = fa.read(8 * MiB), fb.read(8 * MiB)
            if x != y:
                return False
            if not x:
                return True


def verify(original: Path, restored: Path, *, mtimes: bool, samples: int) -> dict[str, Any]:
    """Every entry present with its type, size, symlink target (and mtime); ``samples`` files and the
    largest one compared byte for byte. Returns the problems found (empty when the trees match)."""
    want, got = listing(original), listing(restored)
    problems: list[str] = []
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    problems += [f"missing: {p}" for p in missing[:10]] + [f"unexpected: {p}" for p in extra[:10]]
    for rel, (kind, size, mtime, target) in want.items():
        have = got.get(rel)
        if have is None:
            continue
        if have[0] != kind or have[1] != size or have[3] != target:
            problems.append(f"differs: {rel}: {have[:2]} != {(kind, size)}")
        elif mtimes and kind == "file" and have[2] != mtime:
            problems.append(f"mtime differs: {rel}: {have[2]} != {mtime}")
    files = sorted(rel for rel, v in want.items() if v[0] == "file")
    rng = random.Random(SEED)  # noqa: S311 - a reproducible sample, no secret
    sample = set(rng.sample(files, min(samples, len(files))))
    sample.add(max(files, key=lambda rel: want[rel][1]))
    for rel in sorted(sample):
        if rel in got and not same_content(original / rel, restored / rel):
            problems.append(f"content differs: {rel}")
    return {
        "entries": len(want),
        "files": len(files),
        "content_compared": len(sample),
        "problems": problems[:50],
        "problem_count": len(problems) + max(0, len(missing) - 10) + max(0, len(extra) - 10),
    }


# --- the benchmark -------------------------------------------------------------------------------


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def one_round(run: Path, data: Path, phase: Phase, samples: int, davit_first: bool) -> dict[str, Any]:
    """Both tools' three phases, each pair in the given order, with fresh repositories in ``run``."""
    for sub in ("davit-repo", "restic-cache", "davit-restore", "restic-restore"):
        (run / sub).mkdir(parents=True)
    restic = Restic(run / "restic-repo", run / "restic-cache")
    davit_repo = run / "davit-repo"
    out: dict[str, Any] = {"davit": {}, "restic": {}, "restic_repository_version": restic.init()}
    trees: list[str] = []

    def davit_phase(name: str) -> None:
        if name == "restore":
            files, m = phase.run(lambda: davit_restore(davit_repo, trees[0], run / "davit-restore"))
            m["files"] = files
        else:
            before = dir_bytes(davit_repo)
            previous = trees[0] if trees else None
            (tree_id, new_chunks), m = phase.run(lambda: davit_backup(davit_repo, data, previous))
            m["stored_bytes" if previous is None else "added_bytes"] = dir_bytes(davit_repo) - before
            m["new_chunks"] = new_chunks
            if previous is not None:
                m["tree_unchanged"] = tree_id == previous
            trees.append(tree_id)
        out["davit"][name] = m
        print(f"  davit  {name:<12} {m}", flush=True)

    def restic_phase(name: str) -> None:
        repo = run / "restic-repo"
        if name == "restore":
            _, m = phase.run(lambda: restic.restore(run / "restic-restore"))
        else:
            # The first backup's stored size includes what ``restic init`` wrote, as Davit's includes
            # its location record.
            before = dir_bytes(repo) if name == "rebackup" else 0
            summary, m = phase.run(lambda: restic.backup(data))
            m["stored_bytes" if name == "first_backup" else "added_bytes"] = dir_bytes(repo) - before
            m["data_added"] = summary.get("data_added")
        out["restic"][name] = m
        print(f"  restic {name:<12} {m}", flush=True)

    for name in ("first_backup", "rebackup", "restore"):
        for run_phase in (davit_phase, restic_phase) if davit_first else (restic_phase, davit_phase):
            run_phase(name)

    out["verification"] = {
        "davit": verify(data, run / "davit-restore", mtimes=True, samples=samples),
        "restic": verify(
            data, run / "restic-restore" / data.relative_to(data.anchor), mtimes=True, samples=0
        ),
    }
    return out


def summarise(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Per field, the median over the rounds (numbers) or the first round's value; and every round's
    seconds."""
    out: dict[str, Any] = {}
    for key, first in rounds[0].items():
        values = [r[key] for r in rounds]
        if isinstance(first, bool) or not isinstance(first, int | float):
            out[key] = first if all(v == first for v in values) else values
        else:
            median = statistics.median(values)
            out[key] = round(median, 3) if isinstance(median, float) else median
    out["seconds_per_round"] = [r["seconds"] for r in rounds]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(".dev-bench/volume"), help="work directory")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every phase; medians are compared")
    parser.add_argument("--samples", type=int, default=300, help="files compared byte for byte")
    parser.add_argument("--keep", action="store_true", help="keep the last round's repositories and restores")
    args = parser.parse_args()

    if shutil.which("restic") is None:
        print("restic is not installed (make deps installs it)", file=sys.stderr)
        return 2
    restic_version = subprocess.run(["restic", "version"], capture_output=True, text=True, check=True)
    workdir = args.dir.resolve()
    data, dataset = ensure_dataset(workdir)
    run = workdir / "run"
    cold = drop_caches()
    if not cold:
        print("cannot drop the page cache: every phase runs with the dataset in a warm cache", flush=True)
        warm(data)
    phase = Phase(cold)
    # Other processes compete for the CPUs and the disk: the load averages say how much, for the record.
    load_start = [round(x, 2) for x in os.getloadavg()]

    rounds = []
    for number in range(args.rounds):
        print(f"round {number + 1} of {args.rounds}:", flush=True)
        if run.exists():
            shutil.rmtree(run)
        # Alternating which tool goes first, so neither always finds the other's writes being flushed.
        rounds.append(one_round(run, data, phase, args.samples, davit_first=number % 2 == 0))
        checked = rounds[-1]["verification"]
        counts = {tool: checked[tool]["problem_count"] for tool in ("davit", "restic")}
        print(f"  restores verified, problems found: {counts}", flush=True)
        if not args.keep or number < args.rounds - 1:
            shutil.rmtree(run)

    davit = {name: summarise([r["davit"][name] for r in rounds]) for name in rounds[0]["davit"]}
    restic = {name: summarise([r["restic"][name] for r in rounds]) for name in rounds[0]["restic"]}
    repository_version = rounds[0]["restic_repository_version"]
    first_speedup = ratio(restic["first_backup"]["seconds"], davit["first_backup"]["seconds"])
    targets = {
        "first_backup_2x_faster": first_speedup is not None and first_speedup >= 2,
        "first_backup_stored_not_larger": davit["first_backup"]["stored_bytes"]
        <= restic["first_backup"]["stored_bytes"],
        "rebackup_not_slower": davit["rebackup"]["seconds"] <= restic["rebackup"]["seconds"],
        "restore_not_slower": davit["restore"]["seconds"] <= restic["restore"]["seconds"],
    }
    problems = [
        f"round {n + 1}, {tool}: {p}"
        for n, r in enumerate(rounds)
        for tool in ("davit", "restic")
        for p in r["verification"][tool]["problems"]
    ]
    result = {
        "benchmark": "volume",
        "dataset": {
            "path": str(data),
            "bytes": dataset["bytes"],
            "mib": round(dataset["bytes"] / MiB, 1),
            "files": dataset["files"],
            "symlinks": dataset["symlinks"],
            "parts_bytes": dataset["parts_bytes"],
            "library_source": dataset["library_source"],
            "reused": dataset["reused"],
        },
        "rounds": args.rounds,
        "cold_cache": cold,
        "davit": {"encryption": False, **davit},
        "restic": {
            "version": restic_version.stdout.strip(),
            "repository_version": repository_version,
            "compression": "auto (default)" if repository_version >= 2 else "none (repository version 1)",
            **restic,
        },
        "ratios": {
            "first_backup_speedup": first_speedup,
            "first_backup_stored_davit_over_restic": ratio(
                davit["first_backup"]["stored_bytes"], restic["first_backup"]["stored_bytes"]
            ),
            "rebackup_speedup": ratio(restic["rebackup"]["seconds"], davit["rebackup"]["seconds"]),
            "restore_speedup": ratio(restic["restore"]["seconds"], davit["restore"]["seconds"]),
        },
        "targets": targets,
        "within_targets": all(targets.values()),
        "verification": {
            "files": rounds[0]["verification"]["davit"]["files"],
            "entries": rounds[0]["verification"]["davit"]["entries"],
            "content_compared_per_round": rounds[0]["verification"]["davit"]["content_compared"],
            "restores_match": not problems,
            "problems": problems[:50],
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "load_average_at_start": load_start,
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"volume-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {out}")
    if problems:
        print("A RESTORE DIFFERS FROM THE DATASET:\n  " + "\n  ".join(problems[:20]), file=sys.stderr)
        return 2
    return 0 if result["within_targets"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
