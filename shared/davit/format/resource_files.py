"""Where each of a backup's objects goes when its resources are written out as files (pure):
``<namespace>/<Kind>[.<group>]/<name>.yaml``, cluster-scoped objects under ``_cluster/``.

The objects come from a location, whose bytes whoever can write the bucket controls: every segment is
checked before any file is written, so no object names a place outside the target directory (``..``, a
``/`` in a name, a namespace that is no DNS label), and two objects never share a file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from davit import errors
from davit.api.types import DNS1123_LABEL, DNS1123_SUBDOMAIN

#: The directory of cluster-scoped objects; no namespace can be called this (namespaces are DNS labels).
CLUSTER_DIR = "_cluster"
#: A Kubernetes kind: an identifier (``ConfigMap``, ``CustomResourceDefinition``).
_KIND = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")
#: The longest file name most filesystems take, in bytes.
_NAME_MAX = 255
_SUFFIX = ".yaml"


class UnsafeResource(errors.Unreadable):
    """An object in a backup that cannot be written as a file inside the target (names the object)."""


@dataclass(frozen=True)
class ResourceFile:
    #: Path components relative to the target directory: namespace (or ``_cluster``), kind, file name.
    parts: tuple[str, str, str]
    obj: dict[str, Any]

    @property
    def path(self) -> str:
        return "/".join(self.parts)


def _describe(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        meta = {}
    where = "/".join(str(x) for x in (meta.get("namespace"), meta.get("name")) if x)
    return f"{obj.get('apiVersion')!r} {obj.get('kind')!r} {where!r}"


def _file_name(name: str) -> str:
    """``<name>.yaml``; a name too long for a file name is cut and ends with a hash of the whole name."""
    whole = name + _SUFFIX
    if len(whole.encode()) <= _NAME_MAX:
        return whole
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    cut = name.encode()[: _NAME_MAX - len(_SUFFIX) - len(digest) - 1].decode("utf-8", "ignore")
    return f"{cut}-{digest}{_SUFFIX}"


def resource_file(obj: dict[str, Any]) -> tuple[str, str, str]:
    """The path components of ``obj``'s file; UnsafeResource for an object whose namespace, kind, group or
    name could not be a single safe path segment."""
    what = _describe(obj)
    meta = obj.get("metadata")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if not isinstance(meta, dict) or not isinstance(api_version, str) or not isinstance(kind, str):
        raise UnsafeResource(f"object {what}: no apiVersion, kind or metadata")
    if not _KIND.match(kind):
        raise UnsafeResource(f"object {what}: kind is not an identifier")
    group = api_version.rpartition("/")[0]
    if group and not re.match(DNS1123_SUBDOMAIN, group):
        raise UnsafeResource(f"object {what}: API group is not a DNS name")
    namespace, name = meta.get("namespace") or "", meta.get("name")
    if namespace and not (isinstance(namespace, str) and re.match(DNS1123_LABEL, namespace)):
        raise UnsafeResource(f"object {what}: namespace is not a DNS label")
    # Names of most kinds are DNS names; some (RBAC's) may be any path segment, as the API server says.
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\0" in name:
        raise UnsafeResource(f"object {what}: name is not a single path segment")
    kind_dir = f"{kind}.{group}" if group else kind
    return (namespace or CLUSTER_DIR, kind_dir, _file_name(name))


def plan_files(objects: Iterable[dict[str, Any]]) -> list[ResourceFile]:
    """Every object's file, in the order given; UnsafeResource, before anything is written, for an
    object that cannot be placed or two objects that would share a file."""
    planned: list[ResourceFile] = []
    taken: dict[tuple[str, str, str], str] = {}
    for obj in objects:
        parts = resource_file(obj)
        if parts in taken:
            raise UnsafeResource(
                f"objects {taken[parts]} and {_describe(obj)} would both be written to {'/'.join(parts)}"
            )
        taken[parts] = _describe(obj)
        planned.append(ResourceFile(parts, obj))
    return planned
