"""The lake on MinIO: Delta MERGE on ``s3a://`` and landing-zone objects, read back exactly."""

from __future__ import annotations

import gzip
import json
import uuid
from datetime import datetime
from decimal import Decimal

import pytest
from pyspark.sql import Row, SparkSession

from infra.services import MinioService
from lake.delta_io import merge
from lake.tables import RAW_ENVELOPE_SCHEMA, SILVER_USDT_RATES, Lake, LakeSettings
from tests.conftest import seconds

pytestmark = [pytest.mark.integration, pytest.mark.spark]


@pytest.mark.timeout(seconds(240))
def test_delta_merge_on_minio_reads_back_exact_rows(
    s3a_spark: SparkSession, s3_bucket: str, minio_service: MinioService
) -> None:
    spark = s3a_spark
    lake = Lake(LakeSettings(root=f"s3a://{s3_bucket}/lake"))
    minute = datetime(2026, 11, 1, 12, 0)
    first = [
        ("BTC", minute, Decimal("97000.123456789012345678"), "direct"),
        ("ETH", minute, Decimal("3500.25"), "direct"),
    ]
    second = [
        ("ETH", minute, Decimal("3501.000000000000000001"), "cross_btc"),  # late correction wins
        ("SOL", minute, Decimal("180.5"), "direct"),
    ]
    merge(
        spark.createDataFrame(first, SILVER_USDT_RATES.schema),
        lake=lake,
        name="silver.usdt_rates",
        mode="upsert",
        dedupe=True,
    )
    merge(
        spark.createDataFrame(second, SILVER_USDT_RATES.schema),
        lake=lake,
        name="silver.usdt_rates",
        mode="upsert",
        dedupe=True,
    )

    path = lake.path("silver.usdt_rates")
    assert path == f"s3a://{s3_bucket}/lake/silver/usdt_rates"
    got = sorted(tuple(r) for r in spark.read.format("delta").load(path).collect())
    assert got == [
        ("BTC", minute, Decimal("97000.123456789012345678"), "direct"),
        ("ETH", minute, Decimal("3501.000000000000000001"), "cross_btc"),
        ("SOL", minute, Decimal("180.5"), "direct"),
    ]
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()
    assert [(h.version, h.operation) for h in history] == [(0, "CREATE TABLE"), (1, "MERGE"), (2, "MERGE")]
    # The table is in MinIO itself, not in a local folder: its commits are objects in the bucket.
    listing = minio_service.s3_client().list_objects_v2(
        Bucket=s3_bucket, Prefix="lake/silver/usdt_rates/_delta_log/"
    )
    commits = sorted(
        o["Key"].rsplit("/", 1)[1] for o in listing.get("Contents", []) if o["Key"].endswith(".json")
    )
    assert commits == [f"{v:020d}.json" for v in range(3)]


@pytest.mark.timeout(seconds(240))
def test_landing_gzip_jsonl_object_reads_back_with_boto3_and_spark(
    s3a_spark: SparkSession, s3_bucket: str, minio_service: MinioService
) -> None:
    envelopes = [
        {
            "exchange": "binance",
            "channel": "trades",
            "stream": "btcusdt@trade",
            "native_symbol": "BTCUSDT",
            "payload": '{"e":"trade","s":"BTCUSDT","t":1,"p":"97000.10","q":"0.001"}',
            "recv_ts_ns": 1_793_000_000_123_456_789,
            "conn_id": "c-1",
            "conn_seq": 1,
            "source": "ws",
            "error": None,
        },
        {
            "exchange": "binance",
            "channel": "deadletter",
            "stream": None,
            "native_symbol": None,
            "payload": 'not json: ünïcödé € "quoted"\nsecond line',
            "recv_ts_ns": 1_793_000_000_223_456_789,
            "conn_id": "c-1",
            "conn_seq": 2,
            "source": "ws",
            "error": "unparseable frame",
        },
    ]
    body = gzip.compress("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in envelopes).encode("utf-8"))
    key = f"raw/exchange=binance/channel=trades/dt=2026-11-01/hour=12/{uuid.uuid4()}.jsonl.gz"
    client = minio_service.s3_client()
    client.put_object(Bucket=s3_bucket, Key=key, Body=body, ContentType="application/gzip")

    assert client.get_object(Bucket=s3_bucket, Key=key)["Body"].read() == body
    rows = s3a_spark.read.schema(RAW_ENVELOPE_SCHEMA).json(f"s3a://{s3_bucket}/{key}").collect()
    assert sorted(rows, key=lambda r: r.conn_seq) == [Row(**e) for e in envelopes]
