"""The heartbeat file and the probe that reads it (``davit.health``)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from davit import health


def test_a_fresh_beat_passes_and_an_old_or_missing_one_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "beat"
    assert health.main([str(path)]) == 1
    assert "no heartbeat" in capsys.readouterr().err
    heartbeat = health.Heartbeat(str(path))
    heartbeat.beat()
    assert health.main([str(path), "--max-age", "30"]) == 0
    old = time.time() - 120
    os.utime(path, (old, old))
    assert health.main([str(path), "--max-age", "30"]) == 1
    assert "120s ago" in capsys.readouterr().err or "121s ago" in capsys.readouterr().err
    heartbeat.stop()
    assert not path.exists()


def test_beats_are_written_at_most_twice_per_interval(tmp_path: Path) -> None:
    path = tmp_path / "beat"
    heartbeat = health.Heartbeat(str(path))
    heartbeat.beat()
    old = time.time() - 100
    os.utime(path, (old, old))
    heartbeat.beat()  # right after the first: not written again
    assert health.age(str(path)) is not None and health.age(str(path)) >= 99  # type: ignore[operator]


def test_an_unwritable_heartbeat_never_raises(tmp_path: Path) -> None:
    health.Heartbeat(str(tmp_path / "missing-dir" / "beat")).beat()
    health.Heartbeat("").beat()
    health.Heartbeat("").stop()
