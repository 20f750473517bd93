"""Chaos cases of the object stores: a backup and its restore to the S3 emulator and to Azurite through
the stack's fault proxy (``devstack.faults``), which throttles (503 with Retry-After), answers 500,
resets connections and truncates bodies for a while at points of each stage. The stores' clients retry
with backoff; each operation completes and its restore is identical."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from devstack.faults import Fault, FaultProxy, Flavor, Mode
from tests.chaos.bed import Bed, Point, View, unique
from tests.chaos.cases import Result, case, round_trip


def _location(bed: Bed, flavor: Flavor, endpoint: str) -> dict[str, Any]:
    env, prefix = bed.env, unique("chaos")
    if flavor == "s3":
        config = {
            "region": env["S3_REGION"],
            "endpoint": endpoint,
            "disableSSL": True,
            "accessKeyID": env["S3_ACCESS_KEY"],
            "secretAccessKey": env["S3_SECRET_KEY"],
        }
        return {"type": "s3", "path": env["S3_BUCKET"], "prefix": prefix, "s3Config": config}
    parts = dict(p.split("=", 1) for p in env["AZURE_STORAGE_CONNECTION_STRING"].strip(";").split(";"))
    azure = {
        "storageAccountName": parts["AccountName"],
        "storageAccountKey": parts["AccountKey"],
        "endpoint": endpoint,
    }
    return {"type": "azure", "path": env["AZURE_CONTAINER"], "prefix": prefix, "azureConfig": azure}


def _upstream(bed: Bed, flavor: Flavor) -> tuple[str, str]:
    """(the proxy's upstream ``http://host:port``, the path the endpoint adds to it)."""
    if flavor == "s3":
        return bed.env["S3_ENDPOINT"], ""
    parts = dict(p.split("=", 1) for p in bed.env["AZURE_STORAGE_CONNECTION_STRING"].strip(";").split(";"))
    blob = parts["BlobEndpoint"].rstrip("/")
    host = "/".join(blob.split("/")[:3])
    return host, blob[len(host) :]


def _inject(proxy: FaultProxy, *faults: Fault) -> Callable[[Bed], None]:
    def inject(bed: Bed) -> None:
        proxy.run(*faults)
        bed.say(f"    store faults: {', '.join(f.mode.value for f in faults)}")

    return inject


def _store_case(bed: Bed, result: Result, flavor: Flavor) -> None:
    upstream, path = _upstream(bed, flavor)
    with FaultProxy(upstream, flavor) as proxy:
        spec = _location(bed, flavor, proxy.url + path)
        name = unique(f"{result.case}-loc")
        bed.create_location(name, spec)
        # What the location holds is counted past the proxy, on the store itself.
        direct = _location(bed, flavor, upstream + path)
        direct["prefix"] = spec["prefix"]
        throttle = Fault(Mode.THROTTLE, seconds=8, retry_after=1)
        errors = Fault(Mode.ERROR, seconds=4, status=500)
        resets = Fault(Mode.RESET, requests=6)
        truncated = Fault(Mode.TRUNCATE, requests=4, methods=("GET",))
        volumes: Callable[[View], bool] = lambda v: v.stage == "Volumes"  # noqa: E731
        applications: Callable[[View], bool] = lambda v: v.stage == "Applications"  # noqa: E731
        backup = [
            (Point("503 SlowDown 8 s, 500 for 4 s, 6 resets @ backup Volumes", volumes),
             _inject(proxy, throttle, errors, resets)),
            (Point("6 resets, 503 for 8 s @ backup Applications", applications),
             _inject(proxy, resets, throttle)),
        ]  # fmt: skip
        restore = [
            (Point("4 truncated reads, 6 resets @ restore Applications", applications),
             _inject(proxy, truncated, resets)),
            (Point("503 SlowDown 8 s, 4 truncated reads @ restore Volumes", volumes),
             _inject(proxy, throttle, truncated)),
        ]  # fmt: skip
        round_trip(bed, result, faults=(list(backup), list(restore)), at=(name, direct))
        stats = proxy.stats_snapshot()
        result.notes.append(f"proxy: {stats.requests} requests, faulted {dict(stats.faulted)}")
        if not stats.faulted:
            raise AssertionError("the fault proxy applied no fault")


@case(
    "store-faults-s3",
    "the S3 store behind the fault proxy: throttled (503 SlowDown, Retry-After), 500s, connection resets "
    "and truncated bodies during the backup's Volumes and Applications and the restore's Applications and "
    "Volumes",
)
def store_faults_s3(bed: Bed, result: Result) -> None:
    _store_case(bed, result, "s3")


@case(
    "store-faults-azure",
    "Azurite behind the fault proxy: the same faults (ServerBusy 503 with Retry-After, 500s, resets, "
    "truncated bodies) at the same points",
)
def store_faults_azure(bed: Bed, result: Result) -> None:
    _store_case(bed, result, "azure")
