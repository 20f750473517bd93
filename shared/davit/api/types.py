"""The custom resources' schemas as pydantic models: the one source of truth for the CRDs.

Field names follow Stork's API (seeds/000) so that its YAML examples work after changing only the
``apiVersion``. ``deploy/crds/`` is generated from these models by ``davit.api.crds``; a unit test fails when
the two drift apart.

Constraints written here (enums, patterns, minimums, required fields) become OpenAPI validation in the CRDs,
so the API server rejects bad input with a message that names the field, before any Davit code sees it.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

#: Kubernetes object names (RFC 1123 subdomain) for references to other objects.
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: Namespace names (RFC 1123 label).
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: Stork's 12-hour clock ("10:14PM", "8:05PM"), as Go's time.Kitchen layout parses it.
KITCHEN_TIME = r"^(0?[1-9]|1[0-2]):[0-5][0-9](AM|PM)$"
#: A duration such as "720h", "30d", "1h30m" (Go's units plus days and weeks).
DURATION = r"^([0-9]+(ms|s|m|h|d|w))+$"
#: A five-field cron expression or one of the @-macros.
CRON = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$"

#: The longest duration written (``ttl``, ``expireAfter``): room for any sensible one, such as "87600h",
#: while a tenant cannot store a number of digits no one can compute with.
MAX_DURATION_LENGTH = 32
#: The longest interval of an ``interval`` policy: one (leap) year in minutes.
MAX_INTERVAL_MINUTES = 366 * 24 * 60
#: The most backups a policy entry may keep by count (``retain``, ``minRetain``).
MAX_RETAIN = 10000

ObjectName = Annotated[str, Field(pattern=DNS1123_SUBDOMAIN, max_length=253)]
NamespaceName = Annotated[str, Field(pattern=DNS1123_LABEL, max_length=63)]
#: A namespace name, or a glob pattern of them as Velero's (``*``, ``team-*``, ``ns?``, ``ns[0-9]``): the
#: characters of names plus ``*``, ``?`` and brackets. What else a pattern must be (no ``**``, brackets
#: closed and not empty) is checked by the watcher (``davit.backup.selection.namespace_pattern_problem``).
NAMESPACE_PATTERN = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?|[-a-z0-9\[\]]*[*?\[][-a-z0-9*?\[\]]*)$"
NamespacePattern = Annotated[str, Field(pattern=NAMESPACE_PATTERN, max_length=63)]
#: A GCS project id (``my-project``), a legacy domain-scoped one (``example.com:my-project``) or a
#: project number: what the ``x-goog-project-id`` header carries.
GOOGLE_PROJECT = r"^[a-z0-9]([-a-z0-9.:]{0,61}[a-z0-9])?$"
Count = Annotated[int, Field(ge=0)]


class Model(BaseModel):
    """Base of every API model: camelCase on the wire, unknown fields ignored when reading."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


# --- enums -------------------------------------------------------------------------------------------


class Stage(StrEnum):
    """Where an operation is in its pipeline; each stage is owned by one service."""

    #: Accepted by the watcher and queued; nothing has run yet.
    INITIAL = "Initial"
    #: Pre-exec rules run (snapshot service).
    PRE_EXEC_RULE = "PreExecRule"
    #: Volume data is snapshotted or copied (snapshot service and node agents).
    VOLUMES = "Volumes"
    #: Resources are exported or restored (resource-export or restore service).
    APPLICATIONS = "Applications"
    #: Post-exec rules run (snapshot service).
    POST_EXEC_RULE = "PostExecRule"
    #: Nothing more will happen; ``status`` says how it ended.
    FINAL = "Final"


class Status(StrEnum):
    """How an operation is doing within its stage."""

    #: Waiting to be picked up.
    PENDING = "Pending"
    #: A worker is on it.
    IN_PROGRESS = "InProgress"
    #: Everything in scope was done.
    SUCCESSFUL = "Successful"
    #: Finished, but some volumes or resources failed (each with its reason).
    PARTIAL_SUCCESS = "PartialSuccess"
    #: Stopped; ``reason`` says why.
    FAILED = "Failed"


ReclaimPolicy = Literal["Delete", "Retain"]
#: A restore's choice for objects that exist: keep (Retain), delete and create again (Delete), or patch
#: them to the backup's version in place (Update, Velero's ``existingResourcePolicy: update``).
RestoreReplacePolicy = Literal["Delete", "Retain", "Update"]
VolumeMode = Literal["auto", "filesystem", "snapshot", "skip"]
LocationType = Literal["s3", "azure", "google", "local"]
Weekday = Literal[
    "Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
    "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat",
]  # fmt: skip


# --- BackupLocation ----------------------------------------------------------------------------------


class S3Config(Model):
    region: str | None = Field(default=None, description="Region of the bucket.")
    access_key_id: str | None = Field(default=None, alias="accessKeyID")
    secret_access_key: str | None = Field(default=None, alias="secretAccessKey")
    endpoint: str | None = Field(default=None, description="URL of an S3-compatible endpoint.")
    disable_ssl: bool | None = Field(
        default=None,
        alias="disableSSL",
        description="Plain http for an endpoint given without a scheme; never turns off certificate "
        "verification (see insecureSkipTLSVerify).",
    )
    insecure_skip_tls_verify: bool | None = Field(
        default=None,
        alias="insecureSkipTLSVerify",
        description="Accept any certificate from an https endpoint (e.g. a self-signed one).",
    )


class AzureConfig(Model):
    storage_account_name: str | None = None
    storage_account_key: str | None = None
    endpoint: str | None = Field(default=None, description="Blob service URL (defaults to Azure's).")
    insecure_skip_tls_verify: bool | None = Field(
        default=None,
        alias="insecureSkipTLSVerify",
        description="Accept any certificate from an https endpoint (e.g. a self-signed one).",
    )


class GoogleConfig(Model):
    project_id: str | None = Field(
        default=None,
        alias="projectID",
        pattern=GOOGLE_PROJECT,
        max_length=63,
        description="Project sent as x-goog-project-id with the requests that address the bucket itself.",
    )
    access_key_id: str | None = Field(default=None, alias="accessKeyID", description="HMAC key id.")
    secret_access_key: str | None = Field(default=None, alias="secretAccessKey", description="HMAC secret.")
    endpoint: str | None = Field(
        default=None, description="XML API endpoint; defaults to https://storage.googleapis.com"
    )


class LocationSpec(Model):
    type: LocationType = Field(description="Kind of store: s3, azure, google (HMAC keys) or local.")
    path: str = Field(min_length=1, description="Bucket, container or directory.")
    prefix: str | None = Field(default=None, description="Key prefix inside the bucket or container.")
    sync: bool | None = Field(default=None, description="Import the backups found here as CRs.")
    encryption_key: str | None = Field(default=None, description="Encrypts everything written here.")
    secret_config: ObjectName | None = Field(
        default=None, description="Secret in the same namespace whose keys override inline values."
    )
    s3_config: S3Config | None = Field(default=None, alias="s3Config")
    azure_config: AzureConfig | None = None
    google_config: GoogleConfig | None = None
    allowed_namespaces: list[NamespaceName] | None = Field(
        default=None,
        description="Namespaces (besides its own) whose operations may use this location; '*' for all. "
        "Honoured only for locations in the admin namespace.",
    )
    restore_setuid: bool | None = Field(
        default=None,
        description="Restore the setuid and setgid bits of files as they were backed up (by default they "
        "are stripped). Honoured only for locations in the admin namespace.",
    )
    repack_below_percent: int | None = Field(
        default=None,
        ge=0,
        le=100,
        description="Garbage collection rewrites a pack of volume data once less than this percentage of it "
        "is in use, giving the rest of its space back (default 50; 0 never rewrites).",
    )


class BackupLocationStatus(Model):
    phase: Literal["Available", "Unavailable"] | None = None
    message: str | None = None
    last_validated: str | None = None
    last_synced: str | None = None
    observed_generation: int | None = None


# --- shared operation parts -------------------------------------------------------------------------


class ObjectRef(Model):
    """A resource picked by group/kind/namespace/name (Stork's ObjectInfo)."""

    group: str | None = None
    version: str | None = None
    kind: str = Field(min_length=1)
    namespace: NamespaceName | None = None
    name: ObjectName


class Condition(Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None


class VolumeStatus(Model):
    namespace: str | None = None
    persistent_volume_claim: str | None = None
    volume: str | None = None
    driver: str | None = None
    mode: str | None = None
    status: Status | None = None
    reason: str | None = None
    total_size: Count | None = None
    bytes_done: Count | None = None


class KindCounts(Model):
    """Per kind: created, kept (Retain), deleted and created again (Delete), patched (Update), refused."""

    restored: Count = 0
    retained: Count = 0
    replaced: Count = 0
    updated: Count = 0
    failed: Count = 0


class StageTiming(Model):
    """When an operation entered one stage and when it left it (absent while it is in it)."""

    stage: Stage
    start_timestamp: str | None = None
    finish_timestamp: str | None = None


class OperationStatus(Model):
    """Status common to backups, restores and clones. Never holds a full resource list (etcd's 1 MiB)."""

    stage: Stage | None = None
    status: Status | None = None
    reason: str | None = None
    resource_count: Count | None = None
    volumes: list[VolumeStatus] | None = None
    volumes_progress: str | None = Field(default=None, description="Volumes done/total, for display.")
    total_size: Count | None = None
    stored_size: Count | None = None
    backup_path: str | None = None
    trigger_timestamp: str | None = None
    last_update_timestamp: str | None = None
    finish_timestamp: str | None = None
    elapsed: str | None = None
    conditions: list[Condition] | None = None
    stage_history: list[StageTiming] | None = Field(
        default=None, description="Each stage passed through, with when it began and ended."
    )
    observed_generation: int | None = None
    accepted_generation: int | None = Field(
        default=None,
        description="The metadata.generation whose spec was validated; workers act on that spec only.",
    )


# --- ApplicationBackup -------------------------------------------------------------------------------


class ApplicationBackupSpec(Model):
    backup_location: ObjectName = Field(description="BackupLocation to write to.")
    namespaces: list[NamespacePattern] | None = Field(
        default=None,
        description="Namespaces to back up: names, or glob patterns ('*' for all, 'team-*') in the admin "
        "namespace.",
    )
    exclude_namespaces: list[NamespacePattern] | None = Field(
        default=None,
        description="Namespaces (names or glob patterns) left out of those namespaces and namespaceSelector "
        "cover.",
    )
    selectors: dict[str, str] | None = Field(default=None, description="Label selector for resources.")
    namespace_selector: str | None = Field(default=None, description="Label selector for namespaces.")
    include_resources: list[ObjectRef] | None = None
    resource_types: list[str] | None = None
    exclude_resource_types: list[str] | None = None
    include_cluster_resources: bool | None = None
    reclaim_policy: ReclaimPolicy | None = None
    pre_exec_rule: ObjectName | None = None
    post_exec_rule: ObjectName | None = None
    volume_mode: VolumeMode | None = None
    snapshot_move_data: bool | None = Field(
        default=None,
        description=(
            "Move the data of volumes backed up as CSI snapshots into the backup location (a temporary "
            "claim from each snapshot, read by the node agent); the snapshots are deleted afterwards."
        ),
    )
    ttl: Annotated[str, Field(pattern=DURATION, max_length=MAX_DURATION_LENGTH)] | None = Field(
        default=None, description="Delete the backup this long after it finishes, e.g. 72h or 30d."
    )


class ApplicationBackupStatus(OperationStatus):
    pass


# --- ApplicationRestore ------------------------------------------------------------------------------


class ResourceModifierRef(Model):
    """The ConfigMap of a restore's resource modifiers (Velero's ``TypedLocalObjectReference``)."""

    api_group: str | None = Field(default=None, max_length=0, description="Empty: ConfigMaps are core.")
    kind: Literal["ConfigMap"] = "ConfigMap"
    name: ObjectName


class HookContainer(Model):
    """A container as in a pod's initContainers; fields besides name and image are kept as written."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )  # fmt: skip

    name: NamespaceName
    image: str = Field(min_length=1, max_length=1024)


class InitContainerHook(Model):
    name: NamespaceName = Field(description="Names the hook in the restore's reason when it fails.")
    pod_selector: dict[str, str] | None = Field(
        default=None, description="Labels of the restored pods that get the containers (default: every one)."
    )
    # Not "initContainers" as in Velero: Kustomize's image setter rewrites every list of that name in any
    # object, the CRD's schema included, and fails on it.
    containers_to_add: list[HookContainer] = Field(
        min_length=1,
        max_length=8,
        description="Added to the restored pods after Davit's restore-wait container, before their own.",
    )


class ApplicationRestoreSpec(Model):
    backup_name: ObjectName
    backup_location: ObjectName
    namespace_mapping: dict[str, str] | None = None
    replace_policy: RestoreReplacePolicy | None = Field(
        default=None,
        description=(
            "Objects that exist: Retain (default) keeps them, Delete deletes and creates them again, Update "
            "patches them to the backup's version (same uid)."
        ),
    )
    include_resources: list[ObjectRef] | None = None
    resource_types: list[str] | None = None
    storage_class_mapping: dict[str, str] | None = None
    node_mapping: dict[str, str] | None = None
    dry_run: bool | None = None
    backup_namespace: NamespaceName | None = Field(
        default=None,
        description=(
            "Namespace of the ApplicationBackup (default: the restore's own). Only a restore in the admin "
            "namespace may name another."
        ),
    )
    resource_modifier: ResourceModifierRef | None = Field(
        default=None,
        description="A ConfigMap in the restore's namespace holding JSON patches applied before creating.",
    )
    preserve_node_ports: bool | None = Field(
        default=None, description="Keep Services' nodePorts (by default they are allocated anew)."
    )
    post_exec_rule: ObjectName | None = Field(
        default=None,
        description=(
            "A Rule in the restore's namespace, run in the restored pods once they run (foreground actions "
            "only); a failure makes the restore PartialSuccess."
        ),
    )
    init_container_hooks: list[InitContainerHook] | None = Field(
        default=None,
        max_length=16,
        description="Init containers added to the restored pods a selector matches.",
    )
    hook_timeout: Annotated[str, Field(pattern=DURATION, max_length=MAX_DURATION_LENGTH)] | None = Field(
        default=None, description="How long the hooks wait for the restored pods to run (default 5m)."
    )
    in_place_volumes: bool | None = Field(
        default=None,
        description=(
            "Write the backup's volume data into the existing claims of the same names, with the workloads "
            "that mount them scaled to zero meanwhile; no object is created, changed or deleted."
        ),
    )


class ApplicationRestoreStatus(OperationStatus):
    resources_by_kind: dict[str, KindCounts] | None = None


# --- ApplicationClone --------------------------------------------------------------------------------


class ApplicationCloneSpec(Model):
    source_namespace: NamespaceName
    destination_namespace: NamespaceName
    selectors: dict[str, str] | None = None
    pre_exec_rule: ObjectName | None = None
    post_exec_rule: ObjectName | None = None
    replace_policy: Literal["Delete", "Retain", "Fail"] | None = None


class ApplicationCloneStatus(OperationStatus):
    resources_by_kind: dict[str, KindCounts] | None = None


# --- SchedulePolicy ----------------------------------------------------------------------------------

RetainCount = Annotated[
    int, Field(ge=1, le=MAX_RETAIN, description="How many successful backups of this type to keep.")
]
ExpireAfter = Annotated[
    str,
    Field(pattern=DURATION, max_length=MAX_DURATION_LENGTH, description="Remove backups older than this."),
]
MinRetain = Annotated[int, Field(ge=0, le=MAX_RETAIN, description="Never remove below this many by age.")]


class IntervalPolicy(Model):
    interval_minutes: int = Field(ge=1, le=MAX_INTERVAL_MINUTES)
    retain: RetainCount | None = None
    expire_after: ExpireAfter | None = None
    min_retain: MinRetain | None = None


class DailyPolicy(Model):
    time: str = Field(pattern=KITCHEN_TIME, description='Time of day, e.g. "10:14PM".')
    retain: RetainCount | None = None
    expire_after: ExpireAfter | None = None
    min_retain: MinRetain | None = None


class WeeklyPolicy(Model):
    day: Weekday
    time: str = Field(pattern=KITCHEN_TIME)
    retain: RetainCount | None = None
    expire_after: ExpireAfter | None = None
    min_retain: MinRetain | None = None


class MonthlyPolicy(Model):
    date: int = Field(ge=1, le=31, description="Day of month; past the month's end fires on its last day.")
    time: str = Field(pattern=KITCHEN_TIME)
    retain: RetainCount | None = None
    expire_after: ExpireAfter | None = None
    min_retain: MinRetain | None = None


class CronPolicy(Model):
    schedule: str = Field(pattern=CRON, max_length=256, description='Cron expression, e.g. "*/15 * * * *".')
    retain: RetainCount | None = None
    expire_after: ExpireAfter | None = None
    min_retain: MinRetain | None = None


class PolicySpec(Model):
    time_zone: str | None = Field(
        default=None, max_length=64, description="IANA time zone of the times (default UTC)."
    )
    interval: IntervalPolicy | None = None
    daily: DailyPolicy | None = None
    weekly: WeeklyPolicy | None = None
    monthly: MonthlyPolicy | None = None
    cron: CronPolicy | None = None


# --- ApplicationBackupSchedule -----------------------------------------------------------------------


class BackupTemplate(Model):
    spec: ApplicationBackupSpec


class ApplicationBackupScheduleSpec(Model):
    schedule_policy_name: ObjectName
    suspend: bool | None = None
    reclaim_policy: ReclaimPolicy | None = None
    template: BackupTemplate


class ScheduledBackup(Model):
    name: str
    status: Status | None = None
    creation_timestamp: str | None = None
    finish_timestamp: str | None = None


class ApplicationBackupScheduleStatus(Model):
    items: dict[str, list[ScheduledBackup]] | None = Field(
        default=None, description="Backups kept, per policy type."
    )
    last_successful_backup: str | None = None
    last_success_time: str | None = None
    last_success_duration: str | None = None
    next_trigger: dict[str, str] | None = None
    last_triggered: dict[str, str] | None = Field(
        default=None, description="Per policy type, the last slot fired (so a slot never fires twice)."
    )
    conditions: list[Condition] | None = None


# --- Rule --------------------------------------------------------------------------------------------


class RuleAction(Model):
    type: Literal["command"]
    value: str = Field(min_length=1)
    background: bool | None = None
    run_in_single_pod: bool | None = None


class RuleItem(Model):
    pod_selector: dict[str, str]
    container: str | None = None
    actions: list[RuleAction] = Field(min_length=1)
