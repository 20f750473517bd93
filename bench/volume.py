"""Benchmark (SPEC §9): volume data, Davit's repository against Debian's ``restic`` and ``borgbackup`` on
the same directory.

Three cases (``--case``), each a deterministic dataset generated once into ``<dir>`` and reused:

- ``mixed`` (the default, ``make bench-volume``; results ``volume-*.json``): 640 MiB of mixed data, about
  40% incompressible random data in a few large files, 30% compressible logs/JSON/CSV, 20% copies of
  Python's standard library with variations, 10% thousands of small files. 3 rounds.
- ``large`` (``make bench-volume-large``; ``volume-large-*.json``): 10 GiB in 9 large files, 8 GiB of
  incompressible random data (BLAKE3's extendable output) and 2 GiB of compressible text (the same output
  mapped onto a skewed alphabet, about 4 bits per byte). 1 round.
- ``small`` (``make bench-volume-large``; ``volume-small-*.json``): 1,000,000 files of 200 B to 4 KiB
  (log-uniform; a third random, the rest text) in 1,000 directories three levels deep. 1 round.

Each tool in turn (the order rotates between rounds) gets a fresh, empty repository on the same disk and
runs four phases: a first backup (time, stored size), an unchanged re-backup, a re-backup after one file
changed (1 MiB rewritten in the middle of the dataset's largest file, put back afterwards so the dataset
stays as generated) and a restore of the first backup into an empty directory, which is then checked
against the dataset: every entry's type, size, mtime and symlink target, and a sample of files (and the
largest) byte for byte. Then the tool's repository and restore are deleted before the next tool starts, so
the large case needs the dataset's size plus about two more of free disk, not six. The page cache is dropped
before every phase when ``/proc/sys/vm/drop_caches`` is writable.

Every phase runs in a process of its own under GNU time, so that its peak resident set (``%M``) is the
phase's alone and the tools' are comparable: restic and borg are their commands; Davit's is a fresh
Python interpreter that imports Davit, says it is ready, and then (after the cache is dropped) stores or
restores with the repository code the node agent runs (``davit.repo``). Davit's time is that of the work,
without the interpreter's start (the agent is a long-running process); its peak RSS includes the
interpreter and its imports. restic's and borg's times are their commands', start included.

The tools' settings, chosen to be comparable: Davit stores chunks zstd-compressed at level 3 without
encryption (the location's default); restic (format version 2) encrypts (AES-256 + Poly1305) and
compresses with its default ``auto`` (zstd at its fastest level); borg 1.2 runs with
``--encryption repokey`` (AES-CTR with HMAC-SHA256 ids: on CPUs with SHA extensions, as here, it beat
``repokey-blake2`` by 30% on 400 MiB of random data) and ``--compression zstd,3``, Davit's own algorithm
and level, with a throwaway passphrase, its cache, config and keys under the run directory.

Targets (SPEC §9, mixed case only): a first backup in at most 0.35x restic's time and faster than borg,
with a stored size no larger than either's; an unchanged re-backup in at most 0.5x restic's; a restore in
at most 0.8x restic's. The large and small cases have no targets: they show how time and peak memory grow
with size and with the number of files. Results go to bench/results/ as JSON (``bench.common``), one table
row per measure and peer; the exit status says whether every target was met (2 if a restore differs).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import stat
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import blake3

from bench.common import Row, write_result
from davit.format.repository import BackupRepository
from davit.repo import RepoReader, RepoWriter, load_tree, restore_tree, snapshot_tree
from davit.storage.local import LocalStore

ROOT = Path(__file__).resolve().parent.parent
MiB = 1 << 20
GiB = 1 << 30
TOTAL = 640 * MiB
#: Bumped whenever the mixed dataset changes, so a stale one is regenerated.
GENERATOR = 1
SEED = 20240517
#: A fixed base for the dataset's mtimes, so that the dataset is the same wherever it is generated.
MTIME_BASE_NS = 1_704_067_200 * 10**9  # 2024-01-01T00:00:00Z
RANDOM_SIZES = (96 * MiB, 72 * MiB, 48 * MiB, 40 * MiB)  # 256 MiB, 40%
TEXT_SIZE = 192 * MiB  # 30%
LIBRARY_SIZE = 128 * MiB  # 20%; the small files take what is left (about 10%)
LARGE_RANDOM_SIZES = (2048 * MiB, 2048 * MiB, 1536 * MiB, 1536 * MiB, 1024 * MiB)  # 8 GiB
LARGE_TEXT_SIZES = (512 * MiB,) * 4  # 2 GiB
SMALL_FILES = 1_000_000
SMALL_FANOUT = 10  # 10 x 10 x 10 leaf directories
SMALL_MIN, SMALL_MAX = 200, 4096
PASSWORD = "davit-bench"  # noqa: S105 - a throwaway repository's password
#: Bytes rewritten in the largest file for the one-file-changed re-backup.
CHANGE_BYTES = 1 * MiB
TOOLS = ("davit", "restic", "borg")
PHASES = ("first_backup", "rebackup", "changed_backup", "restore")


# --- the datasets ---------------------------------------------------------------------------------------


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


def skewed_alphabet() -> bytes:
    """A translation table from random bytes to text with letter-like frequencies: about 4 bits of
    entropy per byte, so zstd stores it in a little over half its size, and as fast to make as the random
    bytes themselves (``bytes.translate``). No two pieces repeat, so nothing is deduplicated."""
    weights = {b" ": 60, b"e": 28, b"t": 20, b"a": 17, b"o": 15, b"i": 14, b"n": 14, b"s": 12, b"r": 11}
    weights |= {b"\n": 6, b"=": 5, b"0": 5, b"1": 5, b"2": 4, b"h": 8, b"l": 7, b"d": 6, b"c": 5, b"u": 5}
    table = b"".join(char * count for char, count in weights.items())
    return (table + b"mfpgwybvk:-._/3456789"[: 256 - len(table)]).ljust(256, b"x")


SKEWED = skewed_alphabet()


def skewed_text_file(gen: Generator, rel: str, size: int, seed: str) -> None:
    path = gen.root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    hasher = blake3.blake3(seed.encode())
    with path.open("wb") as out:
        for offset in range(0, size, 8 * MiB):
            out.write(hasher.digest(length=min(8 * MiB, size - offset), seek=offset).translate(SKEWED))
    gen._done("text", path, size)


def generate_large(root: Path) -> dict[str, Any]:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    gen = Generator(root)
    for i, size in enumerate(LARGE_RANDOM_SIZES):
        gen.random_file(f"images/disk-{i}.img", size, f"davit-bench-large-random-{i}")
    for i, size in enumerate(LARGE_TEXT_SIZES):
        skewed_text_file(gen, f"logs/archive-{i}.log", size, f"davit-bench-large-text-{i}")
    os.utime(root / "images", ns=(MTIME_BASE_NS, MTIME_BASE_NS))
    os.utime(root / "logs", ns=(MTIME_BASE_NS, MTIME_BASE_NS))
    os.utime(root, ns=(MTIME_BASE_NS, MTIME_BASE_NS))
    return {"bytes": gen.written, "files": gen.files, "symlinks": 0, "parts_bytes": gen.parts}


def generate_small(root: Path) -> dict[str, Any]:
    """``SMALL_FILES`` files in ``SMALL_FANOUT``³ leaf directories; written with one open, write, utime
    and close each, as the generation of a million files otherwise takes longer than backing them up."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    rng = random.Random(SEED)  # noqa: S311 - a reproducible dataset, no secret
    # Text files are slices of one 64 MiB pool at random offsets: each different, none compressed alike.
    pool = blake3.blake3(b"davit-bench-small-text").digest(length=64 * MiB).translate(SKEWED)
    leaves = [
        os.path.join(root, f"a{a:02d}/b{b:02d}/c{c:02d}")
        for a in range(SMALL_FANOUT)
        for b in range(SMALL_FANOUT)
        for c in range(SMALL_FANOUT)
    ]
    per_leaf = SMALL_FILES // len(leaves)
    ratio = SMALL_MAX / SMALL_MIN
    written = random_bytes = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    for number in range(SMALL_FILES):
        leaf = leaves[number // per_leaf]
        if number % per_leaf == 0:
            os.makedirs(leaf)
        size = int(SMALL_MIN * ratio ** rng.random())
        if number % 3 == 0:
            data = blake3.blake3(b"small-%d" % number).digest(length=size)
            name = f"{leaf}/f{number:07d}.bin"
            random_bytes += size
        else:
            start = rng.randrange(len(pool) - size)
            data = pool[start : start + size]
            name = f"{leaf}/f{number:07d}.txt"
        fd = os.open(name, flags, 0o644)
        try:
            os.write(fd, data)
            mtime = MTIME_BASE_NS + number * 10**9
            os.utime(fd, ns=(mtime, mtime))
        finally:
            os.close(fd)
        written += size
    for dirpath, _dirs, _files in sorted(os.walk(root), key=lambda w: -w[0].count(os.sep)):
        os.utime(dirpath, ns=(MTIME_BASE_NS, MTIME_BASE_NS))
    return {
        "bytes": written,
        "files": SMALL_FILES,
        "symlinks": 0,
        "directories": len(leaves) + SMALL_FANOUT**2 + SMALL_FANOUT,
        "parts_bytes": {"random": random_bytes, "text": written - random_bytes},
    }


@dataclass(frozen=True)
class Case:
    name: str
    #: The result's benchmark name (``bench/results/<benchmark>-<time>.json``).
    benchmark: str
    #: Bumped whenever the case's dataset changes, so a stale one is regenerated.
    generator: int
    generate: Callable[[Path], dict[str, Any]]
    rounds: int
    #: Files compared byte for byte after each restore (besides the largest).
    samples: int
    #: The directory under ``--dir`` holding the dataset (``data``) and its description.
    subdir: str


CASES = {
    "mixed": Case("mixed", "volume", GENERATOR, generate, rounds=3, samples=300, subdir="."),
    # 9 files: comparing all reads 10 GiB twice per tool; 2 and the largest (3-4 GiB) say as much.
    "large": Case("large", "volume-large", 1, generate_large, rounds=1, samples=2, subdir="large"),
    "small": Case("small", "volume-small", 1, generate_small, rounds=1, samples=300, subdir="small"),
}


def ensure_dataset(case: Case, workdir: Path) -> tuple[Path, dict[str, Any]]:
    data = workdir / "data"
    marker = workdir / "dataset.json"
    if marker.exists() and data.is_dir():
        info: dict[str, Any] = json.loads(marker.read_text())
        if info.get("generator") == case.generator:
            return data, {**info, "reused": True}
    print(f"generating the {case.name} dataset into {data} (once) ...", flush=True)
    started = time.perf_counter()
    marker.unlink(missing_ok=True)
    workdir.mkdir(parents=True, exist_ok=True)
    info = {"generator": case.generator, **case.generate(data)}
    info["generation_seconds"] = round(time.perf_counter() - started, 1)
    marker.write_text(json.dumps(info, indent=2) + "\n")
    print(
        f"  {info['bytes'] / MiB:.0f} MiB, {info['files']} files in {info['generation_seconds']} s",
        flush=True,
    )
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


#: GNU time runs every measured process and writes its peak RSS (KiB) and CPU seconds. ``ru_maxrss`` of a
#: child this script forks would be no less than this script's own resident set at the fork (Linux keeps
#: the high-water mark across ``exec``); GNU time's children are forked from a 2 MB process instead.
TIME = "/usr/bin/time"
TIME_FORMAT = "%M %U %S"


class Timed:
    """A command run under GNU time: its peak RSS and CPU time once it has ended."""

    def __init__(self, argv: list[str]) -> None:
        fd, self.report = tempfile.mkstemp(prefix="davit-bench-time-")
        os.close(fd)
        self.argv = [TIME, "-f", TIME_FORMAT, "-o", self.report, *argv]

    def usage(self) -> dict[str, float]:
        # On a failure GNU time writes "Command exited with non-zero status N" first: the last line is ours.
        text = Path(self.report).read_text()
        os.unlink(self.report)
        max_rss_kib, user, system = text.strip().splitlines()[-1].split()
        return {
            "cpu_seconds": round(float(user) + float(system), 3),
            "peak_rss_mb": round(int(max_rss_kib) * 1024 / 1e6, 1),
        }


def load_1min() -> float:
    return round(os.getloadavg()[0], 2)


def run_measured(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> tuple[str, dict[str, Any]]:
    """Run a command to its end; its stdout, and its wall time, CPU time and peak RSS."""
    timed = Timed(argv)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        load = load_1min()
        started = time.perf_counter()
        returncode = subprocess.run(
            timed.argv, env=env, cwd=cwd, stdout=out, stderr=err, check=False
        ).returncode
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    usage = timed.usage()
    # borg exits with 1 for warnings (e.g. a file that changed while read), which no phase here expects.
    if returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({returncode}):\n{stderr[-4000:]}")
    return stdout, {"seconds": round(seconds, 3), **usage, "load_1min": load}


# --- Davit, in a process of its own per phase ------------------------------------------------------------


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


READY = "davit-phase-ready"
RESULT = "davit-phase-result "


def davit_phase_process() -> None:
    """The child's side: Davit is imported (with this module); say so, wait for the phase to run, run it
    and write its result and time as one JSON line."""
    print(READY, flush=True)
    request = json.loads(sys.stdin.readline())
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if request["phase"] == "restore":
        result: dict[str, Any] = {
            "files": davit_restore(Path(request["repo"]), request["tree"], Path(request["target"]))
        }
    else:
        tree_id, new_chunks = davit_backup(Path(request["repo"]), Path(request["data"]), request["previous"])
        result = {"tree": tree_id, "new_chunks": new_chunks}
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(RESULT + json.dumps({**result, "seconds": seconds, "cpu_seconds": cpu}), flush=True)


def read_until(stream: IO[str], prefix: str) -> str:
    """The first line of ``stream`` starting with ``prefix`` (other output, such as logs, is passed on)."""
    for line in stream:
        if line.startswith(prefix):
            return line[len(prefix) :]
        sys.stderr.write(line)
    raise SystemExit(f"the Davit phase process ended before writing {prefix.strip()!r}")


class Davit:
    name = "davit"

    def __init__(self, run: Path, cold: bool) -> None:
        self.repo = run / "davit-repo"
        self.restored = run / "davit-restore"
        self.cold = cold
        self.trees: list[str] = []
        self.repo.mkdir(parents=True)
        self.restored.mkdir(parents=True)

    def _phase(self, request: dict[str, Any]) -> dict[str, Any]:
        timed = Timed(
            [sys.executable, "-c", "from bench.volume import davit_phase_process; davit_phase_process()"]
        )
        proc = subprocess.Popen(
            timed.argv,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        read_until(proc.stdout, READY)
        if self.cold:
            drop_caches()
        load = load_1min()
        proc.stdin.write(json.dumps(request) + "\n")
        proc.stdin.close()
        result: dict[str, Any] = json.loads(read_until(proc.stdout, RESULT))
        proc.stdout.close()
        if proc.wait() != 0:
            raise SystemExit(f"the Davit phase process failed ({proc.returncode})")
        usage = timed.usage()
        return {
            **result,
            "seconds": round(result["seconds"], 3),
            "cpu_seconds": round(result["cpu_seconds"], 3),
            # The whole process's, its start and imports included, as restic's and borg's are.
            "process_cpu_seconds": usage["cpu_seconds"],
            "peak_rss_mb": usage["peak_rss_mb"],
            "load_1min": load,
        }

    def backup(self, data: Path, label: str) -> dict[str, Any]:
        previous = self.trees[-1] if self.trees else None
        m = self._phase({"phase": "backup", "repo": str(self.repo), "data": str(data), "previous": previous})
        if previous is not None:
            m["tree_unchanged"] = m["tree"] == previous
        self.trees.append(m.pop("tree"))
        return m

    def restore_first(self, data: Path) -> tuple[dict[str, Any], Path]:
        m = self._phase(
            {"phase": "restore", "repo": str(self.repo), "tree": self.trees[0], "target": str(self.restored)}
        )
        return m, self.restored


# --- the peers --------------------------------------------------------------------------------------------


class Restic:
    name = "restic"

    def __init__(self, run: Path, cold: bool) -> None:
        self.repo = run / "restic-repo"
        self.restored = run / "restic-restore"
        self.cold = cold
        self.env = {
            **os.environ,
            "RESTIC_REPOSITORY": str(self.repo),
            "RESTIC_PASSWORD": PASSWORD,
            "RESTIC_CACHE_DIR": str(run / "restic-cache"),
        }
        self.restored.mkdir(parents=True)
        self.repository_version = self.init()

    def run(self, *args: str, phase: bool = True) -> tuple[str, dict[str, Any]]:
        if phase and self.cold:
            drop_caches()
        return run_measured(["restic", *args], self.env)

    def init(self) -> int:
        """A new repository, in format version 2 (the one with compression) where restic knows it."""
        try:
            self.run("init", "--repository-version", "2", phase=False)
        except SystemExit:
            self.run("init", phase=False)
        config = json.loads(self.run("cat", "config", phase=False)[0])
        return int(config["version"])

    def backup(self, data: Path, label: str) -> dict[str, Any]:
        out, m = self.run("backup", "--json", "--tag", label, str(data))
        summaries = [json.loads(line) for line in out.splitlines() if '"summary"' in line]
        m["data_added"] = summaries[-1].get("data_added") if summaries else None
        return m

    def restore_first(self, data: Path) -> tuple[dict[str, Any], Path]:
        _, m = self.run("restore", "latest", "--tag", "first_backup", "--target", str(self.restored))
        return m, self.restored / data.relative_to(data.anchor)


class Borg:
    name = "borg"
    compression = "zstd,3"
    encryption = "repokey"

    def __init__(self, run: Path, cold: bool) -> None:
        self.repo = run / "borg-repo"
        self.restored = run / "borg-restore"
        self.cold = cold
        self.env = {
            **os.environ,
            "BORG_PASSPHRASE": PASSWORD,
            # Cache, config, keys and security records under the run directory, deleted with it.
            "BORG_BASE_DIR": str(run / "borg-home"),
            # Nothing here is interactive: a question borg would ask must not hang the benchmark.
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
        }
        self.restored.mkdir(parents=True)
        run_measured(["borg", "init", "--encryption", self.encryption, str(self.repo)], self.env)

    def backup(self, data: Path, label: str) -> dict[str, Any]:
        if self.cold:
            drop_caches()
        argv = [
            "borg",
            "create",
            "--json",
            "--compression",
            self.compression,
            f"{self.repo}::{label}",
            str(data),
        ]
        out, m = run_measured(argv, self.env)
        stats = json.loads(out).get("archive", {}).get("stats", {})
        m["deduplicated_size"] = stats.get("deduplicated_size")
        return m

    def restore_first(self, data: Path) -> tuple[dict[str, Any], Path]:
        if self.cold:
            drop_caches()
        _, m = run_measured(["borg", "extract", f"{self.repo}::first_backup"], self.env, cwd=self.restored)
        return m, self.restored / data.relative_to(data.anchor)


def tool_version(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


# --- the one-file change ------------------------------------------------------------------------------------


class OneFileChange:
    """Rewrites ``CHANGE_BYTES`` in the middle of the dataset's largest file (or half of it, if smaller),
    and puts the bytes and the mtime back afterwards."""

    def __init__(self, data: Path) -> None:
        largest = max(
            (os.path.join(d, f) for d, _dirs, files in os.walk(data) for f in files),
            key=lambda p: (os.lstat(p).st_size, p),
        )
        self.path = Path(largest)
        size = self.path.stat().st_size
        self.length = min(CHANGE_BYTES, size // 2)
        self.offset = (size - self.length) // 2

    def __enter__(self) -> OneFileChange:
        st = self.path.stat()
        self.mtime_ns = st.st_mtime_ns
        with self.path.open("r+b") as f:
            f.seek(self.offset)
            self.original = f.read(self.length)
            f.seek(self.offset)
            f.write(blake3.blake3(b"davit-bench-change").digest(length=self.length))
        return self

    def __exit__(self, *exc: object) -> None:
        with self.path.open("r+b") as f:
            f.seek(self.offset)
            f.write(self.original)
        os.utime(self.path, ns=(self.mtime_ns, self.mtime_ns))


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


def one_tool(name: str, run: Path, data: Path, cold: bool, samples: int) -> dict[str, Any]:
    """The tool's four phases with a fresh repository in ``run``, its restore checked, then removed."""
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    started = time.perf_counter()
    makers: dict[str, Callable[[Path, bool], Davit | Restic | Borg]] = {
        "davit": Davit,
        "restic": Restic,
        "borg": Borg,
    }
    tool = makers[name](run, cold)
    out: dict[str, Any] = {}
    if isinstance(tool, Restic):
        out["repository_version"] = tool.repository_version
    for phase in PHASES[:3]:
        # The first backup's stored size includes what creating the repository wrote.
        before = 0 if phase == "first_backup" else dir_bytes(tool.repo)
        if phase == "changed_backup":
            with OneFileChange(data):
                m = tool.backup(data, phase)
        else:
            m = tool.backup(data, phase)
        m["stored_bytes" if phase == "first_backup" else "added_bytes"] = dir_bytes(tool.repo) - before
        out[phase] = m
        print(f"  {name:<6} {phase:<14} {m}", flush=True)
    m, restored = tool.restore_first(data)
    out["restore"] = m
    print(f"  {name:<6} {'restore':<14} {m}", flush=True)
    out["repository_bytes"] = dir_bytes(tool.repo)
    out["verification"] = verify(data, restored, mtimes=True, samples=samples)
    print(f"  {name:<6} restore checked: {out['verification']['problem_count']} problems", flush=True)
    shutil.rmtree(run)
    out["tool_seconds"] = round(time.perf_counter() - started, 1)
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
    if len(rounds) > 1:
        out["seconds_per_round"] = [r["seconds"] for r in rounds]
    return out


def throughput(nbytes: int, seconds: float) -> float | None:
    return round(nbytes / MiB / seconds, 1) if seconds else None


def mib(nbytes: int) -> float:
    return round(nbytes / MiB, 1)


#: SPEC §9's targets for the mixed case, per (measure, peer): a sentence and whether Davit's value,
#: given the peer's, meets it.
TargetCheck = tuple[str, Callable[[float, float], bool]]
MIXED_TARGETS: dict[tuple[str, str], TargetCheck] = {
    ("first backup", "restic"): ("<= 0.35 x peer", lambda d, p: d <= 0.35 * p),
    ("first backup", "borg"): ("< peer", lambda d, p: d < p),
    ("first backup: stored", "restic"): ("<= peer", lambda d, p: d <= p),
    ("first backup: stored", "borg"): ("<= peer", lambda d, p: d <= p),
    ("unchanged re-backup", "restic"): ("<= 0.5 x peer", lambda d, p: d <= 0.5 * p),
    ("restore", "restic"): ("<= 0.8 x peer", lambda d, p: d <= 0.8 * p),
}


def measures(tool: dict[str, Any], dataset_bytes: int) -> list[tuple[str, str, float | None]]:
    """(measure, unit, value) of one tool's summarised phases, in the table's order. CPU times are whole
    processes' (for Davit: with the interpreter's start), less disturbed than wall times on a busy machine."""
    first, restore = tool["first_backup"], tool["restore"]

    def cpu(phase: dict[str, Any]) -> float:
        return float(phase.get("process_cpu_seconds", phase["cpu_seconds"]))

    return [
        ("first backup", "s", first["seconds"]),
        ("first backup: throughput", "MiB/s", throughput(dataset_bytes, first["seconds"])),
        ("first backup: CPU time", "s", cpu(first)),
        ("first backup: stored", "MiB", mib(first["stored_bytes"])),
        ("first backup: peak RSS", "MB", first["peak_rss_mb"]),
        ("unchanged re-backup", "s", tool["rebackup"]["seconds"]),
        ("unchanged re-backup: peak RSS", "MB", tool["rebackup"]["peak_rss_mb"]),
        ("one file changed, re-backup", "s", tool["changed_backup"]["seconds"]),
        ("one file changed, re-backup: added", "MiB", mib(tool["changed_backup"]["added_bytes"])),
        ("one file changed, re-backup: peak RSS", "MB", tool["changed_backup"]["peak_rss_mb"]),
        ("restore", "s", restore["seconds"]),
        ("restore: throughput", "MiB/s", throughput(dataset_bytes, restore["seconds"])),
        ("restore: CPU time", "s", cpu(restore)),
        ("restore: peak RSS", "MB", restore["peak_rss_mb"]),
    ]


def table_rows(
    case: Case, tools: dict[str, dict[str, Any]], peer_names: dict[str, str], dataset_bytes: int
) -> list[Row]:
    """One row per measure and peer: Davit's value against restic's, then against borg's."""
    if "davit" not in tools:
        return []
    rows = []
    davit = measures(tools["davit"], dataset_bytes)
    for peer in (p for p in ("restic", "borg") if p in tools):
        theirs = measures(tools[peer], dataset_bytes)
        for (measure, unit, ours), (_, _, value) in zip(davit, theirs, strict=True):
            target, met = "", None
            check = MIXED_TARGETS.get((measure, peer)) if case.name == "mixed" else None
            if check is not None and ours is not None and value is not None:
                target, met = check[0], check[1](ours, value)
            note = f"{ours / value:.2f} x peer" if ours is not None and value else ""
            rows.append(Row(measure, ours, unit, value, peer_names[peer], target, met, note))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--case", choices=sorted(CASES), default="mixed", help="the dataset (default: mixed)")
    parser.add_argument("--dir", type=Path, default=Path(".dev-bench/volume"), help="work directory")
    parser.add_argument("--rounds", type=int, help="rounds of every phase (default: 3 for mixed, else 1)")
    parser.add_argument("--samples", type=int, help="files compared byte for byte after each restore")
    parser.add_argument("--tools", default=",".join(TOOLS), help="comma-separated, of: davit,restic,borg")
    args = parser.parse_args()
    case = CASES[args.case]
    rounds_wanted = args.rounds or case.rounds
    samples = case.samples if args.samples is None else args.samples
    names = [t for t in TOOLS if t in args.tools.split(",")]

    versions = {"davit": "davit"}
    for peer, argv in (("restic", ["restic", "version"]), ("borg", ["borg", "--version"])):
        if peer not in names:
            continue
        if shutil.which(peer) is None:
            print(f"{peer} is not installed (make deps installs it)", file=sys.stderr)
            return 2
        versions[peer] = tool_version(argv)
    # "restic 0.14.0 compiled with ..." and "borg 1.2.4": the name and version are the first two words.
    peer_names = {peer: " ".join(v.split()[:2]) for peer, v in versions.items()}

    workdir = (args.dir / case.subdir).resolve()
    data, dataset = ensure_dataset(case, workdir)
    run = workdir / "run"
    cold = drop_caches()
    if not cold:
        print("cannot drop the page cache: every phase runs with the dataset in a warm cache", flush=True)
        warm(data)
    # Other processes compete for the CPUs and the disk: the load averages say how much, for the record.
    load_start = [round(x, 2) for x in os.getloadavg()]
    started = time.perf_counter()

    rounds: list[dict[str, dict[str, Any]]] = []
    for number in range(rounds_wanted):
        print(f"round {number + 1} of {rounds_wanted}:", flush=True)
        # The tools take turns going first, so none always finds the page cache or the disk as another
        # left them.
        order = names[number % len(names) :] + names[: number % len(names)]
        rounds.append({name: one_tool(name, run, data, cold, samples) for name in order})

    tools: dict[str, dict[str, Any]] = {}
    for name in names:
        per_round = [r[name] for r in rounds]
        tools[name] = {phase: summarise([r[phase] for r in per_round]) for phase in PHASES}
        tools[name]["repository_bytes"] = statistics.median(r["repository_bytes"] for r in per_round)
        tools[name]["tool_seconds_per_round"] = [r["tool_seconds"] for r in per_round]
    if "restic" in tools:
        tools["restic"]["repository_version"] = rounds[0]["restic"]["repository_version"]
    settings: dict[str, dict[str, Any]] = {
        "davit": {
            "encryption": False,
            "compression": "zstd level 3",
            "process": "a Python process per phase",
        },
        "restic": {
            "version": versions.get("restic"),
            "encryption": True,
            "compression": "auto (default): zstd, fastest",
        },
        "borg": {
            "version": versions.get("borg"),
            "encryption": Borg.encryption,
            "compression": Borg.compression,
        },
    }
    problems = [
        f"round {n + 1}, {name}: {p}"
        for n, r in enumerate(rounds)
        for name in names
        for p in r[name]["verification"]["problems"]
    ]
    rows = table_rows(case, tools, peer_names, dataset["bytes"])
    targets = [row for row in rows if row.met is not None]
    first_checked = rounds[0][names[0]]["verification"]
    result = {
        "case": case.name,
        "dataset": {
            "path": str(data),
            "mib": round(dataset["bytes"] / MiB, 1),
            **{k: v for k, v in dataset.items() if k != "generator"},
        },
        "rounds": rounds_wanted,
        "cold_cache": cold,
        "tools": {name: {**settings[name], **tools[name]} for name in names},
        "within_targets": all(row.met for row in targets),
        "verification": {
            "entries": first_checked["entries"],
            "files": first_checked["files"],
            "content_compared_per_restore": first_checked["content_compared"],
            "restores_match": not problems,
            "problems": problems[:50],
        },
        "run_seconds": round(time.perf_counter() - started, 1),
        "load_average_at_start": load_start,
    }
    write_result(case.benchmark, result, rows)
    if problems:
        print("A RESTORE DIFFERS FROM THE DATASET:\n  " + "\n  ".join(problems[:20]), file=sys.stderr)
        return 2
    return 0 if result["within_targets"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
