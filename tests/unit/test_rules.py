"""Exec rules: planning (pure), running through an executor, holds of background actions, and the
Kubernetes executor's reading of the API server's answers."""

from __future__ import annotations

import os
import subprocess
import threading
import uuid
from typing import Any

import pytest
from kubernetes import client as k8s_client
from kubernetes.client.exceptions import ApiException

from davit.api.types import RuleAction, RuleItem
from davit.backup.exec_rules import (
    CONTROL_PREFIX,
    OUTPUT_LIMIT,
    WAIT_CMD,
    ExecError,
    ExecResult,
    HoldFiles,
    PlannedAction,
    RuleFailed,
    RulePlanError,
    plan,
    release_holds,
    rule_items,
    run_rule,
    trim_output,
)
from davit.kube.execution import KubernetesExecutor, describe_failure, exit_status
from tests.fakes.exec import RecordingExecutor, dry_run
from tests.helpers import wait_for

NS = "shop"


def pod(
    name: str,
    labels: dict[str, str],
    *,
    phase: str = "Running",
    containers: tuple[str, ...] = ("db", "sidecar"),
    namespace: str = NS,
    deleting: bool = False,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": c, "image": "x"} for c in containers]},
        "status": {"phase": phase},
    }


def item(selector: dict[str, str], *actions: RuleAction, container: str | None = None) -> RuleItem:
    return RuleItem(pod_selector=selector, container=container, actions=list(actions))


def cmd(value: str, *, background: bool = False, single: bool = False) -> RuleAction:
    return RuleAction(type="command", value=value, background=background, run_in_single_pod=single)


def targets(planned: list[PlannedAction]) -> list[tuple[str, str, str]]:
    return [(p.pod, p.container, p.command) for p in planned]


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


# --- planning -----------------------------------------------------------------------------------------

PODS = [
    pod("mysql-1", {"app": "mysql", "role": "replica"}),
    pod("mysql-0", {"app": "mysql", "role": "primary"}),
    pod("mysql-2", {"app": "mysql"}, phase="Pending"),
    pod("mysql-3", {"app": "mysql"}, deleting=True),
    pod("web-0", {"app": "web"}, containers=("nginx",)),
    pod("mysql-9", {"app": "mysql"}, namespace="elsewhere"),
]


@pytest.mark.parametrize(
    ("selector", "expected_pods"),
    [
        ({"app": "mysql"}, ["mysql-0", "mysql-1"]),  # Running only, by name, own namespace only
        ({"app": "mysql", "role": "primary"}, ["mysql-0"]),  # every label must be equal
        ({"role": "replica"}, ["mysql-1"]),
        ({}, ["mysql-0", "mysql-1", "web-0"]),  # an empty selector matches every running pod
    ],
)
def test_plan_picks_the_running_pods_whose_labels_include_the_selector(selector, expected_pods) -> None:
    planned = plan([item(selector, cmd("sync"))], PODS, NS)
    assert [p.pod for p in planned] == expected_pods
    assert all(p.namespace == NS and p.command == "sync" and not p.background for p in planned)


def test_plan_container_is_the_items_or_the_pods_first() -> None:
    default = plan([item({"app": "mysql"}, cmd("a"))], PODS, NS)
    assert {p.container for p in default} == {"db"}
    explicit = plan([item({"app": "mysql"}, cmd("a"), container="sidecar")], PODS, NS)
    assert {p.container for p in explicit} == {"sidecar"}
    web = plan([item({"app": "web"}, cmd("a"))], PODS, NS)
    assert [p.container for p in web] == ["nginx"]


def test_plan_order_is_item_then_action_then_pod_and_run_in_single_pod_takes_the_first_by_name() -> None:
    planned = plan(
        [
            item({"app": "mysql"}, cmd("first"), cmd("once", single=True), cmd("last")),
            item({"app": "web"}, cmd("web")),
        ],
        PODS,
        NS,
    )
    assert targets(planned) == [
        ("mysql-0", "db", "first"),
        ("mysql-1", "db", "first"),
        ("mysql-0", "db", "once"),
        ("mysql-0", "db", "last"),
        ("mysql-1", "db", "last"),
        ("web-0", "nginx", "web"),
    ]
    assert [(p.item_index, p.action_index) for p in planned] == [
        (0, 0),
        (0, 0),
        (0, 1),
        (0, 2),
        (0, 2),
        (1, 0),
    ]
    assert planned[2].where == "rules[0] (podSelector app=mysql) actions[1]"


def test_plan_an_item_matching_no_running_pod_is_an_error_naming_its_selector() -> None:
    with pytest.raises(RulePlanError) as nothing:
        plan([item({"app": "postgres", "tier": "db"}, cmd("x"))], PODS, NS)
    assert str(nothing.value) == (
        "rules[0] (podSelector app=postgres,tier=db): no running pod in namespace shop matches"
    )
    with pytest.raises(RulePlanError) as not_running:
        plan([item({"app": "mysql"}, cmd("x"))], [p for p in PODS if p["metadata"]["name"] > "mysql-1"], NS)
    message = str(not_running.value)
    assert "rules[0] (podSelector app=mysql): no running pod in namespace shop matches" in message
    assert "mysql-2 (Pending)" in message and "mysql-3 (being deleted)" in message


def test_plan_reports_every_problem_at_once() -> None:
    with pytest.raises(RulePlanError) as refused:
        plan(
            [
                item({"app": "mysql"}, cmd("x"), container="nope"),
                item({"app": "gone"}, cmd("y")),
                item({"app": "web"}, cmd("hold without placeholder", background=True)),
            ],
            PODS,
            NS,
        )
    problems = refused.value.problems
    assert len(problems) == 4, problems
    assert (
        "rules[0] (podSelector app=mysql): pod shop/mysql-0 has no container 'nope' (it has: db, sidecar)"
        in problems
    )
    assert "rules[1] (podSelector app=gone): no running pod in namespace shop matches" in problems
    assert any(
        p.startswith(
            "rules[2] (podSelector app=web) actions[0]: a background action must contain ${WAIT_CMD}"
        )
        for p in problems
    )


def test_plan_refuses_background_actions_where_they_are_not_allowed() -> None:
    rule = [item({"app": "web"}, cmd(f"lock; {WAIT_CMD}", background=True))]
    assert plan(rule, PODS, NS)[0].background
    with pytest.raises(
        RulePlanError, match=r"actions\[0\]: background actions are only allowed in a pre-exec"
    ):
        plan(rule, PODS, NS, background_allowed=False)


def test_rule_items_reads_a_rule_object_and_names_the_field_it_cannot_read() -> None:
    raw: dict[str, Any] = {
        "metadata": {"name": "mysql-presnap", "namespace": NS},
        "rules": [
            {
                "podSelector": {"app": "mysql"},
                "actions": [{"type": "command", "value": "flush", "runInSinglePod": True}],
            }
        ],
    }
    [parsed] = rule_items(raw)
    assert parsed.pod_selector == {"app": "mysql"} and parsed.actions[0].run_in_single_pod
    raw["rules"].append({"podSelector": {"app": "x"}, "actions": [{"type": "script", "value": "v"}]})
    with pytest.raises(RulePlanError, match=r"Rule shop/mysql-presnap: rules\[1\]\.actions\.0\.type"):
        rule_items(raw)
    with pytest.raises(RulePlanError, match="the rule has no items"):
        rule_items({"metadata": {"name": "empty", "namespace": NS}, "rules": []})


# --- foreground actions -------------------------------------------------------------------------------


def test_foreground_actions_run_in_plan_order() -> None:
    planned = plan([item({"app": "mysql"}, cmd("flush"), cmd("sync", single=True))], PODS, NS)
    executor = RecordingExecutor()
    with run_rule(executor, planned) as run:
        assert run.background == []
    assert [(c.kind, c.pod, c.container, c.command) for c in executor.calls] == [
        ("run", "mysql-0", "db", "flush"),
        ("run", "mysql-1", "db", "flush"),
        ("run", "mysql-0", "db", "sync"),
    ]


def test_the_first_failing_command_stops_the_rule_and_is_named_with_its_output_and_exit_code() -> None:
    planned = plan([item({"app": "mysql"}, cmd("flush tables"), cmd("never"))], PODS, NS)
    executor = RecordingExecutor({"flush tables": (1, "ERROR 1045 (28000): Access denied for user 'root'\n")})
    with pytest.raises(RuleFailed) as failed:
        run_rule(executor, planned)
    assert [c.command for c in executor.calls] == ["flush tables"], "stopped after the first failure"
    assert str(failed.value) == (
        "rules[0] (podSelector app=mysql) actions[0]: command 'flush tables' in pod shop/mysql-0 "
        "(container db) failed with exit code 1; output: ERROR 1045 (28000): Access denied for user 'root'"
    )
    assert failed.value.exit_code == 1 and failed.value.action == planned[0]


def test_a_pod_that_cannot_be_reached_fails_the_rule_naming_the_pod_and_the_reason() -> None:
    planned = plan([item({"app": "mysql"}, cmd("flush"))], PODS, NS)
    executor = RecordingExecutor(
        unreachable={"mysql-1": "the API server answered 500: error dialing backend"}
    )
    with pytest.raises(RuleFailed) as failed:
        run_rule(executor, planned)
    assert str(failed.value) == (
        "rules[0] (podSelector app=mysql) actions[0]: command 'flush' could not be run: pod shop/mysql-1 "
        "(container db): the API server answered 500: error dialing backend"
    )
    assert failed.value.exit_code is None


def test_long_output_is_trimmed_to_its_tail() -> None:
    assert trim_output("  short\n") == "short"
    noisy = "x" * 10_000 + "THE REAL ERROR"
    trimmed = trim_output(noisy)
    assert trimmed.endswith("THE REAL ERROR") and trimmed.startswith("[7966 earlier characters omitted] ")
    assert len(trimmed) < OUTPUT_LIMIT + 50

    planned = plan([item({"app": "web"}, cmd("dump"))], PODS, NS)
    with pytest.raises(RuleFailed) as failed:
        run_rule(RecordingExecutor({"dump": (2, noisy)}), planned)
    assert len(str(failed.value)) < OUTPUT_LIMIT + 300
    assert str(failed.value).endswith("THE REAL ERROR") and "exit code 2" in str(failed.value)
    assert failed.value.output == noisy, "the exception keeps the whole output for the logs"


# --- background actions -------------------------------------------------------------------------------

LOCK = f"mysql -Bse 'flush tables with read lock; system {WAIT_CMD};'"


def test_background_actions_hold_until_release_and_foreground_actions_run_meanwhile() -> None:
    planned = plan([item({"app": "mysql"}, cmd(LOCK, background=True), cmd("sync", single=True))], PODS, NS)
    executor = RecordingExecutor()
    run = run_rule(executor, planned, token="op-1")
    assert [a.pod for a in run.background] == ["mysql-0", "mysql-1"]
    assert [h.alive() for h in executor.handles] == [True, True]

    # Each pod got its own hold script; the rule's command waits in it; "sync" ran while they held.
    hold0, hold1 = HoldFiles("op-1", 0), HoldFiles("op-1", 1)
    assert [(c.kind, c.pod, c.command) for c in executor.rule_calls()] == [
        (
            "background",
            "mysql-0",
            f"mysql -Bse 'flush tables with read lock; system /bin/sh {hold0.script};'",
        ),
        (
            "background",
            "mysql-1",
            f"mysql -Bse 'flush tables with read lock; system /bin/sh {hold1.script};'",
        ),
        ("run", "mysql-0", "sync"),
    ]
    commands = [c.command for c in executor.calls]
    assert commands.index(hold0.check_command()) < commands.index("sync"), "sync only once the lock is held"
    assert all(c.command.startswith(CONTROL_PREFIX) for c in executor.calls if c.control)

    run.check()  # still holding: fine
    assert run.release() == []
    assert [h.stopped for h in executor.handles] == [True, True]
    assert [h.result() for h in executor.handles] == [ExecResult(0, ""), ExecResult(0, "")]
    assert [c.command for c in executor.calls[-2:]] == [hold0.release_command(), hold1.release_command()]
    assert run.release() == [] and run.background == [], "release is idempotent"
    run.check()


def test_a_background_action_that_dies_before_release_fails_the_check() -> None:
    planned = plan([item({"app": "web"}, cmd(LOCK, background=True))], PODS, NS)
    executor = RecordingExecutor()
    run = run_rule(executor, planned)
    executor.handles[0].finish(1, "ERROR 2013 (HY000): Lost connection to MySQL server\n")
    with pytest.raises(RuleFailed) as failed:
        run.check()
    message = str(failed.value)
    assert message.startswith("rules[0] (podSelector app=web) actions[0]: command \"mysql -Bse 'flush tables")
    assert (
        "in pod shop/web-0 (container nginx) ended before release (what it held is gone) with exit code 1"
        in message
    )
    assert message.endswith("output: ERROR 2013 (HY000): Lost connection to MySQL server")
    run.release()


def test_a_background_action_whose_session_breaks_fails_the_check() -> None:
    planned = plan([item({"app": "web"}, cmd(LOCK, background=True))], PODS, NS)
    executor = RecordingExecutor()
    with run_rule(executor, planned) as run:
        executor.handles[0].break_connection("pod shop/web-0 (container nginx): the exec session broke")
        with pytest.raises(RuleFailed, match="lost its exec session before release: pod shop/web-0"):
            run.check()


def test_a_background_action_that_ends_before_its_hold_fails_the_rule_and_releases_earlier_holds() -> None:
    planned = plan(
        [
            item({"app": "web"}, cmd(f"freeze; {WAIT_CMD}", background=True)),
            item({"app": "mysql"}, cmd("noop")),
            item({"app": "mysql"}, cmd(LOCK, background=True, single=True)),
        ],
        PODS,
        NS,
    )
    executor = RecordingExecutor(background={"flush tables": (1, "ERROR 1045: Access denied")})
    with pytest.raises(RuleFailed) as failed:
        run_rule(executor, planned, token="op-2")
    assert 'actions[0]: command "mysql -Bse' in str(failed.value)
    assert f"ended before reaching {WAIT_CMD} with exit code 1; output: ERROR 1045: Access denied" in str(
        failed.value
    )
    freeze = executor.handles[0]
    assert freeze.call.pod == "web-0" and freeze.stopped and freeze.result() == ExecResult(0, "")
    assert HoldFiles("op-2", 0).release_command() in [c.command for c in executor.calls]


def test_a_background_action_that_never_reaches_its_hold_times_out() -> None:
    planned = plan([item({"app": "web"}, cmd(f"sleep 100000; {WAIT_CMD}", background=True))], PODS, NS)
    hold = HoldFiles("op-3", 0)
    executor = RecordingExecutor({hold.check_command(): (1, "")})
    fake = FakeTime()
    with pytest.raises(RuleFailed, match=r"did not reach \$\{WAIT_CMD\} within 60s"):
        run_rule(executor, planned, token="op-3", hold_timeout=60, clock=fake.clock, sleep=fake.sleep)
    assert 60 <= fake.slept <= 62
    assert executor.handles[0].stopped


def test_a_failure_after_a_hold_releases_it_before_raising_and_reports_release_problems() -> None:
    planned = plan(
        [item({"app": "mysql"}, cmd(LOCK, background=True, single=True), cmd("boom", single=True))], PODS, NS
    )
    executor = RecordingExecutor({"boom": (3, "kaput")})
    with pytest.raises(RuleFailed) as failed:
        run_rule(executor, planned)
    assert str(failed.value).endswith(
        "actions[1]: command 'boom' in pod shop/mysql-0 (container db) failed with exit code 3; output: kaput"
    )
    assert executor.handles[0].stopped and not executor.handles[0].alive()

    # The pod goes away while holding: release says so, and so does the rule's failure.
    executor = RecordingExecutor({"boom": (3, "kaput")})
    original = executor.run

    def run_then_lose_pod(namespace: str, pod: str, container: str, command: str) -> ExecResult:
        result = original(namespace, pod, container, command)
        if command == "boom":
            executor.unreachable[pod] = 'the API server answered 404 NotFound: pods "mysql-0" not found'
        return result

    executor.run = run_then_lose_pod  # type: ignore[method-assign]
    fake = FakeTime()
    with pytest.raises(RuleFailed) as failed:
        run_rule(executor, planned, release_timeout=5, clock=fake.clock, sleep=fake.sleep)
    message = str(failed.value)
    assert "failed with exit code 3; output: kaput; releasing the rule's holds: " in message
    assert (
        "could not release the hold: pod shop/mysql-0 (container db): the API server answered 404" in message
    )
    assert "did not end within 5s of its release; closing its exec session" in message
    assert executor.handles[0].stopped


def test_release_holds_frees_a_crashed_runs_holds_from_another_process() -> None:
    planned = plan([item({"app": "mysql"}, cmd("pre"), cmd(LOCK, background=True))], PODS, NS)
    executor = RecordingExecutor()
    assert release_holds(executor, planned, "OP 7") == []
    assert [(c.pod, c.command) for c in executor.calls] == [
        ("mysql-0", HoldFiles("op-7", 2).release_command()),
        ("mysql-1", HoldFiles("op-7", 3).release_command()),
    ]


def test_dry_run_lists_what_would_run() -> None:
    planned = plan([item({"app": "web"}, cmd("pre"), cmd(f"lock; {WAIT_CMD}", background=True))], PODS, NS)
    calls = dry_run(planned)
    assert [c.command for c in calls if not c.control] == [
        "pre",
        f"lock; /bin/sh {HoldFiles('dry-run', 1).script}",
    ]


# --- the hold script in a real shell ------------------------------------------------------------------


class LocalShellExecutor:
    """Runs the commands with this machine's /bin/sh, ignoring the pod: the hold protocol for real."""

    def run(self, namespace: str, pod: str, container: str, command: str) -> ExecResult:
        done = subprocess.run(
            ["/bin/sh", "-c", command], capture_output=True, text=True, timeout=30, check=False
        )
        return ExecResult(done.returncode, done.stdout + done.stderr)

    def start_background(self, namespace: str, pod: str, container: str, command: str) -> LocalBackground:
        return LocalBackground(command)


class LocalBackground:
    def __init__(self, command: str) -> None:
        self.process = subprocess.Popen(
            ["/bin/sh", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.output = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        self.output = self.process.stdout.read()

    def alive(self) -> bool:
        return self.process.poll() is None

    def result(self) -> ExecResult | None:
        if self.alive():
            return None
        self._reader.join(5)
        return ExecResult(self.process.returncode, self.output)

    def stop(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(5)


def test_the_hold_script_holds_until_released_in_a_real_shell(tmp_path) -> None:
    marks = tmp_path / "marks"
    token = f"unit-{uuid.uuid4().hex[:8]}"
    planned = plan(
        [
            item(
                {"app": "web"},
                cmd(f"echo locked >> {marks}; {WAIT_CMD}; echo unlocked >> {marks}", background=True),
            )
        ],
        PODS,
        NS,
    )
    executor = LocalShellExecutor()
    run = run_rule(executor, planned, token=token, poll_interval=0.05)
    handle = run.holds[0].handle
    assert handle is not None and handle.alive()
    assert marks.read_text() == "locked\n", "run_rule returns once the command holds, not before"
    run.check()
    assert run.release() == []
    assert not handle.alive() and handle.result() == ExecResult(0, "")
    assert marks.read_text() == "locked\nunlocked\n", "released: the command went on past ${WAIT_CMD}"
    files = HoldFiles(token, 0)
    assert not any(os.path.exists(p) for p in (files.script, files.held, files.release)), (
        "the script cleans up"
    )


def test_the_hold_script_gives_up_after_max_hold_and_the_check_says_the_lock_is_gone() -> None:
    token = f"unit-{uuid.uuid4().hex[:8]}"
    planned = plan([item({"app": "web"}, cmd(f"echo holding; {WAIT_CMD}", background=True))], PODS, NS)
    run = run_rule(LocalShellExecutor(), planned, token=token, poll_interval=0.05, max_hold_seconds=1)
    handle = run.holds[0].handle
    assert handle is not None
    assert isinstance(handle, LocalBackground)
    handle.process.wait(10)
    with pytest.raises(RuleFailed) as failed:
        run.check()
    assert "ended before release (what it held is gone) with exit code 124" in str(failed.value)
    assert "davit: not released within 1s, ending the hold" in str(failed.value)
    run.release()
    for path in (HoldFiles(token, 0).script, HoldFiles(token, 0).release):
        if os.path.exists(path):
            os.remove(path)


# --- the Kubernetes executor's reading of answers -----------------------------------------------------


def test_exit_status_reads_the_error_channel() -> None:
    assert exit_status('{"metadata":{},"status":"Success"}') == 0
    failure = (
        '{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error '
        'executing command [/bin/sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":'
        '{"causes":[{"reason":"ExitCode","message":"3"}]}}'
    )
    assert exit_status(failure) == 3
    with pytest.raises(ExecError, match="ended without an exit status"):
        exit_status("")
    with pytest.raises(ExecError, match="container not found"):
        exit_status('{"status":"Failure","message":"container not found (\\"db\\")"}')


def test_describe_failure_finds_the_api_servers_answer_down_the_exception_chain() -> None:
    class BadStatus(Exception):  # what websocket-client raises when the upgrade is refused
        status_code = 403
        resp_body = (
            b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":'
            b'"pods \\"db-0\\" is forbidden: User \\"system:serviceaccount:shop:app\\" cannot create '
            b'resource \\"pods/exec\\"","reason":"Forbidden","code":403}'
        )

    # As kubernetes.stream delivers it: the library's own AttributeError, raised while handling an
    # ApiException(status=0), raised while handling the refused handshake.
    headers = "{'content-type': 'application/json'}"
    handshake = f"Handshake status 403 Forbidden -+-+- {headers} -+-+- {BadStatus.resp_body.decode()}"
    wrapper = ApiException(status=0, reason=handshake)
    wrapper.__context__ = BadStatus(handshake)
    chained = AttributeError("'NoneType' object has no attribute 'decode'")
    chained.__context__ = wrapper
    assert describe_failure(chained) == (
        'the API server answered 403 Forbidden: pods "db-0" is forbidden: '
        'User "system:serviceaccount:shop:app" cannot create resource "pods/exec"'
    )
    assert describe_failure(wrapper.__context__) == describe_failure(chained)
    assert describe_failure(ApiException(status=0, reason=handshake)) == describe_failure(chained), (
        "from the text"
    )
    assert describe_failure(ConnectionRefusedError(111, "Connection refused")) == (
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )


class FakeSession:
    """Stands in for kubernetes.stream's WSClient (the calls KubernetesExecutor makes): frames arrive
    on channels 1-3, then the server closes the session (unless ``stays_open``)."""

    def __init__(
        self, frames: list[tuple[int, str]], *, stays_open: bool = False, breaks: Exception | None = None
    ) -> None:
        self.frames = list(frames)
        self.stays_open = stays_open
        self.breaks = breaks
        self.open = True
        self.channels: dict[int, str] = {}
        self.all = ""
        self.closed = False
        self.pings = 0
        self.sock = self

    def is_open(self) -> bool:
        return self.open

    def update(self, timeout: float = 0) -> None:
        if self.frames:
            channel, data = self.frames.pop(0)
            self.channels[channel] = self.channels.get(channel, "") + data
            if channel in (1, 2):
                self.all += data
        elif self.breaks is not None:
            raise self.breaks
        elif self.stays_open:
            threading.Event().wait(min(timeout, 0.01))
        else:
            self.open = False

    def run_forever(self, timeout: float | None = None) -> None:
        for _ in range(1000 if timeout else 10**6):
            if not self.open:
                return
            self.update(0.001)

    def read_channel(self, channel: int) -> str:
        return self.channels.pop(channel, "")

    def read_all(self) -> str:
        out, self.all = self.all, ""
        return out

    def close(self) -> None:
        self.open = False
        self.closed = True

    def ping(self) -> None:
        self.pings += 1


class SessionExecutor(KubernetesExecutor):
    def __init__(self, session: FakeSession) -> None:
        super().__init__(k8s_client.ApiClient(k8s_client.Configuration()), timeout=1, ping_interval=0.001)
        self.session = session

    def _open(self, namespace: str, pod: str, container: str, command: str) -> Any:
        return self.session


EXIT_3 = (
    '{"status":"Failure","reason":"NonZeroExitCode",'
    '"details":{"causes":[{"reason":"ExitCode","message":"3"}]}}'
)


def test_kubernetes_executor_runs_to_the_exit_status_and_closes_the_session() -> None:
    ok = FakeSession([(1, "hello\n"), (2, "warning\n"), (3, '{"status":"Success"}')])
    assert SessionExecutor(ok).run("ns", "p", "c", "x") == ExecResult(0, "hello\nwarning\n")
    assert ok.closed
    failed = FakeSession([(2, "no such table\n"), (3, EXIT_3)])
    assert SessionExecutor(failed).run("ns", "p", "c", "x") == ExecResult(3, "no such table\n")

    with pytest.raises(ExecError, match=r"^pod ns/p \(container c\): the exec session ended without an exit"):
        SessionExecutor(FakeSession([(1, "partial")])).run("ns", "p", "c", "x")
    slow = FakeSession([(1, "still going")], stays_open=True)
    with pytest.raises(
        ExecError, match=r"pod ns/p \(container c\): the command did not end within 1s"
    ) as late:
        SessionExecutor(slow).run("ns", "p", "c", "sleep 100")
    assert late.value.output == "still going" and slow.closed
    broken = FakeSession([(1, "a")], breaks=ConnectionResetError(104, "Connection reset by peer"))
    with pytest.raises(ExecError, match=r"the exec session broke: ConnectionResetError: .*reset by peer"):
        SessionExecutor(broken).run("ns", "p", "c", "x")


def test_kubernetes_background_keeps_the_session_until_it_ends_or_is_stopped() -> None:
    ends = FakeSession([(1, "locked\n"), (3, EXIT_3)])
    handle = SessionExecutor(ends).start_background("ns", "p", "c", "x")
    handle._thread.join(5)
    assert not handle.alive() and handle.result() == ExecResult(3, "locked\n") and ends.closed

    holding = FakeSession([(1, "locked\n")], stays_open=True)
    handle = SessionExecutor(holding).start_background("ns", "p", "c", "x")
    assert handle.alive() and handle.result() is None
    wait_for("a ping", lambda: holding.pings > 0, timeout=5)
    assert holding.pings > 0, "pings keep idle proxies from cutting the session"
    handle.stop()
    assert not handle.alive() and holding.closed
    with pytest.raises(ExecError, match="exec session stopped before the command ended"):
        handle.result()

    breaking = FakeSession([], breaks=OSError("EOF occurred in violation of protocol"))
    handle = SessionExecutor(breaking).start_background("ns", "p", "c", "x")
    handle._thread.join(5)
    with pytest.raises(ExecError, match=r"pod ns/p \(container c\): the exec session broke: OSError: EOF"):
        handle.result()
