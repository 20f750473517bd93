"""Reading backups straight from their location, with or without the cluster that made them: which
location (a BackupLocation read from the cluster, or one given in a file, with its Secret), which backup
in it, which of its volumes, and how untrusted names are shown.

A location given with ``--location-file`` never touches a cluster: the file holds the BackupLocation as
it was applied (and its Secret, for the credentials it names), and its credentials are resolved by the
same code as the services' (``davit.storage.factory.resolve_credentials``), so a file that works with
``kubectl apply`` works here, and nothing secret has to be typed on a command line.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import errno
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from davit.api.types import DNS1123_LABEL, DNS1123_SUBDOMAIN
from davit.format.layout import BackupRef
from davit.format.resource_files import ResourceFile
from davit_cli.context import CliContext, admin_namespace
from davit_cli.errors import CliError

if TYPE_CHECKING:
    from davit.format.repository import BackupRepository

F = TypeVar("F", bound=Callable[..., Any])

#: The volume modes whose files a backup holds (``davit.volumes.restore_stage.FILE_MODES``).
FILE_MODES = ("filesystem", "datamover")


def location_options(f: F) -> F:
    """``--location NAME`` (a BackupLocation in the cluster) and ``--location-file FILE`` (one in a
    file, no cluster needed)."""
    f = click.option(
        "--location-file", "location_file", metavar="FILE",
        help="YAML of the BackupLocation (and the Secret its secretConfig names), '-' for stdin: no "
        "cluster needed. With several locations in FILE, --location picks one.",
    )(f)  # fmt: skip
    return click.option(
        "--location", "location_name", metavar="NAME", help="BackupLocation to read (from the cluster)."
    )(f)


# --- the location ------------------------------------------------------------------------------------


def parse_documents(text: str, source: str) -> list[dict[str, Any]]:
    import yaml

    try:
        loaded = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        # Only the problem and where: PyYAML's own message quotes the line, which may hold a credential.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise CliError(f"{source}: not YAML{where}: {getattr(exc, 'problem', None) or 'unreadable'}") from exc
    documents: list[dict[str, Any]] = []
    for doc in loaded:
        if not isinstance(doc, dict):
            raise CliError(f"{source}: every document must be a Kubernetes object")
        if doc.get("kind") == "List" or str(doc.get("kind", "")).endswith("List"):
            documents.extend(i for i in doc.get("items") or [] if isinstance(i, dict))
        else:
            documents.append(doc)
    return documents


def secret_data(secret: Mapping[str, Any], source: str) -> dict[str, str]:
    """A Secret's keys as text: ``data`` (base64) overlaid by ``stringData``, as the API server does."""
    name = (secret.get("metadata") or {}).get("name")
    data: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            data[str(key)] = base64.b64decode(str(value), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise CliError(f"{source}: Secret {name}: data.{key} is not base64 of text") from exc
    data.update({str(k): str(v) for k, v in (secret.get("stringData") or {}).items()})
    return data


def location_from_documents(
    documents: list[dict[str, Any]], wanted: str | None, source: str
) -> tuple[dict[str, Any], dict[str, str] | None]:
    """The BackupLocation of a file's documents (``wanted`` names it when there are several) and the
    data of the Secret its ``secretConfig`` names, which must be among them (pure)."""
    locations = [d for d in documents if d.get("kind") == "BackupLocation"]
    if wanted is not None:
        locations = [d for d in locations if (d.get("metadata") or {}).get("name") == wanted]
    if len(locations) != 1:
        names = ", ".join(str((d.get("metadata") or {}).get("name")) for d in locations)
        if not locations:
            which = f"named {wanted} " if wanted else ""
            raise CliError(f"{source} holds no BackupLocation {which}")
        raise CliError(f"{source} holds several BackupLocations ({names}): pick one with --location")
    location = locations[0]
    secret_name = (location.get("location") or {}).get("secretConfig")
    if not secret_name:
        return location, None
    for doc in documents:
        if doc.get("kind") == "Secret" and (doc.get("metadata") or {}).get("name") == secret_name:
            return location, secret_data(doc, source)
    raise CliError(
        f"{source}: the BackupLocation's secretConfig names Secret {secret_name}, which is not in the file "
        "(add it, e.g. kubectl get secret NAME -o yaml >> FILE)"
    )


def _read_location_file(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text()
    except OSError as exc:
        raise CliError(f"--location-file {path}: {exc.strerror or exc}") from exc


def open_location(cli: CliContext, location_name: str | None, location_file: str | None) -> BackupRepository:
    """The location to read, opened without ever creating anything in it: from ``location_file`` (no
    cluster), else the BackupLocation ``location_name`` as an operation in ``-n``'s namespace sees it."""
    from pydantic import ValidationError

    from davit.api.types import LocationSpec
    from davit.format.repository import BackupRepository
    from davit.settings import Settings
    from davit.storage import factory

    # The CLI reads with its own user's rights on its own machine: the administrator's roots for local
    # directories keep the cluster's services in, not this user (as for ``repo check``).
    settings = Settings(admin_namespace=admin_namespace(), local_location_roots="/")
    policy, retry = factory.LocationPolicy.from_settings(settings), factory.retry_policy(settings)
    if location_file is not None:
        source = "stdin" if location_file == "-" else location_file
        location, secret = location_from_documents(
            parse_documents(_read_location_file(location_file), source), location_name, source
        )
        try:
            spec = LocationSpec.model_validate(location.get("location") or {})
            # No namespace: a location handed over directly acts with its holder's authority.
            resolved = factory.resolve_credentials(spec, secret)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise CliError(f"{source}: location.{where}: {first['msg']}") from exc
        except factory.LocationConfigError as exc:
            raise CliError(f"{source}: {exc.message}") from exc
        store = factory.open_store(resolved, policy, retry)
        return BackupRepository.open(store, resolved.encryption_key, create=False)
    if location_name is None:
        raise click.UsageError("give --location NAME (from the cluster) or --location-file FILE")
    from davit.kube.operations import Operations
    from davit.operations.runtime import open_location_store
    from davit.validation import missing_location, resolve_location

    ops = Operations(cli.api())
    namespace = cli.resolved_namespace()
    found = resolve_location(ops, namespace, location_name, settings.admin_namespace)
    if found is None:
        raise CliError(missing_location(namespace, location_name, settings.admin_namespace))
    store, resolved = open_location_store(ops, found, policy, retry)
    return BackupRepository.open(store, resolved.encryption_key, create=False)


# --- the backup --------------------------------------------------------------------------------------


def find_backup(refs: Iterable[BackupRef], wanted: str, namespace: str | None) -> BackupRef:
    """The backup ``wanted`` names among ``refs``: ``NAMESPACE/NAME/UID``, ``NAMESPACE/NAME``, or a
    NAME or UID alone (in ``namespace`` when one is given). CliError when none or several match (pure)."""
    parts = wanted.split("/")
    if len(parts) > 3 or not all(parts):
        raise click.BadParameter(f"{wanted!r} is not NAME, NAMESPACE/NAME or NAMESPACE/NAME/UID",
                                 param_hint="--backup")  # fmt: skip
    if len(parts) == 1:
        matches = [r for r in refs if wanted in (r.name, r.uid) and namespace in (None, r.namespace)]
    else:
        matches = [r for r in refs if [r.namespace, r.name, r.uid][: len(parts)] == parts]
    if not matches:
        where = f" of namespace {namespace}" if namespace and len(parts) == 1 else ""
        raise CliError(f"no complete backup {wanted}{where} in the location (davit backups list-remote "
                       "lists them)")  # fmt: skip
    if len(matches) > 1:
        found = ", ".join(sorted(f"{r.namespace}/{r.name}/{r.uid}" for r in matches))
        raise CliError(f"backup {wanted} is ambiguous: {found}; give --backup NAMESPACE/NAME/UID")
    return matches[0]


def open_backup(
    repository: BackupRepository, wanted: str, namespace: str | None
) -> tuple[BackupRef, dict[str, Any]]:
    """The backup and its manifest."""
    parts = wanted.split("/")
    listed = parts[0] if len(parts) > 1 else namespace
    ref = find_backup(repository.list_backups(listed), wanted, namespace)
    return ref, repository.read_manifest(ref)


# --- its volumes -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredVolume:
    """A volume as a backup's manifest records it."""

    namespace: str
    claim: str
    mode: str
    status: str
    #: The tree of its files; None when the backup holds no files of it (a CSI snapshot, a failure).
    tree: str | None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.claim}"

    @property
    def tree_id(self) -> str:
        """The tree of a volume ``pick_volumes`` chose (which have one)."""
        if self.tree is None:
            raise CliError(f"the backup holds no files of volume {self.key}")
        return self.tree


def stored_volumes(manifest: Mapping[str, Any]) -> list[StoredVolume]:
    """Every volume of the manifest, in its order (pure)."""
    out = []
    for volume in manifest.get("volumes") or []:
        if not isinstance(volume, dict):
            continue
        mode, status, tree = (
            str(volume.get("mode") or ""),
            str(volume.get("status") or ""),
            volume.get("tree"),
        )
        has_files = mode in FILE_MODES and status == "Successful" and isinstance(tree, str) and bool(tree)
        namespace, claim = str(volume.get("namespace") or ""), str(volume.get("persistentVolumeClaim") or "")
        out.append(StoredVolume(namespace, claim, mode, status, tree if has_files else None))
    return out


def pick_volumes(volumes: list[StoredVolume], wanted: str | None, need_one: bool) -> list[StoredVolume]:
    """The volumes with files that ``wanted`` (``CLAIM`` or ``NAMESPACE/CLAIM``) names, or all of them;
    ``need_one``: exactly one, which without ``wanted`` the backup must have (pure)."""
    with_files = [v for v in volumes if v.tree is not None]
    if wanted is None:
        if need_one and len(with_files) != 1:
            names = ", ".join(v.key for v in with_files) or "none"
            raise click.UsageError(f"the backup has {len(with_files)} volumes with files ({names}): pick one "
                                   "with --volume")  # fmt: skip
        return with_files
    matches = [v for v in volumes if wanted in (v.claim, v.key)]
    if not matches:
        names = ", ".join(v.key for v in volumes) or "none"
        raise CliError(f"the backup has no volume {wanted} (it has: {names})")
    if len(matches) > 1:
        raise CliError(
            f"volume {wanted} is ambiguous: {', '.join(v.key for v in matches)}; give NAMESPACE/CLAIM"
        )
    if matches[0].tree is None:
        volume = matches[0]
        raise CliError(f"the backup holds no files of volume {volume.key} (mode {volume.mode or '-'}, "
                       f"{volume.status or 'no status'})")  # fmt: skip
    return matches


def volume_directory(volume: StoredVolume) -> tuple[str, str]:
    """Where a volume is restored below the target: ``<namespace>/<claim>``. The manifest comes from the
    location: names that are not Kubernetes names (a ``..``, a ``/``) are refused (pure)."""
    if not re.match(DNS1123_LABEL, volume.namespace):
        raise CliError(f"refusing volume {shown(volume.key)!r}: its namespace is not a Kubernetes name")
    if not re.match(DNS1123_SUBDOMAIN, volume.claim):
        raise CliError(f"refusing volume {shown(volume.key)!r}: its claim is not a Kubernetes name")
    return volume.namespace, volume.claim


# --- showing untrusted names -------------------------------------------------------------------------


def shown(path: bytes | str) -> str:
    """A name from a bucket fit for a terminal: bytes that are not UTF-8 as ``\\xNN``, control
    characters (which could move the cursor or recolour the screen) escaped."""
    text = path.decode("utf-8", "backslashreplace") if isinstance(path, bytes) else path
    return "".join(
        ch.encode("unicode_escape").decode() if unicodedata.category(ch) in ("Cc", "Cf", "Cs") else ch
        for ch in text
    )


# --- writing a backup's resources as files -----------------------------------------------------------

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _subdirectory(parent: int, name: str, where: str) -> int:
    """A descriptor of ``name`` below ``parent``, created if missing, never through a symlink."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o700, dir_fd=parent)
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise CliError(f"refusing to write below {where}: it is a symlink or not a directory") from exc
        raise


def write_resource_files(target: str, files: list[ResourceFile], render: Callable[[Any], str]) -> None:
    """Each planned file below ``target`` (created if missing), rendered by ``render``, readable by its
    owner only (a backup's Secrets are among them). Directories are opened one at a time without
    following symlinks, and whatever sits at a file's name is replaced, never written through."""
    try:
        os.makedirs(target, exist_ok=True)
        root = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise CliError(f"--target {target}: {exc.strerror or exc}") from exc
    opened: dict[tuple[str, ...], int] = {(): root}
    try:
        for planned in files:
            *directories, name = planned.parts
            for depth in range(1, len(directories) + 1):
                key = tuple(directories[:depth])
                if key not in opened:
                    opened[key] = _subdirectory(opened[key[:-1]], key[-1], os.path.join(target, *key))
            parent = opened[tuple(directories)]
            try:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name, dir_fd=parent)
                fd = os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent)
            except OSError as exc:
                raise CliError(f"cannot write {os.path.join(target, planned.path)}: {exc.strerror}") from exc
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(render(planned.obj))
    finally:
        for fd in opened.values():
            os.close(fd)
