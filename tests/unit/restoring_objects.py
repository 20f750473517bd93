"""Builders of backed-up objects as the API server returns them (server-assigned fields, status and all),
for the restoring tests."""

from __future__ import annotations

import copy
from typing import Any

from davit.api.objects import RawObject

NS = "shop"


def uid_of(kind: str, name: str) -> str:
    return f"uid-{kind.lower()}-{name}"


def obj(api_version: str, kind: str, name: str, namespace: str | None = NS, **body: Any) -> RawObject:
    meta: dict[str, Any] = {
        "name": name,
        "uid": uid_of(kind, name),
        "resourceVersion": "4711",
        "creationTimestamp": "2024-05-01T12:00:00Z",
        "generation": 3,
        "selfLink": f"/api/{name}",
        "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
        "labels": {"app": "shop"},
        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": '{"kind":"' + kind + '"}'},
    }
    if namespace is not None:
        meta["namespace"] = namespace
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **body}


def owned_by(child: RawObject, owner: RawObject, controller: bool = True) -> RawObject:
    ref = {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }
    child["metadata"].setdefault("ownerReferences", []).append(ref)
    return child


def namespace(name: str = NS) -> RawObject:
    ns = obj("v1", "Namespace", name, None, spec={"finalizers": ["kubernetes"]}, status={"phase": "Active"})
    ns["metadata"]["labels"] = {"team": "web", "kubernetes.io/metadata.name": name}
    return ns


def config_map(name: str, ns: str = NS, data: dict[str, str] | None = None) -> RawObject:
    return obj("v1", "ConfigMap", name, ns, data=data if data is not None else {"color": "blue"})


def secret(name: str, type_: str = "Opaque", ns: str = NS) -> RawObject:
    return obj("v1", "Secret", name, ns, type=type_, data={"password": "aHVudGVyMg=="})


def token_secret(account: str = "default", ns: str = NS) -> RawObject:
    found = secret(f"{account}-token-x7k2p", "kubernetes.io/service-account-token", ns)
    found["metadata"]["annotations"]["kubernetes.io/service-account.name"] = account
    return found


def service_account(name: str = "default", ns: str = NS) -> RawObject:
    return obj(
        "v1",
        "ServiceAccount",
        name,
        ns,
        secrets=[{"name": f"{name}-token-x7k2p"}, {"name": "registry-credentials"}],
        imagePullSecrets=[{"name": "registry-credentials"}],
    )


def service(name: str = "web", ns: str = NS, *, headless: bool = False, node_ports: bool = False,
            with_selector: bool = True) -> RawObject:  # fmt: skip
    port: dict[str, Any] = {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
    spec: dict[str, Any] = {
        "type": "ClusterIP",
        "clusterIP": "None" if headless else "10.96.12.34",
        "clusterIPs": ["None"] if headless else ["10.96.12.34"],
        "ports": [port],
        "sessionAffinity": "None",
    }
    if with_selector:
        spec["selector"] = {"app": "web"}
    if node_ports:
        spec["type"] = "LoadBalancer"
        spec["externalTrafficPolicy"] = "Local"
        spec["healthCheckNodePort"] = 31999
        port["nodePort"] = 30080
    return obj("v1", "Service", name, ns, spec=spec, status={"loadBalancer": {}})


def pod_spec(node: str | None = "node-a", account: str = "default") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "serviceAccountName": account,
        "serviceAccount": account,
        "containers": [
            {
                "name": "web",
                "image": "nginx:1.25",
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {
                        "name": f"{account}-token-x7k2p",
                        "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                    },
                ],
            }
        ],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": f"{account}-token-x7k2p", "secret": {"secretName": f"{account}-token-x7k2p"}},
        ],
        "nodeSelector": {"kubernetes.io/hostname": "node-a", "disktype": "ssd"},
        "restartPolicy": "Always",
    }
    if node:
        spec["nodeName"] = node
    return spec


def pod(
    name: str = "web-0", ns: str = NS, *, phase: str = "Running", node: str | None = "node-a"
) -> RawObject:
    return obj("v1", "Pod", name, ns, spec=pod_spec(node), status={"phase": phase, "podIP": "10.1.2.3"})


def template(spec: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "web"}}, "spec": spec}


def pod_template_spec() -> dict[str, Any]:
    spec = pod_spec(node=None)
    spec["containers"][0]["volumeMounts"] = spec["containers"][0]["volumeMounts"][:1]
    spec["volumes"] = spec["volumes"][:1]
    return spec


def deployment(name: str = "web", ns: str = NS) -> RawObject:
    found = obj(
        "apps/v1",
        "Deployment",
        name,
        ns,
        spec={
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(pod_template_spec()),
        },
        status={"replicas": 2, "readyReplicas": 2},
    )
    found["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "4"
    return found


def replica_set(name: str = "web-5d9c7", ns: str = NS) -> RawObject:
    return obj(
        "apps/v1",
        "ReplicaSet",
        name,
        ns,
        spec={
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": template(pod_template_spec()),
        },
        status={"replicas": 2},
    )


def stateful_set(name: str = "db", ns: str = NS, storage_class: str = "standard") -> RawObject:
    claim = {
        "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": storage_class,
            "resources": {"requests": {"storage": "1Gi"}},
        },
        "status": {"phase": "Pending"},
    }
    return obj(
        "apps/v1",
        "StatefulSet",
        name,
        ns,
        spec={
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": {"app": name}},
            "template": template(pod_template_spec()),
            "volumeClaimTemplates": [claim],
        },
        status={"replicas": 1},
    )


def controller_revision(name: str = "db-7f6d", ns: str = NS) -> RawObject:
    return obj("apps/v1", "ControllerRevision", name, ns, revision=2, data={})


def job(
    name: str = "migrate", ns: str = NS, *, finished: str | None = None, manual: bool = False
) -> RawObject:
    uid = uid_of("Job", name)
    labels = {"app": "migrate", "controller-uid": uid, "job-name": name}
    spec: dict[str, Any] = {
        "backoffLimit": 6,
        "selector": {"matchLabels": {"controller-uid": uid}},
        "template": {
            "metadata": {"labels": labels},
            "spec": {**pod_template_spec(), "restartPolicy": "Never"},
        },
    }
    if manual:
        spec["manualSelector"] = True
    status: dict[str, Any] = {"active": 1}
    if finished:
        status = {"conditions": [{"type": finished, "status": "True"}], "succeeded": 1}
    return obj("batch/v1", "Job", name, ns, spec=spec, status=status)


def cron_job(name: str = "nightly", ns: str = NS) -> RawObject:
    return obj(
        "batch/v1beta1",
        "CronJob",
        name,
        ns,
        spec={"schedule": "0 3 * * *", "jobTemplate": {"spec": {"template": template(pod_template_spec())}}},
        status={"active": []},
    )


def claim(name: str = "data", ns: str = NS, *, volume: str | None = "pvc-1234",
          storage_class: str = "standard", node: str | None = "node-a") -> RawObject:  # fmt: skip
    found = obj(
        "v1",
        "PersistentVolumeClaim",
        name,
        ns,
        spec={
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": "1Gi"}},
            "storageClassName": storage_class,
            "volumeMode": "Filesystem",
        },
        status={"phase": "Bound", "capacity": {"storage": "1Gi"}},
    )
    annotations = found["metadata"]["annotations"]
    annotations["pv.kubernetes.io/bind-completed"] = "yes"
    annotations["pv.kubernetes.io/bound-by-controller"] = "yes"
    annotations["volume.beta.kubernetes.io/storage-provisioner"] = "example.com/local"
    if node:
        annotations["volume.kubernetes.io/selected-node"] = node
    if volume:
        found["spec"]["volumeName"] = volume
    return found


def volume(name: str = "pvc-1234", *, claim_ns: str = NS, claim_name: str = "data",
           provisioner: str | None = "example.com/local", storage_class: str = "standard",
           node: str = "node-a") -> RawObject:  # fmt: skip
    found = obj(
        "v1",
        "PersistentVolume",
        name,
        None,
        spec={
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": storage_class,
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": claim_ns,
                "name": claim_name,
                "uid": uid_of("PersistentVolumeClaim", claim_name),
                "resourceVersion": "99",
            },
            "local": {"path": f"/mnt/disks/{name}"},
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                            ]
                        }
                    ]
                }
            },
        },
        status={"phase": "Bound"},
    )
    annotations = found["metadata"]["annotations"]
    annotations["pv.kubernetes.io/bound-by-controller"] = "yes"
    if provisioner:
        annotations["pv.kubernetes.io/provisioned-by"] = provisioner
    return found


def crd(group: str = "example.com", kind: str = "Widget", plural: str = "widgets") -> RawObject:
    return obj(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        f"{plural}.{group}",
        None,
        spec={
            "group": group,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
            "scope": "Namespaced",
            "versions": [{"name": "v1", "served": True, "storage": True}],
        },
        status={"conditions": [{"type": "Established", "status": "True"}]},
    )


def widget(name: str = "blue", ns: str = NS) -> RawObject:
    return obj("example.com/v1", "Widget", name, ns, spec={"size": 3}, status={"ready": True})


def copied(value: RawObject) -> RawObject:
    return copy.deepcopy(value)
