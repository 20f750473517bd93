"""The generated CRDs: in sync with the models, structural, and agreeing with Stork's examples."""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import TypeAdapter

from davit import constants
from davit.api import crds, types
from tests.helpers import without_nulls

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = REPO_ROOT / "deploy" / "crds"
SEEDS_DIR = REPO_ROOT / "tests" / "fixtures" / "seeds"
REGENERATE = "run `.venv/bin/python -m davit.api.crds deploy/crds` and commit the result"

CRD_FILES = sorted(name for name in crds.render_all() if name != crds.KUSTOMIZATION)
OPERATION_PLURALS = ("applicationbackups", "applicationrestores", "applicationclones")
OPERATION_COLUMNS = ["Stage", "Status", "Volumes", "Resources", "Created", "Elapsed"]

#: The seeds/000 examples converted to davit.dev (the Secret is a core object, checked separately).
CR_SEEDS = (
    "backuplocation-s3config.yaml",
    "backuplocation-secretconfig.yaml",
    "applicationbackup.yaml",
    "schedulepolicy.yaml",
    "applicationbackupschedule.yaml",
    "applicationrestore.yaml",
    "applicationclone.yaml",
)
SECRET_SEED = "secret-s3secret.yaml"

#: kind -> (top-level field holding the spec, the model of that field).
SPEC_MODELS: dict[str, tuple[str, Any]] = {
    "BackupLocation": ("location", types.LocationSpec),
    "ApplicationBackup": ("spec", types.ApplicationBackupSpec),
    "SchedulePolicy": ("policy", types.PolicySpec),
    "ApplicationBackupSchedule": ("spec", types.ApplicationBackupScheduleSpec),
    "ApplicationRestore": ("spec", types.ApplicationRestoreSpec),
    "ApplicationClone": ("spec", types.ApplicationCloneSpec),
    "Rule": ("rules", list[types.RuleItem]),
}

SCHEMA_TYPES = {"object", "array", "string", "integer", "number", "boolean"}
NOT_STRUCTURAL = {"$ref", "$defs", "anyOf", "allOf", "oneOf", "not", "title", "default", "const"}


@cache
def committed_crd(file_name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CRD_DIR / file_name).read_text())
    return loaded


def version_of(file_name: str) -> dict[str, Any]:
    versions: list[dict[str, Any]] = committed_crd(file_name)["spec"]["versions"]
    assert len(versions) == 1
    return versions[0]


def schema_nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node under ``node`` with a readable path (``[]`` for items, ``{}`` for map values)."""
    yield path or "<root>", node
    for name, sub in node.get("properties", {}).items():
        yield from schema_nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from schema_nodes(node["additionalProperties"], f"{path}{{}}")


def load_seed(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((SEEDS_DIR / name).read_text())
    return loaded


def fields_missing_from_schema(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    """Paths in ``value`` the schema does not declare (the API server would prune them)."""
    missing: list[str] = []
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in value.items():
            if key not in schema["properties"]:
                missing.append(f"{path}.{key}")
            else:
                missing += fields_missing_from_schema(sub, schema["properties"][key], f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            missing += fields_missing_from_schema(item, schema["items"], f"{path}[{i}]")
    return missing


# --- (a) generated files are committed ------------------------------------------------------------


def test_committed_crds_match_the_models() -> None:
    rendered = crds.render_all()
    committed = {p.name: p.read_text() for p in CRD_DIR.glob("*.yaml")}
    assert sorted(committed) == sorted(rendered), (
        f"deploy/crds holds other files than generated; {REGENERATE}"
    )
    stale = sorted(name for name, text in rendered.items() if committed[name] != text)
    assert not stale, f"deploy/crds/{stale} differ from davit.api.types; {REGENERATE}"


# --- (b) structural schemas -----------------------------------------------------------------------


@pytest.mark.parametrize("file_name", CRD_FILES)
def test_schema_is_structural(file_name: str) -> None:
    root = version_of(file_name)["schema"]["openAPIV3Schema"]
    problems: list[str] = []
    for path, node in schema_nodes(root):
        if node.get("type") not in SCHEMA_TYPES:
            problems.append(f"{path}: type {node.get('type')!r}")
        if "properties" in node and node.get("type") != "object":
            problems.append(f"{path}: properties on type {node.get('type')!r}")
        if "items" in node and node.get("type") != "array":
            problems.append(f"{path}: items on type {node.get('type')!r}")
        if leftover := sorted(NOT_STRUCTURAL & node.keys()):
            problems.append(f"{path}: {leftover}")
        if unknown := sorted(set(node.get("required", ())) - node.get("properties", {}).keys()):
            problems.append(f"{path}: required {unknown} not among the properties")
        # kube-apiserver 1.20 refuses a null for a nullable enum; crds.py leaves such nodes non-nullable.
        if "enum" in node and node.get("nullable"):
            problems.append(f"{path}: nullable enum")
    assert not problems, f"{file_name} is not structural:\n" + "\n".join(problems)


@pytest.mark.parametrize("file_name", CRD_FILES)
def test_every_number_and_duration_a_user_writes_is_bounded(file_name: str) -> None:
    # A tenant writes everything but status (a subresource only Davit's service accounts write). An
    # unbounded number or duration there is one the services may not be able to compute with.
    root = version_of(file_name)["schema"]["openAPIV3Schema"]
    problems: list[str] = []
    for path, node in schema_nodes(root):
        if path.startswith(".status"):
            continue
        if node.get("type") == "integer" and ("maximum" not in node or "minimum" not in node):
            problems.append(f"{path}: integer without minimum and maximum")
        if node.get("pattern") == types.DURATION and node.get("maxLength") != types.MAX_DURATION_LENGTH:
            problems.append(f"{path}: duration without maxLength")
    assert not problems, f"{file_name}:\n" + "\n".join(problems)


def test_the_bounds_of_schedule_policies() -> None:
    policy = version_of("schedulepolicies.yaml")["schema"]["openAPIV3Schema"]["properties"]["policy"]
    interval = policy["properties"]["interval"]["properties"]
    assert (interval["intervalMinutes"]["minimum"], interval["intervalMinutes"]["maximum"]) == (1, 527040)
    assert (interval["retain"]["minimum"], interval["retain"]["maximum"]) == (1, types.MAX_RETAIN)
    assert (interval["minRetain"]["minimum"], interval["minRetain"]["maximum"]) == (0, types.MAX_RETAIN)
    monthly = policy["properties"]["monthly"]["properties"]
    assert (monthly["date"]["minimum"], monthly["date"]["maximum"]) == (1, 31)
    backup = version_of("applicationbackups.yaml")["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert backup["properties"]["ttl"]["maxLength"] == 32


# --- (c) operation kinds: status subresource and printer columns ------------------------------------


@pytest.mark.parametrize("plural", OPERATION_PLURALS)
def test_operation_kinds_have_status_subresource_and_columns(plural: str) -> None:
    version = version_of(f"{plural}.yaml")
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]] == OPERATION_COLUMNS


def test_operation_kinds_are_the_constants() -> None:
    assert sorted(constants.PLURALS[k] for k in constants.OPERATION_KINDS) == sorted(OPERATION_PLURALS)


@pytest.mark.parametrize("file_name", CRD_FILES)
def test_printer_columns_point_at_schema_fields(file_name: str) -> None:
    version = version_of(file_name)
    root = version["schema"]["openAPIV3Schema"]
    for column in version.get("additionalPrinterColumns", []):
        parts = column["jsonPath"].lstrip(".").split(".")
        if parts[0] == "metadata":  # ObjectMeta is not described in a CRD's schema
            continue
        node = root
        for part in parts:
            assert part in node.get("properties", {}), f"{column['name']}: {column['jsonPath']} not in schema"
            node = node["properties"][part]
        if column["type"] in ("integer", "boolean"):
            assert node["type"] == column["type"], column


# --- (d) Stork's examples and the models agree --------------------------------------------------------


def test_seed_fixtures_are_converted() -> None:
    names = sorted(p.name for p in SEEDS_DIR.glob("*.yaml"))
    assert names == sorted((*CR_SEEDS, SECRET_SEED))
    for name in names:
        assert "stork.libopenstorage.org" not in (SEEDS_DIR / name).read_text(), name


@pytest.mark.parametrize("seed", CR_SEEDS)
def test_seed_validates_with_the_model_and_the_crd(seed: str) -> None:
    doc = load_seed(seed)
    assert doc["apiVersion"] == constants.API_GROUP_VERSION
    field, model = SPEC_MODELS[doc["kind"]]
    value = doc[field]
    # Strict JSON mode types values as the API server does: no "60" for 60, no "false" for false.
    parsed = TypeAdapter(model).validate_json(json.dumps(value), strict=True)
    # The models ignore unknown fields, so the round trip is what shows none was dropped.
    dumped = TypeAdapter(model).dump_python(parsed, mode="json", by_alias=True, exclude_none=True)
    assert dumped == without_nulls(value)

    definition = crds.definition(constants.Kind(doc["kind"]))
    schema = version_of(f"{definition.plural}.yaml")["schema"]["openAPIV3Schema"]
    assert fields_missing_from_schema(doc, schema, "") == []
    assert set(schema.get("required", ())) <= doc.keys()


def test_seed_secret_holds_fields_of_the_location_that_names_it() -> None:
    secret = load_seed(SECRET_SEED)
    location = load_seed("backuplocation-secretconfig.yaml")
    assert location["location"]["secretConfig"] == secret["metadata"]["name"]
    assert location["metadata"]["namespace"] == secret["metadata"]["namespace"]
    known = {f.alias for f in types.S3Config.model_fields.values()}
    known.add(types.LocationSpec.model_fields["encryption_key"].alias)
    assert set(secret["stringData"]) <= known
