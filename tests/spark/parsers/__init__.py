"""Each exchange's Spark parsing against documented payload shapes, one test module per exchange."""

from __future__ import annotations

from decimal import Decimal

from pyspark.sql.types import LongType, StringType, TimestampType

from lake.tables import PRICE
from tests.spark.envelopes import schema_of

#: :func:`spark_jobs.parsers.parse_l1` output without ``_raw``.
L1_SCHEMA = schema_of(
    ("exchange", StringType()),
    ("native_symbol", StringType()),
    ("bid_price", PRICE),
    ("bid_size", PRICE),
    ("ask_price", PRICE),
    ("ask_size", PRICE),
    ("sequence", LongType()),
    ("event_ts", TimestampType()),
    ("recv_ts", TimestampType()),
    ("source_channel", StringType()),
    ("_error", StringType()),
)


def bps(bid: str, ask: str) -> Decimal:
    """The spread in basis points as ``silver.l1`` computes it (mid to 18 places, 6 places)."""
    mid = ((Decimal(bid) + Decimal(ask)) / 2).quantize(Decimal("1e-18"))
    return ((Decimal(ask) - Decimal(bid)) * 10000 / mid).quantize(Decimal("1e-6"))
