"""davit.jsonbytes: the same JSON as the standard library's, and its fallbacks where orjson refuses."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from davit import jsonbytes


def test_a_page_encodes_to_the_json_the_standard_library_reads_back_alike() -> None:
    objects = [
        {"metadata": {"name": "cm-é", "labels": {"a/b": "c\u2028"}}, "data": {"v": "x" * 10, "n": 1.5}}
    ]
    encoded = jsonbytes.dumps_compact(objects)
    assert json.loads(encoded) == objects
    assert b" " not in encoded  # compact, as the parts have always been written
    assert "é".encode() in encoded  # UTF-8, not escaped


def test_integers_beyond_64_bits_and_deep_nesting_fall_back_to_the_standard_library() -> None:
    big = [{"n": 2**70}]
    assert json.loads(jsonbytes.dumps_compact(big)) == big
    deep: list[object] = []
    inner = deep
    for _ in range(300):
        inner.append([])
        inner = inner[0]  # type: ignore[assignment]
    assert json.loads(jsonbytes.dumps_compact(deep)) == deep


def test_an_api_answer_parses_as_with_the_standard_library_and_invalid_json_is_refused_as_before() -> None:
    answer = b'{"items":[{"metadata":{"name":"a"}}],"metadata":{"continue":"t"}}'
    assert jsonbytes.loads_api(answer) == json.loads(answer)
    with pytest.raises(json.JSONDecodeError):
        jsonbytes.loads_api(b'{"items": [')


def test_stored_json_parses_as_with_the_standard_library_and_what_orjson_refuses_still_reads() -> None:
    part = b'[{"kind":"ConfigMap","metadata":{"name":"a"},"data":{"v":"\\u00e9"}}]'
    assert jsonbytes.loads_stored(part) == json.loads(part)
    # Not JSON by the letter, which json reads and orjson refuses: read as before.
    assert math.isnan(jsonbytes.loads_stored(b'{"n": NaN}')["n"])
    assert jsonbytes.loads_stored(b'["\\ud800"]') == ["\ud800"]
    with pytest.raises(json.JSONDecodeError):
        jsonbytes.loads_stored(b'{"items": [')
    with pytest.raises(RecursionError):
        jsonbytes.loads_stored(b"[" * 100_000 + b"]" * 100_000)


def test_a_copy_is_equal_and_shares_nothing_and_what_orjson_would_change_is_deep_copied() -> None:
    obj: dict[str, Any] = {
        "metadata": {"name": "a", "labels": {"x": "y"}},
        "spec": {"ports": [{"port": 80}], "n": None},
    }
    copied = jsonbytes.copy_json(obj)
    assert copied == obj
    copied["metadata"]["labels"]["x"] = "changed"
    copied["spec"]["ports"].append({})
    assert obj["metadata"]["labels"] == {"x": "y"} and obj["spec"]["ports"] == [{"port": 80}]
    big = {"n": 2**70, "s": "null"}
    assert jsonbytes.copy_json(big) == big
    odd: dict[str, Any] = {"a": [float("nan"), float("inf")], "b": None}
    kept = jsonbytes.copy_json(odd)
    assert math.isnan(kept["a"][0]) and kept["a"][1] == float("inf") and kept["b"] is None
