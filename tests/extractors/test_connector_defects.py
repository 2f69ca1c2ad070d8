"""Issue 11 defects in retry decisions and the exchange modules, each pinned by a test.

- ``is_retryable`` believes an error's own ``retryable`` verdict (a REST 4xx is not retried).
- The all-market ticker firehose is subscribed by one connection across all shards.
- Coinbase REST paths escape the wire-supplied product id.
- Coinbase and KuCoin tickers (which carry the inside quote and its sizes) land as ``ticker``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import aiohttp
import pytest
from websockets.exceptions import ConnectionClosedError

from extractors.backoff import FatalError, RetryableError, is_retryable
from extractors.exchanges import binance, coinbase, kucoin
from extractors.exchanges.base import Connector, Frame, RestRequest, takes_firehose
from extractors.metrics import Metrics
from extractors.rest import RestError, RestResponse
from extractors.runner import ExchangeRunner
from extractors.settings import load_settings
from extractors.sinks.base import SinkError

FIXTURES = Path(__file__).parent.parent / "fixtures"

# --- is_retryable ---------------------------------------------------------------------------------

RETRY_TABLE: list[tuple[str, BaseException, bool]] = [
    ("REST 400 bad request", RestError("HTTP 400", status=400, retryable=False), False),
    ("REST 403 forbidden", RestError("HTTP 403", status=403, retryable=False), False),
    ("REST 404 not found", RestError("HTTP 404", status=404, retryable=False), False),
    ("REST gave up after 5xx retries", RestError("gave up", status=503), True),
    ("REST network trouble, no status", RestError("gave up: ClientError"), True),
    ("sink outage", SinkError("s3 down"), True),
    ("sink rejects for good", SinkError("no bucket", retryable=False), False),
    ("fatal configuration", FatalError("bad config"), False),
    ("protocol hiccup", RetryableError("no welcome"), True),
    ("websocket closed", ConnectionClosedError(None, None), True),
    ("timeout", TimeoutError(), True),
    ("connection reset", ConnectionResetError(), True),
    ("aiohttp connection error", aiohttp.ClientConnectionError(), True),
    ("a bug", KeyError("symbol"), False),
    ("another bug", ValueError("bad literal"), False),
]


@pytest.mark.parametrize(
    ("exc", "expected"), [(e, r) for _, e, r in RETRY_TABLE], ids=[n for n, _, _ in RETRY_TABLE]
)
def test_is_retryable_follows_the_errors_own_verdict_and_never_retries_a_rest_4xx(
    exc: BaseException, expected: bool
) -> None:
    assert is_retryable(exc) is expected


def _runner(connector: Connector, *, shard: str = "0/1") -> ExchangeRunner:
    settings = load_settings(
        {"extractors": {"shard": shard, "backoff_initial_s": 0.01, "backoff_max_s": 0.02}}, environ={}
    )
    return ExchangeRunner(
        connector,
        settings,
        emit=lambda envelope: None,
        metrics=Metrics(),
        http=None,  # type: ignore[arg-type]
        stop=asyncio.Event(),
    )


def _discovery_failing_with(status: int, *, times: int) -> tuple[ExchangeRunner, list[int]]:
    """A Binance runner whose discovery answers HTTP ``status`` ``times`` times, then a market."""
    runner = _runner(binance)
    calls: list[int] = []
    body = json.dumps(
        {"symbols": [{"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT"}]}
    )

    async def call(request: RestRequest) -> RestResponse:
        calls.append(status)
        if len(calls) <= times:
            raise RestError(f"HTTP {status}", status=status, retryable=False)  # as RestClient raises a 4xx
        return RestResponse(200, body, {}, 0)

    runner.rest.call = call  # type: ignore[method-assign]
    return runner, calls


def test_discovery_fails_at_once_on_a_rest_400_instead_of_retrying_forever() -> None:
    runner, calls = _discovery_failing_with(400, times=1_000_000)
    with pytest.raises(RestError, match="HTTP 400"):
        asyncio.run(asyncio.wait_for(runner.discovery.discover_until_ok(), 10))
    assert len(calls) == 1


@pytest.mark.parametrize("status", [403, 404])
def test_discovery_retries_a_rest_403_or_404_with_backoff(status: int) -> None:
    """The runner's 403/404 branch (a geo-block or a moved endpoint may clear) was dead code while
    every RestError counted as retryable; it is what keeps these retrying now."""
    runner, calls = _discovery_failing_with(status, times=2)
    assert asyncio.run(asyncio.wait_for(runner.discovery.discover_until_ok(), 10)) == ["BTCUSDT"]
    assert len(calls) == 3


# --- the ticker firehose across shards ------------------------------------------------------------


def test_takes_firehose_only_on_the_first_connection_of_shard_zero() -> None:
    table = {
        ((0, 1), 0): True,
        ((0, 1), 1): False,
        ((0, 3), 0): True,
        ((1, 3), 0): False,
        ((2, 3), 0): False,
        ((2, 3), 4): False,
    }
    got = {(shard, i): takes_firehose(shard=shard, connection_index=i) for shard, i in table}
    assert got == table


FIREHOSE_TOPICS = {"binance": "!miniTicker@arr", "kucoin": "/market/ticker:all"}


def _subscribed(connector: Connector, messages: list[str]) -> list[str]:
    topics: list[str] = []
    for text in messages:
        doc = json.loads(text)
        topics += doc["params"] if connector is binance else [doc["topic"]]
    return topics


@pytest.mark.parametrize("connector", [binance, kucoin], ids=["binance", "kucoin"])
def test_n_shards_subscribe_the_ticker_firehose_exactly_once(connector: Connector) -> None:
    shards = 3
    firehoses = []
    for index in range(shards):
        runner = _runner(connector, shard=f"{index}/{shards}")
        settings = runner.settings
        for markets in (["AAA-X", "BBB-X"], ["CCC-X"]):
            conn = runner.discovery.add_connection(markets)
            topics = _subscribed(
                connector,
                connector.subscribe_messages(conn.markets, settings.channels, firehose=conn.firehose),
            )
            firehoses += [(index, conn.index) for t in topics if t == FIREHOSE_TOPICS[connector.NAME]]
    assert firehoses == [(0, 0)]


# --- Coinbase REST paths ------------------------------------------------------------------------

HOSTILE = "../../accounts?x=1#frag/%2e"


def test_coinbase_rest_paths_keep_a_hostile_product_id_inside_one_escaped_segment() -> None:
    escaped = "..%2F..%2Faccounts%3Fx%3D1%23frag%2F%252e"
    gap = coinbase.gap_fill_request(HOSTILE, after_id=10, until_id=20)
    assert gap.path == f"/products/{escaped}/trades"
    assert gap.params == (("limit", "1000"), ("after", "20"))
    assert coinbase.recent_trades_request(HOSTILE).path == f"/products/{escaped}/trades"
    book = coinbase.l1_poll_request(HOSTILE)
    assert book is not None and book.path == f"/products/{escaped}/book"
    assert coinbase.recent_trades_request("BTC-USD").path == "/products/BTC-USD/trades"


def test_coinbase_next_page_request_names_the_same_hostile_product_once_escaped() -> None:
    request = coinbase.gap_fill_request(HOSTILE, after_id=0, until_id=5000)
    rows = [
        {"trade_id": i, "side": "buy", "size": "1", "price": "1", "time": "t"} for i in range(4000, 3000, -1)
    ]
    page = coinbase.parse_trades_page(
        json.dumps(rows), request=request, headers={"CB-AFTER": "3001"}, after_id=0, until_id=5000
    )
    assert page.next_request == RestRequest("GET", request.path, (("limit", "1000"), ("after", "3001")))


@pytest.mark.parametrize("symbol", ["", ".", ".."])
def test_coinbase_refuses_product_ids_that_an_http_client_would_resolve_away(symbol: str) -> None:
    with pytest.raises(ValueError):
        coinbase.recent_trades_request(symbol)


# --- tickers carry the inside quote with sizes and land as ticker -----------------------------------


def _first_line(path: Path) -> str:
    return path.read_text().splitlines()[0]


def test_coinbase_ticker_with_best_bid_ask_and_sizes_lands_as_ticker() -> None:
    text = _first_line(FIXTURES / "coinbase" / "ticker.jsonl")
    doc = json.loads(text)
    assert {"best_bid", "best_bid_size", "best_ask", "best_ask_size", "sequence"} <= set(doc)
    assert coinbase.classify(text) == Frame("data", "ticker", "ticker", "BTC-USD")


def test_kucoin_ticker_with_best_bid_ask_and_sizes_lands_as_ticker() -> None:
    text = _first_line(FIXTURES / "kucoin" / "ticker.jsonl")
    doc = json.loads(text)
    assert {"bestBid", "bestBidSize", "bestAsk", "bestAskSize", "sequence"} <= set(doc["data"])
    assert kucoin.classify(text) == Frame("data", "ticker", "/market/ticker:all", "ETH-USDT")
