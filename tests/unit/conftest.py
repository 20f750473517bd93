"""What every unit test shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from davit.format import sealing
from tests.fakes.scratch import scratch_factory  # noqa: F401  (scratch state over an in-memory Redis)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_kdf: creates locations with the real scrypt parameters")


@pytest.fixture(autouse=True)
def cheap_key_derivation(request: pytest.FixtureRequest) -> Iterator[None]:
    """Locations created by unit tests derive their keys with scrypt at N=2^10 rather than 2^17 (half a
    second and 128 MiB each): most tests are about something else. Tests of key derivation itself are
    marked ``real_kdf``."""
    if request.node.get_closest_marker("real_kdf"):
        yield
        return
    saved = sealing.DEFAULT_KDF
    sealing.DEFAULT_KDF = sealing.Kdf(n=2**10)
    try:
        yield
    finally:
        sealing.DEFAULT_KDF = saved
