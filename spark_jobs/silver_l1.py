"""silver_l1: ``bronze.raw_events`` (channel ``l1``) -> ``silver.l1_quotes``.

Binance ``@bookTicker`` (no event time: the receive time stands in), KuCoin ``/spotMarket/level1``
and Coinbase REST ``book?level=1`` become one best bid/ask row per ``(exchange, symbol, event_ts,
sequence)`` with ``spread_bps`` = (ask - bid) x 10000 / mid and ``mid_usdt`` = mid x rate. A crossed
book (bid > ask) or a non-positive price is quarantined.

    spark-submit spark_jobs/silver_l1.py --lake-root lake-data --trigger availableNow
"""

from __future__ import annotations

import sys

from lake.tables import SILVER_L1_QUOTES
from spark_jobs.parsers import parse_l1
from spark_jobs.silver import PricedJob, PricedTable
from spark_jobs.usdt import l1_mid_and_spread

JOB = PricedJob(
    query="silver_l1",
    channel="l1",
    target=PricedTable(name=SILVER_L1_QUOTES.name, first=(("recv_ts", True), ("_raw", True))),
    parse=parse_l1,
    finish=l1_mid_and_spread,
)


if __name__ == "__main__":
    sys.exit(JOB.main(sys.argv[1:], description=__doc__ or ""))
