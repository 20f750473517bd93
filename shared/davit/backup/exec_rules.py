"""Exec rules (Stork's ``Rule``): which commands run in which pods before and after a backup's volumes.

A Rule is ``rules: [{podSelector, container, actions: [{type: command, value, background,
runInSinglePod}]}]``; an ApplicationBackup names one as ``preExecRule`` and one as ``postExecRule``.

* :func:`plan` (pure) turns the Rule's items and the namespace's pods into the exact list of
  ``(pod, container, command)`` to run, or says everything that is wrong with it at once.
* :func:`run_rule` runs a plan through an :class:`Executor` (the Kubernetes exec API in production, one
  in memory in tests) and returns a :class:`RuleRun` holding the background actions until
  :meth:`RuleRun.release`.

**Foreground actions** run one after the other in plan order (item, action, pod) and the first failure
stops the rule with :class:`RuleFailed` naming the item, pod, container, command, exit code and output.

**Background actions** hold something (a read lock, a freeze) while the volumes are snapshotted. As in
Stork, a background command must contain ``${WAIT_CMD}`` at the point where it holds, e.g.
``mysql -Bse 'flush tables with read lock; system ${WAIT_CMD};'``. Davit replaces the placeholder with a
small script it writes into the pod first (``/tmp/davit-rule-<token>-<n>.sh``): the script marks the hold
as reached (a ``.held`` file), then waits for a ``.release`` file. So:

* ``run_rule`` returns only once every background command has *reached* its hold (the lock is taken), not
  merely started; a command that ends before that (wrong password, no such table) fails the rule with its
  output.
* :meth:`RuleRun.release` creates the release files, so each command continues past ``${WAIT_CMD}`` and
  ends by itself (releasing its lock), then closes the exec sessions. Closing an exec session alone would
  not be enough: the process in the container does not get a signal when the client goes away.
* If Davit dies while holding, the script gives up after ``max_hold_seconds`` (default one hour), so an
  application is never frozen forever; a later run with the same ``token`` (e.g. the operation's uid)
  releases a predecessor's holds too, as does :func:`release_holds` from any process.
* A background command that ends before release means its lock is gone and the snapshot may be
  inconsistent: :meth:`RuleRun.check` raises :class:`RuleFailed` then.

Decisions where Stork differs: an item whose selector matches no running pod is an error here (Stork logs
a warning and skips it; a backup the user believes was quiesced, but was not, is worse than none), and
Stork retries a failing foreground command for about a minute while Davit fails at once (commands such as
a flush need not be idempotent; a retried backup runs the whole rule again).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import pydantic
import structlog

from davit import errors
from davit.api.objects import RawObject
from davit.api.types import RuleItem

log = structlog.get_logger(__name__)


#: Stork's placeholder for the point where a background command holds.
WAIT_CMD = "${WAIT_CMD}"
#: How much of a command's output a failure message carries (the tail: errors come last).
OUTPUT_LIMIT = 2048
#: How much of a command a failure message carries.
COMMAND_LIMIT = 500
#: Where the hold scripts and their marker files go inside the pod.
CONTROL_DIR = "/tmp"  # noqa: S108 - inside the pod, where Stork puts its files too
#: Every command Davit runs for its own bookkeeping starts with this shell no-op, so that it is
#: recognisable in the API server's audit log and in a recording executor's record.
CONTROL_PREFIX = ": davit-rule"


# --- errors --------------------------------------------------------------------------------------------


class RuleError(errors.Permanent):
    """Base of the errors of this module."""


class RulePlanError(RuleError):
    """The Rule cannot be applied to the namespace as it is; ``problems`` says why, one entry each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


class ExecError(errors.Transient):
    """A command could not be run or its end could not be observed (the pod or its container cannot be
    reached, the API server refused, the connection broke, a timeout). The message names the pod."""

    def __init__(self, message: str, *, output: str = "") -> None:
        super().__init__(message)
        self.output = output


class RuleFailed(RuleError):
    """A rule action failed; the message names the rule item, pod, container, command, exit code (when
    there is one) and the tail of the output."""

    def __init__(
        self,
        message: str,
        *,
        action: PlannedAction | None = None,
        exit_code: int | None = None,
        output: str = "",
    ) -> None:
        super().__init__(message)
        self.action = action
        self.exit_code = exit_code
        self.output = output


# --- the executor interface ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    #: stdout and stderr, interleaved as they arrived.
    output: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


class BackgroundHandle(Protocol):
    """A command running in a pod while Davit does other things."""

    def alive(self) -> bool:
        """Whether the command is still running (as far as the exec session shows)."""

    def result(self) -> ExecResult | None:
        """None while alive; afterwards how the command ended. Raises :class:`ExecError` when its end
        could not be observed (the connection broke, or :meth:`stop` ended the session first)."""

    def stop(self) -> None:
        """End the exec session (idempotent). The process in the container may outlive it."""


class Executor(Protocol):
    """Runs shell commands (``/bin/sh -c command``) in a pod's container."""

    def run(self, namespace: str, pod: str, container: str, command: str) -> ExecResult:
        """Run to completion. A non-zero exit code is a result; :class:`ExecError` when the command
        could not be run or its end not observed."""

    def start_background(self, namespace: str, pod: str, container: str, command: str) -> BackgroundHandle:
        """Start without waiting for the end; :class:`ExecError` when it cannot be started."""


# --- planning (pure) ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedAction:
    """One command in one pod, in the order :func:`run_rule` runs them."""

    item_index: int
    action_index: int
    pod_selector: tuple[tuple[str, str], ...]
    namespace: str
    pod: str
    container: str
    command: str
    background: bool

    @property
    def where(self) -> str:
        """``rules[0] (podSelector app=mysql) actions[1]``: which part of the Rule this comes from."""
        return f"rules[{self.item_index}] ({_selector_text(self.pod_selector)}) actions[{self.action_index}]"

    @property
    def target(self) -> str:
        return f"pod {self.namespace}/{self.pod} (container {self.container})"


def _selector_text(selector: Mapping[str, str] | Sequence[tuple[str, str]]) -> str:
    pairs = sorted(selector.items() if isinstance(selector, Mapping) else selector)
    if not pairs:
        return "podSelector {} (every pod)"
    return "podSelector " + ",".join(f"{k}={v}" for k, v in pairs)


def rule_items(rule: RawObject) -> list[RuleItem]:
    """The items of a Rule object as read from the API server; :class:`RulePlanError` naming the Rule
    and the field when they do not parse (the CRD's validation normally prevents that)."""
    meta = rule.get("metadata") or {}
    name = f"Rule {meta.get('namespace', '')}/{meta.get('name', '')}"
    raw_items = rule.get("rules")
    if not isinstance(raw_items, list) or not raw_items:
        raise RulePlanError([f"{name}: rules: the rule has no items"])
    items, problems = [], []
    for index, raw in enumerate(raw_items):
        try:
            items.append(RuleItem.model_validate(raw))
        except pydantic.ValidationError as exc:
            for error in exc.errors():
                path = ".".join(str(p) for p in error["loc"])
                problems.append(f"{name}: rules[{index}].{path}: {error['msg']}")
    if problems:
        raise RulePlanError(problems)
    return items


def _is_running(pod: RawObject) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and not pod["metadata"].get(
        "deletionTimestamp"
    )


def _not_running_reason(pod: RawObject) -> str:
    if pod["metadata"].get("deletionTimestamp"):
        return "being deleted"
    return (pod.get("status") or {}).get("phase") or "no phase yet"


def _containers(pod: RawObject) -> list[str]:
    return [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]


def plan(
    items: Sequence[RuleItem],
    pods: Sequence[RawObject],
    namespace: str,
    *,
    background_allowed: bool = True,
) -> list[PlannedAction]:
    """What to run, in order: for each item, each action, each matching pod.

    ``pods`` are the namespace's pods as raw objects (pods of other namespaces are ignored). A pod
    matches an item when it has every label of the item's ``podSelector`` with the same value (an empty
    selector matches every pod) and it is Running and not being deleted. Pods are taken in name order;
    ``runInSinglePod`` takes the first. The container is the item's ``container``, else the pod's first.

    Every problem is reported at once in a :class:`RulePlanError`: an item that matches no running pod
    (naming its selector), a container a pod does not have, a background action without ``${WAIT_CMD}``,
    and a background action where ``background_allowed`` is False (post-exec rules: there is nothing to
    hold for after the volumes, and Stork refuses them too).
    """
    in_namespace = sorted(
        (p for p in pods if p["metadata"].get("namespace", namespace) == namespace),
        key=lambda p: str(p["metadata"]["name"]),
    )
    planned: list[PlannedAction] = []
    problems: list[str] = []
    for item_index, item in enumerate(items):
        selector = tuple(sorted(item.pod_selector.items()))
        label = f"rules[{item_index}] ({_selector_text(selector)})"
        for action_index, action in enumerate(item.actions):
            if action.background and not background_allowed:
                problems.append(
                    f"{label} actions[{action_index}]: background actions are only allowed in a "
                    "pre-exec rule (nothing is snapshotted after a post-exec rule to hold for)"
                )
            elif action.background and WAIT_CMD not in action.value:
                problems.append(
                    f"{label} actions[{action_index}]: a background action must contain {WAIT_CMD} where "
                    "the command holds until the volumes are snapshotted, e.g. "
                    "mysql -Bse 'flush tables with read lock; system ${WAIT_CMD};'"
                )
        matching = [p for p in in_namespace if _matches(p, item.pod_selector)]
        running = [p for p in matching if _is_running(p)]
        if not running:
            others = ", ".join(f"{p['metadata']['name']} ({_not_running_reason(p)})" for p in matching)
            problems.append(
                f"{label}: no running pod in namespace {namespace} matches"
                + (f" (matching pods not running: {others})" if others else "")
            )
            continue
        targets: list[tuple[str, str]] = []
        for pod in running:
            pod_name = str(pod["metadata"]["name"])
            containers = _containers(pod)
            container = item.container or (containers[0] if containers else "")
            if container not in containers:
                problems.append(
                    f"{label}: pod {namespace}/{pod_name} has no container {container!r} "
                    f"(it has: {', '.join(containers) or 'none'})"
                )
                continue
            targets.append((pod_name, container))
        if not targets:
            continue
        for action_index, action in enumerate(item.actions):
            for pod_name, container in targets[:1] if action.run_in_single_pod else targets:
                planned.append(
                    PlannedAction(
                        item_index=item_index,
                        action_index=action_index,
                        pod_selector=selector,
                        namespace=namespace,
                        pod=pod_name,
                        container=container,
                        command=action.value,
                        background=bool(action.background),
                    )
                )
    if problems:
        raise RulePlanError(problems)
    return planned


def _matches(pod: RawObject, selector: Mapping[str, str]) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


# --- messages -----------------------------------------------------------------------------------------


def trim_output(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """``text`` without surrounding blank space, keeping the last ``limit`` characters."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return f"[{len(text) - limit} earlier characters omitted] {text[-limit:]}"


def _command_text(command: str) -> str:
    command = command.strip()
    if len(command) > COMMAND_LIMIT:
        command = command[:COMMAND_LIMIT] + "…"
    return repr(command)


def _output_text(output: str) -> str:
    trimmed = trim_output(output)
    return f"output: {trimmed}" if trimmed else "no output"


def _failed(action: PlannedAction, what: str, result: ExecResult) -> RuleFailed:
    return RuleFailed(
        f"{action.where}: command {_command_text(action.command)} in {action.target} {what} with exit code "
        f"{result.exit_code}; {_output_text(result.output)}",
        action=action,
        exit_code=result.exit_code,
        output=result.output,
    )


def _unreachable(action: PlannedAction, exc: ExecError, doing: str = "could not be run") -> RuleFailed:
    output = f"; {_output_text(exc.output)}" if exc.output.strip() else ""
    return RuleFailed(
        f"{action.where}: command {_command_text(action.command)} {doing}: {exc}{output}",
        action=action,
        output=exc.output,
    )


# --- holds (background actions) -----------------------------------------------------------------------


def _safe_token(token: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]", "-", token.lower()).strip("-")
    if not cleaned:
        raise ValueError(f"token {token!r} has no usable characters (a-z, 0-9, -)")
    return cleaned[:63]


@dataclass(frozen=True)
class HoldFiles:
    """Where one background action's hold script and markers are in its pod."""

    token: str
    index: int

    @property
    def base(self) -> str:
        return f"{CONTROL_DIR}/davit-rule-{self.token}-{self.index}"

    @property
    def script(self) -> str:
        return f"{self.base}.sh"

    @property
    def held(self) -> str:
        return f"{self.base}.held"

    @property
    def release(self) -> str:
        return f"{self.base}.release"

    def _control(self, command: str) -> str:
        return f"{CONTROL_PREFIX} {self.token}; {command}"

    def wait_command(self) -> str:
        """What ``${WAIT_CMD}`` becomes (no quotes or semicolons: it sits inside e.g. a mysql -e string)."""
        return f"/bin/sh {self.script}"

    def setup_command(self, max_hold_seconds: int) -> str:
        script = (
            f'touch {self.held}; n=0; while [ ! -f {self.release} ]; do if [ "$n" -ge {max_hold_seconds} ]; '
            f'then echo "davit: not released within {max_hold_seconds}s, ending the hold" >&2; '
            f"rm -f {self.held}; exit 124; fi; sleep 1; n=$((n+1)); done; "
            f"rm -f {self.held} {self.release} {self.script}"
        )
        return self._control(f"rm -f {self.held} {self.release} && printf '%s\\n' '{script}' > {self.script}")

    def check_command(self) -> str:
        return self._control(f"test -f {self.held}")

    def release_command(self) -> str:
        return self._control(f"touch {self.release}")

    def cleanup_command(self) -> str:
        return self._control(f"rm -f {self.held} {self.release} {self.script}")


@dataclass
class _Hold:
    action: PlannedAction
    files: HoldFiles
    handle: BackgroundHandle | None = None
    held: bool = False


def _background_actions(planned: Sequence[PlannedAction]) -> Iterator[tuple[int, PlannedAction]]:
    return ((i, a) for i, a in enumerate(planned) if a.background)


# --- running ------------------------------------------------------------------------------------------


@dataclass
class RuleRun:
    """A rule that has run; holds its background actions until :meth:`release`.

    Use as a context manager (``with run_rule(...) as run:``) or call :meth:`release` in a ``finally``.
    """

    executor: Executor
    token: str
    release_timeout: float = 30.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    poll_interval: float = 1.0
    holds: list[_Hold] = field(default_factory=list)
    released: bool = False

    @property
    def background(self) -> list[PlannedAction]:
        """The background actions holding now."""
        return [h.action for h in self.holds if h.held and not self.released]

    def check(self) -> None:
        """:class:`RuleFailed` if a background action has ended before release: what it held (a lock)
        is gone, so volumes snapshotted since may not be consistent."""
        if self.released:
            return
        for hold in self.holds:
            if hold.handle is None or hold.handle.alive():
                continue
            action = hold.action
            try:
                result = hold.handle.result()
            except ExecError as exc:
                raise _unreachable(action, exc, "lost its exec session before release") from exc
            if result is None:  # pragma: no cover - not alive means finished
                continue
            raise _failed(action, "ended before release (what it held is gone)", result)

    def release(self) -> list[str]:
        """Let every background command continue past its hold and end; never raises (call it from a
        ``finally``). Returns the problems met, e.g. a pod that could not be reached to release it (its
        hold script still ends by itself after ``max_hold_seconds``). Idempotent."""
        if self.released:
            return []
        self.released = True
        problems: list[str] = []
        for hold in self.holds:
            command = hold.files.release_command() if hold.handle else hold.files.cleanup_command()
            try:
                result = self.executor.run(
                    hold.action.namespace, hold.action.pod, hold.action.container, command
                )
                if not result.ok:
                    problems.append(
                        f"{hold.action.where}: releasing the hold in {hold.action.target} failed with exit "
                        f"code {result.exit_code}; {_output_text(result.output)}"
                    )
            except ExecError as exc:
                problems.append(f"{hold.action.where}: could not release the hold: {exc}")
        deadline = self.clock() + self.release_timeout
        for hold in self.holds:
            if hold.handle is None:
                continue
            while hold.handle.alive() and self.clock() < deadline:
                self.sleep(min(self.poll_interval, max(deadline - self.clock(), 0.0)))
            if hold.handle.alive():
                problems.append(
                    f"{hold.action.where}: command in {hold.action.target} did not end within "
                    f"{self.release_timeout:.0f}s of its release; closing its exec session"
                )
            hold.handle.stop()
        for problem in problems:
            log.warning("rule.release_problem", problem=problem)
        log.info("rule.released", token=self.token, holds=len(self.holds))
        return problems

    def __enter__(self) -> RuleRun:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()

    # --- internals ---

    def _foreground(self, action: PlannedAction) -> None:
        log.info("rule.action", where=action.where, pod=action.pod, container=action.container)
        try:
            result = self.executor.run(action.namespace, action.pod, action.container, action.command)
        except ExecError as exc:
            raise _unreachable(action, exc) from exc
        if not result.ok:
            raise _failed(action, "failed", result)

    def _hold(self, batch: Sequence[tuple[int, PlannedAction]], hold_timeout: float, max_hold: int) -> None:
        """Start a batch of consecutive background actions and wait until each holds."""
        started: list[_Hold] = []
        for index, action in batch:
            hold = _Hold(action, HoldFiles(self.token, index))
            log.info("rule.background", where=action.where, pod=action.pod, container=action.container)
            try:
                setup = self.executor.run(
                    action.namespace, action.pod, action.container, hold.files.setup_command(max_hold)
                )
            except ExecError as exc:
                raise _unreachable(
                    action, exc, f"could not be started (writing its {WAIT_CMD} script)"
                ) from exc
            if not setup.ok:
                raise RuleFailed(
                    f"{action.where}: could not write the {WAIT_CMD} script {hold.files.script} in "
                    f"{action.target} (exit code {setup.exit_code}; {_output_text(setup.output)})",
                    action=action,
                    exit_code=setup.exit_code,
                    output=setup.output,
                )
            self.holds.append(hold)  # from here on, release() cleans up or releases it
            command = action.command.replace(WAIT_CMD, hold.files.wait_command())
            try:
                hold.handle = self.executor.start_background(
                    action.namespace, action.pod, action.container, command
                )
            except ExecError as exc:
                raise _unreachable(action, exc, "could not be started") from exc
            started.append(hold)
        deadline = self.clock() + hold_timeout
        waiting = list(started)
        while waiting:
            for hold in list(waiting):
                action = hold.action
                try:
                    check = self.executor.run(
                        action.namespace, action.pod, action.container, hold.files.check_command()
                    )
                except ExecError as exc:
                    raise _unreachable(action, exc, "could not be checked") from exc
                assert hold.handle is not None
                if not hold.handle.alive():
                    # Ended: it never held, or held and let go already; either way nothing holds now.
                    if check.ok:
                        self.check()
                    try:
                        ended = hold.handle.result()
                    except ExecError as exc:
                        raise _unreachable(action, exc, f"lost its exec session before {WAIT_CMD}") from exc
                    raise _failed(action, f"ended before reaching {WAIT_CMD}", ended or ExecResult(-1, ""))
                if check.ok:
                    hold.held = True
                    waiting.remove(hold)
            if not waiting:
                break
            if self.clock() >= deadline:
                action = waiting[0].action
                raise RuleFailed(
                    f"{action.where}: command {_command_text(action.command)} in {action.target} did not "
                    f"reach {WAIT_CMD} within {hold_timeout:.0f}s",
                    action=action,
                )
            self.sleep(self.poll_interval)


def run_rule(
    executor: Executor,
    planned: Sequence[PlannedAction],
    *,
    token: str | None = None,
    hold_timeout: float = 900.0,
    max_hold_seconds: int = 3600,
    release_timeout: float = 30.0,
    poll_interval: float = 1.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RuleRun:
    """Run ``planned`` in order; return once every background action holds.

    ``token`` names the hold files in the pods (lowercase letters, digits and dashes; default random):
    pass something stable such as the operation's uid and stage, so a retry after a crash reuses and
    then releases its predecessor's holds. ``hold_timeout`` bounds the wait for a background command to
    reach ``${WAIT_CMD}`` (Stork's 15 minutes); ``max_hold_seconds`` is how long a hold lasts at most if
    never released. On any failure the background actions already holding are released before
    :class:`RuleFailed` is raised; release problems are appended to its message.
    """
    run = RuleRun(
        executor=executor,
        token=_safe_token(token or uuid.uuid4().hex[:12]),
        release_timeout=release_timeout,
        clock=clock,
        sleep=sleep,
        poll_interval=poll_interval,
    )
    try:
        index = 0
        while index < len(planned):
            action = planned[index]
            if not action.background:
                run._foreground(action)
                index += 1
                continue
            end = index
            while end < len(planned) and planned[end].background:
                end += 1
            run._hold([(i, planned[i]) for i in range(index, end)], hold_timeout, max_hold_seconds)
            index = end
    except RuleFailed as exc:
        problems = run.release()
        if problems:
            raise RuleFailed(
                f"{exc}; releasing the rule's holds: {'; '.join(problems)}",
                action=exc.action,
                exit_code=exc.exit_code,
                output=exc.output,
            ) from exc
        raise
    except BaseException:
        run.release()
        raise
    return run


def release_holds(executor: Executor, planned: Sequence[PlannedAction], token: str) -> list[str]:
    """Release the holds a run with ``token`` took, from any process (e.g. a retry after the process that
    ran the rule died). Returns the problems met; never raises."""
    problems: list[str] = []
    safe = _safe_token(token)
    for index, action in _background_actions(planned):
        try:
            result = executor.run(
                action.namespace, action.pod, action.container, HoldFiles(safe, index).release_command()
            )
            if not result.ok:
                problems.append(
                    f"{action.where}: releasing in {action.target} exited with {result.exit_code}"
                )
        except ExecError as exc:
            problems.append(f"{action.where}: could not release the hold: {exc}")
    return problems
