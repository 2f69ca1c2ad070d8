"""silver_l1: ``bronze.raw_events`` (channels ``l1`` and ``ticker``) -> ``silver.l1_quotes``.

Binance ``@bookTicker`` (no event time: the receive time stands in), KuCoin ``/spotMarket/level1``
and Coinbase REST ``book?level=1`` (channel ``l1``), and the best bid/ask of Coinbase and KuCoin
tickers (channel ``ticker``: Coinbase has no public websocket L1, so its active products are
quoted only there) become one best bid/ask row per ``(exchange, symbol, event_ts, sequence)``
with ``source_channel`` saying which channel it came from, ``spread_bps`` = (ask - bid) x 10000 /
mid and ``mid_usdt`` = mid x rate. A crossed book (bid > ask) or a non-positive price is
quarantined.

    spark-submit spark_jobs/silver_l1.py --lake-root lake-data --trigger availableNow
"""

from __future__ import annotations

import sys

from lake.tables import SILVER_L1_QUOTES
from spark_jobs.parsers import parse_l1
from spark_jobs.silver import PricedJob, PricedTable
from spark_jobs.usdt import l1_mid_and_spread

#: The bronze channels this job reads (:func:`~spark_jobs.parsers.parse_l1` handles both): ``l1``
#: and ``ticker`` (the quotes derived from Coinbase/KuCoin tickers).
CHANNELS: tuple[str, ...] = ("l1", "ticker")

JOB = PricedJob(
    query="silver_l1",
    channels=CHANNELS,
    target=PricedTable(name=SILVER_L1_QUOTES.name, first=(("recv_ts", True), ("_raw", True))),
    parse=parse_l1,
    finish=l1_mid_and_spread,
)


if __name__ == "__main__":
    sys.exit(JOB.main(sys.argv[1:], description=__doc__ or ""))
