"""Simulator -> extractor (duplicates, dropped connections, REST gap fill) -> bronze -> silver ->
``python -m spark_jobs.gold``: the bars, composite bars and daily volumes equal the ones computed
here in Python decimals from the simulator's ground truth (its trades, priced by the documented
USDT rule), a second run of the job writes nothing, and the served page draws those bars in headless
Chromium (screenshot in ``var/test-artifacts/serve-page-gold.png``)."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from decimal import Decimal as D
from pathlib import Path
from types import SimpleNamespace

import pytest
from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from websockets.asyncio.client import connect

from lake.serve.app import create_app
from lake.serve.settings import ServeSettings
from lake.tables import GOLD_EXCHANGE_VOLUME_DAILY, GOLD_OHLCV_1M, GOLD_OHLCV_1M_COMPOSITE, Lake
from spark_jobs import gold, pipeline
from spark_jobs.runtime import BronzeSettings, SilverSettings
from tests.conftest import seconds
from tests.extractors.test_end_to_end import read_landing, rest_trades, ws_trades
from tests.serve.helpers import Chromium, Page, running_server
from tests.spark.test_gold import Trade, assert_gold_equals_reference
from tests.spark.test_silver_against_truth import (
    CARRY_MINUTES,
    EXCHANGES,
    _event_ts,
    _extract,
    assert_silver_trades_equal_the_truth,
    expected_pricing,
    reference_rates,
)

pytestmark = pytest.mark.spark

ROOT = Path(__file__).parents[2]
#: What the page shows of its chart (``window.cryptolake`` is the page's own state).
CHART = """window.cryptolake && document.querySelector('#chart-title') && JSON.stringify({
  bars: window.cryptolake.chartBars,
  canvases: document.querySelectorAll('#chart canvas').length,
  title: document.querySelector('#chart-title').textContent,
})"""


def _versions(spark: SparkSession, lake: Lake) -> list[int]:
    names = (GOLD_OHLCV_1M.name, GOLD_OHLCV_1M_COMPOSITE.name, GOLD_EXCHANGE_VOLUME_DAILY.name)
    return [DeltaTable.forPath(spark, lake.path(n)).history(1).collect()[0]["version"] for n in names]


def _page_chart(lake: Lake, tmp_path: Path, exchange: str, symbol: str) -> tuple[dict[str, object], bytes]:
    """Serve ``lake``, open the page in headless Chromium, choose the market in its picker (this
    lake has bars only, no quotes to preselect one) and wait for the chart; its probe and a PNG."""
    app = create_app(ServeSettings(web_dir=str(ROOT / ".cache" / "web")), lake)
    value = json.dumps(f"{exchange}|{symbol}")
    choose = f"""(() => {{ const s = document.querySelector('#market'), v = {value};
      if (![...s.options].some(o => o.value === v)) s.add(new Option(v, v));
      s.value = v; s.dispatchEvent(new Event('change')); }})()"""
    browser = Chromium(tmp_path / "profile")
    try:
        with running_server(app) as host:

            async def scenario() -> tuple[dict[str, object], bytes]:
                async with connect(browser.page_ws, max_size=None) as ws:
                    page = Page(ws)
                    await page.call("Page.enable")
                    await page.call("Page.navigate", url=f"http://{host}/")
                    deadline, probe = time.monotonic() + seconds(30), {}
                    while time.monotonic() < deadline:
                        text = await page.js(CHART)
                        probe = json.loads(text) if text else {}
                        if probe and probe["bars"] > 0:
                            await asyncio.sleep(0.5)  # let the chart paint before the screenshot
                            shot = await page.call("Page.captureScreenshot", format="png")
                            return probe, base64.b64decode(shot["data"])
                        if probe:
                            await page.js(choose)
                        await asyncio.sleep(0.3)
                    raise AssertionError(f"the chart did not draw in time: {probe}")

            return asyncio.run(scenario())
    finally:
        browser.close()


@pytest.mark.timeout(int(seconds(2400)))
def test_gold_equals_bars_computed_from_the_simulators_ground_truth(
    spark: SparkSession, lake: Lake, tmp_path: Path
) -> None:
    landing = tmp_path / "landing"
    truth = asyncio.run(_extract(landing))
    landed: set[tuple[str, str, int]] = set()
    envelopes = read_landing(landing)
    for e in envelopes:
        if e.channel == "trades":
            found = ws_trades(e.exchange, e.payload) if e.source == "ws" else rest_trades(e.exchange, e)
            landed |= {(e.exchange, symbol, trade_id) for symbol, trade_id, _, _ in found}
    assert any(e.source == "rest" and e.channel == "trades" for e in envelopes), "no gap fill to dedupe"
    pipeline.run(
        spark,
        lake=lake,
        bronze=BronzeSettings(source="landing", landing_root=str(landing)),
        silver=SilverSettings(rate_carry_minutes=CARRY_MINUTES),
        timeout_s=seconds(900),
        jobs=("silver_markets", "silver_trades"),
    )
    silver = assert_silver_trades_equal_the_truth(spark, lake, truth, landed, at_least=300)

    settings = gold.GoldSettings(streams=("bars",), rate_carry_minutes=CARRY_MINUTES)
    gold.run(spark, lake=lake, settings=settings, timeout_s=seconds(900))

    # The reference: the simulator's trades (those that landed), priced by the documented rule.
    rates = reference_rates(silver)
    trades = []
    for exchange in EXCHANGES:
        for r in truth[exchange]:
            if (exchange, r.native_symbol, int(r.trade_id)) not in landed:
                continue
            at = _event_ts(r)
            row = SimpleNamespace(quote=r.quote, event_ts=at, price=D(r.price), size=D(r.size))
            rate = expected_pricing(row, rates)[0]
            trades.append(Trade(exchange, r.symbol, r.trade_id, D(r.price), D(r.size), at, rate))
    assert_gold_equals_reference(spark, lake, trades)

    # A second run (nothing new in silver; the re-pricing commits looked at again): nothing written.
    before = _versions(spark, lake)
    gold.run(spark, lake=lake, settings=settings, timeout_s=seconds(900))
    assert _versions(spark, lake) == before

    # The page's chart draws these bars: the market with the most, served from this lake.
    per_market = spark.read.format("delta").load(lake.path(GOLD_OHLCV_1M.name)).groupBy("exchange", "symbol")
    top = per_market.count().orderBy(F.desc("count"), "exchange", "symbol").first()
    assert top is not None
    probe, png = _page_chart(lake, tmp_path, top["exchange"], top["symbol"])
    (ROOT / "var" / "test-artifacts").mkdir(parents=True, exist_ok=True)
    (ROOT / "var" / "test-artifacts" / "serve-page-gold.png").write_bytes(png)
    assert png.startswith(b"\x89PNG")
    assert probe == {"bars": min(int(top["count"]), 500), "canvases": probe["canvases"],
                     "title": f"{top['symbol']} · {top['exchange']} · 1m"}  # fmt: skip
    assert int(str(probe["canvases"])) > 0  # lightweight-charts drew into its canvases
