"""The whole local stack: stores shared by all clusters, and per cluster a control plane, a dev kubelet,
its own Redis and the Davit services. ``up`` is idempotent; ``down`` stops exactly what ``up`` started."""

from __future__ import annotations

import functools
import json
import os
import shlex
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from devstack import stores
from devstack.cluster import Cluster, ClusterConfig, kube_binary
from devstack.net import wait_until
from devstack.procs import ProcessTable

REPO_ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = REPO_ROOT / "deploy" / "crds"
CLUSTER_NAMES = ("a", "b")

#: The Davit services that exist as their own process so far: (process name, python module).
SERVICES: tuple[tuple[str, str], ...] = (
    ("watcher", "davit_services.watcher"),
    ("exporter", "davit_services.exporter"),
    ("backup", "davit_services.backup"),
    ("resources", "davit_services.resources"),
    ("retention", "davit_services.retention"),
    ("restore", "davit_services.restore"),
)


def replica_of(service: str) -> tuple[str, int]:
    """``resources-2`` → (``resources``, 2): a service's process name within a cluster, without the
    cluster, split into the service and which of its replicas (``Stack.scale``) it is; 1 for the first."""
    base, _, number = service.rpartition("-")
    if base in dict(SERVICES) and number.isdigit():
        return base, int(number)
    return service, 1


def node_names(cluster: str) -> list[str]:
    prefix = "davit-dev" if cluster == "a" else f"davit-dev-{cluster}"
    return [f"{prefix}-node-1", f"{prefix}-node-2"]


@dataclass
class StackState:
    clusters: list[ClusterConfig]
    stores: stores.StoresConfig
    redis_ports: dict[str, int]
    with_services: bool
    #: Each cluster's exporter serves /metrics on its own port. Empty in a state file written before the
    #: exporter existed: such a stack lacks the exporter process, so the next ``up`` starts afresh.
    metrics_ports: dict[str, int] = field(default_factory=dict)
    #: ``DAVIT_*`` settings every Davit service of this stack gets (``up(service_settings=...)``), kept
    #: so that a service restarted later runs as it did before.
    service_settings: dict[str, str] = field(default_factory=dict)
    #: Processes per Davit service where it is more than one (``Stack.scale``), e.g. ``{"resources": 2}``;
    #: kept so that ``up`` starts a dead replica again, as a Deployment of that many would.
    service_replicas: dict[str, int] = field(default_factory=dict)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))
        path.chmod(0o600)

    @classmethod
    def load(cls, path: Path) -> StackState:
        data = json.loads(path.read_text())
        return cls(
            clusters=[ClusterConfig(**c) for c in data["clusters"]],
            stores=stores.StoresConfig(**data["stores"]),
            redis_ports={k: int(v) for k, v in data["redis_ports"].items()},
            with_services=bool(data["with_services"]),
            metrics_ports={k: int(v) for k, v in data.get("metrics_ports", {}).items()},
            service_settings={k: str(v) for k, v in data.get("service_settings", {}).items()},
            service_replicas={k: int(v) for k, v in data.get("service_replicas", {}).items()},
        )


class Stack:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir.resolve()
        self.procs = ProcessTable(self.dir)
        self.state_file = self.dir / "state.json"
        #: What the last ``up`` started again in a stack that was already there.
        self.restarted: list[str] = []

    # --- paths and files ---------------------------------------------------------------------------

    def kubeconfig_path(self, cluster: str) -> Path:
        return self.dir / ("kubeconfig" if cluster == "a" else f"kubeconfig-{cluster}")

    def kubelet_root(self, cluster: str) -> Path:
        return self.dir / f"cluster-{cluster}" / "kubelet"

    def volumes_root(self, cluster: str) -> Path:
        return self.dir / f"cluster-{cluster}" / "local-volumes"

    def env_path(self) -> Path:
        return self.dir / "env"

    def redis_password_path(self) -> Path:
        """The password every cluster's Redis of this stack requires (mode 0600)."""
        return self.dir / "redis-password"

    def redis_password(self) -> str:
        return self.redis_password_path().read_text().strip()

    def expected_processes(self, state: StackState) -> list[str]:
        names = ["s3", "azurite"]
        for c in state.clusters:
            names += [f"{c.name}-{p}" for p in ("etcd", "kube-apiserver", "kube-controller-manager",
                                                  "kube-scheduler", "redis", "kubelet")]  # fmt: skip
            if state.with_services:
                names += self.service_processes(c.name, state.service_replicas)
        return names

    def recorded(self) -> StackState | None:
        """The state of the stack ``up`` started here, alive or not (None: nothing to keep)."""
        if not self.state_file.exists():
            return None
        if not self.redis_password_path().exists():
            return None  # a stack whose Redis was started without a password: start afresh
        state = StackState.load(self.state_file)
        if not state.metrics_ports and state.with_services:
            return None  # written before the exporter existed: start afresh
        return state

    def dead(self, state: StackState) -> list[str]:
        """The processes ``state`` needs that are not running, in the order they start."""
        dead = []
        for name in self.expected_processes(state):
            record = self.procs.get(name)
            if record is None or not record.alive():
                dead.append(name)
        return dead

    def running(self) -> StackState | None:
        """The recorded state, if every process it needs is alive."""
        state = self.recorded()
        if state is None or self.dead(state):
            return None
        return state

    # --- up / down ---------------------------------------------------------------------------------

    def up(
        self,
        clusters: int = 1,
        with_services: bool = True,
        service_settings: Mapping[str, str] | None = None,
    ) -> StackState:
        """Start the stack, or keep the one running here: a recorded stack of the same shape only has
        what died started again (``revive``), the way Kubernetes restarts a pod, never torn down with
        its objects. ``service_settings`` (``DAVIT_*`` variables) apply to every Davit service; a running
        stack given other ones restarts its services only."""
        self.restarted = []
        current = self.recorded()
        if (
            current is not None
            and current.with_services == with_services
            and clusters >= len(current.clusters)
        ):
            if service_settings is not None and dict(service_settings) != current.service_settings:
                current.service_settings = dict(service_settings)
                current.save(self.state_file)
                self._stop_services(current)
            self.restarted = self.revive(current)
            if clusters > len(current.clusters):
                # More clusters on the same stores: the running ones keep running (and their objects).
                return self._add_clusters(current, clusters)
            # Re-applying the CRDs is cheap and keeps a long-running stack in step with the code.
            for config in current.clusters:
                self.apply_crds(Cluster(config, self.dir, self.procs), self.kubeconfig_path(config.name))
            self.write_env(current)
            return current
        self.down()
        self.dir.mkdir(parents=True, exist_ok=True)
        # One random password per stack, generated afresh by each start: REDIS_URL in the env file carries it.
        stores.write_private(self.redis_password_path(), stores.new_redis_password() + "\n")
        state = StackState(
            clusters=[ClusterConfig.new(name) for name in CLUSTER_NAMES[:clusters]],
            stores=stores.StoresConfig.new(),
            redis_ports={},
            with_services=with_services,
            service_settings=dict(service_settings or {}),
        )
        from devstack.net import free_port

        state.redis_ports = {c.name: free_port() for c in state.clusters}
        state.metrics_ports = {c.name: free_port() for c in state.clusters}
        try:
            stores.start_s3(self.procs, state.stores)
            stores.start_azurite(self.procs, state.stores, self.dir / "azurite")
            (self.dir / "local-store").mkdir(exist_ok=True)
            for config in state.clusters:
                self._start_cluster(state, config)
            state.save(self.state_file)
            self.write_env(state)
        except BaseException:
            self.down()
            raise
        return state

    def _add_clusters(self, state: StackState, clusters: int) -> StackState:
        from devstack.net import free_port

        added = [ClusterConfig.new(name) for name in CLUSTER_NAMES[len(state.clusters) : clusters]]
        for config in added:
            state.redis_ports[config.name] = free_port()
            state.metrics_ports[config.name] = free_port()
        try:
            for config in added:
                self._start_cluster(state, config)
        except BaseException:
            # Undo only what this call started: the clusters already running are someone's.
            for config in added:
                for record in self.procs.all():
                    if record.name.startswith(f"{config.name}-"):
                        self.procs.stop(record.name)
                Cluster(config, self.dir, self.procs).wipe_etcd_data()
            raise
        state.clusters.extend(added)
        state.save(self.state_file)
        self.write_env(state)
        return state

    def _start_cluster(self, state: StackState, config: ClusterConfig) -> None:
        cluster = Cluster(config, self.dir, self.procs)
        redis_port = state.redis_ports[config.name]
        # A new cluster starts on an empty etcd: an append-only file left by an earlier stack in the same
        # directory would bring back that stack's queues and scratch state.
        shutil.rmtree(self.dir / f"cluster-{config.name}" / "appendonlydir", ignore_errors=True)
        stores.start_redis(
            self.procs,
            f"{config.name}-redis",
            redis_port,
            self.dir / f"cluster-{config.name}",
            self.redis_password(),
        )
        cluster.start()
        kubeconfig = cluster.write_kubeconfig(self.kubeconfig_path(config.name))
        self.apply_crds(cluster, kubeconfig)
        self._start_kubelet(config.name, kubeconfig)
        if state.with_services:
            for name in self.service_processes(config.name, state.service_replicas):
                self.start_service(state, name)

    def service_processes(self, cluster: str, replicas: Mapping[str, int] | None = None) -> list[str]:
        """The Davit services' process names of one cluster: one per service (``replicas`` of those scaled
        up: ``a-resources``, ``a-resources-2``, …), one node agent per dev node (as the DaemonSet would
        run them)."""
        names = []
        for service, _ in SERVICES:
            names.append(f"{cluster}-{service}")
            count = (replicas or {}).get(service, 1)
            names += [f"{cluster}-{service}-{n}" for n in range(2, count + 1)]
        return names + [f"{cluster}-uploader-{node}" for node in node_names(cluster)]

    def scale(self, state: StackState, service: str, replicas: int) -> list[str]:
        """Run ``replicas`` worker processes of the Davit service ``service`` (a name in ``SERVICES``)
        in every cluster, as a Deployment of that many replicas would: each consumes the same queue, under
        an identity of its own. The replicas beyond the first are ``<cluster>-<service>-<n>`` (n ≥ 2);
        the number is kept in the state, so ``up`` starts a dead one again and ``down`` stops them with
        the rest. Starts the missing ones and stops those beyond ``replicas``; returns the names started.
        A started worker takes tasks once its consumer is up, a few seconds later."""
        if service not in dict(SERVICES):
            raise ValueError(f"no service {service!r}; one of {', '.join(s for s, _ in SERVICES)}")
        if replicas < 1:
            raise ValueError("a service runs at least one process")
        if not state.with_services:
            raise ValueError("the stack runs without the Davit services")
        before = state.service_replicas.get(service, 1)
        for config in state.clusters:
            for n in range(replicas + 1, before + 1):
                self.procs.stop(f"{config.name}-{service}-{n}")
        if replicas == 1:
            state.service_replicas.pop(service, None)
        else:
            state.service_replicas[service] = replicas
        state.save(self.state_file)
        started = []
        for config in state.clusters:
            for name in self.service_processes(config.name, state.service_replicas):
                if replica_of(name.partition("-")[2])[0] != service:
                    continue
                record = self.procs.get(name)
                if record is None or not record.alive():
                    self.start_service(state, name)
                    started.append(name)
        return started

    def start_service(self, state: StackState, name: str) -> None:
        """Start the Davit service process ``name`` (``a-backup``, ``a-resources-2``,
        ``a-uploader-<node>``)."""
        cluster, _, service = name.partition("-")
        env = self.service_env(
            cluster, self.kubeconfig_path(cluster), state.redis_ports[cluster], state.metrics_ports[cluster]
        )
        env.update(state.service_settings)
        if service.startswith("uploader-"):
            node = service.removeprefix("uploader-")
            env.update(
                DAVIT_NODE_NAME=node,
                DAVIT_KUBELET_ROOT=str(self.kubelet_root(cluster)),
                DAVIT_IDENTITY=f"dev-{cluster}-{node}",
            )
            module = "davit_services.uploader"
        else:
            service, replica = replica_of(service)
            module = dict(SERVICES)[service]
            if replica > 1:
                # A worker is named <service>@<identity> among Celery's workers: each replica its own.
                env["DAVIT_IDENTITY"] = f"dev-{cluster}-{replica}"
        self.procs.start(name, [sys.executable, "-m", module], env=env)

    def _stop_services(self, state: StackState) -> None:
        for config in state.clusters:
            for name in self.service_processes(config.name, state.service_replicas):
                self.procs.stop(name)

    def revive(self, state: StackState) -> list[str]:
        """Start again exactly the processes of ``state`` that died, in dependency order, and nothing
        else: etcd on its existing data (every object kept), the API server and the controllers with
        their arguments, Redis with its password, a dead service with the settings it had. Returns the
        names started. Only the S3 emulator cannot keep what it held (moto keeps objects in memory): it
        comes back empty, with a new key in ``.dev/env``."""
        dead = self.dead(state)
        if not dead:
            return []
        if "s3" in dead:
            stores.start_s3(self.procs, state.stores)
        if "azurite" in dead:
            stores.start_azurite(self.procs, state.stores, self.dir / "azurite")  # its data is on disk
        for config in state.clusters:
            name = config.name
            cluster = Cluster(config, self.dir, self.procs)
            if f"{name}-redis" in dead:
                stores.start_redis(
                    self.procs, f"{name}-redis", state.redis_ports[name],
                    self.dir / f"cluster-{name}", self.redis_password(),
                )  # fmt: skip
            for component in Cluster.COMPONENTS:
                if f"{name}-{component}" in dead:
                    cluster.restart(component)
            if any(f"{name}-{c}" in dead for c in Cluster.COMPONENTS):
                wait_until(
                    f"kube-apiserver ({name})",
                    cluster.ready,
                    timeout=90,
                    on_timeout=functools.partial(self.procs.log_tail, f"{name}-kube-apiserver"),
                )
            kubeconfig = self.kubeconfig_path(name)
            if f"{name}-kubelet" in dead:
                self._start_kubelet(name, kubeconfig)
            services = self.service_processes(name, state.service_replicas) if state.with_services else []
            for process in services:
                if process in dead:
                    self.start_service(state, process)
        state.save(self.state_file)
        self.write_env(state)
        return dead

    def _start_kubelet(self, cluster: str, kubeconfig: Path) -> None:
        name = f"{cluster}-kubelet"
        self.procs.start(
            name,
            [
                sys.executable, "-m", "devstack.kubelet", "--kubeconfig", str(kubeconfig),
                "--nodes", ",".join(node_names(cluster)), "--root", str(self.kubelet_root(cluster)),
                "--volumes", str(self.volumes_root(cluster)),
                "--exec-pki", str(self.dir / f"cluster-{cluster}" / "pki"),
            ],
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            cwd=REPO_ROOT,
        )  # fmt: skip
        ctl = str(kube_binary("kubectl"))

        def nodes_ready() -> bool:
            import subprocess

            out = subprocess.run(
                [ctl, f"--kubeconfig={kubeconfig}", "get", "nodes", "-o", "name"],
                capture_output=True, text=True, check=False,
            ).stdout  # fmt: skip
            return all(f"node/{n}" in out for n in node_names(cluster))

        wait_until(f"dev kubelet ({cluster})", nodes_ready, 60, lambda: self.procs.log_tail(name))

    def service_env(
        self, cluster: str, kubeconfig: Path, redis_port: int, metrics_port: int
    ) -> dict[str, str]:
        return {
            **os.environ,
            "DAVIT_KUBECONFIG": str(kubeconfig),
            "DAVIT_REDIS_URL": stores.redis_url(redis_port, self.redis_password()),
            "DAVIT_IDENTITY": f"dev-{cluster}",
            "DAVIT_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
            # A tenant's local location must lie under its own directory of the stack's local store.
            "DAVIT_LOCAL_LOCATION_ROOTS": str(self.dir / "local-store" / "{namespace}"),
            "PYTHONUNBUFFERED": "1",
        }

    def apply_crds(self, cluster: Cluster, kubeconfig: Path) -> None:
        cluster.kubectl(kubeconfig, "apply", "-k", str(CRD_DIR))
        from davit.api.crds import DEFINITIONS

        names = [f"crd/{d.plural}.{d.crd()['spec']['group']}" for d in DEFINITIONS]
        cluster.kubectl(kubeconfig, "wait", "--for=condition=Established", "--timeout=60s", *names)

    def down(self) -> list[str]:
        stopped = self.procs.stop_all()
        if self.state_file.exists():
            state = StackState.load(self.state_file)
            for config in state.clusters:
                Cluster(config, self.dir, self.procs).wipe_etcd_data()
            self.state_file.unlink()
        self.redis_password_path().unlink(missing_ok=True)
        return stopped

    # --- Redis faults (the Redis-loss tests, the chaos suite) ---------------------------------------

    @staticmethod
    def redis_process(cluster: str = "a") -> str:
        """The process name of a cluster's Redis in the stack's process table (``procs.get``)."""
        return f"{cluster}-redis"

    def redis_client(self, cluster: str = "a") -> Any:
        """A client of the cluster's Redis, with the stack's password."""
        import redis

        state = StackState.load(self.state_file)
        url = stores.redis_url(state.redis_ports[cluster], self.redis_password())
        return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)

    def flush_redis(self, cluster: str = "a") -> None:
        """FLUSHALL: every queue and every operation's scratch state of the cluster's Redis is gone, as
        after a restart without persistence."""
        client = self.redis_client(cluster)
        try:
            client.flushall()
        finally:
            client.close()

    def restart_redis(self, cluster: str = "a", hard: bool = False, timeout: float = 30.0) -> int:
        """Stop the cluster's Redis by its recorded pid and start it again as ``up`` does (same port,
        password and directory), then wait until it answers with its data loaded. SIGTERM by default (Redis
        writes its append-only file out before it exits); ``hard``: SIGKILL (what was written in the last
        second may be lost, as ``appendfsync everysec`` allows). Returns the new pid."""
        state = StackState.load(self.state_file)
        name = self.redis_process(cluster)
        record = self.procs.get(name)
        if hard and record is not None and record.alive():
            victim = record
            os.kill(victim.pid, signal.SIGKILL)
            wait_until(f"{name} to exit", lambda: not victim.alive(), timeout)
        self.procs.stop(name)
        stores.start_redis(
            self.procs,
            name,
            state.redis_ports[cluster],
            self.dir / f"cluster-{cluster}",
            self.redis_password(),
        )

        def answers() -> bool:
            import redis

            client = self.redis_client(cluster)
            try:
                return bool(client.ping())
            except redis.exceptions.BusyLoadingError:
                return False
            finally:
                client.close()

        wait_until(f"{name} to load its data", answers, timeout, lambda: self.procs.log_tail(name))
        started = self.procs.get(name)
        assert started is not None
        return started.pid

    # --- env ---------------------------------------------------------------------------------------

    def env(self, state: StackState) -> dict[str, str]:
        s = state.stores
        first = state.clusters[0].name
        password = self.redis_password()
        env = {
            "KUBECONFIG": str(self.kubeconfig_path(first)),
            "REDIS_URL": stores.redis_url(state.redis_ports[first], password),
            "S3_ENDPOINT": s.s3_endpoint,
            "S3_ACCESS_KEY": s.s3_access_key,
            "S3_SECRET_KEY": s.s3_secret_key,
            "S3_BUCKET": s.s3_bucket,
            "S3_REGION": "us-east-1",
            "AZURE_STORAGE_CONNECTION_STRING": s.azure_connection_string,
            "AZURE_CONTAINER": s.azure_container,
            "LOCAL_STORE": str(self.dir / "local-store"),
            "KUBELET_ROOT": str(self.kubelet_root(first)),
            # The API server's audit log of requests for davit.dev resources (devstack/cluster.py).
            "AUDIT_LOG": str(self.dir / f"cluster-{first}" / "audit.log"),
            "DEV_NODES": ",".join(node_names(first)),
            "KUBECTL": str(kube_binary("kubectl")),
            # The CLI installed in the same environment as the stack's Python.
            "DAVIT": str(Path(sys.executable).parent / "davit"),
        }
        # Only where an exporter runs: a stack without the services has nothing listening there.
        if state.with_services:
            env["METRICS_URL"] = metrics_url(state.metrics_ports[first])
        for config in state.clusters[1:]:
            suffix = config.name.upper()
            if state.with_services:
                env[f"METRICS_URL_{suffix}"] = metrics_url(state.metrics_ports[config.name])
            env[f"KUBECONFIG_{suffix}"] = str(self.kubeconfig_path(config.name))
            env[f"REDIS_URL_{suffix}"] = stores.redis_url(state.redis_ports[config.name], password)
            env[f"KUBELET_ROOT_{suffix}"] = str(self.kubelet_root(config.name))
            env[f"DEV_NODES_{suffix}"] = ",".join(node_names(config.name))
        return env

    def write_env(self, state: StackState) -> Path:
        lines = [f"{k}={shlex.quote(v)}" for k, v in self.env(state).items()]
        path = self.env_path()
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path


def metrics_url(port: int) -> str:
    return f"http://127.0.0.1:{port}/metrics"


def wait_for_removal(path: Path, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while path.exists() and time.monotonic() < deadline:
        shutil.rmtree(path, ignore_errors=True)
        time.sleep(0.1)
