"""silver_tickers: ``bronze.raw_events`` (channel ``ticker``) -> ``silver.tickers``.

Binance mini tickers (``!miniTicker@arr``, exploded), KuCoin ``/market/ticker`` and Coinbase
``ticker`` frames become one row per ``(exchange, symbol, event_ts, sequence)`` with exact decimals,
the canonical symbol and ``price_usdt`` (last x rate) / ``notional_usdt`` (24 h quote volume x rate).
``sequence`` is the exchange's own ticker sequence (Coinbase, KuCoin; ``NULL`` for Binance): one
Coinbase taker order sweeping several levels gives several tickers with the same ``time``, and
each of those states is a row. Rows with the same key are the same ticker state delivered more
than once (or, for Binance, two pushes with one event time): the latest received one is kept.
Rates come from ``silver.usdt_rates`` (written by silver_trades); rows priced before their rate
existed are re-priced by later batches.

    spark-submit spark_jobs/silver_tickers.py --lake-root lake-data --trigger availableNow
"""

from __future__ import annotations

import sys

from lake.tables import SILVER_TICKERS
from spark_jobs.parsers import parse_tickers
from spark_jobs.silver import PricedJob, PricedTable

#: Of the rows sharing a key, the first in this order is kept: the latest state (highest
#: sequence, then the latest received; the item text breaks exact ties deterministically).
LATEST_FIRST: tuple[tuple[str, bool], ...] = (("sequence", False), ("recv_ts", False), ("_raw", True))

JOB = PricedJob(
    query="silver_tickers",
    channels=("ticker",),
    target=PricedTable(name=SILVER_TICKERS.name, first=LATEST_FIRST),
    parse=parse_tickers,
)


if __name__ == "__main__":
    sys.exit(JOB.main(sys.argv[1:], description=__doc__ or ""))
