"""Landing sink on real MinIO: exact keys, byte-identical objects, multipart, an S3 outage, Spark reads."""

from __future__ import annotations

import asyncio
import gzip
import os
import re
from pathlib import Path
from typing import Any

import pytest

from extractors.envelope import Batch
from extractors.sinks.landing import LandingSettings, LandingSink
from infra.services import MinioService
from lake.config import Secret
from tests.sinks.helpers import batches, make_batch

pytestmark = pytest.mark.integration

UUID = r"[0-9a-f]{32}"


def s3_settings(minio: MinioService, bucket: str, staging: Path, **kw: Any) -> LandingSettings:
    return LandingSettings(
        root=f"s3a://{bucket}/landing",
        staging_dir=str(staging),
        s3_endpoint=minio.endpoint,
        s3_access_key=Secret(minio.access_key),
        s3_secret_key=Secret(minio.secret_key),
        **kw,
    )


def objects(minio: MinioService, bucket: str) -> dict[str, dict[str, Any]]:
    client = minio.s3_client()
    listed = client.list_objects_v2(Bucket=bucket, Prefix="landing/").get("Contents", [])
    return {
        o["Key"]: {"etag": o["ETag"], "body": client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()}
        for o in listed
    }


def test_landing_sink_writes_objects_to_minio_that_read_back_identical(
    minio_service: MinioService, s3_bucket: str, tmp_path: Path
) -> None:
    trades = batches(30, n=5)
    # One batch of incompressible payloads (~6 MiB gzipped) passes the 5 MiB multipart threshold.
    tickers = [
        make_batch(10, channel="ticker", key="ticker", batch_id="t-0", payload_pad=os.urandom(550_000).hex())
    ]
    one_trade_member = len(gzip.compress(trades[0].to_jsonl(), mtime=0))

    async def run() -> None:
        sink = LandingSink(
            s3_settings(
                minio_service,
                s3_bucket,
                tmp_path / "staging",
                roll_bytes=one_trade_member * 10,
                multipart_threshold_bytes=5 * 1024 * 1024,
            )
        )
        for i, b in enumerate(trades):
            await sink.write(b)
            if i < len(tickers):
                await sink.write(tickers[i])
        await sink.close()

    asyncio.run(run())
    got = objects(minio_service, s3_bucket)
    trade_keys = [k for k in got if "/channel=trades/" in k]
    ticker_keys = [k for k in got if "/channel=ticker/" in k]
    assert set(got) == set(trade_keys) | set(ticker_keys)
    for key in trade_keys:
        assert re.fullmatch(
            rf"landing/raw/exchange=binance/channel=trades/dt=2024-03-09/hour=23/{UUID}\.jsonl\.gz", key
        )
    assert len(trade_keys) >= 2  # rolled by size
    (ticker_key,) = ticker_keys
    assert re.fullmatch(
        rf"landing/raw/exchange=binance/channel=ticker/dt=2024-03-09/hour=23/{UUID}\.jsonl\.gz", ticker_key
    )
    assert "-" in got[ticker_key]["etag"], "a >5 MiB file goes up as a multipart upload"
    assert gzip.decompress(got[ticker_key]["body"]) == b"".join(b.to_jsonl() for b in tickers)
    trade_lines = b"".join(gzip.decompress(got[k]["body"]) for k in trade_keys)
    assert sorted(trade_lines.splitlines()) == sorted(b"".join(b.to_jsonl() for b in trades).splitlines())
    for key in trade_keys:  # each object is whole batches, in write order
        data = gzip.decompress(got[key]["body"])
        ids = [b.batch_id for b in trades if b.to_jsonl() in data]
        assert data == b"".join(b.to_jsonl() for b in trades if b.batch_id in ids)
    assert list((tmp_path / "staging").iterdir()) == []


def test_an_s3_outage_keeps_parts_staged_and_a_restart_lands_them(
    minio_service: MinioService, s3_bucket: str, tmp_path: Path
) -> None:
    written: list[Batch] = batches(6)
    settings = s3_settings(minio_service, s3_bucket, tmp_path / "staging", close_timeout_s=1.0)

    async def during_outage() -> None:
        sink = LandingSink(settings)
        await sink.write(written[0])
        minio_service.stop()
        for b in written[1:]:
            await sink.write(b)  # durable in staging while S3 is down: collection goes on
        await sink.close()  # cannot upload: the part stays staged

    try:
        asyncio.run(during_outage())
    finally:
        minio_service.start()
    assert objects(minio_service, s3_bucket) == {}
    assert len(list((tmp_path / "staging").iterdir())) == 1

    async def after_restart() -> None:
        sink = LandingSink(settings)  # finds the staged part
        await sink.close()

    asyncio.run(after_restart())
    got = objects(minio_service, s3_bucket)
    assert len(got) == 1
    (obj,) = got.values()
    assert gzip.decompress(obj["body"]) == b"".join(b.to_jsonl() for b in written)
    assert list((tmp_path / "staging").iterdir()) == []


@pytest.mark.spark
def test_spark_reads_a_multi_batch_landing_file_from_minio_whole(
    s3a_spark: Any, minio_service: MinioService, s3_bucket: str, tmp_path: Path
) -> None:
    from lake.tables import RAW_ENVELOPE_SCHEMA

    written = batches(7, n=4)

    async def run() -> None:
        sink = LandingSink(s3_settings(minio_service, s3_bucket, tmp_path / "staging"))
        for b in written:
            await sink.write(b)  # seven gzip members in one object
        await sink.close()

    asyncio.run(run())
    rows = s3a_spark.read.schema(RAW_ENVELOPE_SCHEMA).json(f"s3a://{s3_bucket}/landing/raw/").collect()
    got = sorted((r["conn_seq"], r["payload"], r["recv_ts_ns"]) for r in rows)
    expected = sorted((e.conn_seq, e.payload, e.recv_ts_ns) for b in written for e in b.envelopes)
    assert got == expected
