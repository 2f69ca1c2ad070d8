"""The extractor benchmark's latency reads each exchange's own trade time from landed frames."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from infra.bench.extractor import trade_latencies_ms

T0_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z

FRAMES = {
    "binance": '{"stream":"btcusdt@trade","data":{"e":"trade","E":1767225600124,"s":"BTCUSDT","t":1,'
    '"p":"1","q":"1","T":1767225600123,"m":true,"M":true}}',
    "kucoin": '{"type":"message","topic":"/market/match:BTC-USDT","subject":"trade.l3match","data":'
    '{"symbol":"BTC-USDT","sequence":"1","tradeId":"1","side":"buy","price":"1","size":"1",'
    '"time":"1767225600123000000"}}',
    "coinbase": '{"type":"match","trade_id":1,"side":"sell","size":"1","price":"1","product_id":"BTC-USD",'
    '"sequence":1,"time":"2026-01-01T00:00:00.123000Z"}',
}


def _land(root: Path, exchange: str, channel: str, envelopes: list[dict]) -> None:
    folder = root / "raw" / f"exchange={exchange}" / f"channel={channel}" / "dt=2026-01-01" / "hour=00"
    folder.mkdir(parents=True)
    (folder / "a.jsonl.gz").write_bytes(
        gzip.compress("".join(json.dumps(e) + "\n" for e in envelopes).encode())
    )


@pytest.mark.parametrize("exchange", sorted(FRAMES))
def test_latency_is_receive_time_minus_the_exchanges_trade_time(exchange: str, tmp_path: Path) -> None:
    def env(recv_ms: int, source: str = "ws") -> dict:
        return {"payload": FRAMES[exchange], "recv_ts_ns": T0_NS + recv_ms * 1_000_000, "source": source}

    # 2 ms and 7 ms after the trade; a REST page and a frame outside the window do not count.
    _land(tmp_path, exchange, "trades", [env(125), env(130), env(140, "rest"), env(900)])
    _land(tmp_path, exchange, "ticker", [env(126)])
    got = trade_latencies_ms(tmp_path, exchange, since_ns=T0_NS, until_ns=T0_NS + 500_000_000)
    assert got == [2.0, 7.0]
