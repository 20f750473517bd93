"""davit.jsonbytes: the same JSON as the standard library's, and its fallbacks where orjson refuses."""

from __future__ import annotations

import json

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
