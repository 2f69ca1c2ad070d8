"""Pytest fixtures for the real local services (Kafka, MinIO) run by :mod:`infra.services`.

Session-scoped, started on first use and stopped at the end of the session:

- ``kafka_service`` -> :class:`infra.services.KafkaService`: ``.bootstrap`` (``"127.0.0.1:<port>"``),
  ``.restart(hard=False)`` (stop, start again on the same storage and port; ``hard`` = SIGKILL),
  ``.stop()``/``.start()``, ``.data_dir``.
- ``minio_service`` -> :class:`infra.services.MinioService`: ``.endpoint``
  (``"http://127.0.0.1:<port>"``), ``.access_key``, ``.secret_key``, ``.s3_client()`` (boto3,
  path-style, region us-east-1).
- ``postgres_service`` / ``redis_service`` -> :class:`infra.services.PostgresService` /
  :class:`infra.services.RedisService`: ``.host``, ``.port``, ``.password`` (PostgreSQL: superuser
  ``cryptolake``). PostgreSQL's private folder is made outside pytest's temp dir (whose 0700 parent
  the ``postgres`` user a root session runs it as cannot enter) and removed at the end.

Function-scoped:

- ``kafka_topic_prefix`` -> ``str`` unique per test, ``[a-z0-9]`` only (e.g. ``"it3f9a1b2c4d"``):
  a topic prefix or a name segment, e.g. ``f"raw.{kafka_topic_prefix}.trades"``.
- ``s3_bucket`` -> ``str``: a new, empty bucket in MinIO, unique per test, removed afterwards.
- ``s3a_spark`` -> the session ``spark`` with S3A pointed at MinIO for ``s3_bucket``
  (``s3a://<s3_bucket>/...`` reads and writes there).
- ``postgres_store_settings`` -> :class:`lake.serve.settings.StoreSettings` with ``postgres`` on,
  pointed at a new, empty database unique per test (dropped afterwards).
- ``redis_store_settings`` -> :class:`lake.serve.settings.StoreSettings` with ``redis`` on, pointed
  at an emptied database (1-15 in turn; with ``reuse`` these databases of the ``make infra-up``
  Redis are flushed).

The services are private to the pytest session (their folders are in pytest's temp dir), so
concurrent sessions never share, restart or stop each other's broker. With
``CRYPTOLAKE_TEST_SERVICES=reuse`` the fixtures use the ones ``make infra-up`` runs instead
(starting them when needed and stopping only what they started). A service that cannot start
fails the tests that need it, with the reason; nothing is skipped.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from infra import minio
from infra.services import DEFAULT_STATE_DIR, KafkaService, MinioService, PostgresService, RedisService
from tests.conftest import seconds

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from lake.serve.settings import StoreSettings

logger = logging.getLogger(__name__)


def _state_dir(factory: pytest.TempPathFactory, name: str) -> Path:
    if os.environ.get("CRYPTOLAKE_TEST_SERVICES", "private") == "reuse":
        return DEFAULT_STATE_DIR
    return factory.mktemp(f"services-{name}")


def _private() -> bool:
    return os.environ.get("CRYPTOLAKE_TEST_SERVICES", "private") != "reuse"


@pytest.fixture(scope="session")
def kafka_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaService]:
    service = KafkaService(state_dir=_state_dir(tmp_path_factory, "kafka"), die_with_parent=_private())
    started = service.start(timeout=seconds(90))
    yield service
    if started:
        service.stop(hard=_private())


@pytest.fixture(scope="session")
def minio_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioService]:
    credentials = (
        minio.Credentials(access_key=f"test-{secrets.token_hex(4)}", secret_key=secrets.token_urlsafe(18))
        if _private()
        else None
    )
    service = MinioService(
        state_dir=_state_dir(tmp_path_factory, "minio"),
        die_with_parent=_private(),
        credentials=credentials,
    )
    started = service.start(timeout=seconds(60))
    yield service
    if started:
        service.stop(hard=_private())


@pytest.fixture()
def kafka_topic_prefix() -> str:
    return f"it{uuid.uuid4().hex[:10]}"


@pytest.fixture()
def s3_bucket(minio_service: MinioService) -> Iterator[str]:
    bucket = f"it-{uuid.uuid4().hex[:12]}"
    client = minio_service.s3_client()
    client.create_bucket(Bucket=bucket)
    yield bucket
    try:
        minio.delete_bucket(client, bucket)
    except Exception as exc:  # the test's own outcome matters more than a leftover test bucket
        logger.warning("could not remove test bucket %s: %s", bucket, exc)


@pytest.fixture()
def s3a_spark(spark: SparkSession, minio_service: MinioService, s3_bucket: str) -> SparkSession:
    minio.apply_s3a(
        spark,
        endpoint=minio_service.endpoint,
        access_key=minio_service.access_key,
        secret_key=minio_service.secret_key,
        bucket=s3_bucket,
    )
    return spark


@pytest.fixture(scope="session")
def postgres_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresService]:
    private = _private()
    state_dir = Path(tempfile.mkdtemp(prefix="cryptolake-test-pg-")) if private else DEFAULT_STATE_DIR
    if private:
        state_dir.chmod(0o755)  # the postgres user (root sessions) must enter it
    service = PostgresService(
        state_dir=state_dir, die_with_parent=private, password=secrets.token_urlsafe(12) if private else None
    )
    try:
        started = service.start(timeout=seconds(60))
        yield service
        if started:
            service.stop(hard=private)
    finally:
        if private:
            shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisService]:
    service = RedisService(
        state_dir=_state_dir(tmp_path_factory, "redis"),
        die_with_parent=_private(),
        password=secrets.token_urlsafe(12) if _private() else None,
    )
    started = service.start(timeout=seconds(30))
    yield service
    if started:
        service.stop(hard=_private())


@pytest.fixture()
def postgres_store_settings(postgres_service: PostgresService) -> Iterator[StoreSettings]:
    import psycopg

    from lake.config import Secret
    from lake.serve.settings import StoreSettings

    database = f"t_{uuid.uuid4().hex[:12]}"
    admin = {
        "host": postgres_service.host,
        "port": postgres_service.port,
        "user": "cryptolake",
        "password": postgres_service.password,
        "dbname": "postgres",
        "autocommit": True,
    }
    with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
        conn.execute(f"CREATE DATABASE {database}")
    yield StoreSettings(
        postgres=True,
        postgres_host=postgres_service.host,
        postgres_port=postgres_service.port,
        postgres_database=database,
        postgres_password=Secret(postgres_service.password),
    )
    with psycopg.connect(**admin) as conn:  # type: ignore[arg-type]
        conn.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


_REDIS_DBS = itertools.cycle(range(1, 16))


@pytest.fixture()
def redis_store_settings(redis_service: RedisService) -> StoreSettings:
    import redis

    from lake.config import Secret
    from lake.serve.settings import StoreSettings

    db = next(_REDIS_DBS)
    client = redis.Redis(
        host=redis_service.host, port=redis_service.port, db=db, password=redis_service.password
    )
    client.flushdb()
    client.close()
    return StoreSettings(
        redis=True,
        redis_host=redis_service.host,
        redis_port=redis_service.port,
        redis_db=db,
        redis_password=Secret(redis_service.password),
    )
