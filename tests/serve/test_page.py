"""The page in headless Chromium (Debian's ``chromium``), driven over the DevTools protocol: the live
table fills from the stream and its prices change (flashing), and the candlestick chart draws the
bars of a delta-rs test lake. A screenshot is kept in ``var/test-artifacts/serve-page.png``."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect

from lake.serve.app import create_app
from lake.serve.feeds import LandingTail
from lake.serve.settings import ServeSettings
from lake.tables import Lake, LakeSettings
from tests.conftest import seconds
from tests.serve.helpers import Chromium, Page, running_server, write_table
from tests.serve.test_rest import bar, quote
from tests.serve.test_stream import book_ticker, kucoin_level1, landing_writer, start_feed, trade

ROOT = Path(__file__).parents[2]
ARTIFACTS = ROOT / "var" / "test-artifacts"
BARS = 90


def _bars() -> list[dict[str, Any]]:
    """A deterministic random walk of 1-minute bars (binance BTC-USDT)."""
    rng = random.Random(16)
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    rows, price = [], Decimal("100")
    for i in range(BARS):
        o = price
        c = o + Decimal(rng.randint(-40, 40)) / 100
        hi = max(o, c) + Decimal(rng.randint(0, 25)) / 100
        lo = min(o, c) - Decimal(rng.randint(0, 25)) / 100
        v = Decimal(rng.randint(5, 60)) / 10
        rows.append(bar("binance", "BTC-USDT", start + timedelta(minutes=i), str(o), str(hi), str(lo), str(c),
                        str(v), str(c * v), 3 + i % 4))  # fmt: skip
        price = c
    for r in rows:
        r["bar_date"] = date(2026, 12, 1)
    return rows


PROBE = """document.querySelector('#chart-title') && JSON.stringify({
  updates: window.cryptolake ? window.cryptolake.updates : -1,
  bars: window.cryptolake ? window.cryptolake.chartBars : -1,
  canvases: document.querySelectorAll('#chart canvas').length,
  rows: [...document.querySelectorAll('#prices tbody tr')]
    .map(r => [...r.cells].slice(0, 3).map(c => c.textContent)),
  flashes: document.querySelectorAll('#prices td.flash-up, #prices td.flash-down').length,
  title: document.querySelector('#chart-title').textContent,
  status: document.querySelector('#status').textContent,
})"""


def test_page_shows_changing_live_prices_and_draws_the_candlestick_chart(tmp_path: Path):
    lake = Lake(LakeSettings(root=str(tmp_path / "lake")))
    write_table(lake, "gold.ohlcv_1m", _bars())
    now = datetime.now(UTC)
    quotes = [
        quote("binance", "BTC-USDT", "101", "102", "1", now),
        quote("kucoin", "BTC-USDT", "101.5", "102.5", "1", now),
    ]
    write_table(lake, "gold.l1_latest", quotes)
    writer = landing_writer(tmp_path / "landing")
    staging = tmp_path / "landing" / "_staging"
    app = create_app(
        ServeSettings(poll_s=0.05, web_dir=str(ROOT / ".cache" / "web")),
        lake,
        source_factory=lambda: LandingTail(staging),
        source_name="landing",
    )
    stop = threading.Event()

    def ticking() -> None:  # binance and kucoin BTC-USDT move every 0.3 s; binance ETH-USDT once
        rng = random.Random(7)
        writer.write("binance", "l1", [("ETHUSDT", book_ticker("ETHUSDT", "3000", "3001"))])
        i = 0
        while not stop.is_set():
            i += 1
            mid = Decimal(100) + Decimal(rng.randint(-30, 30)) / 100
            writer.write("binance", "trades", [("BTCUSDT", trade("BTCUSDT", i, f"{100 + i % 7}.25"))])
            writer.write("binance", "l1", [("BTCUSDT", book_ticker("BTCUSDT", str(mid - 1), str(mid + 1)))])
            writer.write("kucoin", "l1", [("BTC-USDT", kucoin_level1("BTC-USDT", str(mid), str(mid + 2)))])
            stop.wait(0.3)

    browser = Chromium(tmp_path / "profile")
    try:
        with running_server(app) as host:
            start_feed(host, writer)
            ticker = threading.Thread(target=ticking, daemon=True)
            ticker.start()

            async def scenario() -> tuple[dict[str, Any], dict[str, Any], bytes]:
                async with connect(browser.page_ws, max_size=None) as ws:
                    page = Page(ws)
                    await page.call("Page.enable")
                    await page.call("Page.navigate", url=f"http://{host}/")
                    deadline = time.monotonic() + seconds(30)
                    first, probe = None, {}
                    while time.monotonic() < deadline:
                        text = await page.js(PROBE)
                        probe = json.loads(text) if text else {}  # null while the page loads
                        if not probe:
                            await asyncio.sleep(0.2)
                            continue
                        if first is None and probe["updates"] > 0 and probe["bars"] == BARS:
                            first = probe
                        elif first is not None and probe["updates"] >= first["updates"] + 3:
                            shot = await page.call("Page.captureScreenshot", format="png")
                            return first, probe, base64.b64decode(shot["data"])
                        await asyncio.sleep(0.2)
                    raise AssertionError(f"the page did not fill and update in time: {probe}")

            first, later, png = asyncio.run(scenario())
    finally:
        stop.set()
        browser.close()
        writer.close()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "serve-page.png").write_bytes(png)
    assert png.startswith(b"\x89PNG")
    assert later["bars"] == BARS and later["canvases"] > 0  # lightweight-charts drew into its canvases
    assert later["title"] == "BTC-USDT · binance · 1m"
    assert later["status"] == "live"
    markets = {(r[0], r[1]) for r in later["rows"]}
    assert markets == {("BTC-USDT", "binance"), ("BTC-USDT", "kucoin"), ("ETH-USDT", "binance")}
    price = {(r[0], r[1]): r[2] for r in later["rows"]}[("BTC-USDT", "binance")]
    assert re.fullmatch(r"10[0-6]\.2500", price), price  # the last landed trade, 4 decimals
    assert later["updates"] > first["updates"] and later["flashes"] > 0  # prices changed, cells flashed
