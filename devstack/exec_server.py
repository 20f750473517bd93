"""The dev kubelet's exec endpoint: ``pods/exec`` through the API server runs a command "in a container".

A real API server opens an exec session by proxying the client's upgrade request to the kubelet of the
pod's node, at ``https://<InternalIP>:<daemonEndpoints.kubeletEndpoint.Port>/exec/<ns>/<pod>/<container>
?command=...&output=1&error=1``. The dev kubelet advertises this server there (one port for all its nodes:
the path names the pod) and speaks the websocket protocol ``v4.channel.k8s.io`` that kubectl's and the
Python client's websocket executors use: every binary message starts with a channel byte (0 stdin, 1
stdout, 2 stderr, 3 the error channel), and the session ends with a ``Status`` on channel 3 (``Success``,
or ``NonZeroExitCode`` with the exit code as its cause), then a close.

There are no containers, so the command runs in a sandbox (Debian's ``bubblewrap``) that looks like one
from the inside:

* the root is an empty tmpfs with the machine's ``/usr`` and ``/etc`` read-only (so ``/bin/sh``, coreutils
  and whatever the machine has installed are there; no image is pulled);
* every volume the container mounts is bound at its ``mountPath`` (``subPath`` and ``readOnly`` honoured):
  the same directories the node agent reads and restores, so a file a command writes into a claim is in
  the claim's volume;
* ``/tmp`` is a directory kept per container under the pod's directory, so files one exec writes there
  are seen by the next (the exec rules' hold scripts rely on that, as they would in a real container);
* the container's literal ``env`` values are set, ``HOSTNAME`` is the pod's name; new pid, ipc, uts and
  network namespaces: the command sees no other process and no network.

As with a real container runtime, a command keeps running when the client goes away; it is killed when
the pod is deleted (the kubelet stopping the container) or the dev kubelet stops.

Only the API server may open a session: the server asks for a client certificate signed by the dev
kubelet's own CA (``devstack.pki.KubeletPki``), which only the API server holds
(``--kubelet-client-certificate``); the API server checks the server's certificate in turn
(``--kubelet-certificate-authority``). A real kubelet also asks the API server whether the caller may
exec (a SubjectAccessReview); here the API server's own RBAC check of ``create pods/exec`` is the one
that decides.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import structlog
from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

log = structlog.get_logger("devstack.exec")

PROTOCOL = "v4.channel.k8s.io"
STDIN, STDOUT, STDERR, ERROR = 0, 1, 2, 3
#: How much a pipe read takes at once: the frame size a real kubelet's streams use is of this order.
READ_SIZE = 32 * 1024
BWRAP = "bwrap"
#: How much of an init container's output its terminated state's message keeps (the end: errors come last).
OUTPUT_TAIL = 2048
#: What the sandbox's PATH is: a container image's usual one.
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ExecRefused(Exception):
    """The session cannot run the command (no such pod, container or volume): sent as a Failure."""


@dataclass(frozen=True)
class Mount:
    source: Path
    path: str
    read_only: bool


@dataclass(frozen=True)
class ExecTarget:
    """Where and what to run, resolved from the pod as the API server stores it."""

    namespace: str
    pod: str
    pod_uid: str
    container: str
    command: list[str]
    mounts: list[Mount]
    env: dict[str, str]
    tmp: Path
    stdin: bool


def parse_path(raw: str) -> tuple[str, str, str, dict[str, list[str]]]:
    """``/exec/<ns>/<pod>/<container>?...`` → the three names and the query's parameters."""
    split = urlsplit(raw)
    parts = [unquote(p) for p in split.path.strip("/").split("/")]
    if len(parts) != 4 or parts[0] != "exec" or not all(parts[1:]):
        raise ExecRefused(f"not an exec path: {split.path}")
    return parts[1], parts[2], parts[3], parse_qs(split.query, keep_blank_values=True)


def sandbox_command(target: ExecTarget) -> list[str]:
    """The bubblewrap invocation that runs ``target.command`` as the container would see it."""
    argv = [
        BWRAP, "--die-with-parent", "--new-session",
        "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--unshare-cgroup-try",
        "--hostname", target.pod[:63],
        "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc",
        "--proc", "/proc", "--dev", "/dev",
        "--bind", str(target.tmp), "/tmp",
    ]  # fmt: skip
    # Debian's merged /usr: the top-level directories are links into it, as in most images.
    for name in ("bin", "sbin", "lib", "lib64"):
        if Path("/", name).is_symlink():
            argv += ["--symlink", f"usr/{name}", f"/{name}"]
        elif Path("/", name).is_dir():
            argv += ["--ro-bind", f"/{name}", f"/{name}"]
    for mount in target.mounts:
        argv += ["--ro-bind" if mount.read_only else "--bind", str(mount.source), mount.path]
    argv += ["--chdir", "/", "--clearenv"]
    env = {"PATH": PATH, "HOME": "/root", **target.env, "HOSTNAME": target.pod}
    for name, value in env.items():
        argv += ["--setenv", name, value]
    return [*argv, "--", *target.command]


def status_message(exit_code: int | None, failure: str = "") -> bytes:
    """The error channel's Status (without the channel byte), as the kubelet's stream server writes it."""
    status: dict[str, Any]
    if failure:
        status = {"metadata": {}, "status": "Failure", "message": failure, "reason": "InternalError"}
    elif exit_code == 0:
        status = {"metadata": {}, "status": "Success"}
    else:
        status = {
            "metadata": {}, "status": "Failure",
            "message": "command terminated with non-zero exit code: error executing command, "
            f"exit status {exit_code}",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": str(exit_code)}]},
        }  # fmt: skip
    return json.dumps(status).encode()


@dataclass
class _Session:
    connection: ServerConnection
    lock: threading.Lock = field(default_factory=threading.Lock)
    open: bool = True

    def send(self, channel: int, data: bytes) -> None:
        with self.lock:
            if not self.open:
                return  # the client went away; the command runs on, its output is dropped
            try:
                self.connection.send(bytes([channel]) + data)
            except ConnectionClosed:
                self.open = False


class ExecServer:
    """Serves exec sessions for the pods of the dev kubelet's nodes.

    ``resolve`` turns (namespace, pod, container, command, stdin) into an :class:`ExecTarget` or raises
    :class:`ExecRefused`; the kubelet gives it, since it knows the pods and their volume directories.
    """

    def __init__(
        self,
        resolve: Callable[[str, str, str, list[str], bool], ExecTarget],
        ssl_context: ssl.SSLContext,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self._resolve = resolve
        self._processes: dict[str, set[subprocess.Popen[bytes]]] = {}
        self._lock = threading.Lock()
        self._server: Server = serve(
            self._handle, host, port, ssl=ssl_context, subprotocols=[PROTOCOL],  # type: ignore[list-item]
            compression=None, max_size=2**20,
        )  # fmt: skip
        self.port: int = self._server.socket.getsockname()[1]

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def shutdown(self) -> None:
        self._server.shutdown()
        with self._lock:
            uids = list(self._processes)
        for uid in uids:
            self.kill_pod(uid)

    def kill_pod(self, pod_uid: str) -> None:
        """Stop every command still running in the pod's containers, as the runtime does when the pod's
        containers are stopped."""
        with self._lock:
            processes = self._processes.pop(pod_uid, set())
        for process in processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)

    def run_to_end(self, target: ExecTarget) -> tuple[int, str]:
        """Run ``target`` with no session (an init container): its exit code and the tail of its output,
        stdout and stderr together. Killed with its pod like any other command."""
        target.tmp.mkdir(parents=True, exist_ok=True)
        target.tmp.chmod(0o1777)
        process = subprocess.Popen(
            sandbox_command(target),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        with self._lock:
            self._processes.setdefault(target.pod_uid, set()).add(process)
        assert process.stdout is not None
        tail = b""
        while chunk := process.stdout.read1(READ_SIZE):  # type: ignore[attr-defined]
            tail = (tail + chunk)[-OUTPUT_TAIL:]
        exit_code = process.wait()
        with self._lock:
            self._processes.get(target.pod_uid, set()).discard(process)
        return (exit_code if exit_code >= 0 else 128 - exit_code), tail.decode("utf-8", "replace")

    def _handle(self, connection: ServerConnection) -> None:
        session = _Session(connection)
        request = connection.request
        try:
            if request is None:
                raise ExecRefused("no request")
            namespace, pod, container, query = parse_path(request.path)
            command = query.get("command") or []
            if not command:
                raise ExecRefused("you must specify at least one command for the container")
            stdin = (query.get("input") or query.get("stdin") or ["0"])[0] in ("1", "true")
            target = self._resolve(namespace, pod, container, command, stdin)
        except ExecRefused as exc:
            session.send(ERROR, status_message(None, str(exc)))
            connection.close()
            return
        except Exception as exc:  # an API error while resolving the pod
            log.warning("exec.resolve_failed", error=str(exc))
            session.send(ERROR, status_message(None, f"unable to find the container: {exc}"))
            connection.close()
            return
        self._run(session, target)

    def _run(self, session: _Session, target: ExecTarget) -> None:
        where = f"{target.namespace}/{target.pod}/{target.container}"
        target.tmp.mkdir(parents=True, exist_ok=True)
        target.tmp.chmod(0o1777)
        try:
            process = subprocess.Popen(
                sandbox_command(target),
                stdin=subprocess.PIPE if target.stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own process group: the pod's deletion kills the whole of it
            )
        except OSError as exc:
            session.send(ERROR, status_message(None, f"cannot start the command: {exc}"))
            session.connection.close()
            return
        with self._lock:
            self._processes.setdefault(target.pod_uid, set()).add(process)
        log.info("exec.started", container=where, pid=process.pid)
        assert process.stdout is not None and process.stderr is not None
        pumps = [
            threading.Thread(target=self._pump, args=(session, process.stdout, STDOUT), daemon=True),
            threading.Thread(target=self._pump, args=(session, process.stderr, STDERR), daemon=True),
        ]
        for pump in pumps:
            pump.start()
        reader = threading.Thread(target=self._read_client, args=(session, process), daemon=True)
        reader.start()
        exit_code = process.wait()
        for pump in pumps:
            pump.join()
        with self._lock:
            self._processes.get(target.pod_uid, set()).discard(process)
        # A command killed by a signal ends as a shell reports it: 128 + the signal.
        code = exit_code if exit_code >= 0 else 128 - exit_code
        log.info("exec.ended", container=where, exit_code=code, client_connected=session.open)
        session.send(ERROR, status_message(code))
        with session.lock:
            session.open = False
        session.connection.close()

    @staticmethod
    def _pump(session: _Session, pipe: Any, channel: int) -> None:
        while chunk := pipe.read1(READ_SIZE):
            session.send(channel, chunk)

    @staticmethod
    def _read_client(session: _Session, process: subprocess.Popen[bytes]) -> None:
        """Forward stdin; notice a client that went away (the command is left running, as a runtime
        leaves it)."""
        try:
            for message in session.connection:
                if isinstance(message, bytes) and message[:1] == bytes([STDIN]) and process.stdin:
                    try:
                        process.stdin.write(message[1:])
                        process.stdin.flush()
                    except (BrokenPipeError, ValueError):
                        pass
        except ConnectionClosed:
            pass
        with session.lock:
            session.open = False
        if process.stdin:
            with contextlib.suppress(BrokenPipeError, ValueError):
                process.stdin.close()


def bubblewrap_available() -> bool:
    return shutil.which(BWRAP) is not None
