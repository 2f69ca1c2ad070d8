"""silver_trades: ``bronze.raw_events`` (channel ``trades``) -> ``silver.trades`` and ``silver.usdt_rates``.

Websocket trades and REST gap-fill pages of Binance, KuCoin and Coinbase become one row per trade,
keyed ``(exchange, symbol, trade_id)``: exact decimal price and size, taker side, ``event_ts`` from
the exchange, ``recv_ts`` from the envelope, the canonical symbol from ``silver.markets`` and the
USDT columns (see :mod:`spark_jobs.usdt`). Each micro-batch also refreshes the USDT rates of the
minutes it touched. Rejected rows (unknown market, bad numbers, ...) go to ``silver.quarantine``.

    spark-submit spark_jobs/silver_trades.py --lake-root lake-data --trigger availableNow
"""

from __future__ import annotations

import sys

from lake.tables import SILVER_TRADES
from spark_jobs.parsers import parse_trades
from spark_jobs.silver import PricedJob, PricedTable

JOB = PricedJob(
    query="silver_trades",
    channels=("trades",),
    #: First received wins; between a websocket row and its REST gap-fill twin, the websocket row.
    target=PricedTable(
        name=SILVER_TRADES.name,
        first=(("recv_ts", True), ("source = 'ws'", False), ("_raw", True)),
        computes_rates=True,
    ),
    parse=parse_trades,
)


if __name__ == "__main__":
    sys.exit(JOB.main(sys.argv[1:], description=__doc__ or ""))
