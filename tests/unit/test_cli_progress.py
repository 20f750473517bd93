"""``--wait``'s bytes done, throughput and time left (``davit_cli.progress``), and ``describe --details``'
list of what a backup stored."""

from __future__ import annotations

from typing import Any

import pytest

from davit_cli import output
from davit_cli.progress import WINDOW_SECONDS, Progress, volume_bytes
from davit_cli.waiting import progress_columns

MiB = 1 << 20


def operation(*volumes: tuple[int | None, int | None]) -> dict[str, Any]:
    return {"status": {"volumes": [{"bytesDone": done, "totalSize": total} for done, total in volumes]}}


def test_bytes_are_summed_over_the_volumes() -> None:
    assert volume_bytes(operation((10, 100), (None, 50), (5, None))) == (15, 150)
    assert volume_bytes({"status": {}}) == (0, 0)
    assert volume_bytes(operation((True, "100"))) == (0, 0)  # type: ignore[arg-type]


def test_throughput_and_time_left_follow_the_recent_pace() -> None:
    progress = Progress()
    progress.add(0.0, operation((0, 100 * MiB)))
    assert progress.rate() is None and progress.eta() is None
    progress.add(10.0, operation((20 * MiB, 100 * MiB)))
    assert progress.rate() == pytest.approx(2 * MiB)
    assert progress.eta() == pytest.approx(40.0)
    assert progress_columns(progress) == ("20.0 MiB / 100.0 MiB", "2.0 MiB/s", "40s")
    # Old samples leave the window: the pace is the recent one.
    progress.add(10.0 + WINDOW_SECONDS + 5, operation((30 * MiB, 100 * MiB)))
    progress.add(10.0 + WINDOW_SECONDS + 10, operation((80 * MiB, 100 * MiB)))
    assert progress.rate() == pytest.approx(10 * MiB)


def test_a_volume_that_started_over_resets_the_pace() -> None:
    progress = Progress()
    progress.add(0.0, operation((50, 100)))
    progress.add(1.0, operation((10, 100)))
    assert progress.rate() is None
    assert progress_columns(Progress()) == ("-", "-", "-")


def test_stored_contents_list_every_resource_by_kind_and_every_volume() -> None:
    manifest = {
        "resources": [
            {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "b"},
            {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "shop", "name": "a"},
            {"apiVersion": "v1", "kind": "Namespace", "name": "shop"},
            "not a resource",
        ],
        "volumes": [{"namespace": "shop", "persistentVolumeClaim": "data", "mode": "filesystem",
                     "status": "Successful", "totalSize": 2 * MiB}],
    }  # fmt: skip
    text = output.stored_contents(manifest)
    assert text.splitlines() == [
        "Stored resources: 3",
        "  ConfigMap.v1 (2)",
        "    shop/a",
        "    shop/b",
        "  Namespace.v1 (1)",
        "    shop",
        "Stored volumes: 1",
        "  shop/data  filesystem  Successful  2.0 MiB",
    ]
    assert '"name": "a"' in output.stored_contents(manifest, "json")
