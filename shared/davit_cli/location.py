"""``davit location create|get|describe|delete``: BackupLocations."""

from __future__ import annotations

from typing import Any

import click

from davit.constants import Kind
from davit_cli import output
from davit_cli.context import CliContext, pass_cli
from davit_cli.objects import create_object, describe_and_echo, echo_created, get_and_emit
from davit_cli.options import connection_options, get_options, output_option, split_list

KIND = Kind.BACKUP_LOCATION
TYPES = ("s3", "azure", "google", "local")

#: Which type each type-specific flag belongs to (a flag given for another type is a usage error).
_FLAG_TYPES: dict[str, tuple[str, ...]] = {
    "region": ("s3",),
    "disable_ssl": ("s3",),
    "insecure_skip_tls_verify": ("s3", "azure"),
    "endpoint": ("s3", "azure", "google"),
    "access_key_id": ("s3", "google"),
    "secret_access_key": ("s3", "google"),
    "storage_account_name": ("azure",),
    "storage_account_key": ("azure",),
    "project_id": ("google",),
}


@click.group()
def location() -> None:
    """BackupLocations: where backups are stored."""


def build_location(
    type_: str,
    path: str,
    prefix: str | None = None,
    secret_config: str | None = None,
    encryption_key: str | None = None,
    sync: bool = False,
    allowed_namespaces: list[str] | None = None,
    **flags: Any,
) -> dict[str, Any]:
    """The ``location:`` of a BackupLocation from the flags; usage errors name the offending flag."""
    for name, value in flags.items():
        if value in (None, False):
            continue
        if type_ not in _FLAG_TYPES[name]:
            allowed = " or ".join(_FLAG_TYPES[name])
            flag = "--" + name.replace("_", "-")
            raise click.UsageError(f"{flag} applies to --type {allowed}, not {type_}")
    spec: dict[str, Any] = {"type": type_, "path": path}
    if prefix:
        spec["prefix"] = prefix
    if sync:
        spec["sync"] = True
    if encryption_key:
        spec["encryptionKey"] = encryption_key
    if secret_config:
        spec["secretConfig"] = secret_config
    if allowed_namespaces:
        spec["allowedNamespaces"] = allowed_namespaces
    if type_ == "s3":
        s3 = {
            "region": flags.get("region"),
            "endpoint": flags.get("endpoint"),
            "accessKeyID": flags.get("access_key_id"),
            "secretAccessKey": flags.get("secret_access_key"),
            "disableSSL": True if flags.get("disable_ssl") else None,
            "insecureSkipTLSVerify": True if flags.get("insecure_skip_tls_verify") else None,
        }
        if any(v is not None for v in s3.values()):
            spec["s3Config"] = {k: v for k, v in s3.items() if v is not None}
    elif type_ == "azure":
        azure = {
            "storageAccountName": flags.get("storage_account_name"),
            "storageAccountKey": flags.get("storage_account_key"),
            "endpoint": flags.get("endpoint"),
            "insecureSkipTLSVerify": True if flags.get("insecure_skip_tls_verify") else None,
        }
        if any(v is not None for v in azure.values()):
            spec["azureConfig"] = {k: v for k, v in azure.items() if v is not None}
    elif type_ == "google":
        google = {
            "projectID": flags.get("project_id"),
            "accessKeyID": flags.get("access_key_id"),
            "secretAccessKey": flags.get("secret_access_key"),
            "endpoint": flags.get("endpoint"),
        }
        if any(v is not None for v in google.values()):
            spec["googleConfig"] = {k: v for k, v in google.items() if v is not None}
    if not secret_config:
        # Without a Secret to fill gaps, the flags alone must make a usable location: check it the way
        # the workers will, so a missing key is reported now rather than by the first backup.
        from pydantic import ValidationError

        from davit.api.types import LocationSpec
        from davit.storage.factory import LocationConfigError, resolve_credentials

        try:
            resolve_credentials(LocationSpec.model_validate(spec), None)
        except LocationConfigError as exc:
            raise click.UsageError(exc.message) from exc
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise click.UsageError(f"location.{where}: {first['msg']}") from exc
    return spec


def _warn_if_secret_missing(cli: CliContext, namespace: str, secret: str) -> None:
    """A courtesy: the Secret may be created later, and the user may not be allowed to read Secrets."""
    from davit.kube.client import ApiException
    from davit.kube.operations import Operations

    try:
        missing = Operations(cli.api()).secret_data(namespace, secret) is None
    except ApiException:
        return
    if missing:
        click.echo(f"Warning: Secret {namespace}/{secret} does not exist (yet)", err=True)


@location.command("create")
@click.argument("name")
@click.option("--type", "type_", type=click.Choice(TYPES), required=True, help="Kind of store.")
@click.option("--path", required=True, help="Bucket, container, or (local) absolute directory.")
@click.option("--prefix", help="Key prefix inside the bucket or container.")
@click.option("--secret-config", metavar="SECRET", help="Secret in the namespace whose keys override flags.")
@click.option("--encryption-key", metavar="KEY", help="Encrypt everything written to the location.")
@click.option("--region", help="s3: region of the bucket.")
@click.option("--endpoint", metavar="URL", help="s3/google/azure: endpoint of the service.")
@click.option("--access-key-id", metavar="ID", help="s3/google: access key id (google: HMAC key id).")
@click.option("--secret-access-key", metavar="KEY", help="s3/google: secret key (google: HMAC secret).")
@click.option("--disable-ssl", is_flag=True, default=False, help="s3: plain HTTP to the endpoint.")
@click.option(
    "--insecure-skip-tls-verify", is_flag=True, default=False,
    help="s3/azure: accept any certificate from an https endpoint (disableSSL never does).",
)  # fmt: skip
@click.option("--storage-account-name", metavar="NAME", help="azure: storage account.")
@click.option("--storage-account-key", metavar="KEY", help="azure: storage account key.")
@click.option("--project-id", metavar="ID", help="google: project id.")
@click.option("--sync", is_flag=True, default=False, help="Import the backups found there as CRs.")
@click.option(
    "--allowed-namespaces", metavar="NS,...", help="Other namespaces that may use it ('*' for all)."
)
@connection_options
@output_option
@pass_cli
def create(
    cli: CliContext,
    /,
    name: str,
    type_: str,
    path: str,
    prefix: str | None,
    secret_config: str | None,
    encryption_key: str | None,
    sync: bool,
    allowed_namespaces: str | None,
    **flags: Any,
) -> None:
    """Create the BackupLocation NAME.

    Credentials given as flags are stored in the BackupLocation; prefer --secret-config, a Secret in
    the same namespace whose keys (accessKeyID, secretAccessKey, storageAccountKey, encryptionKey, ...)
    override the flags.
    """
    spec = build_location(
        type_, path, prefix, secret_config, encryption_key, sync, split_list(allowed_namespaces), **flags
    )
    namespace = cli.resolved_namespace()
    if secret_config:
        _warn_if_secret_missing(cli, namespace, secret_config)
    echo_created(cli, create_object(cli, KIND, namespace, name, {"location": spec}))


@location.command("get")
@get_options
def get(cli: CliContext, name: str | None) -> None:
    """List BackupLocations, or show the one called NAME."""
    get_and_emit(cli, KIND, name, output.location_table, "backup locations")


@location.command("describe")
@click.argument("name")
@connection_options
@pass_cli
def describe(cli: CliContext, name: str) -> None:
    """Show the BackupLocation NAME, its status and Events (credentials shown only as "(set)")."""
    describe_and_echo(cli, KIND, name, output.describe_location)


@location.command("delete")
@click.argument("name")
@connection_options
@pass_cli
def delete(cli: CliContext, name: str) -> None:
    """Delete the BackupLocation NAME (the data in the store stays)."""
    namespace = cli.resolved_namespace()
    cli.objects().delete(KIND, namespace, name)
    click.echo(f"backuplocation {namespace}/{name} deleted")
