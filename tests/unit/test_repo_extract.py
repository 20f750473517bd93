"""Getting data out of a location without a cluster: ``davit repo ls|restore|dump`` and ``davit backup
download`` with ``--location-file`` against a real store in a temporary directory, the kubeconfig
pointing nowhere. Restores equal their source, every chunk is verified (a damaged one fails naming the
file, leaving no partly written file), and names from the bucket never lead outside the target: crafted
trees, manifests and objects are refused before anything is written outside it."""

from __future__ import annotations

import base64
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner, Result

from davit.format.layout import BackupRef
from davit.format.repository import BackupRepository
from davit.format.resource_files import CLUSTER_DIR, UnsafeResource, plan_files, resource_file
from davit.repo import (
    Entry,
    FileUnreadable,
    PathSelection,
    RepoIndex,
    RepoReader,
    RepoWriter,
    Tree,
    UnsafePath,
    iter_entries,
    restore_tree,
    snapshot_tree,
)
from davit.repo.layout import CHUNK_MIN, pack_key
from davit.repo.selection import normalize
from davit.repo.tree_format import DIR, FILE, SYMLINK, TreeBuilder
from davit_cli.errors import CliError
from davit_cli.extract import (
    find_backup,
    location_from_documents,
    parse_documents,
    shown,
    stored_volumes,
    volume_directory,
)
from davit_cli.main import cli
from tests.unit.test_repo_support import Location, make_dataset, open_location, snapshot_of, write

KEY = "correct horse battery staple, extracted"
NAMESPACE, NAME, UID = "shop", "nightly", "6c3b0c56-0000-4000-8000-000000000001"
OBJECTS: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": NAMESPACE,
     "uid": "u-1"}, "data": {"colour": "blue", "multi": "line one\nline two\n"}},
    {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NAMESPACE},
     "spec": {"replicas": 2}, "status": {"readyReplicas": 2}},
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "system:shop:reader"}, "rules": []},
]  # fmt: skip


@dataclass
class Stored:
    loc: Location
    source: Path
    tree: Tree
    location_file: Path
    tmp: Path


def location_file(path: Path, store: Path, encryption_key: str | None) -> Path:
    """The BackupLocation as applied to a cluster, and the Secret holding its key."""
    location: dict[str, Any] = {"type": "local", "path": str(store)}
    documents: list[dict[str, Any]] = [
        {"apiVersion": "davit.dev/v1alpha1", "kind": "BackupLocation",
         "metadata": {"name": "vault", "namespace": NAMESPACE}, "location": location},
    ]  # fmt: skip
    if encryption_key:
        location["secretConfig"] = "vault-key"
        encoded = base64.b64encode(encryption_key.encode()).decode()
        documents.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vault-key"},
                          "data": {"encryptionKey": encoded}})  # fmt: skip
    path.write_text(yaml.safe_dump_all(documents))
    return path


REF = BackupRef(NAMESPACE, NAME, UID)


def write_backup(
    loc: Location, trees: dict[str, str], objects: list[dict[str, Any]] = OBJECTS, ref: BackupRef = REF
) -> None:
    """A backup's manifest naming ``trees`` (claim → tree id) and a snapshot volume, and its objects."""
    repository = BackupRepository(loc.store, loc.sealer)
    part = repository.write_part(ref, "shop#0", objects)
    volumes: list[dict[str, Any]] = [
        {"namespace": ref.namespace, "persistentVolumeClaim": claim, "mode": "filesystem",
         "status": "Successful", "tree": tree}
        for claim, tree in trees.items()
    ]  # fmt: skip
    volumes.append({"namespace": ref.namespace, "persistentVolumeClaim": "snapped", "mode": "snapshot",
                    "status": "Successful"})  # fmt: skip
    repository.write_manifest(ref, {
        "backup": {"metadata": {"name": ref.name, "namespace": ref.namespace, "uid": ref.uid}},
        "parts": [{"part": part.part, "key": part.key, "count": part.count}], "volumes": volumes,
    })  # fmt: skip


@pytest.fixture(params=[None, KEY], ids=["plain", "encrypted"])
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> Stored:
    loc = open_location(tmp_path / "store", request.param)
    source = tmp_path / "source"
    make_dataset(source, small_files=40)
    with RepoWriter(loc.store, loc.sealer) as writer:
        tree = snapshot_tree(source, writer)
    write_backup(loc, {"data": tree.id})
    return Stored(loc, source, tree, location_file(tmp_path / "location.yaml", loc.directory, request.param),
                  tmp_path)  # fmt: skip


def davit(stored: Stored, *args: str) -> Result:
    """The CLI in-process, with a kubeconfig that does not exist: nothing may need a cluster."""
    result = CliRunner().invoke(
        cli,
        [*args[:2], "--location-file", str(stored.location_file), *args[2:]],
        env={"KUBECONFIG": str(stored.tmp / "no-such-kubeconfig"), "REDIS_URL": None},
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"davit {' '.join(args)} raised {result.exception!r}: {result.output}"
    )
    return result


def ok(stored: Stored, *args: str) -> Result:
    result = davit(stored, *args)
    assert result.exit_code == 0, result.output
    return result


# --- repo ls --------------------------------------------------------------------------------------------


def test_ls_lists_the_volumes_and_every_entry_as_the_source_has_it(stored: Stored) -> None:
    volumes = json.loads(ok(stored, "repo", "ls", "--backup", NAME, "-o", "json").stdout)
    assert volumes["backup"] == f"{NAMESPACE}/{NAME}/{UID}"
    by_claim = {v["claim"]: v for v in volumes["volumes"]}
    assert by_claim["data"]["tree"] == stored.tree.id and by_claim["data"]["entries"] == stored.tree.entries
    assert by_claim["snapped"]["tree"] is None and by_claim["snapped"]["mode"] == "snapshot"
    table = ok(stored, "repo", "ls", "--backup", f"{NAMESPACE}/{NAME}").stdout
    assert table.splitlines()[0].split() == ["NAMESPACE", "CLAIM", "MODE", "STATUS", "ENTRIES", "SIZE"]

    listed = json.loads(ok(stored, "repo", "ls", "--backup", UID, "--volume", "data", "-o", "json").stdout)
    entries = {e["path"]: e for e in listed["entries"]}
    expected = snapshot_of(stored.source)
    assert set(entries) == {shown(p) for p in expected}
    for raw_path in expected:
        st = os.lstat(stored.source / os.fsdecode(raw_path))
        entry = entries[shown(raw_path)]
        kind = "dir" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) else "file"
        assert (entry["type"], entry["mode"], entry["mtimeNs"]) == (
            kind,
            f"{stat.S_IMODE(st.st_mode):04o}",
            st.st_mtime_ns,
        ), raw_path
        if kind == "file":
            assert entry["size"] == st.st_size
        if kind == "symlink":
            assert entry["target"] == os.readlink(stored.source / os.fsdecode(raw_path))
    assert entries["link-relative"]["target"] == "text/readme.txt"
    assert entries["text/log.txt"]["mtime"] == "2009-02-13T23:31:30.123456789Z"


def test_list_remote_finds_the_backups_of_a_location_file(stored: Stored) -> None:
    (backup,) = json.loads(ok(stored, "backups", "list-remote", "-o", "json").stdout)["backups"]
    assert (backup["namespace"], backup["name"], backup["uid"]) == (NAMESPACE, NAME, UID)


def test_ls_paths_limit_the_listing_and_a_path_naming_nothing_fails(stored: Stored) -> None:
    lines = ok(stored, "repo", "ls", "--backup", NAME, "--volume", "shop/data", "/text/", "empty-file").stdout
    paths = sorted(line.split("  ")[-1] for line in lines.splitlines())
    assert paths == ["empty-file", "text", "text/log.txt", "text/old.txt", "text/readme.txt"]
    assert lines.splitlines()[0].startswith("-rw-r--r--") or lines.splitlines()[0].startswith("d")
    missing = davit(stored, "repo", "ls", "--backup", NAME, "--volume", "data", "nowhere")
    assert missing.exit_code == 1 and "volume shop/data has no 'nowhere'" in missing.stderr
    escape = davit(stored, "repo", "ls", "--backup", NAME, "--volume", "data", "../etc")
    assert escape.exit_code == 2 and "'..'" in escape.stderr


# --- repo restore ---------------------------------------------------------------------------------------


def without_setuid(snapshot: dict[bytes, tuple[object, ...]]) -> dict[bytes, tuple[object, ...]]:
    """What a restore gives: the source with setuid and setgid bits of files cleared."""
    out = {}
    for path, (kind, mode, *rest) in snapshot.items():
        assert isinstance(mode, int)
        out[path] = (kind, mode & ~0o6000 if kind == stat.S_IFREG else mode, *rest)
    return out


def test_restore_writes_the_volume_as_it_was(stored: Stored) -> None:
    target = stored.tmp / "restored"
    result = ok(stored, "repo", "restore", "--backup", NAME, "--target", str(target), "-o", "json")
    (report,) = json.loads(result.stdout)["volumes"]
    assert report["volume"] == "shop/data" and report["directory"] == str(target / "shop" / "data")
    assert "volume shop/snapped has no files in the backup" in result.stderr
    restored = snapshot_of(target / "shop" / "data")
    assert restored == without_setuid(snapshot_of(stored.source))
    assert sorted(os.listdir(target)) == ["shop"] and sorted(os.listdir(target / "shop")) == ["data"]


def test_restore_of_paths_writes_them_and_the_directories_on_their_way(stored: Stored) -> None:
    target = stored.tmp / "partial"
    ok(stored, "repo", "restore", "--backup", NAME, "--target", str(target), "text", "data/random-100k.bin")
    restored = snapshot_of(target / "shop" / "data")
    source = without_setuid(snapshot_of(stored.source))
    wanted = [b".", b"data", b"data/random-100k.bin", b"text", b"text/log.txt", b"text/old.txt",
              b"text/readme.txt"]  # fmt: skip
    assert sorted(restored) == wanted
    # The directories on the way keep their recorded mode, owner and mtime.
    assert restored == {p: source[p] for p in wanted}
    missing = davit(stored, "repo", "restore", "--backup", NAME, "--target", str(target), "text", "nowhere")
    assert missing.exit_code == 1 and "volume shop/data has no 'nowhere'" in missing.stderr
    (stored.tmp / "a-file").write_text("not a directory\n")
    into_file = davit(stored, "repo", "restore", "--backup", NAME, "--target", str(stored.tmp / "a-file"))
    assert into_file.exit_code == 1 and "cannot write" in into_file.stderr, into_file.output


def test_dump_writes_a_files_bytes_holes_included(stored: Stored) -> None:
    for path in ("data/random-3m.bin", "sparse-mixed.img", "empty-file"):
        result = ok(stored, "repo", "dump", "--backup", NAME, path)
        assert result.stdout_bytes == (stored.source / path).read_bytes(), path
    for path, error in (("text", "is a directory"), ("link-relative", "is a symlink to 'text/readme.txt'"),
                        ("text/none", "has no 'text/none'")):  # fmt: skip
        result = davit(stored, "repo", "dump", "--backup", NAME, path)
        assert result.exit_code == 1 and error in result.stderr, result.output


def pack_of(loc: Location, tree: Tree, path: bytes) -> str:
    index = RepoIndex.load(loc.store, loc.sealer)
    entry = next(e for e in iter_entries(loc.store, loc.sealer, tree) if e.path == path)
    located = index.get(next(entry.chunk_ids()))
    assert located is not None
    return located.pack


def flip_a_byte(loc: Location, pack_id: str) -> None:
    path = loc.directory / pack_key(pack_id)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_corrupt_chunk_fails_naming_the_file_and_leaves_no_partial_file(stored: Stored) -> None:
    flip_a_byte(stored.loc, pack_of(stored.loc, stored.tree, b"data/random-3m.bin"))
    target = stored.tmp / "restored"
    result = davit(stored, "repo", "restore", "--backup", NAME, "--target", str(target))
    assert result.exit_code == 1
    assert "file 'data/random-3m.bin' cannot be read" in result.stderr and "is corrupt" in result.stderr
    assert not (target / "shop" / "data" / "data" / "random-3m.bin").exists()
    dumped = davit(stored, "repo", "dump", "--backup", NAME, "data/random-3m.bin")
    assert dumped.exit_code == 1 and "file 'data/random-3m.bin' cannot be read" in dumped.stderr


def test_a_file_of_many_chunks_is_removed_when_one_fails(tmp_path: Path) -> None:
    """restore_tree itself: a file written chunk by chunk by the pool, whose last chunk is corrupt, does
    not stay (its size was set before its data)."""
    loc = open_location(tmp_path / "store")
    write(tmp_path / "src" / "big.bin", os.urandom(24 * CHUNK_MIN))  # 6 MiB: chunks of 4 MiB at most
    write(tmp_path / "src" / "small.txt", b"small\n")
    with RepoWriter(loc.store, loc.sealer, pack_size=CHUNK_MIN) as writer:
        tree = snapshot_tree(tmp_path / "src", writer)
    big = next(e for e in iter_entries(loc.store, loc.sealer, tree) if e.path == b"big.bin")
    chunks = list(big.chunk_ids())
    assert len(chunks) >= 2, "written chunk by chunk by the pool"
    located = RepoIndex.load(loc.store, loc.sealer).get(chunks[-1])
    assert located is not None
    flip_a_byte(loc, located.pack)
    with pytest.raises(FileUnreadable, match=r"'big\.bin' cannot be read"):
        restore_tree(tree, tmp_path / "target", RepoReader(loc.store, loc.sealer))
    assert not (tmp_path / "target" / "big.bin").exists()


# --- names from the bucket never lead outside the target ------------------------------------------------


def crafted(loc: Location, specs: list[tuple[bytes, str, bytes | None]]) -> str:
    """A tree with the given entries (files hold one stored chunk), built as an attacker would: with
    Davit's own tree writer, which takes any path."""
    source = loc.directory.parent / "payload"
    write(source, b"written by a crafted tree\n")
    with RepoWriter(loc.store, loc.sealer) as writer:
        stored = writer.store_file(source)
    builder = TreeBuilder(loc.store, loc.sealer)
    builder.add(Entry(b"", DIR, 0o755, 0, 0, 10**18, 0, 1))
    for path, kind, target in specs:
        extents = stored.extents if kind == FILE else ()
        size = sum(e.length for e in extents)
        builder.add(
            Entry(path, kind, 0o755 if kind == DIR else 0o644, 0, 0, 10**18, size, 1, target, extents)
        )
    return builder.finish().id


def attacked_location(loc: Location, tmp_path: Path) -> Stored:
    """A crafted location, given by a file as the others."""
    return Stored(loc, tmp_path, Tree("", (), 0, 0), location_file(tmp_path / "l.yaml", loc.directory, None),
                  tmp_path)  # fmt: skip


ATTACKS: dict[str, list[tuple[bytes, str, bytes | None]]] = {
    "dot-dot": [(b"../../../outside/escaped", FILE, None)],
    "absolute": [(b"/tmp/davit-extract-escape", FILE, None)],
    "slash in the middle": [(b"a", DIR, None), (b"a/../../../outside/escaped", FILE, None)],
    "write through a symlink": [(b"link", SYMLINK, b"OUTSIDE"), (b"link/escaped", FILE, None)],
    "directory through a symlink": [(b"link", SYMLINK, b"OUTSIDE"), (b"link/sub", DIR, None)],
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_crafted_tree_never_writes_outside_the_target(tmp_path: Path, attack: str) -> None:
    loc = open_location(tmp_path / "store")
    outside = tmp_path / "outside"
    write(outside / "victim", b"original\n")
    specs = [(p, k, os.fsencode(outside) if t == b"OUTSIDE" else t) for p, k, t in ATTACKS[attack]]
    write_backup(loc, {"data": crafted(loc, specs)})
    attacked = attacked_location(loc, tmp_path)
    before = snapshot_of(outside)
    target = tmp_path / "work" / "target"
    result = davit(attacked, "repo", "restore", "--backup", NAME, "--target", str(target))
    assert result.exit_code == 1 and "refusing" in result.stderr, result.output
    assert snapshot_of(outside) == before
    assert not Path("/tmp/davit-extract-escape").exists()
    escaped = [p for p in tmp_path.rglob("escaped")]
    assert escaped == [], escaped


@pytest.mark.parametrize("claim", ["../../outside", "a/b", ".."])
def test_a_crafted_volume_name_is_refused(tmp_path: Path, claim: str) -> None:
    loc = open_location(tmp_path / "store")
    write_backup(loc, {claim: crafted(loc, [(b"f", FILE, None)])})
    attacked = attacked_location(loc, tmp_path)
    target = tmp_path / "work" / "target"
    result = davit(attacked, "repo", "restore", "--backup", NAME, "--target", str(target))
    assert result.exit_code == 1 and "is not a Kubernetes name" in result.stderr, result.output
    assert not target.exists()
    assert not (tmp_path / "outside").exists()


# --- backup download ------------------------------------------------------------------------------------


def test_download_writes_one_yaml_file_per_object(stored: Stored) -> None:
    target = stored.tmp / "resources"
    result = ok(stored, "backup", "download", NAME, "--target", str(target))
    assert f"4 objects of backup {NAMESPACE}/{NAME}/{UID} written to {target}" in result.stdout
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*.yaml"))
    assert files == [
        "_cluster/ClusterRole.rbac.authorization.k8s.io/system:shop:reader.yaml",
        "_cluster/Namespace/shop.yaml",
        "shop/ConfigMap/settings.yaml",
        "shop/Deployment.apps/web.yaml",
    ]
    loaded = [yaml.safe_load((target / f).read_text()) for f in files]
    assert sorted(loaded, key=json.dumps) == sorted(OBJECTS, key=json.dumps)
    assert all(stat.S_IMODE((target / f).stat().st_mode) == 0o600 for f in files)


@pytest.mark.parametrize(
    "obj",
    [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "../../../outside", "namespace": "shop"},
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a/b", "namespace": "shop"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "../outside"}},
        {"apiVersion": "v1", "kind": "../../x", "metadata": {"name": "x", "namespace": "shop"}},
        {"apiVersion": "../../x/v1", "kind": "Thing", "metadata": {"name": "x"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "..", "namespace": "shop"}},
    ],
    ids=["dot-dot name", "slash name", "namespace", "kind", "group", "name .."],
)
def test_download_refuses_objects_whose_names_would_leave_the_target(
    tmp_path: Path, obj: dict[str, Any]
) -> None:
    loc = open_location(tmp_path / "store")
    write_backup(loc, {}, objects=[OBJECTS[0], obj])
    attacked = attacked_location(loc, tmp_path)
    target = tmp_path / "work" / "target"
    result = davit(attacked, "backup", "download", NAME, "--target", str(target))
    assert result.exit_code == 1 and "refusing to download" in result.stderr, result.output
    assert not target.exists(), "nothing is written when any object is refused"
    assert not (tmp_path / "outside").exists() and not (tmp_path / "work" / "outside").exists()


def test_download_does_not_write_through_a_symlink_in_the_target(stored: Stored) -> None:
    outside = stored.tmp / "outside"
    outside.mkdir()
    target = stored.tmp / "resources"
    target.mkdir()
    os.symlink(outside, target / "shop")
    result = davit(stored, "backup", "download", NAME, "--target", str(target))
    assert result.exit_code == 1 and "is a symlink or not a directory" in result.stderr
    assert os.listdir(outside) == []


# --- the pure parts -------------------------------------------------------------------------------------

REFS = [
    BackupRef("shop", "nightly", "u1"),
    BackupRef("shop", "nightly", "u2"),
    BackupRef("web", "daily", "u3"),
    BackupRef("web", "nightly", "u4"),
]


@pytest.mark.parametrize(
    ("wanted", "namespace", "found"),
    [("daily", None, "u3"), ("u2", None, "u2"), ("web/nightly", None, "u4"), ("shop/nightly/u1", None, "u1"),
     ("nightly", "web", "u4"), ("web/nightly", "shop", "u4")],
)  # fmt: skip
def test_find_backup(wanted: str, namespace: str | None, found: str) -> None:
    assert find_backup(REFS, wanted, namespace).uid == found


@pytest.mark.parametrize(
    ("wanted", "namespace", "error"),
    [("nightly", None, "ambiguous: shop/nightly/u1, shop/nightly/u2, web/nightly/u4"),
     ("shop/nightly", None, "ambiguous"), ("daily", "shop", "no complete backup daily of namespace shop"),
     ("gone", None, "no complete backup gone")],
)  # fmt: skip
def test_find_backup_refuses_none_or_several(wanted: str, namespace: str | None, error: str) -> None:
    with pytest.raises(CliError, match=error):
        find_backup(REFS, wanted, namespace)
    with pytest.raises(click.BadParameter):
        find_backup(REFS, "a/b/c/d", None)


def test_path_selection() -> None:
    selection = PathSelection(["/a/b/", "./c", "c"])
    assert selection.paths == (b"a/b", b"c")
    assert [p for p in (b"", b"a", b"a/b", b"a/b/x", b"a/bb", b"c", b"c/d", b"d") if selection.covers(p)] == [
        b"a/b",
        b"a/b/x",
        b"c",
        b"c/d",
    ]
    assert [p for p in (b"", b"a", b"a/b", b"a/bb", b"d") if selection.restores(p)] == [b"", b"a", b"a/b"]
    assert selection.unmatched() == []
    assert PathSelection(["missing"]).unmatched() == [b"missing"]
    assert PathSelection().covers(b"anything") and normalize("/") == b""
    for bad in ("../x", "a/../../b", "a\0b"):
        with pytest.raises(UnsafePath):
            normalize(bad)


def test_resource_files_are_placed_by_namespace_kind_and_group() -> None:
    assert resource_file(OBJECTS[1]) == ("shop", "Deployment.apps", "web.yaml")
    assert resource_file(OBJECTS[2]) == (CLUSTER_DIR, "Namespace", "shop.yaml")
    long_name = "n" * 253
    (_, _, name) = resource_file({"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": long_name, "namespace": "shop"}})  # fmt: skip
    assert len(name.encode()) <= 255 and name.endswith(".yaml")
    twice = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings", "namespace": "shop"}}
    with pytest.raises(UnsafeResource, match=r"would both be written to shop/ConfigMap/settings\.yaml"):
        plan_files([OBJECTS[0], twice])


def test_a_location_file_needs_the_secret_its_location_names() -> None:
    location = {"kind": "BackupLocation", "metadata": {"name": "a"}, "location": {"secretConfig": "s"}}
    with pytest.raises(CliError, match="names Secret s, which is not in the file"):
        location_from_documents([location], None, "f.yaml")
    secret = {"kind": "Secret", "metadata": {"name": "s"}, "data": {"k": base64.b64encode(b"v").decode()},
              "stringData": {"t": "w"}}  # fmt: skip
    assert location_from_documents([location, secret], None, "f.yaml") == (location, {"k": "v", "t": "w"})
    other = {"kind": "BackupLocation", "metadata": {"name": "b"}, "location": {}}
    with pytest.raises(CliError, match="several BackupLocations"):
        location_from_documents([location, other], None, "f.yaml")
    assert location_from_documents([location, other], "b", "f.yaml") == (other, None)


def test_a_location_file_may_be_a_list_and_bad_yaml_is_reported_without_its_content() -> None:
    location = {
        "kind": "BackupLocation",
        "metadata": {"name": "a"},
        "location": {"type": "local", "path": "/x"},
    }
    listed = {"apiVersion": "v1", "kind": "List", "items": [location]}
    assert parse_documents(yaml.safe_dump(listed), "f") == listed["items"]
    with pytest.raises(CliError, match="not YAML at line 3, column 1: found unexpected end") as raised:
        parse_documents('kind: Secret\nstringData: {secretAccessKey: "s3cr3t-value\n', "f.yaml")
    assert "s3cr3t" not in str(raised.value)


def test_volumes_and_names_from_the_manifest() -> None:
    volumes = stored_volumes({"volumes": [
        {"namespace": "shop", "persistentVolumeClaim": "data", "mode": "filesystem", "status": "Successful",
         "tree": "t"},
        {"namespace": "shop", "persistentVolumeClaim": "failed", "mode": "filesystem", "status": "Failed",
         "tree": "t"},
        {"namespace": "shop", "persistentVolumeClaim": "../x", "mode": "datamover", "status": "Successful",
         "tree": "t"},
    ]})  # fmt: skip
    assert [v.tree for v in volumes] == ["t", None, "t"]
    assert volume_directory(volumes[0]) == ("shop", "data")
    with pytest.raises(CliError, match="not a Kubernetes name"):
        volume_directory(volumes[2])
    assert shown(b"a\x1b[31m\xffb\n") == "a\\x1b[31m\\xffb\\n"
