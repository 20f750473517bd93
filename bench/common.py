"""What every benchmark shares: the machine it ran on, one JSON file per run, the rows of the results
table (``bench/RESULTS.md``, written by ``python -m bench.report``) and peak memory of processes.

A result's ``rows`` are what the table shows: one measure each, Davit's value next to its peer's and the
target, and whether the target was met. The rest of a result's JSON is the detail behind them.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    measure: str
    davit: float | int | str | None
    unit: str = ""
    peer: float | int | str | None = None
    #: Who the peer is: ``restic 0.14``, ``kubectl-like 8-thread create``.
    peer_name: str = ""
    #: The target as a sentence: ``<= 1.0 x peer``, ``< 300 MB``.
    target: str = ""
    #: None where there is no target (a measure shown for the record).
    met: bool | None = None
    note: str = ""


def machine() -> dict[str, Any]:
    """What the numbers depend on: CPUs, memory, kernel, Python, and the disk the stack writes to."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def write_result(benchmark: str, result: dict[str, Any], rows: list[Row]) -> Path:
    """``bench/results/<benchmark>-<time>.json`` with the result, its rows, the machine and the time."""
    document = {
        "benchmark": benchmark,
        **result,
        "rows": [asdict(row) for row in rows],
        "machine": machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{benchmark}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(document, indent=2))
    print(f"written to {out}")
    return out


def _status_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def peak_rss_mb(pid: int) -> float | None:
    """The process' peak resident set since it started or since ``reset_peak_rss`` (VmHWM), in MB."""
    kib = _status_kib(pid, "VmHWM")
    return None if kib is None else round(kib * 1024 / 1e6, 1)


def reset_peak_rss(pid: int) -> bool:
    """Start the process' peak resident set afresh from its current one (``clear_refs`` 5, Linux ≥ 4.0),
    so that a phase's peak is measured apart from what the process did before. False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True
