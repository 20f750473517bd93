"""What the watcher and the exporter ask of the API server while nothing happens, counted by the API
server itself (its audit log, devstack/cluster.py): with 600 finished backups and a resync every two
seconds, each lists the backups once, in pages of 500, and then only watches; the watcher's resyncs
come from memory. `make bench-api` measures the same with 5,000 backups over ten idle minutes."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from bench.api_load import populate
from davit import timeutil
from davit.constants import PLURALS, Kind
from davit.kube import clients
from devstack.audit import count_lists
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import Services
from tests.integration.test_exporter import ExporterProcess

pytestmark = pytest.mark.integration

BACKUPS = 600
PLURAL = PLURALS[Kind.APPLICATION_BACKUP]


@pytest.fixture
def watcher(stack: StackEnv, tmp_path: Path) -> Iterator[Services]:
    services = Services(stack, tmp_path / "logs")
    services.log_dir.mkdir()
    services.start("watcher")
    yield services
    services.stop_all()
    stack.kubectl("-n", "kube-system", "delete", "lease", services.lease, "--ignore-not-found")


def test_idle_watcher_and_exporter_list_once_in_pages(
    stack: StackEnv, namespace: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    populate(client.CustomObjectsApi(clients.api_client(stack.kubeconfig)), namespace, BACKUPS)
    since = (timeutil.utcnow() - datetime.timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    services: Services = request.getfixturevalue("watcher")
    (tmp_path / "exporter").mkdir()
    exporter = ExporterProcess(stack, tmp_path / "exporter")
    try:
        log = services.log_dir / "watcher.log"

        def resyncs() -> int:
            text = log.read_text(errors="replace") if log.exists() else ""
            return sum(
                1 for line in text.splitlines() if '"resync.done"' in line and '"ApplicationBackup"' in line
            )

        # Five resyncs of the backups (every 2 s): idle time in which a relisting watcher would list 5 times.
        wait_for("five resyncs of the backups", lambda: resyncs() >= 5, timeout=60)
        counted = count_lists(Path(stack.env["AUDIT_LOG"]), PLURAL, since=since)
    finally:
        exporter.stop()
    for component in ("davit-watcher", "davit-exporter"):
        lists = counted.get(component)
        assert lists is not None, f"no LIST of {PLURAL} by {component}: {sorted(counted)}"
        assert lists.lists == 1, (component, lists.uris)
        assert lists.unlimited == 0, (component, lists.uris)
        assert lists.pages >= 2, (component, lists.uris)  # 600 backups (and other tests'), 500 a page
