"""Shared fixtures: one local Spark session with the Delta jars, a temp lake, a time unit."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import __main__

# An xdist worker's ``__main__`` has neither a spec nor a file, which PySpark's Connect package
# (imported by Great Expectations) takes for a doctest run: it calls sys.exit(0) on import.
if getattr(__main__, "__spec__", None) is None and not hasattr(__main__, "__file__"):
    __main__.__file__ = __file__

#: Every timeout in the tests is a multiple of this, so a slow machine can scale them all.
TIME_UNIT = float(os.environ.get("CRYPTOLAKE_TEST_TIME_UNIT", "1.0"))


def seconds(n: float) -> float:
    return n * TIME_UNIT


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under ``pytest -n 2 --dist loadgroup`` (``make test``) every test that uses the shared Spark
    session runs in one worker, one after another, as they would without xdist: one JVM, and the
    Spark tests never compete with each other for the two cores. The other tests (extractors,
    simulator, sinks, serving) run in the other worker meanwhile."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()) or item.get_closest_marker("spark"):
            item.add_marker(pytest.mark.xdist_group("spark"))


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    from lake.session import SparkSettings, build_spark

    session = build_spark(
        SparkSettings(
            master="local[2]", app_name="cryptolake-tests", shuffle_partitions=1, driver_memory="3g"
        )
    )
    yield session
    session.stop()


@pytest.fixture()
def lake(tmp_path: Path) -> object:
    from lake.tables import Lake, LakeSettings

    return Lake(LakeSettings(root=str(tmp_path / "lake")))


# Fixtures that start real Kafka and MinIO (infra.services) live in their own plugin module.
pytest_plugins = ["tests.service_fixtures"]
