"""Shared fixtures: one local Spark session with the Delta jars, a temp lake, a time unit."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Every timeout in the tests is a multiple of this, so a slow machine can scale them all.
TIME_UNIT = float(os.environ.get("CRYPTOLAKE_TEST_TIME_UNIT", "1.0"))


def seconds(n: float) -> float:
    return n * TIME_UNIT


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
