"""``python -m dashboards``: write deploy/monitoring/dashboards/davit.json from ``dashboards.davit``."""

from __future__ import annotations

from dashboards.davit import OUTPUT, render


def main() -> None:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
