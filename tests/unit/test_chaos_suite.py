"""The chaos suite's own arithmetic (tests/chaos): what counts as verified, lost and stored twice, which
cases a run selects, and the table it prints."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.demo_check import FileEntry
from tests.chaos.bed import Churn, Record, compare
from tests.chaos.cases import CASES, Result
from tests.chaos.runner import select, table


def _configmap(namespace: str, name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
            "data": data}  # fmt: skip


def _file(path: str, sha: str, size: int = 10) -> FileEntry:
    return FileEntry(path, "file", "0644", 1, size=size, sha256=sha)


def _record(namespace: str, objects: list[dict[str, Any]], files: list[FileEntry]) -> Record:
    record = Record(namespace)
    for obj in objects:
        record.objects[f"ConfigMap {obj['metadata']['name']}"] = obj
    record.volumes["data-db-0"] = files
    return record


def test_an_identical_restore_in_another_namespace_loses_nothing() -> None:
    before = _record("src", [_configmap("src", "a", k="1"), _configmap("src", "b", k="2")],
                     [_file("x", "aa", 100), _file("y", "bb", 5)])  # fmt: skip
    after = _record("dst", [_configmap("dst", "a", k="1"), _configmap("dst", "b", k="2")],
                    [_file("x", "aa", 100), _file("y", "bb", 5)])  # fmt: skip
    result = compare(before, after, {"src": "dst"})
    assert (result.objects_equal, result.files_equal, result.bytes_equal, result.lost) == (2, 2, 105, 0)


def test_a_changed_object_a_missing_file_and_an_extra_object_are_lost() -> None:
    before = _record("src", [_configmap("src", "a", k="1"), _configmap("src", "b", k="2")],
                     [_file("x", "aa", 100), _file("y", "bb", 5)])  # fmt: skip
    after = _record("dst", [_configmap("dst", "a", k="changed"), _configmap("dst", "b", k="2"),
                            _configmap("dst", "extra")], [_file("x", "aa", 100)])  # fmt: skip
    result = compare(before, after, {"src": "dst"})
    assert result.objects_equal == 1
    assert (result.files_equal, result.bytes_equal) == (1, 100)
    assert result.lost == 3, result.differences


def test_churn_accepts_only_versions_that_existed() -> None:
    churn = Churn.__new__(Churn)
    churn.versions = {
        "churn-00": [{"version": "1"}, {"version": "2"}],  # existed throughout
        "churn-01": [None, {"version": "1"}, None],  # created and deleted during the backup
        "churn-02": [{"version": "1"}],
    }
    restored = {
        "ConfigMap churn-00": {"data": {"version": "2"}},
        "ConfigMap churn-02": {"data": {"version": "9"}},
    }
    checked, problems = churn.check(restored)
    assert checked == 2
    assert problems == ["ConfigMap churn-02: restored data {'version': '9'} never existed"]
    checked, problems = churn.check({})
    assert sorted(p.split(":")[0] for p in problems) == ["ConfigMap churn-00", "ConfigMap churn-02"]


def test_a_case_is_ok_only_with_a_fault_every_operation_and_nothing_lost() -> None:
    result = Result("x", faults=["SIGKILL backup @ Volumes"], operations=2, operations_expected=2)
    assert result.ok
    changes: list[dict[str, Any]] = [
        {"faults": []},
        {"operations": 1},
        {"lost": 1},
        {"stored_twice": 1},
        {"error": "boom"},
    ]
    for change in changes:
        assert not Result(**{**result.__dict__, **change}).ok, change


def test_the_smoke_selection_and_unknown_names() -> None:
    smoke = select(CASES, [], smoke=True)
    assert smoke and all(c.smoke for c in smoke)
    assert len(select(CASES, [], smoke=False)) == len(CASES)
    assert [c.name for c in select(CASES, ["retention-worker"], smoke=True)] == ["retention-worker"]
    with pytest.raises(SystemExit):
        select(CASES, ["no-such-case"], smoke=False)


def test_the_table_names_every_column_and_the_totals() -> None:
    rows = [Result("a", faults=["f"], operations=2, operations_expected=2, bytes_verified=1234,
                   objects_verified=7), Result("b", error="CaseFailed: stuck")]  # fmt: skip
    text = table(rows)
    header = text.splitlines()[0]
    for column in ("case", "faults injected", "operations completed", "bytes verified", "objects verified",
                   "stored twice", "lost"):  # fmt: skip
        assert column in header
    assert "1,234" in text and "FAILED: CaseFailed: stuck" in text
    assert text.splitlines()[-1].startswith("2 case(s), 1 ok")
