"""MinIO, the local S3: its command line, credentials, readiness, buckets, and S3A for Spark.

The server binary is built once, when asked (``make infra-up``, ``make test`` or
``bash infra/setup.sh minio``: ``go install github.com/minio/minio@latest`` into ``.cache/bin``);
:mod:`infra.services` runs it in the background on 127.0.0.1.

Credentials never have a default in code: they come from ``CRYPTOLAKE_MINIO_ROOT_USER`` /
``CRYPTOLAKE_MINIO_ROOT_PASSWORD`` or MinIO's own ``MINIO_ROOT_USER`` / ``MINIO_ROOT_PASSWORD``;
when neither is set, ``infra.services`` generates random ones on first start and keeps them (mode
0600) in the service's state folder, so the same data folder keeps working after a restart.
"""

from __future__ import annotations

import logging
import os
import secrets
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
MINIO_BINARY = REPO_ROOT / ".cache" / "bin" / "minio"

#: The bucket ``infra.services up`` creates for the lake (``s3a://<bucket>/lake``).
DEFAULT_BUCKET = "cryptolake"
REGION = "us-east-1"


class MinioSetupError(RuntimeError):
    """The MinIO binary or credentials are missing or unusable; the message says how to fix it."""


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str

    def __repr__(self) -> str:  # never print the secret
        return "Credentials(access_key='***', secret_key='***')"


def binary(path: Path = MINIO_BINARY) -> Path:
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MinioSetupError(
            f"no MinIO server at {path}: run `make infra-up` or `bash infra/setup.sh minio` "
            "(builds MinIO with Go into .cache/bin)"
        )
    return path


def credentials_from_env() -> Credentials | None:
    """Root credentials from ``CRYPTOLAKE_MINIO_ROOT_USER``/``..._PASSWORD`` (or ``MINIO_ROOT_*``)."""
    user = os.environ.get("CRYPTOLAKE_MINIO_ROOT_USER") or os.environ.get("MINIO_ROOT_USER")
    password = os.environ.get("CRYPTOLAKE_MINIO_ROOT_PASSWORD") or os.environ.get("MINIO_ROOT_PASSWORD")
    if not user and not password:
        return None
    if not user or not password:
        raise MinioSetupError(
            "set both CRYPTOLAKE_MINIO_ROOT_USER and CRYPTOLAKE_MINIO_ROOT_PASSWORD "
            "(or MINIO_ROOT_USER and MINIO_ROOT_PASSWORD), or neither to have random ones generated"
        )
    return validate(Credentials(access_key=user, secret_key=password))


def validate(creds: Credentials) -> Credentials:
    if len(creds.access_key) < 3 or len(creds.secret_key) < 8:
        raise MinioSetupError(
            "MinIO needs a root user of at least 3 and a root password of at least 8 characters: "
            "fix CRYPTOLAKE_MINIO_ROOT_USER / CRYPTOLAKE_MINIO_ROOT_PASSWORD"
        )
    return creds


def random_credentials() -> Credentials:
    return Credentials(access_key=f"cl-{secrets.token_hex(6)}", secret_key=secrets.token_urlsafe(24))


def server_command(*, data_dir: Path, host: str, port: int, console_port: int, certs_dir: Path) -> list[str]:
    return [
        str(binary()),
        "server",
        str(data_dir),
        "--address",
        f"{host}:{port}",
        "--console-address",
        f"{host}:{console_port}",
        "--certs-dir",
        str(certs_dir),
        "--anonymous",
    ]


def server_env(creds: Credentials) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "MINIO_ROOT_USER": creds.access_key,
            "MINIO_ROOT_PASSWORD": creds.secret_key,
            "MINIO_UPDATE": "off",
            "MINIO_BROWSER_REDIRECT": "off",
        }
    )
    return env


def is_live(endpoint: str, *, timeout: float = 1.0) -> bool:
    """MinIO's liveness probe ``GET /minio/health/live`` answers 200."""
    try:
        with urllib.request.urlopen(f"{endpoint}/minio/health/live", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def s3_client(endpoint: str, creds: Credentials) -> S3Client:
    """A boto3 S3 client for ``endpoint`` with path-style addressing (what MinIO serves)."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=creds.access_key,
        aws_secret_access_key=creds.secret_key,
        region_name=REGION,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def ensure_bucket(client: S3Client, bucket: str) -> None:
    """Create ``bucket`` unless it exists (owned by us)."""
    from botocore.exceptions import ClientError

    try:
        client.create_bucket(Bucket=bucket)
        logger.info("created bucket %s", bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in (
            "BucketAlreadyOwnedByYou",
            "BucketAlreadyExists",
        ):
            raise


def delete_bucket(client: S3Client, bucket: str) -> None:
    """Delete every object of ``bucket`` and the bucket itself."""
    paginator = client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})  # type: ignore[typeddict-item]
    client.delete_bucket(Bucket=bucket)


def s3a_settings(
    *, endpoint: str, access_key: str, secret_key: str, bucket: str | None = None
) -> dict[str, str]:
    """Hadoop S3A keys for a MinIO endpoint, as ``lake.session.spark_conf`` spells them.

    With ``bucket`` the keys are per bucket (``fs.s3a.bucket.<bucket>.endpoint`` ...), so one
    session can talk to several endpoints; without, they apply to every ``s3a://`` path.
    """
    from lake.config import Secret
    from lake.session import SparkSettings, spark_conf

    conf = spark_conf(
        SparkSettings(
            jars_dir="",
            s3_endpoint=endpoint,
            s3_access_key=Secret(access_key),
            s3_secret_key=Secret(secret_key),
        )
    )
    prefix = "spark.hadoop.fs.s3a."
    settings: dict[str, str] = {}
    for key, value in conf.items():
        if not key.startswith(prefix):
            continue
        option = key[len(prefix) :]
        if bucket is None or option == "impl":
            settings[f"fs.s3a.{option}"] = value
        else:
            settings[f"fs.s3a.bucket.{bucket}.{option}"] = value
    return settings


def apply_s3a(
    spark: SparkSession, *, endpoint: str, access_key: str, secret_key: str, bucket: str | None = None
) -> None:
    """Point a running SparkSession's S3A at MinIO (``s3a://`` paths then read and write there).

    Sets the keys of :func:`s3a_settings` on the session's Hadoop configuration; a file system
    instance S3A already cached for a bucket keeps its old settings, so call this before the
    first access to the bucket.
    """
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()  # type: ignore[union-attr]
    for key, value in s3a_settings(
        endpoint=endpoint, access_key=access_key, secret_key=secret_key, bucket=bucket
    ).items():
        hadoop_conf.set(key, value)
    logger.info("s3a configured for %s", bucket or "every bucket", extra={"endpoint": endpoint})
