"""Long object names where only short values fit: label values and Event names."""

from __future__ import annotations

import re

import pytest

from davit import labels
from davit.api.types import DNS1123_SUBDOMAIN
from davit.kube import events

#: What the API server accepts as a non-empty label value.
LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
SUBDOMAIN = re.compile(DNS1123_SUBDOMAIN)


@pytest.mark.parametrize("length", [1, 40, 63])
def test_a_name_that_fits_is_its_own_label_value(length: int) -> None:
    name = "s" * length
    assert labels.label_value(name) == name
    assert labels.selector("davit.dev/schedule", name) == f"davit.dev/schedule={name}"


@pytest.mark.parametrize(
    "name",
    [
        "a" * 64,
        "a" * 253,
        "a" * 51 + "-" + "b" * 100,  # the cut lands right after a "-"
        "a" * 51 + "." + "b" * 100,  # or after a "."
        "nightly." + "x" * 56,
    ],
)
def test_a_long_name_becomes_a_valid_label_value(name: str) -> None:
    value = labels.label_value(name)
    assert len(value) <= labels.MAX_LABEL_VALUE
    assert LABEL_VALUE.match(value), value
    assert labels.label_value(name) == value  # the same wherever it is computed
    assert labels.selector("k", name) == f"k={value}"


def test_long_names_sharing_a_prefix_get_different_values() -> None:
    first, second = "p" * 100 + "-one", "p" * 100 + "-two"
    assert labels.label_value(first) != labels.label_value(second)
    assert labels.label_value(first).startswith("p" * 52)


@pytest.mark.parametrize("name", ["short", "a" * 253, "a" * 235 + "-" + "b" * 17, "a" * 235 + "." + "b" * 17])
def test_event_names_stay_object_names(name: str) -> None:
    event_name = events._event_name(name)
    assert len(event_name) <= 253
    assert SUBDOMAIN.match(event_name), event_name
    assert event_name.startswith(name[:200])
    assert events._event_name(name) != event_name  # each Event its own name
