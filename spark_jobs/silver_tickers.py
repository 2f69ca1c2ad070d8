"""silver_tickers: ``bronze.raw_events`` (channel ``ticker``) -> ``silver.tickers``.

Binance mini tickers (``!miniTicker@arr``, exploded), KuCoin ``/market/ticker`` and Coinbase
``ticker`` frames become one row per ``(exchange, symbol, event_ts)`` with exact decimals, the
canonical symbol and ``price_usdt`` (last x rate) / ``notional_usdt`` (24 h quote volume x rate).
Rates come from ``silver.usdt_rates`` (written by silver_trades); rows priced before their rate
existed are re-priced by later batches.

    spark-submit spark_jobs/silver_tickers.py --lake-root lake-data --trigger availableNow
"""

from __future__ import annotations

import sys

from lake.tables import SILVER_TICKERS
from spark_jobs.parsers import parse_tickers
from spark_jobs.silver import PricedJob, PricedTable

JOB = PricedJob(
    query="silver_tickers",
    channel="ticker",
    target=PricedTable(name=SILVER_TICKERS.name, first=(("recv_ts", True), ("_raw", True))),
    parse=parse_tickers,
)


if __name__ == "__main__":
    sys.exit(JOB.main(sys.argv[1:], description=__doc__ or ""))
