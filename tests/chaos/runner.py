"""``make chaos``: the fault-injection suite on the real local stack (``docs/chaos.md``).

    python -m tests.chaos.runner [--smoke] [--case NAME ...] [--dir .dev-chaos] [--keep]

Starts the local stack (or keeps the one in ``--dir``, restarting only what died), runs every registered
case (``tests/chaos/cases.py`` and any ``tests/chaos/cases_*.py``) one after the other, prints one table
and writes it to ``bench/results/chaos-<UTC time>.json``. Exits 1 when a case failed or lost anything.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.chaos import cases
from tests.chaos.bed import Bed
from tests.chaos.cases import CASES, Case, Result

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
RESULTS = REPO_ROOT / "bench" / "results"
DEFAULT_DIR = REPO_ROOT / ".dev-chaos"


def load_cases() -> dict[str, Case]:
    """The registry, with the cases of every ``cases_*.py`` module beside ``cases.py``."""
    for path in sorted(Path(cases.__file__).parent.glob("cases_*.py")):
        importlib.import_module(f"tests.chaos.{path.stem}")
    return CASES


def select(registry: dict[str, Case], names: Iterable[str], smoke: bool) -> list[Case]:
    wanted = list(names)
    unknown = [n for n in wanted if n not in registry]
    if unknown:
        raise SystemExit(f"unknown case(s): {', '.join(unknown)}; known: {', '.join(registry)}")
    chosen = [registry[n] for n in wanted] if wanted else list(registry.values())
    return [c for c in chosen if c.smoke] if smoke and not wanted else chosen


def run_case(bed: Bed, chosen: Case) -> Result:
    result = Result(chosen.name)
    started = time.monotonic()
    bed.say(f"\n== {chosen.name}: {chosen.description}")
    bed.died_by_itself = []
    try:
        bed.up()  # whatever an earlier case left dead comes back first
        chosen.run(bed, result)
    except Exception as exc:  # a case that raises is a row of the table, not the end of the run
        result.error = f"{type(exc).__name__}: {exc}"
        bed.say(traceback.format_exc())
    if bed.died_by_itself:
        result.notes.append(f"restarted after dying by themselves: {', '.join(bed.died_by_itself)}")
    result.seconds = time.monotonic() - started
    verdict = "ok" if result.ok else "FAILED"
    bed.say(f"   {verdict} in {result.seconds:.0f}s: {', '.join(result.faults) or 'no fault injected'}")
    for note in result.notes:
        bed.say(f"     {note}")
    return result


COLUMNS = ("case", "faults injected", "operations completed", "bytes verified", "objects verified",
           "stored twice", "lost", "result")  # fmt: skip


def table(results: list[Result]) -> str:
    rows = [
        (
            r.case,
            str(len(r.faults)) + (f" ({len(r.missed)} missed)" if r.missed else ""),
            f"{r.operations}/{r.operations_expected}",
            f"{r.bytes_verified:,}",
            f"{r.objects_verified:,}",
            str(r.stored_twice),
            str(r.lost),
            "ok" if r.ok else ("FAILED: " + (r.error or "see the notes")[:60]),
        )
        for r in results
    ]
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(COLUMNS)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*COLUMNS), line.format(*("-" * w for w in widths))]
    out += [line.format(*row) for row in rows]
    total_lost = sum(r.lost for r in results)
    out.append(
        f"{len(results)} case(s), {sum(r.ok for r in results)} ok, "
        f"{sum(len(r.faults) for r in results)} fault(s) injected, "
        f"{sum(r.bytes_verified for r in results):,} bytes and {sum(r.objects_verified for r in results):,} "
        f"objects verified, {total_lost} lost"
    )
    return "\n".join(out)


def write_results(results: list[Result], smoke: bool, started: datetime) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"chaos-{started.strftime('%Y%m%d-%H%M%S')}.json"
    body: dict[str, Any] = {
        "benchmark": "chaos",
        "started": started.isoformat(),
        "finished": datetime.now(UTC).isoformat(),
        "smoke": smoke,
        "host": {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()},
        "cases": [r.to_json() for r in results],
        "lost": sum(r.lost for r in results),
        "ok": all(r.ok for r in results),
    }
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    tmp.replace(path)
    return path


def run(state_dir: Path, names: Iterable[str] = (), smoke: bool = False, keep: bool = False) -> list[Result]:
    """Run the chosen cases on the stack in ``state_dir``; returns their results (printing as it goes)."""
    chosen = select(load_cases(), names, smoke)
    bed = Bed(state_dir, say=lambda text: print(text, flush=True))
    started = time.monotonic()
    print(f"chaos: {len(chosen)} case(s) on the stack in {state_dir}", flush=True)
    bed.up()
    print(f"stack ready in {time.monotonic() - started:.0f}s", flush=True)
    try:
        return [run_case(bed, c) for c in chosen]
    finally:
        if not keep:
            bed.down()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.runner", description=__doc__.split("\n")[0])
    default_dir = Path(os.environ.get("DAVIT_CHAOS_STACK_DIR", DEFAULT_DIR))
    parser.add_argument("--dir", type=Path, default=default_dir, help="the stack's state directory")
    parser.add_argument("--case", action="append", default=[], help="run only this case (repeatable)")
    parser.add_argument("--smoke", action="store_true", help="only the short version's cases")
    parser.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    parser.add_argument("--list", action="store_true", help="list the cases and exit")
    args = parser.parse_args(argv)
    if args.list:
        for c in load_cases().values():
            print(f"{c.name:22} {'(smoke) ' if c.smoke else ''}{c.description}")
        return 0
    started = datetime.now(UTC)
    results = run(args.dir, args.case, args.smoke, args.keep)
    print()
    print(table(results))
    print(f"written to {write_results(results, args.smoke, started).relative_to(REPO_ROOT)}")
    return 0 if results and all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
