"""The REST API over a small lake written with delta-rs, through a real server on loopback: every
answer is compared, value for value, with what the test wrote (or computed from it)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from lake.serve.app import ROUTES, create_app
from lake.serve.openapi import spec
from lake.serve.settings import ServeSettings
from lake.tables import Lake, LakeSettings
from tests.serve.helpers import running_server, write_table

D = Decimal
Q18 = D("1e-18")
DAY = date(2026, 12, 1)


def ts(hh: int, mm: int, ss: int = 0, us: int = 0) -> datetime:
    return datetime(2026, 12, 1, hh, mm, ss, us, tzinfo=UTC)


def bar(
    ex: str, sym: str, minute: datetime, o: str, h: str, lo: str, c: str, v: str, qv: str, n: int, **kw: Any
):
    base, quote = sym.split("-")
    rate = D(kw.pop("rate", "1")) if kw.get("priced", True) else None
    kw.pop("priced", None)
    row = {
        "exchange": ex,
        "symbol": sym,
        "base": base,
        "quote": quote,
        "minute": minute,
        "open": D(o),
        "high": D(h),
        "low": D(lo),
        "close": D(c),
        "volume": D(v),
        "quote_volume": D(qv),
        "vwap": (D(qv) / D(v)).quantize(Q18),
        "trade_count": n,
        "first_trade_ts": minute.replace(second=1),
        "last_trade_ts": minute.replace(second=59),
        "bar_date": DAY,
        "updated_ts": ts(13, 0),
    }
    if rate is not None:
        row |= {f"{k}_usdt": D(row[k]) * rate for k in ("open", "high", "low", "close")}
        row["volume_usdt"] = D(qv) * rate
    return row


BARS = [
    bar("binance", "BTC-USDT", ts(12, 0), "100", "105", "99", "104", "2", "204", 10),
    bar("binance", "BTC-USDT", ts(12, 1), "104", "110", "103", "108", "1.5", "160.5", 7),
    bar("binance", "BTC-USDT", ts(12, 7), "108", "109", "101", "102.25", "0.25", "25.5", 3),
    bar("kucoin", "BTC-USDT", ts(12, 7), "107", "108", "106", "107.5", "1", "107.5", 2),
    bar("coinbase", "BTC-USD", ts(12, 6), "100", "101", "99", "100.5", "3", "300", 4, rate="1.01"),
    # unpriced minute: the 5m bucket holding it has no USDT values
    bar("coinbase", "BTC-USD", ts(12, 8), "100.5", "102", "100", "101", "1", "101", 1, priced=False),
]


def quote(ex: str, sym: str, bid: str, ask: str, rate: str | None, at: datetime) -> dict[str, Any]:
    base, q = sym.split("-")
    mid_usdt = (D(bid) + D(ask)) / 2 * D(rate) if rate else None
    return {
        "exchange": ex,
        "symbol": sym,
        "base": base,
        "quote": q,
        "bid_price": D(bid),
        "bid_size": D("1.5"),
        "ask_price": D(ask),
        "ask_size": D("0.25"),
        "sequence": 7,
        "event_ts": at,
        "recv_ts": at,
        "source_channel": "l1",
        "usdt_rate": D(rate) if rate else None,
        "mid_usdt": mid_usdt,
        "spread_bps": ((D(ask) - D(bid)) / D(bid) * 10000).quantize(Q18),
        "usdt_method": "identity" if q == "USDT" else "direct",
    }


QUOTES = [
    quote("binance", "BTC-USDT", "101.5", "102.5", "1", ts(12, 8, 30)),
    quote("kucoin", "BTC-USDT", "103", "104", "1", ts(12, 8, 31)),
    quote("coinbase", "BTC-USD", "100", "101", "1.01", ts(12, 8, 32, 250_000)),
    quote("binance", "ETH-USDT", "3000", "3001", "1", ts(12, 8, 33)),
]

VOLUMES = [
    {
        "exchange": "binance",
        "trade_date": DAY,
        "symbol": "BTC-USDT",
        "volume_usdt": D("390"),
        "trade_count": 20,
    },
    {
        "exchange": "binance",
        "trade_date": DAY,
        "symbol": "ETH-USDT",
        "volume_usdt": D("210"),
        "trade_count": 5,
    },
    {
        "exchange": "kucoin",
        "trade_date": DAY,
        "symbol": "BTC-USDT",
        "volume_usdt": D("107.5"),
        "trade_count": 2,
    },
    {
        "exchange": "coinbase",
        "trade_date": DAY,
        "symbol": "BTC-USD",
        "volume_usdt": D("303"),
        "trade_count": 5,
    },
    {"exchange": "binance", "trade_date": date(2026, 11, 30), "symbol": "BTC-USDT", "volume_usdt": D("1")},
]


def _dq(table_name: str, batch: int, success: bool, failed: int, at: datetime) -> dict[str, Any]:
    return {
        "suite": f"{table_name}_suite",
        "table": table_name,
        "batch_id": batch,
        "success": success,
        "evaluated": 100,
        "failed": failed,
        "quarantined": failed,
        "expectations": [],
        "engine": "spark",
        "checked_ts": at,
        "checked_date": DAY,
    }


def _volume_row(r: dict[str, Any]) -> dict[str, Any]:
    base, q = r["symbol"].split("-")
    defaults = {"volume": D("1"), "volume_quote": D("1"), "trade_count": 1, "unpriced_trade_count": 0}
    return {**defaults, "base": base, "quote": q, "updated_ts": ts(13, 0), "venue_share": None, **r}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Lake]]:
    lake = Lake(LakeSettings(root=str(tmp_path_factory.mktemp("serve") / "lake")))
    write_table(lake, "gold.ohlcv_1m", BARS)
    write_table(lake, "gold.l1_latest", QUOTES)
    write_table(lake, "gold.exchange_volume_daily", [_volume_row(r) for r in VOLUMES])
    write_table(
        lake,
        "gold.dq_results",
        [
            _dq("silver.trades", 1, True, 0, ts(12, 0)),
            _dq("silver.trades", 2, False, 3, ts(12, 5)),
            _dq("silver.l1_quotes", 1, False, 1, ts(12, 0)),
            _dq("silver.l1_quotes", 2, True, 0, ts(12, 6)),
        ],
    )
    settings = ServeSettings(cache_check_s=0.0, web_dir=str(Path(__file__).parents[2] / ".cache" / "web"))
    with running_server(create_app(settings, lake)) as host:
        yield host, lake


def get(host: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{host}{path}", timeout=30) as r:
        return json.loads(r.read())


def status_of(host: str, path: str) -> tuple[int, Any]:
    try:
        return 200, get(host, path)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def text(value: Decimal) -> str:
    """The server's decimal text: exact, no trailing zeros."""
    s = format(value, "f")
    return s.rstrip("0").rstrip(".") if "." in s else s


def test_latest_gives_each_markets_last_close_and_newest_quote_native_and_usdt(served):
    host, _ = served
    rows = get(host, "/api/latest")
    got = {(r["exchange"], r["symbol"]): r for r in rows}
    assert sorted(got) == [
        ("binance", "BTC-USDT"),
        ("binance", "ETH-USDT"),
        ("coinbase", "BTC-USD"),
        ("kucoin", "BTC-USDT"),
    ]
    cb = got[("coinbase", "BTC-USD")]
    assert cb["last_price"] == "101"  # the 12:08 bar's close
    assert cb["last_usdt"] is None  # that bar is unpriced
    assert cb["last_trade_ts"] == "2026-12-01T12:08:59.000000Z"
    assert (cb["bid_price"], cb["ask_price"], cb["bid_size"], cb["ask_size"]) == ("100", "101", "1.5", "0.25")
    assert cb["mid_usdt"] == text(D("100.5") * D("1.01"))
    assert cb["quote_ts"] == "2026-12-01T12:08:32.250000Z"
    bn = got[("binance", "BTC-USDT")]
    assert (bn["last_price"], bn["last_usdt"]) == ("102.25", "102.25")
    eth = got[("binance", "ETH-USDT")]
    assert eth["last_price"] is None and eth["bid_price"] == "3000"  # a quote without bars
    only = get(host, "/api/latest?exchange=kucoin&symbol=BTC-USDT")
    assert [(r["exchange"], r["symbol"], r["last_price"], r["bid_price"]) for r in only] == [
        ("kucoin", "BTC-USDT", "107.5", "103")
    ]


def test_bars_1m_are_the_stored_bars_of_the_range_oldest_first(served):
    host, _ = served
    rows = get(host, "/api/bars?exchange=binance&symbol=BTC-USDT&interval=1m")
    want = [b for b in BARS if b["exchange"] == "binance"]
    assert [r["bucket_ts"] for r in rows] == [b["minute"].strftime("%Y-%m-%dT%H:%M:%S.000000Z") for b in want]
    assert [r["time"] for r in rows] == [int(b["minute"].timestamp()) for b in want]
    for r, b in zip(rows, want, strict=True):
        for k in ("open", "high", "low", "close", "volume", "quote_volume", "vwap", "close_usdt"):
            assert D(r[k]) == b[k], k
        assert r["trade_count"] == b["trade_count"]
    ranged = get(
        host, "/api/bars?exchange=binance&symbol=BTC-USDT&start=2026-12-01T12:01:00Z&end=2026-12-01T12:07:00Z"
    )
    assert [r["bucket_ts"] for r in ranged] == ["2026-12-01T12:01:00.000000Z"]
    newest = get(host, "/api/bars?exchange=binance&symbol=BTC-USDT&limit=1")
    assert [r["close"] for r in newest] == ["102.25"]


def test_bars_5m_roll_up_the_minutes_of_each_bucket(served):
    host, _ = served
    rows = get(host, "/api/bars?exchange=binance&symbol=BTC-USDT&interval=5m")
    summary = [(r["bucket_ts"], r["open"], r["high"], r["low"], r["close"], r["volume"], r["quote_volume"],
                r["trade_count"], r["minutes"]) for r in rows]  # fmt: skip
    assert summary == [
        ("2026-12-01T12:00:00.000000Z", "100", "110", "99", "108", "3.5", "364.5", 17, 2),
        ("2026-12-01T12:05:00.000000Z", "108", "109", "101", "102.25", "0.25", "25.5", 3, 1),
    ]
    assert rows[0]["vwap"] == pytest.approx(364.5 / 3.5)
    # a bucket with an unpriced minute has no USDT values; one fully priced keeps them
    cb = get(host, "/api/bars?exchange=coinbase&symbol=BTC-USD&interval=5m")
    assert [(r["bucket_ts"], r["close"], r["close_usdt"], r["volume_usdt"]) for r in cb] == [
        ("2026-12-01T12:05:00.000000Z", "101", None, None)
    ]
    hourly = get(host, "/api/bars?exchange=coinbase&symbol=BTC-USD&interval=1h&start=2026-12-01T12:30:00Z")
    # start is rounded down to the hour, so the bucket is whole
    assert [(r["bucket_ts"], r["open"], r["close"], r["volume"], r["minutes"]) for r in hourly] == [
        ("2026-12-01T12:00:00.000000Z", "100", "101", "4", 2)
    ]


def test_spread_of_a_base_compares_venues_in_usdt_exactly(served):
    host, _ = served
    got = get(host, "/api/spread?base=BTC")
    mids = {
        "binance:BTC-USDT": D("102"),
        "kucoin:BTC-USDT": D("103.5"),
        "coinbase:BTC-USD": D("100.5") * D("1.01"),
    }
    low, high = min(mids.values()), max(mids.values())
    assert got["venues"] == 3 and got["unit"] == "USDT"
    assert (got["low_mid_exchange"], got["high_mid_exchange"]) == ("coinbase:BTC-USD", "kucoin:BTC-USDT")
    assert D(got["low_mid"]) == low and D(got["high_mid"]) == high
    assert got["mid_spread_bps"] == format(((high - low) * 10000 / low).quantize(D("1e-6")), "f")
    # best bid 103 (kucoin), best ask 101 * 1.01 = 102.01 (coinbase): the books cross
    assert (got["best_bid_exchange"], got["best_ask_exchange"]) == ("kucoin:BTC-USDT", "coinbase:BTC-USD")
    assert D(got["best_ask"]) == D("102.01")
    assert got["cross_bps"] == format(
        ((D("103") - D("102.01")) * 10000 / D("102.01")).quantize(D("1e-6")), "f"
    )
    one = get(host, "/api/spread?symbol=BTC-USDT")
    assert (one["venues"], one["unit"], one["low_mid"], one["high_mid"]) == (2, "quote", "102", "103.5")
    assert status_of(host, "/api/spread")[0] == 400


def test_volume_share_is_each_venues_part_of_the_days_usdt_volume(served):
    host, _ = served
    got = get(host, "/api/volume-share")
    assert got["trade_date"] == "2026-12-01"
    total = D("390") + D("210") + D("107.5") + D("303")
    assert D(got["volume_usdt"]) == total
    shares = {r["exchange"]: (D(r["volume_usdt"]), D(r["share"]), r["trade_count"]) for r in got["exchanges"]}
    q = D("1e-18")
    assert shares == {
        "binance": (D("600"), (D("600") / total).quantize(q), 25),
        "coinbase": (D("303"), (D("303") / total).quantize(q), 5),
        "kucoin": (D("107.5"), (D("107.5") / total).quantize(q), 2),
    }
    btc = get(host, "/api/volume-share?symbol=BTC-USDT&date=2026-11-30")
    assert [(r["exchange"], r["share"]) for r in btc["exchanges"]] == [("binance", "1")]
    assert status_of(host, "/api/volume-share?date=yesterday")[0] == 400


def test_quality_reports_each_suites_batches_and_the_freshness_per_exchange(served):
    host, _ = served
    got = get(host, "/api/quality")
    assert got["missing"] == []
    dq = [
        (r["table"], r["batches"], r["failed_batches"], r["failed"], r["last_success"])
        for r in got["quality"]
    ]
    assert dq == [("silver.l1_quotes", 2, 1, 1, True), ("silver.trades", 2, 1, 3, False)]
    fresh = {r["exchange"]: (r["newest_quote_ts"], r["newest_trade_ts"]) for r in got["freshness"]}
    assert fresh == {
        "binance": ("2026-12-01T12:08:33.000000Z", "2026-12-01T12:07:59.000000Z"),
        "coinbase": ("2026-12-01T12:08:32.250000Z", "2026-12-01T12:08:59.000000Z"),
        "kucoin": ("2026-12-01T12:08:31.000000Z", "2026-12-01T12:07:59.000000Z"),
    }


def test_a_new_table_version_is_answered_at_once_and_a_missing_table_is_503(tmp_path):
    lake = Lake(LakeSettings(root=str(tmp_path / "lake")))
    with running_server(create_app(ServeSettings(cache_check_s=0.0), lake)) as host:
        code, body = status_of(host, "/api/spread?base=SOL")
        assert code == 503 and "gold.l1_latest" in body["error"]
        empty = get(host, "/api/quality")
        assert (empty["missing"], empty["quality"], empty["freshness"]) == (
            ["gold.dq_results", "gold.l1_latest"],
            None,
            None,
        )
        write_table(lake, "gold.dq_results", [])  # a table with no data files yet
        assert get(host, "/api/quality")["quality"] == []
        write_table(lake, "gold.l1_latest", [quote("binance", "SOL-USDT", "150", "151", "1", ts(12, 9))])
        first = get(host, "/api/spread?base=SOL")
        assert (first["venues"], first["low_mid"]) == (1, "150.5")
        write_table(lake, "gold.l1_latest", [quote("kucoin", "SOL-USDT", "152", "153", "1", ts(12, 9))])
        second = get(host, "/api/spread?base=SOL")  # the cached answer was for the old version
        assert (second["venues"], second["low_mid"], second["high_mid"]) == (2, "150.5", "152.5")


def test_openapi_describes_exactly_the_routes_and_parameters_served(served):
    host, _ = served
    doc = get(host, "/openapi.json")
    assert doc == json.loads(json.dumps(spec()))
    served_paths = {r.path for r in ROUTES if r.path.startswith(("/api/", "/ws/", "/sse/"))}
    assert set(doc["paths"]) == served_paths
    source = Path(__file__).parents[2].joinpath("lake", "serve", "app.py").read_text()
    for path, item in doc["paths"].items():
        for p in item["get"]["parameters"]:
            assert f'"{p["name"]}"' in source, (path, p["name"])  # the handler reads it
