"""davit.backup.exec_rules.Executor over the Kubernetes exec API (``pods/exec`` through the API server to
the kubelet).

Each command runs as ``/bin/sh -c <command>`` over a websocket (``kubernetes.stream``), with stdout and
stderr captured together; the exit code comes from the exec protocol's error channel (a ``Status``:
``Success``, or ``NonZeroExitCode`` with the code as its cause).

Every way of not getting there becomes :class:`davit.backup.exec_rules.ExecError` with a message naming the
pod and
container and the API server's own answer, never a library traceback: the API server refusing the
upgrade (403 without ``create pods/exec``, 404 pod gone, 400 no such container or pod not running, 500
"error dialing backend" when the kubelet cannot be reached), connection errors, a broken session, a
timeout. (The client library turns a refused upgrade into an ``AttributeError`` from its own error
handling, with the API server's answer two exceptions down the chain: :func:`describe_failure` digs it
out.)
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

from kubernetes import client
from kubernetes.stream import stream

from davit.backup.exec_rules import ExecError, ExecResult

ERROR_CHANNEL = 3
#: The upgrade answer's parts in websocket-client's message: "Handshake status ... -+-+- headers -+-+- body".
_HANDSHAKE_SEPARATOR = " -+-+- "


def describe_failure(exc: BaseException) -> str:
    """The most useful account of why an exec call failed: the API server's Status when there is one."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 10:
        seen.append(current)
        current = current.__cause__ or current.__context__
    for error in seen:
        # websocket-client's WebSocketBadStatusException: the refused upgrade, with the API server's body.
        status_code = getattr(error, "status_code", None)
        body = getattr(error, "resp_body", None)
        if isinstance(status_code, int) and body is not None:
            return _api_answer(status_code, body)
    for error in seen:
        if isinstance(error, client.ApiException):
            if error.status and error.body:
                return _api_answer(error.status, error.body)
            reason = str(error.reason or "")
            if _HANDSHAKE_SEPARATOR in reason:
                head, *_rest, body = reason.split(_HANDSHAKE_SEPARATOR)
                code = head.split()[2] if len(head.split()) > 2 else "?"
                return _api_answer(int(code) if code.isdigit() else 0, body.strip())
            if reason:
                return f"could not reach the API server: {reason.strip()}"
    root = seen[-1]
    return f"{type(root).__name__}: {root}".strip().rstrip(":")


def _api_answer(status_code: int, body: bytes | str) -> str:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if text.startswith("b'") or text.startswith('b"'):  # a bytes repr inside websocket-client's message
        text = text[2:-1].encode("latin1").decode("unicode_escape")
    try:
        status = json.loads(text)
    except ValueError:
        status = None
    if isinstance(status, dict) and status.get("kind") == "Status":
        reason = status.get("reason")
        message = status.get("message") or "(no message)"
        code = (
            f"{status.get('code', status_code)} {reason}" if reason else f"{status.get('code', status_code)}"
        )
        return f"the API server answered {code}: {message}"
    return f"the API server answered {status_code}: {text.strip()[:500] or '(no body)'}"


def exit_status(error_channel: str) -> int:
    """The exit code in the error channel's Status; ExecError (without the pod) when it says the exec
    itself failed or says nothing (the session ended without a status)."""
    if not error_channel.strip():
        raise ExecError("the exec session ended without an exit status")
    try:
        status = json.loads(error_channel)
    except ValueError:
        raise ExecError(f"unreadable exit status: {error_channel.strip()[:200]}") from None
    if status.get("status") == "Success":
        return 0
    if status.get("reason") == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                try:
                    return int(cause.get("message"))
                except (TypeError, ValueError):
                    break
    raise ExecError(str(status.get("message") or error_channel.strip()[:200]))


class KubernetesExecutor:
    """Runs commands in pods through the API server (needs ``create`` on ``pods/exec``).

    ``timeout`` bounds a foreground command (Stork's per-pod limit, 15 minutes, by default). The
    executor keeps its own API client: ``kubernetes.stream`` swaps the request function of the client
    it uses while it connects, which would send another thread's ordinary calls over a websocket.
    """

    def __init__(self, api: client.ApiClient, *, timeout: float = 900.0, ping_interval: float = 30.0) -> None:
        self._api = client.ApiClient(api.configuration)
        self._core = client.CoreV1Api(self._api)
        self._connect_lock = threading.Lock()
        self.timeout = timeout
        self.ping_interval = ping_interval

    def close(self) -> None:
        self._api.close()

    def __enter__(self) -> KubernetesExecutor:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _open(self, namespace: str, pod: str, container: str, command: str) -> Any:
        with self._connect_lock:
            try:
                return stream(
                    self._core.connect_get_namespaced_pod_exec,
                    pod,
                    namespace,
                    container=container,
                    command=["/bin/sh", "-c", command],
                    stderr=True,
                    stdout=True,
                    stdin=False,
                    tty=False,
                    _preload_content=False,
                )
            except Exception as exc:
                raise ExecError(f"{_where(namespace, pod, container)}: {describe_failure(exc)}") from exc

    def run(self, namespace: str, pod: str, container: str, command: str) -> ExecResult:
        ws = self._open(namespace, pod, container, command)
        where = _where(namespace, pod, container)
        try:
            try:
                ws.run_forever(timeout=self.timeout)
            except Exception as exc:
                raise ExecError(
                    f"{where}: the exec session broke: {describe_failure(exc)}", output=_output(ws)
                ) from exc
            if ws.is_open():
                raise ExecError(
                    f"{where}: the command did not end within {self.timeout:.0f}s", output=_output(ws)
                )
            error_channel = ws.read_channel(ERROR_CHANNEL)
            output = _output(ws)
            try:
                return ExecResult(exit_status(error_channel), output)
            except ExecError as exc:
                raise ExecError(f"{where}: {exc}", output=output) from None
        finally:
            _close(ws)

    def start_background(
        self, namespace: str, pod: str, container: str, command: str
    ) -> KubernetesBackground:
        ws = self._open(namespace, pod, container, command)
        return KubernetesBackground(ws, _where(namespace, pod, container), self.ping_interval)


class KubernetesBackground:
    """A command running in a pod, its exec session kept open by a thread until it ends or :meth:`stop`.

    The thread pings the server every ``ping_interval`` seconds so that idle-connection timeouts of
    proxies and load balancers on the way do not cut a long hold.
    """

    def __init__(self, ws: Any, where: str, ping_interval: float = 30.0) -> None:
        self._ws = ws
        self._where = where
        self._ping_interval = ping_interval
        self._stopping = threading.Event()
        self._result: ExecResult | None = None
        self._error: ExecError | None = None
        self._thread = threading.Thread(target=self._pump, name=f"davit-exec {where}", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        last_ping = time.monotonic()
        try:
            while self._ws.is_open() and not self._stopping.is_set():
                self._ws.update(timeout=0.5)
                if self._ping_interval and time.monotonic() - last_ping >= self._ping_interval:
                    self._ws.sock.ping()
                    last_ping = time.monotonic()
            if self._ws.is_open():
                self._error = ExecError(f"{self._where}: exec session stopped before the command ended")
                return
            error_channel = self._ws.read_channel(ERROR_CHANNEL)
            output = _output(self._ws)
            try:
                self._result = ExecResult(exit_status(error_channel), output)
            except ExecError as exc:
                self._error = ExecError(f"{self._where}: {exc}", output=output)
        except Exception as exc:
            self._error = ExecError(
                f"{self._where}: the exec session broke: {describe_failure(exc)}", output=_output(self._ws)
            )
        finally:
            _close(self._ws)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def result(self) -> ExecResult | None:
        if self._thread.is_alive():
            return None
        if self._error is not None:
            raise self._error
        return self._result

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=10)


def _where(namespace: str, pod: str, container: str) -> str:
    return f"pod {namespace}/{pod} (container {container})"


def _output(ws: Any) -> str:
    try:
        return str(ws.read_all())
    except Exception:
        return ""


def _close(ws: Any) -> None:
    # Closing a session that already broke has nothing left to report.
    with contextlib.suppress(Exception):
        ws.close()
