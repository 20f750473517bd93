"""The short version of ``make chaos`` that ``make test`` runs, and the stack's own supervision: a
SIGKILLed service comes back alone, the way Kubernetes restarts a pod, and every object stays.

The chaos stack is its own (``DAVIT_CHAOS_STACK_DIR``, default ``.dev-test-chaos/``), with every Davit
service as a recorded process, started here and stopped at the end of the module.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.bed import ADMIN, AppShape, Bed, MiB, unique
from tests.chaos.runner import load_cases, run_case, table
from tests.conftest import IN_CI, REPO_ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

SMOKE = [c.name for c in load_cases().values() if c.smoke]


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    state_dir = Path(os.environ.get("DAVIT_CHAOS_STACK_DIR", REPO_ROOT / ".dev-test-chaos"))
    chaos = Bed(state_dir, say=print)
    chaos.shape = AppShape(volume_bytes=16 * MiB, small_files=100, configmaps=120)
    try:
        chaos.up()
    except FileNotFoundError as exc:
        if IN_CI:
            raise
        pytest.skip(f"local stack component missing: {exc}")
    try:
        yield chaos
    finally:
        if os.environ.get("DAVIT_KEEP_STACK") != "1":
            chaos.down()


def test_make_up_restarts_only_what_died_and_keeps_every_object(bed: Bed) -> None:
    namespace = unique("kept")
    bed.kubectl("create", "namespace", namespace)
    bed.kubectl("-n", namespace, "create", "configmap", "kept", "--from-literal=made=before")
    before = {r.name: r for r in bed.stack.procs.all()}

    bed.kill("backup", "etcd")
    assert bed.state is not None
    assert bed.stack.dead(bed.state) == ["a-etcd", "a-backup"]
    restarted = bed.up()

    assert restarted == ["a-etcd", "a-backup"]
    after = {r.name: r for r in bed.stack.procs.all()}
    assert set(after) == set(before)
    for name, record in before.items():
        if name not in restarted:
            assert after[name] == record, f"{name} was restarted though it had not died"
        else:
            assert after[name].pid != record.pid and after[name].alive()
    kept = json.loads(bed.kubectl("-n", namespace, "get", "configmap", "kept", "-o", "json"))
    assert kept["data"] == {"made": "before"}, "etcd came back without its data"

    # The restarted backup service works: a backup of the namespace completes.
    location, path = bed.location(unique("kept-loc"))
    try:
        bed.backup("after-restart", location, namespace)
        status, _ = bed.run("applicationbackups", "after-restart", path, [], timeout=180)
        assert status["status"] == "Successful", status
    finally:
        bed.kubectl("-n", ADMIN, "delete", "applicationbackup", "after-restart", "--wait=false", check=False)
        bed.kubectl("-n", ADMIN, "delete", "backuplocation", location, "--wait=false", check=False)
        bed.delete_namespace(namespace)


@pytest.mark.parametrize("name", SMOKE)
def test_chaos_case(bed: Bed, name: str) -> None:
    result = run_case(bed, load_cases()[name])
    assert result.ok, table([result]) + "\n" + "\n".join(result.notes)
    assert result.lost == 0 and result.stored_twice == 0
    assert not result.missed or result.faults, "no fault point was reached"
