"""Local exchange simulator: Binance, KuCoin, Coinbase Exchange, Kraken and Bybit public spot market data.

Each exchange gets its own HTTP + websocket server on 127.0.0.1 (one port each), speaking the
wire protocol documented in ``/work/shared/exchanges.md`` closely enough that an extractor
configured with the simulator's base URLs cannot tell it from the real exchange. Markets are
seeded and reproducible, prices follow one shared USD random walk per asset, and every trade
emitted is recorded in a ground-truth log.

Python API (stable)::

    async with ExchangeSimulator(exchanges=("binance", "kucoin", "coinbase"), symbols=50,
                                 rate=200, seed=7, truth_path=None, faults=None) as sim:
        sim.urls["binance"].rest    # "http://127.0.0.1:P"  (GET /api/v3/...)
        sim.urls["binance"].ws      # "ws://127.0.0.1:P"    (+ /ws/<stream> or /stream?streams=a/b)
        sim.urls["kucoin"].rest     # "http://127.0.0.1:P"  (POST /api/v1/bullet-public gives the ws endpoint)
        sim.urls["kucoin"].ws       # "ws://127.0.0.1:P/"   (+ ?token=..&connectId=..)
        sim.urls["coinbase"].rest   # "http://127.0.0.1:P"  (GET /products ...)
        sim.urls["coinbase"].ws     # "ws://127.0.0.1:P"    (the feed; send a subscribe)
        sim.urls["kraken"].rest     # "http://127.0.0.1:P"  (GET /0/public/...)
        sim.urls["kraken"].ws       # "ws://127.0.0.1:P"    (websocket v2; send a subscribe)
        sim.urls["bybit"].ws        # "ws://127.0.0.1:P"    (v5 spot stream, also at /v5/public/spot)
        sim.truth.records("binance", "BTCUSDT", delivered=True)   # list[TruthRecord]
        sim.inject("binance", "close_after", frames=10)            # see faults.py for all faults
        sim.delist("binance", "ETHBTC"); sim.halt(...); sim.resume(...)
        sim.list_market("kucoin", "NEW", "USDT", usd_price=2.5)    # -> "NEW-USDT"

``SimulatorThread(exchanges, **same_kwargs)`` runs it on a background thread for synchronous
code (``with SimulatorThread(symbols=10) as sim: ...``) with the same attributes and methods.
Options (``SimConfig``): ``rate`` trades/s per exchange (0 = as fast as possible), REST weight
budget/window, ping intervals and timeouts, incoming message limits, connection lifetime.

Ground-truth record fields (``TruthRecord``, and one JSON line each in ``truth_path``):
exchange, native_symbol, symbol (``BASE-QUOTE`` with the exchange's asset names), base, quote,
trade_id (string), price and size (strings exactly as sent), side (taker side ``buy``/``sell``),
ts_ms (event time, ms), ts_event (event time as the trade frame carries it), delivered (the trade
frame reached at least one subscriber intact), fault (the bad_trade kind that spoiled it, if any).

Faults (``sim.inject`` or ``POST /_sim/faults`` with ``{"fault": name, ...params}`` on each
exchange's port): close_after, stall, malformed, duplicate, reorder, no_pong, reject_subscribe,
rest_error, and the data faults bad_trade (negative_price, zero_size, future_ts) and crossed_book
— see :mod:`infra.exchange_sim.faults`. ``POST /_sim/markets`` with
``{"action": "delist"|"halt"|"resume", "symbol": ...}`` or ``{"action": "list", "base", "quote"}``
changes markets at runtime.

CLI: ``python -m infra.exchange_sim --exchanges binance,kucoin,coinbase,kraken --symbols 50 --rate 200
--seed 7 [--port 0] [--truth path.jsonl]``.
"""

from __future__ import annotations

from infra.exchange_sim.faults import Fault, FaultName
from infra.exchange_sim.server import SimConfig
from infra.exchange_sim.simulator import EXCHANGES, ExchangeSimulator, ExchangeUrls, SimulatorThread
from infra.exchange_sim.truth import GroundTruth, TruthRecord, read_truth_file

__all__ = [
    "EXCHANGES",
    "ExchangeSimulator",
    "ExchangeUrls",
    "Fault",
    "FaultName",
    "GroundTruth",
    "SimConfig",
    "SimulatorThread",
    "TruthRecord",
    "read_truth_file",
]
