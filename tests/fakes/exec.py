"""An exec-rule :class:`~davit.backup.exec_rules.Executor` in memory: records every call and answers from a
script, so that rules can be run without a cluster."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from davit.backup.exec_rules import CONTROL_PREFIX, ExecError, ExecResult, PlannedAction, run_rule


@dataclass(frozen=True)
class Call:
    kind: str  # "run" or "background"
    namespace: str
    pod: str
    container: str
    command: str

    @property
    def control(self) -> bool:
        """Whether Davit ran this for its own bookkeeping (hold scripts), not as a rule's command."""
        return self.command.startswith(CONTROL_PREFIX)


@dataclass
class RecordedBackground:
    """A background command of :class:`RecordingExecutor`: runs until stopped, or until the test ends it
    with :meth:`finish` or :meth:`break_connection`."""

    call: Call
    _result: ExecResult | None = None
    _error: str | None = None
    stopped: bool = False
    #: Whether it got to Davit's hold script (if it has one): yes unless scripted to end at once.
    reached_hold: bool = True

    def alive(self) -> bool:
        return self._result is None and self._error is None and not self.stopped

    def result(self) -> ExecResult | None:
        if self._error is not None:
            raise ExecError(self._error)
        if self._result is None and self.stopped:
            raise ExecError(
                f"pod {self.call.namespace}/{self.call.pod}: exec session stopped before it ended"
            )
        return self._result

    def stop(self) -> None:
        self.stopped = True

    def finish(self, exit_code: int = 0, output: str = "") -> None:
        """The command ends by itself."""
        if self.alive():
            self._result = ExecResult(exit_code, output)

    def break_connection(self, message: str) -> None:
        """The exec session breaks (its end cannot be observed)."""
        if self.alive():
            self._error = message


_MARKER = re.compile(r"(test -f|touch) (\S+)\.(held|release)$")


class RecordingExecutor:
    """:class:`Executor` in memory, for tests and dry runs: records every call and answers from a script.

    ``results`` maps a command to ``(exit_code, output)`` for :meth:`run`; ``background`` does the same
    for background commands, which then end at once with that result. A key matches a command equal to
    it, else (the first such key, in order) a command containing it; anything else succeeds with no
    output. Background commands run until stopped. Davit's hold bookkeeping is answered as a pod would:
    a background command reaches its hold script unless scripted to end at once, and ends (exit 0) when
    its release file is created. ``unreachable`` maps pod names to
    the reason every call to that pod raises :class:`ExecError` with.
    """

    def __init__(
        self,
        results: Mapping[str, tuple[int, str]] | None = None,
        *,
        background: Mapping[str, tuple[int, str]] | None = None,
        unreachable: Mapping[str, str] | None = None,
    ) -> None:
        self.results = dict(results or {})
        self.background_results = dict(background or {})
        self.unreachable = dict(unreachable or {})
        self.calls: list[Call] = []
        self.handles: list[RecordedBackground] = []

    @staticmethod
    def _lookup(script: Mapping[str, tuple[int, str]], command: str) -> tuple[int, str] | None:
        if command in script:
            return script[command]
        return next((v for k, v in script.items() if k in command), None)

    def _record(self, kind: str, namespace: str, pod: str, container: str, command: str) -> Call:
        call = Call(kind, namespace, pod, container, command)
        self.calls.append(call)
        if pod in self.unreachable:
            raise ExecError(f"pod {namespace}/{pod} (container {container}): {self.unreachable[pod]}")
        return call

    def run(self, namespace: str, pod: str, container: str, command: str) -> ExecResult:
        self._record("run", namespace, pod, container, command)
        scripted = self._lookup(self.results, command)
        if scripted:
            return ExecResult(*scripted)
        marker = _MARKER.search(command) if command.startswith(CONTROL_PREFIX) else None
        if marker:
            script = f"{marker.group(2)}.sh"
            holders = [h for h in self.handles if h.call.pod == pod and script in h.call.command]
            if marker.group(1) == "test -f":  # is it held?
                return ExecResult(0 if any(h.reached_hold for h in holders) else 1, "")
            for handle in holders:  # released: the script returns, the command ends
                handle.finish(0, "")
        return ExecResult(0, "")

    def start_background(self, namespace: str, pod: str, container: str, command: str) -> RecordedBackground:
        call = self._record("background", namespace, pod, container, command)
        handle = RecordedBackground(call)
        scripted = self._lookup(self.background_results, command)
        if scripted:
            handle.finish(*scripted)
            handle.reached_hold = False
        self.handles.append(handle)
        return handle

    def rule_calls(self) -> list[Call]:
        """The calls that ran a rule's own commands (without Davit's hold bookkeeping)."""
        return [c for c in self.calls if not c.control]


def dry_run(planned: Sequence[PlannedAction]) -> list[Call]:
    """The calls running ``planned`` would make (rule commands and hold bookkeeping), without a cluster."""
    executor = RecordingExecutor()
    with run_rule(executor, planned, token="dry-run"):
        pass
    return executor.calls
