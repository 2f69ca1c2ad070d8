"""Backoff, batcher, settings, sharding and the runner's frame handling, without a network."""

from __future__ import annotations

import asyncio
import json
import random
import zlib
from pathlib import Path

import aiohttp
import pytest
from websockets.exceptions import ConnectionClosedError

from extractors.backoff import Backoff, FatalError, RetryableError, is_retryable
from extractors.batcher import Batcher
from extractors.connection import Connection
from extractors.envelope import Batch, Envelope
from extractors.exchanges import binance, kucoin
from extractors.exchanges.base import Market
from extractors.metrics import Metrics
from extractors.runner import ExchangeRunner, ResumeFile
from extractors.settings import ExchangeSettings, load_settings, parse_shard, select_markets, shard_of
from extractors.sinks.base import SinkError
from extractors.tracking import FillRequest
from lake.config import ConfigError


def test_backoff_starts_random_grows_geometrically_is_capped_and_resets() -> None:
    backoff = Backoff(initial=1.0, cap=8.0, rng=random.Random(3))
    delays = [next(backoff) for _ in range(7)]
    assert 0 <= delays[0] <= 1.0
    for attempt, delay in enumerate(delays[1:], start=1):
        ceiling = min(8.0, 2.0**attempt)
        assert ceiling / 2 <= delay <= ceiling
    assert max(delays) <= 8.0 and delays[-1] >= 4.0
    backoff.reset()
    assert next(backoff) <= 1.0


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=2.0, cap=1.0)


def test_is_retryable_separates_network_trouble_from_bugs_and_fatal_errors() -> None:
    assert is_retryable(ConnectionClosedError(None, None))
    assert is_retryable(TimeoutError())
    assert is_retryable(ConnectionResetError())
    assert is_retryable(aiohttp.ClientConnectionError())
    assert is_retryable(RetryableError("no welcome"))
    assert is_retryable(SinkError("s3 down"))
    assert not is_retryable(SinkError("no bucket", retryable=False))
    assert not is_retryable(FatalError("bad config"))
    assert not is_retryable(KeyError("bug"))


def env(i: int, *, channel: str = "trades", symbol: str = "BTCUSDT", exchange: str = "binance") -> Envelope:
    return Envelope(
        exchange=exchange,
        channel=channel,  # type: ignore[arg-type]
        stream="s",
        payload=f'{{"i":{i}}}',
        recv_ts_ns=1_700_000_000_000_000_000 + i,
        conn_id="c",
        conn_seq=i,
        source="ws",
        native_symbol=symbol,
    )


def test_batcher_flushes_at_size_keeps_order_and_increases_batch_ids() -> None:
    out: list[Batch] = []
    batcher = Batcher(max_envelopes=3, max_age_s=60, on_batch=out.append)
    for i in range(7):
        batcher.add(env(i))
    assert [[e.conn_seq for e in b.envelopes] for b in out] == [[0, 1, 2], [3, 4, 5]]
    assert out[0].key == "trades" and out[0].topic == "raw.binance.trades"
    assert out[0].batch_id < out[1].batch_id
    assert batcher.buffered == 1
    batcher.flush_all()
    assert [e.conn_seq for e in out[2].envelopes] == [6]


def test_batcher_flushes_by_age_per_key() -> None:
    now = [0.0]
    out: list[Batch] = []
    batcher = Batcher(max_envelopes=100, max_age_s=1.0, on_batch=out.append, clock=lambda: now[0])
    batcher.add(env(1, channel="trades"))
    now[0] = 0.6
    batcher.add(env(2, channel="l1"))
    now[0] = 1.0
    assert batcher.flush_due() == 1
    assert [(b.channel, len(b.envelopes)) for b in out] == [("trades", 1)]
    now[0] = 1.6
    batcher.flush_due()
    assert [(b.channel, len(b.envelopes)) for b in out] == [("trades", 1), ("l1", 1)]


def test_batcher_splits_firehose_channels_per_symbol() -> None:
    out: list[Batch] = []
    batcher = Batcher(
        max_envelopes=2,
        max_age_s=60,
        on_batch=out.append,
        per_symbol_channels={"kucoin": frozenset({"ticker"})},
    )
    for i, symbol in enumerate(["A-USDT", "B-USDT", "A-USDT"]):
        batcher.add(env(i, channel="ticker", symbol=symbol, exchange="kucoin"))
    assert [(b.key, [e.native_symbol for e in b.envelopes]) for b in out] == [
        ("A-USDT", ["A-USDT", "A-USDT"])
    ]


def test_settings_from_yaml_env_and_flags_with_per_exchange_sections() -> None:
    config = {
        "extractors": {
            "exchanges": ["binance", "kucoin"],
            "batch_max_envelopes": 50,
            "binance": {"rest_url": "http://127.0.0.1:1", "quote_assets": ["USDT"]},
        }
    }
    environ = {
        "CRYPTOLAKE_EXTRACTORS_BATCH_MAX_AGE_S": "0.5",
        "CRYPTOLAKE_EXTRACTORS_KUCOIN_MARKETS": "BTC-USDT,ETH-USDT",
    }
    settings = load_settings(config, environ=environ, overrides={"shard": "1/3", "sinks": None})
    assert settings.extractors.exchanges == ("binance", "kucoin")
    assert settings.extractors.batch_max_envelopes == 50 and settings.extractors.batch_max_age_s == 0.5
    assert settings.extractors.shard == "1/3" and settings.extractors.sinks == ("landing",)
    assert settings.exchange("binance") == ExchangeSettings(
        rest_url="http://127.0.0.1:1", quote_assets=("USDT",)
    )
    assert settings.exchange("kucoin").markets == ("BTC-USDT", "ETH-USDT")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"extractors": {"batch_size": 5}}, "extractors.batch_size"),
        ({"extractors": {"binance": {"rest": "x"}}}, "extractors_binance.rest"),
        ({"extractors": {"exchanges": ["ftx"]}}, "ftx"),
        ({"extractors": {"shard": "2/2"}}, "0 <= i < n"),
        ({"extractors": {"channels": ["depth"]}}, "subset"),
    ],
)
def test_bad_settings_name_the_key(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(config, environ={})


def test_shards_split_markets_stably_without_overlap() -> None:
    markets = [Market(f"S{i}USDT", f"S{i}", "USDT", True) for i in range(200)]
    markets.append(Market("HALTEDUSDT", "HALTED", "USDT", False))
    markets.append(Market("ETHBTC", "ETH", "BTC", True))
    shards = [select_markets(markets, ExchangeSettings(), shard=(i, 3)) for i in range(3)]
    assert sorted(s for shard in shards for s in shard) == sorted(
        m.native_symbol for m in markets if m.trading
    )
    assert all(len(s) > 40 for s in shards)
    # The documented contract: CRC-32 of the native symbol, the same in every process and version.
    assert shard_of("BTCUSDT", 1000) == zlib.crc32(b"BTCUSDT") % 1000
    assert select_markets(markets, ExchangeSettings(quote_assets=("btc",)), shard=(0, 1)) == ["ETHBTC"]
    assert select_markets(
        markets, ExchangeSettings(markets=("S1USDT", "NOPE"), max_markets=5), shard=(0, 1)
    ) == ["S1USDT"]
    assert parse_shard("1/2") == (1, 2)


def make_runner(connector: object, emitted: list[Envelope], **extractors: object) -> ExchangeRunner:
    settings = load_settings({"extractors": {"max_frame_bytes": 2000, **extractors}}, environ={})
    return ExchangeRunner(
        connector,  # type: ignore[arg-type]
        settings,
        emit=emitted.append,
        metrics=Metrics(),
        http=None,  # type: ignore[arg-type]
        stop=asyncio.Event(),
    )


def run_baselines(runner: ExchangeRunner, symbols: list[str]) -> None:
    """As after the first subscription: these markets' baseline fills are done."""
    runner.tracker.subscribed(symbols)
    while (job := runner.tracker.take_fill()) is not None:
        runner.tracker.fill_done(job)


def test_runner_lands_data_counts_control_and_dead_letters_bad_frames_without_dropping_the_connection() -> (
    None
):
    big = '{"stream":"btcusdt@bookTicker","data":{"s":"BTCUSDT","b":"1","a":"2","pad":"' + "x" * 3000 + '"}}'

    async def scenario() -> tuple[list[Envelope], ExchangeRunner, Connection]:
        emitted: list[Envelope] = []
        runner = make_runner(binance, emitted)
        conn = Connection(index=0, markets=["BTCUSDT"], firehose=True, conn_id="binance-0-x")
        runner._conn_of["BTCUSDT"] = conn
        runner.tracker.track(["BTCUSDT"])
        run_baselines(runner, ["BTCUSDT"])
        trade = '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":10,"p":"1.5","q":"2"}}'
        frames: list[str | bytes] = [
            '{"result":null,"id":1}',
            trade,
            trade,
            trade.replace('"t":10', '"t":14'),
            '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCU',
            '{"stream":"btcusdt@depth","data":{}}',
            b"\xff\xfe",
            big,
            '{"code":2,"msg":"Invalid request","id":5}',
        ]
        for frame in frames:
            runner.connections.on_message(conn, frame)
        return emitted, runner, conn

    emitted, runner, conn = asyncio.run(scenario())
    assert [(e.channel, e.conn_seq, e.error) for e in emitted] == [
        ("trades", 2, None),
        ("trades", 3, None),
        ("trades", 4, None),
        ("deadletter", 5, "invalid_json"),
        ("deadletter", 6, "unknown_shape: unknown stream 'btcusdt@depth'"),
        ("deadletter", 7, "invalid_utf8"),
        ("deadletter", 8, f"oversized: {len(big)} chars"),
        ("deadletter", 9, "exchange_error: code 2: Invalid request"),
    ]
    assert (
        emitted[0].payload
        == '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":10,"p":"1.5","q":"2"}}'
    )
    assert all(e.conn_id == "binance-0-x" and e.source == "ws" for e in emitted)
    assert conn.acks == 1 and runner.last_ids == {"BTCUSDT": 14}
    # The id jump 10 -> 14 asks for a fill between the two; the truncated frame re-checks the
    # market, merged into that one queued fill (from the older point, up to now).
    assert (
        runner.m.value("cryptolake_extractor_gaps_detected_total", exchange="binance", reason="id_jump") == 1
    )
    assert (
        runner.m.value("cryptolake_extractor_gaps_detected_total", exchange="binance", reason="bad_frame")
        == 1
    )
    assert runner.tracker.take_fill() == FillRequest("BTCUSDT", 10, None, "id_jump")
    assert runner.tracker.take_fill() is None
    assert runner.m.value("cryptolake_extractor_duplicate_trades_total", exchange="binance") == 1


def test_kucoin_sequences_are_not_gaps_and_recorded_gaps_are_narrowed_to_what_was_seen() -> None:
    async def scenario() -> list[Envelope]:
        emitted: list[Envelope] = []
        runner = make_runner(kucoin, emitted)
        conn = Connection(index=0, markets=["BTC-USDT"], firehose=True, conn_id="k")
        runner._conn_of["BTC-USDT"] = conn
        runner.tracker.track(["BTC-USDT"])
        run_baselines(runner, ["BTC-USDT"])
        runner.tracker.opened(["BTC-USDT"])
        for seq in (100, 103, 109):
            frame = {
                "type": "message",
                "topic": "/market/match:BTC-USDT",
                "data": {"symbol": "BTC-USDT", "sequence": str(seq)},
            }
            runner.connections.on_message(conn, json.dumps(frame))
        assert runner.tracker.queued == 0
        # A reconnect fill from 50 whose REST page starts at 130: lost between 50 and the first
        # trade this connection delivered (100), not up to the page.
        job = FillRequest("BTC-USDT", 50, None, "reconnect")
        runner.gaps.handle(runner.tracker.fill_page(job, (130, 140), (50, 130)))
        return emitted

    emitted = asyncio.run(scenario())
    gap = emitted[-1]
    assert gap.channel == "gaps" and json.loads(gap.payload) == {
        "native_symbol": "BTC-USDT",
        "after_id": 50,
        "before_id": 100,
        "reason": "reconnect",
    }


def test_malformed_frames_naming_no_market_queue_at_most_one_fill_per_market() -> None:
    async def scenario() -> ExchangeRunner:
        runner = make_runner(binance, [])
        markets = ["AUSDT", "BUSDT", "CUSDT"]
        conn = Connection(index=0, markets=list(markets), firehose=True, conn_id="binance-0-x")
        runner.tracker.track(markets)
        run_baselines(runner, markets)
        for i, symbol in enumerate(markets):
            runner._conn_of[symbol] = conn
            runner.connections.on_message(
                conn, f'{{"stream":"x@trade","data":{{"e":"trade","s":"{symbol}","t":{i}}}}}'
            )
        for _ in range(500):
            runner.connections.on_message(conn, '{"stream":"x@trade","data":{"e":"tra')  # names no market
        return runner

    runner = asyncio.run(scenario())
    assert runner.tracker.queued == 3
    jobs = [runner.tracker.take_fill() for _ in range(4)]
    assert jobs == [
        FillRequest("AUSDT", 0, None, "bad_frame"),
        FillRequest("BUSDT", 1, None, "bad_frame"),
        FillRequest("CUSDT", 2, None, "bad_frame"),
        None,
    ]


def test_resume_file_round_trips_replaces_atomically_and_ignores_an_unreadable_file(tmp_path: Path) -> None:
    state = ResumeFile(tmp_path / "state", exchange="kucoin", shard=(1, 3))
    assert state.path == tmp_path / "state" / "kucoin-shard-1-of-3.json"
    assert state.load() == {}  # first start
    state.save({"ETH-USDT": 7, "BTC-USDT": 12_840_019_911_847_401})
    state.save({"ETH-USDT": 9, "BTC-USDT": 12_840_019_911_847_402})
    assert state.load() == {"ETH-USDT": 9, "BTC-USDT": 12_840_019_911_847_402}
    assert json.loads(state.path.read_text())["shard"] == "1/3"
    assert sorted(p.name for p in state.path.parent.iterdir()) == [state.path.name]  # no temp left
    state.path.write_text('{"markets": {"BTC-US')  # torn by hand: not by save
    assert state.load() == {}
