"""``bench/RESULTS.md`` from the newest run of each benchmark in ``bench/results/``: one table of every
measure next to its peer and its target, and the machines the runs were made on.

Run by ``make bench`` after the benchmarks (``python -m bench.report``); a run without ``rows`` (written
before results carried them) is listed but not tabled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import RESULTS

OUT = Path(__file__).resolve().parent / "RESULTS.md"
#: The order benchmarks appear in; any other comes after them, by name.
#: Fault injection (`make chaos`) keeps its own table (docs/chaos.md).
EXCLUDED = frozenset({"chaos"})
ORDER = (
    "export",
    "restore",
    "plan-memory",
    "large",
    "scaling",
    "volume",
    "volume-large",
    "volume-small",
    "api-load",
)


def newest_runs(results: Path = RESULTS) -> dict[str, tuple[Path, dict[str, Any]]]:
    """benchmark → (file, result) of its newest run (by the time it was written)."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for path in sorted(results.glob("*.json")):
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        name = result.get("benchmark") if isinstance(result, dict) else None
        if not isinstance(name, str) or name in EXCLUDED:
            continue
        when = str(result.get("when") or "")
        if name not in found or when >= str(found[name][1].get("when") or ""):
            found[name] = (path, result)
    return found


def _value(value: Any, unit: str) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        text = f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.1f}"
    elif isinstance(value, int):
        text = f"{value:,}"
    else:
        text = str(value)
    return f"{text} {unit}".strip() if unit else text


def _met(met: Any) -> str:
    return {True: "yes", False: "**no**"}.get(met, "-")


def _machine(machine: dict[str, Any]) -> str:
    parts = [
        f"{machine.get('cpus', '?')} CPUs",
        str(machine.get("cpu_model") or ""),
        f"{machine['memory_gib']} GiB" if machine.get("memory_gib") else "",
        f"Linux {machine['kernel']}" if machine.get("kernel") else "",
        f"Python {machine.get('python', '?')}",
    ]
    load = machine.get("load_average_at_end")
    if load:
        parts.append(f"load {load[0]} at the end")
    return ", ".join(p for p in parts if p)


def render(runs: dict[str, tuple[Path, dict[str, Any]]]) -> str:
    names = [n for n in ORDER if n in runs] + sorted(n for n in runs if n not in ORDER)
    lines = [
        "# Benchmark results",
        "",
        "The newest run of each benchmark (`make bench`, SPEC §9), written by `python -m bench.report` from",
        "`bench/results/*.json`. Each row is one measure: Davit's value, its peer's where there is one, the",
        "target and whether it was met. The JSON of each run holds the detail behind its rows.",
        "",
        "| benchmark | measure | Davit | peer | target | met | note |",
        "|---|---|---|---|---|---|---|",
    ]
    untabled = []
    for name in names:
        path, result = runs[name]
        rows = result.get("rows")
        if not rows:
            untabled.append(name)
            continue
        for row in rows:
            peer = _value(row.get("peer"), row.get("unit", ""))
            if row.get("peer_name") and row.get("peer") is not None:
                peer = f"{peer} ({row['peer_name']})"
            cells = [name, row.get("measure", ""), _value(row.get("davit"), row.get("unit", "")), peer,
                     row.get("target") or "-", _met(row.get("met")), row.get("note") or ""]  # fmt: skip
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    lines += ["", "## Runs", "", "| benchmark | file | when (UTC) | machine |", "|---|---|---|---|"]
    for name in names:
        path, result = runs[name]
        machine = result.get("machine") or {}
        lines.append(f"| {name} | `results/{path.name}` | {result.get('when', '?')} | {_machine(machine)} |")
    if untabled:
        lines += ["", "Not tabled (their newest run predates the table's rows): " + ", ".join(untabled) + "."]
    return "\n".join(lines) + "\n"


def main() -> int:
    OUT.write_text(render(newest_runs()))
    print(f"written to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
