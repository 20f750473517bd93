"""One dev control plane: etcd, kube-apiserver (token auth, RBAC, service-account keys),
kube-controller-manager and kube-scheduler, all on loopback."""

from __future__ import annotations

import base64
import json
import os
import shutil
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from devstack import pki
from devstack.net import free_port, wait_until
from devstack.procs import ProcessTable

KUBE_VERSION = "1.20.2"
ADMIN_USER = "davit-admin"


def kube_bin_dir() -> Path:
    cache = Path(os.environ.get("DAVIT_CACHE", Path.home() / ".cache" / "davit"))
    return Path(os.environ.get("DAVIT_KUBE_BIN", cache / f"kubernetes-{KUBE_VERSION}" / "bin"))


def kube_binary(name: str) -> Path:
    path = kube_bin_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run scripts/build-kubernetes.sh (make kube)")
    return path


def etcd_binary() -> str:
    found = shutil.which("etcd")
    if found is None:
        raise FileNotFoundError("etcd is missing: install Debian's etcd-server (make deps)")
    return found


#: Requests for davit.dev resources are logged at Metadata level (user, user agent, verb, URI), once each
#: (when the answer started); nothing else is.
AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    resources:
      - group: davit.dev
  - level: None
"""


@dataclass
class ClusterConfig:
    """What identifies one dev cluster; persisted in the stack state so ``up`` is repeatable."""

    name: str
    etcd_port: int
    etcd_peer_port: int
    apiserver_port: int
    admin_token: str
    controller_manager_token: str
    scheduler_token: str

    @classmethod
    def new(cls, name: str) -> ClusterConfig:
        return cls(
            name=name,
            etcd_port=free_port(),
            etcd_peer_port=free_port(),
            apiserver_port=free_port(),
            admin_token=pki.new_token(),
            controller_manager_token=pki.new_token(),
            scheduler_token=pki.new_token(),
        )


class Cluster:
    def __init__(self, config: ClusterConfig, state_dir: Path, procs: ProcessTable) -> None:
        self.config = config
        self.dir = state_dir / f"cluster-{config.name}"
        self.procs = procs
        self.pki = pki.ensure_pki(self.dir / "pki")
        self.kubelet_pki = pki.ensure_kubelet_pki(self.dir / "pki")

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.config.apiserver_port}"

    def proc_name(self, component: str) -> str:
        return f"{self.config.name}-{component}"

    def kubeconfig_text(self, user: str, token: str) -> str:
        ca = base64.b64encode(self.pki.ca_cert.read_bytes()).decode()
        context = f"davit-dev-{self.config.name}"
        return yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": context, "cluster": {"server": self.server, "certificate-authority-data": ca}}
                ],
                "users": [{"name": user, "user": {"token": token}}],
                "contexts": [{"name": context, "context": {"cluster": context, "user": user}}],
                "current-context": context,
            },
            sort_keys=False,
        )

    def write_kubeconfig(self, path: Path, user: str = ADMIN_USER, token: str | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.kubeconfig_text(user, token or self.config.admin_token))
        path.chmod(0o600)
        return path

    # --- processes ---------------------------------------------------------------------------------

    #: The control plane's processes, in the order they start (each needs the ones before it).
    COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")

    def start(self) -> None:
        self._start_etcd(fresh=True)
        self._start_apiserver()
        self._start_controller_manager()
        self._start_scheduler()

    def restart(self, component: str) -> None:
        """Start one dead component again, as the kubelet restarts a static pod: etcd on the data it
        had, so every object survives; the others with the arguments they were started with."""
        starters = {
            "etcd": lambda: self._start_etcd(fresh=False),
            "kube-apiserver": self._start_apiserver,
            "kube-controller-manager": self._start_controller_manager,
            "kube-scheduler": self._start_scheduler,
        }
        starters[component]()

    def etcd_data_dir(self) -> Path:
        """Where this cluster's etcd keeps its data: the directory recorded when it was first started."""
        marker = self.dir / "etcd-data-dir"
        if marker.exists():
            return Path(marker.read_text().strip())
        # etcd 3.4 has no switch to skip fsync; tmpfs gives the same speed for a throwaway dev cluster.
        shm = Path("/dev/shm")
        base = shm if shm.is_dir() and os.access(shm, os.W_OK) else self.dir
        return base / f"davit-etcd-{self.config.name}-{self.config.etcd_port}"

    def _start_etcd(self, fresh: bool) -> None:
        if fresh:
            self.wipe_etcd_data()
        # A restart finds its data where the first start left it (tmpfs outlives the process, not a
        # reboot: after one, etcd starts empty and ``up`` applies the CRDs again).
        data = self.etcd_data_dir()
        if fresh:
            shutil.rmtree(data, ignore_errors=True)  # left by a stack that was never brought down
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "etcd-data-dir").write_text(str(data))
        client = f"http://127.0.0.1:{self.config.etcd_port}"
        peer = f"http://127.0.0.1:{self.config.etcd_peer_port}"
        self.procs.start(
            self.proc_name("etcd"),
            [
                etcd_binary(), "--name", "default", "--data-dir", str(data),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"default={peer}", "--log-level", "warn",
                "--quota-backend-bytes", str(4 * 1024**3),
            ],
        )  # fmt: skip
        wait_until(
            "etcd",
            lambda: (
                json.loads(urllib.request.urlopen(f"{client}/health", timeout=1).read())["health"] == "true"
            ),
            timeout=30,
            on_timeout=lambda: self.procs.log_tail(self.proc_name("etcd")),
        )

    def _start_apiserver(self) -> None:
        tokens = self.dir / "tokens.csv"
        c = self.config
        tokens.write_text(
            f'{c.admin_token},{ADMIN_USER},{ADMIN_USER},"system:masters"\n'
            f"{c.controller_manager_token},system:kube-controller-manager,system:kube-controller-manager\n"
            f"{c.scheduler_token},system:kube-scheduler,system:kube-scheduler\n"
        )
        tokens.chmod(0o600)
        # An audit log of the requests for Davit's own resources (who, which verb, which URI): what the
        # API load tests count LISTs and their `limit` with, per component (the user agent).
        policy = self.dir / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        self.procs.start(
            self.proc_name("kube-apiserver"),
            [
                str(kube_binary("kube-apiserver")),
                f"--etcd-servers=http://127.0.0.1:{c.etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--secure-port={c.apiserver_port}",
                "--insecure-port=0",
                f"--tls-cert-file={self.pki.serving_cert}",
                f"--tls-private-key-file={self.pki.serving_key}",
                f"--token-auth-file={tokens}",
                "--authorization-mode=RBAC",
                f"--service-account-key-file={self.pki.sa_pub}",
                f"--service-account-signing-key-file={self.pki.sa_key}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                "--api-audiences=https://kubernetes.default.svc.cluster.local",
                # Addresses handed out to Services; nothing in the dev stack routes or sends to them.
                "--service-cluster-ip-range=10.96.0.0/16",
                "--allow-privileged=true",
                "--profiling=false",
                # exec, attach and logs are proxied to the dev kubelet's endpoint, the address and port
                # its Nodes advertise (devstack/exec_server.py), over TLS both ways.
                "--kubelet-preferred-address-types=InternalIP",
                f"--kubelet-certificate-authority={self.kubelet_pki.ca_cert}",
                f"--kubelet-client-certificate={self.kubelet_pki.client_cert}",
                f"--kubelet-client-key={self.kubelet_pki.client_key}",
                "--max-requests-inflight=800",
                "--max-mutating-requests-inflight=400",
                f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}",
                "--audit-log-maxsize=200",
                "--audit-log-maxbackup=1",
                "--v=1",
            ],
        )
        wait_until(
            "kube-apiserver",
            self.ready,
            timeout=90,
            on_timeout=lambda: self.procs.log_tail(self.proc_name("kube-apiserver")),
        )

    @property
    def audit_log(self) -> Path:
        return self.dir / "audit.log"

    def ready(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki.ca_cert))
        request = urllib.request.Request(
            f"{self.server}/readyz", headers={"Authorization": f"Bearer {self.config.admin_token}"}
        )
        with urllib.request.urlopen(request, timeout=2, context=ctx) as response:
            return bool(response.status == 200)

    def _start_controller_manager(self) -> None:
        kubeconfig = self.write_kubeconfig(
            self.dir / "controller-manager.kubeconfig",
            "system:kube-controller-manager",
            self.config.controller_manager_token,
        )
        self.procs.start(
            self.proc_name("kube-controller-manager"),
            [
                str(kube_binary("kube-controller-manager")),
                f"--kubeconfig={kubeconfig}",
                f"--service-account-private-key-file={self.pki.sa_key}",
                f"--root-ca-file={self.pki.ca_cert}",
                # Each controller acts as its own service account, as the bootstrap RBAC roles expect.
                "--use-service-account-credentials=true",
                "--leader-elect=false",
                "--port=0",
                "--secure-port=0",
                "--controllers=*,-csrsigning,-csrapproving,-csrcleaner,-bootstrapsigner,-tokencleaner",
                "--v=1",
            ],
        )

    def _start_scheduler(self) -> None:
        kubeconfig = self.write_kubeconfig(
            self.dir / "scheduler.kubeconfig", "system:kube-scheduler", self.config.scheduler_token
        )
        self.procs.start(
            self.proc_name("kube-scheduler"),
            [
                str(kube_binary("kube-scheduler")),
                f"--kubeconfig={kubeconfig}",
                "--leader-elect=false",
                "--port=0",
                "--secure-port=0",
                "--v=1",
            ],
        )

    def wipe_etcd_data(self) -> None:
        marker = self.dir / "etcd-data-dir"
        if marker.exists():
            shutil.rmtree(marker.read_text().strip(), ignore_errors=True)
            marker.unlink()

    # --- objects -----------------------------------------------------------------------------------

    def kubectl(self, kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
        result = subprocess.run(
            [str(kube_binary("kubectl")), f"--kubeconfig={kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout
