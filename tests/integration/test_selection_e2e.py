"""What a backup selects and what a restore filters, end to end on the real stack.

One namespace with a varied set of objects and three volumes (and two small sibling namespaces for the
namespace patterns) is backed up at once by several backups with different specs, and restored in part;
each test then reads what one backup stored in its location (the manifest, the parts, the volume trees)
or what the restore created in the cluster, never only Davit's status:

* from the admin namespace: a glob pattern with ``excludeNamespaces`` (volumes too: ``volumeMode: skip``,
  and claims whose ``davit.dev/volume-mode`` says otherwise), ``selectors``, ``resourceTypes`` with
  ``excludeResourceTypes``, ``includeResources`` (with a ``version``, and one naming a version the backup
  would not store), ``namespaceSelector`` with ``excludeNamespaces``;
* from the namespace itself, as its tenant: Stork's own BackupLocation and credentials Secret (the seed's
  YAML with only ``apiVersion`` changed: ``secretConfig``, no inline keys, Stork's skip annotation), and
  the attack of a tenant backup asking for ``namespaces: ["*"]``;
* a restore of part of a backup (``resourceTypes`` and ``includeResources``) into another namespace,
  with ``storageClassMapping``.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from davit.format.layout import BackupRef
from davit.format.repository import BackupRepository
from davit.repo import RepoReader, load_tree, restore_tree
from tests.conftest import StackEnv
from tests.helpers import wait_for
from tests.integration.conftest import SERVICES, Services
from tests.integration.tenants import TenantUser, events_of
from tests.integration.test_backup_resources import apply, listed_in_scope, location_manifest, repository_for
from tests.integration.test_backup_volumes import assert_same_tree
from tests.integration.test_restore import volume_of

pytestmark = pytest.mark.integration

ADMIN = "kube-system"
STORK_SKIP = "stork.libopenstorage.org/skipresource"
#: A class no provisioner serves: a claim restored with it stays Pending, which is all the mapping needs.
MAPPED_CLASS = "davit-archive"

APP = """
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config, namespace: NS, labels: {app: web}}
data: {mode: production}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: db-config, namespace: NS, labels: {app: db}}
data: {size: large}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: plain, namespace: NS}
data: {a: b}
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret, namespace: NS, labels: {app: db}}
stringData: {password: not-a-real-password}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: NS, labels: {app: web}}
spec: {selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: NS, labels: {app: web}}
spec:
  replicas: 0
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: nginx}]}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
  namespace: NS
  labels: {app: db}
  annotations: {dev.davit.dev/seed-data: "2Mi", davit.dev/volume-mode: filesystem}
spec: {storageClassName: davit-dev, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: archive
  namespace: NS
  labels: {app: db}
  annotations: {davit.dev/volume-mode: skip}
spec: {storageClassName: davit-dev, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: cache, namespace: NS, labels: {app: db}}
spec: {storageClassName: davit-dev, accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: NS, labels: {app: db}}
spec:
  containers:
  - name: db
    image: postgres
    volumeMounts:
    - {name: data, mountPath: /data}
    - {name: archive, mountPath: /archive}
    - {name: cache, mountPath: /cache}
  volumes:
  - {name: data, persistentVolumeClaim: {claimName: data}}
  - {name: archive, persistentVolumeClaim: {claimName: archive}}
  - {name: cache, persistentVolumeClaim: {claimName: cache}}
"""

#: The seed's (seeds/000) credentials Secret and BackupLocation with only ``apiVersion`` changed (and a
#: ``prefix``, so that tests sharing the bucket do not meet): Stork's own annotation keeps the Secret out.
STORK_LOCATION = """
apiVersion: v1
kind: Secret
metadata:
  name: s3secret
  namespace: NS
  annotations:
    stork.libopenstorage.org/skipresource: "true"
stringData:
  region: REGION
  accessKeyID: ACCESS_KEY
  secretAccessKey: SECRET_KEY
  endpoint: "ENDPOINT"
  disableSSL: "true"
---
apiVersion: davit.dev/v1alpha1
kind: BackupLocation
metadata:
  name: mysql-backup
  namespace: NS
  annotations:
    stork.libopenstorage.org/skipresource: "true"
location:
  type: s3
  path: "BUCKET"
  prefix: PREFIX
  secretConfig: s3secret
"""


@dataclass
class World:
    """The namespaces, the locations, and every backup and restore once Final."""

    stack: StackEnv
    namespace: str
    excluded: str
    matched: str
    restored_into: str
    admin_location: dict[str, Any]
    tenant_prefix: str
    statuses: dict[str, dict[str, Any]] = field(default_factory=dict)

    def uid(self, namespace: str, name: str) -> str:
        out = self.stack.kubectl("-n", namespace, "get", "applicationbackup", name, "-o", "json").stdout
        uid: str = json.loads(out)["metadata"]["uid"]
        return uid

    def admin_backup(self, name: str) -> tuple[BackupRepository, BackupRef]:
        return repository_for(self.admin_location), BackupRef(ADMIN, name, self.uid(ADMIN, name))

    def tenant_repository(self) -> BackupRepository:
        """The tenant's location opened with the stack's keys given inline, independently of Davit."""
        inline = location_manifest(self.stack, "s3", self.namespace, Path("/nonexistent"))
        inline["location"]["prefix"] = self.tenant_prefix
        return repository_for(inline)


def stored(repository: BackupRepository, ref: BackupRef) -> list[dict[str, Any]]:
    """Every object the backup stored, read back from its parts (the manifest says where they are)."""
    manifest = repository.read_manifest(ref)
    return [o for part in manifest["parts"] for o in repository.read_part(part["key"])]


def namespaced(objects: list[dict[str, Any]], namespace: str) -> set[tuple[str, str]]:
    return {
        (o["kind"], o["metadata"]["name"]) for o in objects if o["metadata"].get("namespace") == namespace
    }


def _wait_settled(stack: StackEnv, namespace: str) -> None:
    """What the controllers add to a new namespace is there before anything is backed up (so that what a
    backup stored can be compared with what the API lists afterwards)."""

    def settled() -> bool:
        secrets = json.loads(stack.kubectl("-n", namespace, "get", "secrets", "-o", "json").stdout)["items"]
        tokens = {s["metadata"].get("annotations", {}).get("kubernetes.io/service-account.name")
                  for s in secrets if s.get("type") == "kubernetes.io/service-account-token"}  # fmt: skip
        accounts = json.loads(stack.kubectl("-n", namespace, "get", "serviceaccounts", "-o", "json").stdout)
        root_ca = stack.kubectl("-n", namespace, "get", "configmap", "kube-root-ca.crt", check=False)
        return root_ca.returncode == 0 and {a["metadata"]["name"] for a in accounts["items"]} <= tokens

    wait_for(f"namespace {namespace} to settle", settled, timeout=60)


def _operation(kind: str, namespace: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "davit.dev/v1alpha1", "kind": kind,
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}  # fmt: skip


def _wait_final(stack: StackEnv, services: Services, kind: str, namespace: str, name: str) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        out = stack.kubectl("-n", namespace, "get", kind, name, "-o", "json").stdout
        status: dict[str, Any] = json.loads(out).get("status") or {}
        return status if status.get("stage") == "Final" else None

    try:
        return wait_for(f"{kind} {namespace}/{name} to finish", final, timeout=240)
    except AssertionError:
        print(services.logs())
        raise


@pytest.fixture(scope="module")
def world(stack: StackEnv, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    import redis

    redis.Redis.from_url(stack.redis_url).flushdb()
    root = tmp_path_factory.mktemp("selection")
    (root / "logs").mkdir()
    services = Services(stack, root / "logs")
    ns = f"t-{uuid.uuid4().hex[:10]}"
    world = World(stack, ns, f"{ns}-x", f"{ns}-y", f"{ns}-r", location_manifest(stack, "local", ADMIN, root),
                  f"t-{uuid.uuid4().hex[:8]}")  # fmt: skip
    world.admin_location["metadata"]["name"] = f"sel-{ns}"
    admin_loc = world.admin_location["metadata"]["name"]
    made: list[tuple[str, str, str]] = []
    try:
        for service in SERVICES:
            services.start(service)
        for node in stack.env["DEV_NODES"].split(","):
            services.start("uploader", name=f"uploader-{node}", DAVIT_NODE_NAME=node,
                           DAVIT_KUBELET_ROOT=stack.env["KUBELET_ROOT"])  # fmt: skip
        stack.kubectl("create", "namespace", ns)
        for sibling in (world.excluded, world.matched):
            stack.kubectl("create", "namespace", sibling)
            stack.kubectl("label", "namespace", sibling, f"davit-test-sel={ns}")
            sibling_map = {"name": "sibling", "namespace": sibling}
            apply(
                stack, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": sibling_map, "data": {"a": "b"}}
            )
        tenant = TenantUser(stack, ns)
        apply(stack, APP.replace("NS", ns))
        env = stack.env
        apply(stack, STORK_LOCATION.replace("NS", ns).replace("REGION", env["S3_REGION"])
              .replace("ACCESS_KEY", env["S3_ACCESS_KEY"]).replace("SECRET_KEY", env["S3_SECRET_KEY"])
              .replace("ENDPOINT", env["S3_ENDPOINT"]).replace("BUCKET", env["S3_BUCKET"])
              .replace("PREFIX", world.tenant_prefix))  # fmt: skip
        apply(stack, world.admin_location)
        volume_of(stack, ns, "data")
        wait_for(
            "the pod to run",
            lambda: json.loads(stack.kubectl("-n", ns, "get", "pod", "db", "-o", "json").stdout)
            .get("status", {}).get("phase") == "Running",
            timeout=60,
        )  # fmt: skip
        for each in (ns, world.excluded, world.matched):
            _wait_settled(stack, each)

        base = {"backupLocation": admin_loc, "reclaimPolicy": "Delete"}
        admin_backups: dict[str, dict[str, Any]] = {
            # volumeMode skip: only the claim annotated filesystem has its data read.
            "all": {"namespaces": [f"{ns}*"], "excludeNamespaces": [world.excluded], "volumeMode": "skip"},
            "labels": {"namespaces": [ns], "selectors": {"app": "web"}},
            "types": {"namespaces": [ns], "resourceTypes": ["ConfigMap", "secrets", "persistentvolumeclaims"],
                      "excludeResourceTypes": ["Secret", "persistentvolumeclaims"]},
            "include": {"namespaces": [ns], "includeResources": [
                {"kind": "ConfigMap", "name": "plain"},
                {"group": "apps", "version": "v1", "kind": "Deployment", "namespace": ns, "name": "web"}]},
            "bad-version": {"namespaces": [ns], "includeResources": [
                {"group": "apps", "version": "v1beta1", "kind": "Deployment", "name": "web"}]},
            "by-label": {"namespaceSelector": f"davit-test-sel={ns}", "excludeNamespaces": [world.excluded]},
        }  # fmt: skip
        for name, spec in admin_backups.items():
            apply(stack, _operation("ApplicationBackup", ADMIN, name, {**base, **spec}))
            made.append(("applicationbackup", ADMIN, name))
        for name, namespaces in (("stork", [ns]), ("everything", ["*"])):
            spec = {"backupLocation": "mysql-backup", "namespaces": namespaces, "reclaimPolicy": "Delete"}
            tenant.apply(_operation("ApplicationBackup", ns, name, spec))
            made.append(("applicationbackup", ns, name))
        # Waits for "all" by itself (the watcher holds a restore until its backup is Final).
        apply(stack, _operation("ApplicationRestore", ADMIN, "part", {
            "backupName": "all", "backupLocation": admin_loc,
            "namespaceMapping": {ns: world.restored_into},
            "resourceTypes": ["ConfigMap", "PersistentVolumeClaim"],
            "includeResources": [{"kind": "ConfigMap", "namespace": ns, "name": "web-config"},
                                 {"kind": "PersistentVolumeClaim", "namespace": ns, "name": "archive"}],
            "storageClassMapping": {"davit-dev": MAPPED_CLASS},
        }))  # fmt: skip
        made.append(("applicationrestore", ADMIN, "part"))

        for kind, namespace, name in made:
            world.statuses[name] = _wait_final(stack, services, kind, namespace, name)
        yield world
    finally:
        # While the services run: a backup's finalizer is the retention service's to remove.
        for kind, namespace, name in made:
            stack.kubectl("-n", namespace, "delete", kind, name, "--wait=false", check=False)
        try:
            wait_for("the operations to be deleted", lambda: all(
                stack.kubectl("-n", namespace, "get", kind, name, check=False).returncode != 0
                for kind, namespace, name in made), timeout=90)  # fmt: skip
        finally:
            services.stop_all()
        stack.kubectl("-n", ADMIN, "delete", "backuplocation", admin_loc, "--wait=false", check=False)
        for each in (ns, world.excluded, world.matched, world.restored_into):
            stack.kubectl("delete", "namespace", each, "--wait=false", check=False)
        stack.kubectl("-n", ADMIN, "delete", "lease", services.lease, "--ignore-not-found")


def test_a_namespace_pattern_with_exclusions_stores_the_matching_namespaces_each_volume_as_its_claim_says(
    world: World, tmp_path: Path
) -> None:
    status = world.statuses["all"]
    assert status["status"] == "Successful", status
    repository, ref = world.admin_backup("all")
    objects = stored(repository, ref)

    namespaces = {o["metadata"].get("namespace") for o in objects} - {None}
    assert namespaces == {world.namespace, world.matched}, namespaces
    assert ("ConfigMap", "sibling") in namespaced(objects, world.matched)
    cluster_namespaces = {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"}
    assert cluster_namespaces == {world.namespace, world.matched}
    assert not any(world.excluded in json.dumps(o) for o in objects), "the excluded namespace was stored"
    # Everything the API lists in the namespace, but the Secret carrying Stork's own skip annotation.
    expected = listed_in_scope(world.stack, world.namespace) - {("Secret", "s3secret")}
    assert namespaced(objects, world.namespace) == expected
    assert ("Secret", "app-secret") in expected

    # The backup says volumeMode skip; each claim's davit.dev/volume-mode annotation wins over it.
    volumes = {v["persistentVolumeClaim"]: v for v in status["volumes"]}
    assert volumes["data"]["mode"] == "filesystem" and volumes["data"]["status"] == "Successful", volumes
    assert volumes["archive"]["mode"] == "skip", volumes
    assert volumes["archive"]["reason"] == "annotation davit.dev/volume-mode skip", volumes
    assert volumes["cache"]["mode"] == "skip" and volumes["cache"]["reason"] == "volumeMode skip", volumes
    manifest = repository.read_manifest(ref)
    by_claim = {v["persistentVolumeClaim"]: v for v in manifest["volumes"]}
    assert set(by_claim) == {"data", "archive", "cache"}, by_claim
    for skipped in ("archive", "cache"):
        assert by_claim[skipped]["mode"] == "skip" and not by_claim[skipped].get("tree"), by_claim[skipped]
    tree = load_tree(repository.store, repository.sealer, by_claim["data"]["tree"])
    restore_tree(tree, tmp_path / "data", RepoReader(repository.store, repository.sealer))
    assert_same_tree(volume_of(world.stack, world.namespace, "data"), tmp_path / "data")


def test_a_label_selector_stores_only_the_labelled_objects_and_no_volume_of_an_unlabelled_claim(
    world: World,
) -> None:
    assert world.statuses["labels"]["status"] == "Successful", world.statuses["labels"]
    repository, ref = world.admin_backup("labels")
    objects = [o for o in stored(repository, ref) if o["metadata"].get("namespace")]
    labelled = {(i["kind"], i["metadata"]["name"]) for i in json.loads(world.stack.kubectl(
        "-n", world.namespace, "get", "configmaps,secrets,services,deployments,pods,pvc,endpoints",
        "-l", "app=web", "-o", "json").stdout)["items"]}  # fmt: skip
    assert {("ConfigMap", "web-config"), ("Service", "web"), ("Deployment", "web")} <= labelled
    assert namespaced(objects, world.namespace) >= labelled
    assert all((o["metadata"].get("labels") or {}).get("app") == "web" for o in objects), objects
    assert not world.statuses["labels"].get("volumes"), world.statuses["labels"]
    assert repository.read_manifest(ref)["volumes"] == []


def test_resource_types_less_the_excluded_types_store_only_those_kinds_and_no_volume_data(
    world: World,
) -> None:
    status = world.statuses["types"]
    assert status["status"] == "Successful", status
    repository, ref = world.admin_backup("types")
    objects = stored(repository, ref)
    listed = world.stack.kubectl("-n", world.namespace, "get", "configmaps", "-o", "json").stdout
    configmaps = {("ConfigMap", c["metadata"]["name"]) for c in json.loads(listed)["items"]}
    assert namespaced(objects, world.namespace) == configmaps
    # The claims are excluded, so their volumes are too.
    assert not status.get("volumes") and repository.read_manifest(ref)["volumes"] == [], status


def test_include_resources_stores_the_named_objects_and_a_version_it_would_not_store_is_refused(
    world: World,
) -> None:
    assert world.statuses["include"]["status"] == "Successful", world.statuses["include"]
    repository, ref = world.admin_backup("include")
    objects = [o for o in stored(repository, ref) if o["metadata"].get("namespace")]
    assert {(o["apiVersion"], o["kind"], o["metadata"]["name"]) for o in objects} == {
        ("v1", "ConfigMap", "plain"),
        ("apps/v1", "Deployment", "web"),
    }
    refused = world.statuses["bad-version"]
    assert refused["status"] == "Failed", refused
    assert "spec.includeResources[0].version" in refused["reason"] and "v1beta1" in refused["reason"]
    assert "apps/v1" in refused["reason"], refused["reason"]
    repository, ref = world.admin_backup("bad-version")
    assert not repository.has_manifest(ref), "a refused backup stored something"
    assert any(e["reason"] == "Failed" for e in events_of(world.stack, ADMIN, "bad-version"))


def test_a_namespace_selector_less_the_excluded_namespaces_stores_the_rest(world: World) -> None:
    assert world.statuses["by-label"]["status"] == "Successful", world.statuses["by-label"]
    repository, ref = world.admin_backup("by-label")
    objects = stored(repository, ref)
    assert {o["metadata"].get("namespace") for o in objects} - {None} == {world.matched}
    assert ("ConfigMap", "sibling") in namespaced(objects, world.matched)
    assert {o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"} == {world.matched}


def test_the_stork_location_reads_its_keys_from_the_secret_and_stork_annotation_keeps_the_secret_out(
    world: World,
) -> None:
    out = world.stack.kubectl("-n", world.namespace, "get", "backuplocation", "mysql-backup", "-o", "json")
    location = json.loads(out.stdout)["location"]
    assert "s3Config" not in location and location["secretConfig"] == "s3secret"
    status = world.statuses["stork"]
    assert status["status"] == "Successful", status
    repository = world.tenant_repository()
    ref = BackupRef(world.namespace, "stork", world.uid(world.namespace, "stork"))
    keys = [i.key for i in repository.store.list(f"backups/{world.namespace}/stork/")]
    assert any(k.endswith("/manifest") for k in keys), keys
    names = namespaced(stored(repository, ref), world.namespace)
    assert ("Secret", "app-secret") in names and ("ConfigMap", "plain") in names
    assert ("Secret", "s3secret") not in names, "the credentials Secret Stork's annotation skips was stored"
    assert not any(world.stack.env["S3_SECRET_KEY"].encode() in repository.store.get(k) for k in keys)


def test_a_tenant_backup_asking_for_every_namespace_is_refused_and_nothing_of_another_namespace_is_stored(
    world: World,
) -> None:
    status = world.statuses["everything"]
    assert status["status"] == "Failed", status
    assert "pattern(s) * need a backup in the admin namespace" in status["reason"], status["reason"]
    repository = world.tenant_repository()
    assert [i.key for i in repository.store.list(f"backups/{world.namespace}/everything/")] == []
    # Whatever the tenant's location holds was stored from the tenant's own namespace.
    refs = list(repository.list_backups())
    assert [r.name for r in refs] == ["stork"], refs
    for ref in refs:
        foreign = [o for o in stored(repository, ref)
                   if o["metadata"].get("namespace") not in (None, world.namespace)
                   or (o["kind"] == "Namespace" and o["metadata"]["name"] != world.namespace)]  # fmt: skip
        assert foreign == [], foreign


def test_a_restore_of_part_of_a_backup_creates_only_what_its_filters_name_with_the_mapped_class(
    world: World,
) -> None:
    status = world.statuses["part"]
    assert status["status"] == "Successful", (status.get("reason"), status.get("resourcesByKind"))
    target, stack = world.restored_into, world.stack
    out = stack.kubectl("-n", target, "get", "configmaps,secrets,services,deployments,pods,pvc", "-o", "json")
    restored = json.loads(out.stdout)["items"]
    made = {(i["kind"], i["metadata"]["name"]) for i in restored
            if (i["metadata"].get("labels") or {}).get("davit.dev/restore") == "part"}  # fmt: skip
    assert made == {("ConfigMap", "web-config"), ("PersistentVolumeClaim", "archive")}, made
    # Nothing else but what the cluster makes in every namespace.
    others = {(i["kind"], i["metadata"]["name"]) for i in restored} - made
    assert all(kind in ("ConfigMap", "Secret") and (name == "kube-root-ca.crt" or name.startswith("default-"))
               for kind, name in others), others  # fmt: skip
    claim = next(i for i in restored if i["kind"] == "PersistentVolumeClaim")
    assert claim["spec"]["storageClassName"] == MAPPED_CLASS, claim["spec"]
    original = json.loads(stack.kubectl("-n", world.namespace, "get", "pvc", "archive", "-o", "json").stdout)
    assert original["spec"]["storageClassName"] == "davit-dev", "the source claim changed"
