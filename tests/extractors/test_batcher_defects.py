"""Issue 11: batches are bounded by bytes, below the Kafka record limit (RecordTooLarge is fatal)."""

from __future__ import annotations

import itertools
import json

import pytest
from kafka.record.default_records import DefaultRecordBatchBuilder

from extractors.batcher import Batcher, envelope_nbytes
from extractors.envelope import Batch, Envelope
from extractors.runner import Extractor
from extractors.settings import load_settings
from extractors.sinks import batch_bytes_limit
from extractors.sinks.kafka import (
    BROKER_MESSAGE_MAX_BYTES,
    DEFAULT_MAX_BATCH_BYTES,
    KafkaSettings,
    KafkaSink,
)
from extractors.sinks.landing import LandingSettings, LandingSink
from extractors.sinks.spool import SpooledSink, SpoolSettings


def rest_page(n: int, *, rows: int = 2500) -> Envelope:
    """A Binance ``historicalTrades`` page of ``rows`` trades (about 100 bytes a row, escaped)."""
    body = [
        {
            "id": n * rows + i,
            "price": "94210.01",
            "qty": "0.00150",
            "time": 1767225600455,
            "isBuyerMaker": True,
        }
        for i in range(rows)
    ]
    return Envelope(
        exchange="binance",
        channel="trades",
        stream=f"/api/v3/historicalTrades?symbol=BTCUSDT&fromId={n * rows}&limit=1000",
        payload=json.dumps(body, separators=(",", ":")),
        recv_ts_ns=1_767_225_600_000_000_000 + n,
        conn_id="rest-1",
        conn_seq=n,
        source="rest",
        native_symbol="BTCUSDT",
    )


def collect(batcher_kw: dict[str, object], envelopes: list[Envelope]) -> list[Batch]:
    out: list[Batch] = []
    batcher = Batcher(max_envelopes=100, max_age_s=1.0, on_batch=out.append, **batcher_kw)  # type: ignore[arg-type]
    for envelope in envelopes:
        batcher.add(envelope)
    batcher.flush_all()
    return out


def test_large_rest_pages_are_split_into_batches_below_the_default_byte_bound() -> None:
    pages = [rest_page(n) for n in range(12)]  # ~300 KB each, 3.6 MB in all: once one batch
    out = collect({}, pages)
    sizes = [len(b.to_jsonl()) for b in out]
    assert len(out) > 1 and max(sizes) <= DEFAULT_MAX_BATCH_BYTES < BROKER_MESSAGE_MAX_BYTES
    assert [e for b in out for e in b.envelopes] == pages  # nothing lost, order kept
    # Greedy: each batch is full, i.e. the next page would not have fitted.
    for batch, following in itertools.pairwise(out):
        assert len(batch.to_jsonl()) + envelope_nbytes(following.envelopes[0]) > DEFAULT_MAX_BATCH_BYTES


def test_an_envelope_bigger_than_the_bound_goes_alone_and_its_neighbours_are_not_held_back() -> None:
    small, big = rest_page(0, rows=10), rest_page(1, rows=20_000)  # the big one is ~2 MB
    out = collect({"max_bytes": 1 << 20}, [small, big, small])
    assert [b.envelopes for b in out] == [(small,), (big,), (small,)]


TRICKY_PAYLOADS = [
    "",
    "plain ascii",
    '{"e":"trade","s":"BTCUSDT","p":"0.1"}',
    'quote " and backslash \\ and slash /',
    "newline\n tab\t nul\x00 bell\x07 del\x7f",
    "ü é 漢字 emoji \U0001f600",
    "\u2028 line separator",
]


@pytest.mark.parametrize("payload", TRICKY_PAYLOADS)
def test_envelope_nbytes_is_the_exact_length_of_its_json_line(payload: str) -> None:
    for symbol, error in ((None, None), ('BTC"\\ü', "why: \x01")):
        envelope = Envelope(
            exchange="kucoin",
            channel="deadletter",
            stream="/market/match:BTC-USDT",
            payload=payload,
            recv_ts_ns=1_767_225_600_123_456_789,
            conn_id="kucoin-0-abc",
            conn_seq=123456,
            native_symbol=symbol,
            error=error,
        )
        assert envelope_nbytes(envelope) == len(envelope.to_json().encode()) + 1


def kafka_record_bytes(sink: KafkaSink, batch: Batch) -> int:
    """What kafka-python checks against ``max_request_size``: the record as KafkaSink sends it."""
    headers = [
        ("batch_id", batch.batch_id.encode()),
        ("exchange", batch.exchange.encode()),
        ("channel", batch.channel.encode()),
    ]
    return int(
        DefaultRecordBatchBuilder.estimate_size_in_bytes(batch.key.encode(), batch.to_jsonl(), headers)
    )


@pytest.mark.parametrize("max_request_bytes", [16 << 20, 1 << 20, 256 << 10])
def test_batches_bounded_by_the_kafka_sinks_limit_fit_its_producer_and_the_broker(
    max_request_bytes: int,
) -> None:
    settings = KafkaSettings(max_request_bytes=max_request_bytes)
    sink = KafkaSink(settings)
    record_limit = min(settings.max_request_bytes, BROKER_MESSAGE_MAX_BYTES)
    out = collect({"max_bytes": batch_bytes_limit([sink])}, [rest_page(n) for n in range(8)])
    assert len(out) > 1
    assert max(kafka_record_bytes(sink, b) for b in out) <= record_limit


def test_the_batch_bound_is_the_tightest_sinks_and_sees_through_the_spool(tmp_path: object) -> None:
    small = KafkaSink(KafkaSettings(max_request_bytes=256 << 10))
    landing = LandingSink(LandingSettings(root=str(tmp_path), fsync=False))
    spooled = SpooledSink(small, SpoolSettings(dir=str(tmp_path), fsync=False))
    assert batch_bytes_limit([landing]) == DEFAULT_MAX_BATCH_BYTES
    assert batch_bytes_limit([landing, spooled]) == small.max_batch_bytes < DEFAULT_MAX_BATCH_BYTES
    assert Batcher(max_envelopes=1, max_age_s=1.0, on_batch=print).max_bytes == DEFAULT_MAX_BATCH_BYTES


def test_the_extractor_bounds_its_batches_by_its_kafka_sinks_configured_limit(tmp_path: object) -> None:
    sink = KafkaSink(KafkaSettings(max_request_bytes=300 << 10))
    spooled = SpooledSink(sink, SpoolSettings(dir=str(tmp_path), fsync=False))
    extractor = Extractor(load_settings({}, environ={}), [spooled])
    assert extractor.batcher.max_bytes == sink.max_batch_bytes == (300 << 10) - (64 << 10)
