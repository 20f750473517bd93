"""The restore's init container (davit.restore.init_container): it waits for the node agent's marker in every
volume, removes it, and fails clearly when it cannot work or waits too long."""

from __future__ import annotations

import io
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from davit.restore import init_container
from tests.conftest import REPO_ROOT

RESTORE_UID = "5f0c8a52-6b1e-4f0e-9a57-2d0f3c1f9e11"
FAST_POLL = 0.02


def volumes(tmp_path: Path, *names: str) -> list[Path]:
    dirs = []
    for name in names:
        path = tmp_path / name
        path.mkdir()
        (path / "table").write_bytes(b"restored data")
        dirs.append(path)
    return dirs


def write_marker(volume_dir: Path, restore_uid: str = RESTORE_UID) -> None:
    marker = init_container.marker_path(volume_dir, restore_uid)
    marker.parent.mkdir(exist_ok=True)
    marker.touch()


def run(dirs: list[Path], env: dict[str, str] | None = None, poll: float = FAST_POLL) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    env = {init_container.UID_ENV: RESTORE_UID} if env is None else env
    code = init_container.main([str(d) for d in dirs], env=env, out=out, err=err, poll_seconds=poll)
    return code, out.getvalue(), err.getvalue()


def in_background(delay: float, *markers: Path) -> threading.Thread:
    """Create the markers of ``markers`` (volume directories) after ``delay`` seconds, as the node
    agent would once it has written them."""

    def write() -> None:
        for volume_dir in markers:
            time.sleep(delay)
            write_marker(volume_dir)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_waits_until_every_marker_appears_then_removes_them(tmp_path: Path) -> None:
    data, logs = volumes(tmp_path, "data", "logs")
    started = time.monotonic()  # before the writer's clock starts: a busy machine may run it first
    writer = in_background(0.3, data, logs)

    code, out, err = run([data, logs])

    writer.join()
    assert code == 0, err
    assert time.monotonic() - started >= 0.6, "returned before the second volume's marker was written"
    assert out.splitlines() == [
        f"davit-restore-wait: {data} restored by restore {RESTORE_UID}",
        f"davit-restore-wait: {logs} restored by restore {RESTORE_UID}",
    ]
    for volume_dir in (data, logs):
        assert sorted(p.name for p in volume_dir.iterdir()) == ["table"], "the marker directory is left"


def test_a_marker_of_another_restore_does_not_release_the_wait_and_is_kept(tmp_path: Path) -> None:
    (data,) = volumes(tmp_path, "data")
    write_marker(data, "uid-of-an-earlier-restore")
    writer = in_background(0.3, data)

    code, _out, err = run([data])

    writer.join()
    assert code == 0, err
    assert not init_container.marker_path(data, RESTORE_UID).exists()
    assert init_container.marker_path(data, "uid-of-an-earlier-restore").exists(), "not this restore's marker"


def test_times_out_naming_the_volume_still_missing_and_keeps_the_markers_that_came(tmp_path: Path) -> None:
    data, logs = volumes(tmp_path, "data", "logs")
    write_marker(data)
    env = {init_container.UID_ENV: RESTORE_UID, init_container.TIMEOUT_ENV: "0.3"}
    started = time.monotonic()

    code, out, err = run([data, logs], env=env)

    elapsed = time.monotonic() - started
    assert code == init_container.EXIT_TIMEOUT
    assert 0.3 <= elapsed < 5
    assert out == ""
    assert f"no data after 0.3s for {logs}" in err and str(data) not in err
    # A restarted container must find it again, so nothing is consumed on a timeout.
    assert init_container.marker_path(data, RESTORE_UID).exists()


def test_the_timeout_does_not_stop_a_wait_that_succeeds_within_it(tmp_path: Path) -> None:
    (data,) = volumes(tmp_path, "data")
    writer = in_background(0.2, data)
    env = {init_container.UID_ENV: RESTORE_UID, init_container.TIMEOUT_ENV: "20"}

    code, _out, err = run([data], env=env)

    writer.join()
    assert code == 0, err


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "DAVIT_RESTORE_UID is not set"),
        ({init_container.UID_ENV: "  "}, "DAVIT_RESTORE_UID is not set"),
        ({init_container.UID_ENV: "../etc"}, "cannot name a marker file"),
        ({init_container.UID_ENV: RESTORE_UID, init_container.TIMEOUT_ENV: "soon"}, "is not a number"),
        ({init_container.UID_ENV: RESTORE_UID, init_container.TIMEOUT_ENV: "-1"}, "zero or more"),
        ({init_container.UID_ENV: RESTORE_UID, init_container.TIMEOUT_ENV: "nan"}, "zero or more"),
    ],
)
def test_a_misconfigured_container_exits_at_once_saying_why(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    (data,) = volumes(tmp_path, "data")
    write_marker(data)

    code, out, err = run([data], env=env)

    assert code == init_container.EXIT_USAGE
    assert message in err and out == ""
    assert init_container.marker_path(data, RESTORE_UID).exists()


def test_no_volumes_or_an_unmounted_path_is_a_usage_error(tmp_path: Path) -> None:
    code, _out, err = run([])
    assert code == init_container.EXIT_USAGE and "usage:" in err

    code, _out, err = run([tmp_path / "not-mounted"])
    assert code == init_container.EXIT_USAGE and f"not a mounted directory: {tmp_path / 'not-mounted'}" in err


def test_runs_as_the_init_containers_command(tmp_path: Path) -> None:
    """The command the restore puts into the pod: ``python -m davit.restore.init_container <dirs>``."""
    (data,) = volumes(tmp_path, "data")
    write_marker(data)

    result = subprocess.run(
        [sys.executable, "-m", "davit.restore.init_container", str(data)],
        env={init_container.UID_ENV: RESTORE_UID, "PYTHONPATH": str(REPO_ROOT / "shared")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == f"davit-restore-wait: {data} restored by restore {RESTORE_UID}\n"
    assert not (data / init_container.MARKER_DIR).exists()

    missing_uid = subprocess.run(
        [sys.executable, "-m", "davit.restore.init_container", str(data)],
        env={"PYTHONPATH": str(REPO_ROOT / "shared")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing_uid.returncode == init_container.EXIT_USAGE
    assert "DAVIT_RESTORE_UID is not set" in missing_uid.stderr


# --- the container the restore injects -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod_security", "user", "group"),
    [
        pytest.param({}, 10001, 10001, id="no-user: the Davit image's"),
        pytest.param({"runAsUser": 0, "runAsGroup": 0}, 10001, 10001, id="root: never"),
        pytest.param({"runAsUser": 999, "runAsGroup": 999}, None, None, id="the application's user"),
        pytest.param({"runAsUser": 999}, None, None, id="the application's user, its image's group"),
    ],
)
def test_the_init_container_is_restricted(
    pod_security: dict[str, int], user: int | None, group: int | None
) -> None:
    from davit.restore import inject

    pod = {
        "metadata": {"name": "db-0", "namespace": "shop"},
        "spec": {"securityContext": pod_security, "containers": [{"name": "db", "image": "postgres"}],
                 "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}}]},
    }  # fmt: skip
    mounts = inject.data_mounts(pod, {"data-db-0"})
    held = inject.hold_until_restored(pod, mounts, "restore-uid", "registry.example/davit:1.2.3")
    [container] = held["spec"]["initContainers"]
    assert container["image"] == "registry.example/davit:1.2.3"
    assert container["imagePullPolicy"] == "IfNotPresent"
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True and context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    assert context.get("runAsUser") == user and context.get("runAsGroup") == group
