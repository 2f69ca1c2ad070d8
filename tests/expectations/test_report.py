"""``python -m expectations report``: the page, rendered by headless Chromium, shows the numbers of
small known tables; it loads nothing from anywhere; a screenshot is kept in test-artifacts/.

The three input tables are real Delta tables at their lake paths with the registry's schemas,
written with delta-rs (the report reads them with delta-rs and DuckDB, no JVM; a Spark session
would cost this test ~40 s of its ~45 s)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from datetime import UTC, date, datetime
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest

from expectations.__main__ import main
from lake.tables import GOLD_COMPLETENESS_1M, GOLD_DQ_RESULTS, SILVER_QUARANTINE, Lake
from tests.conftest import seconds
from tests.delta_rs import write_rows

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
#: A real GX result (``ExpectationSuiteValidationResult.to_json_dict()``) of a 4-row silver.trades
#: batch with a negative price and an unknown side, as ``gold.dq_results.details_json`` keeps it.
GX_RESULT = Path(__file__).resolve().parents[1] / "fixtures" / "expectations" / "gx_result_silver_trades.json"
D1, D2, D3 = date(2026, 12, 1), date(2026, 12, 2), date(2026, 12, 3)


def _expectation(name: str, evaluated: int, failed: int) -> dict[str, object]:
    return {
        "name": name,
        "type": "expect_column_values_to_be_between",
        "severity": "critical",
        "evaluated": evaluated,
        "failed": failed,
        "success": failed == 0,
    }


def _dq(table: str, batch: int, day: date, evaluated: int, failures: dict[str, int]) -> dict[str, object]:
    failed = sum(failures.values())
    return {
        "suite": table,
        "table": table,
        "batch_id": batch,
        "success": failed == 0,
        "evaluated": evaluated,
        "failed": failed,
        "quarantined": failed,
        "expectations": [_expectation(n, evaluated, f) for n, f in failures.items()],
        "engine": "spark",
        "checked_ts": datetime(day.year, day.month, day.day, 12, tzinfo=UTC),
        "checked_date": day,
    }


def _write_tables(lake: Lake) -> None:
    dq = [
        _dq("silver.trades", 1, D1, 100, {"price_positive": 0, "size_positive": 0}),
        _dq("silver.trades", 2, D1, 100, {"price_positive": 7, "size_positive": 2}),
        _dq("silver.trades", 3, D2, 50, {"price_positive": 0, "size_positive": 0}),
        _dq("silver.l1_quotes", 1, D2, 40, {"bid_at_most_ask": 3}),
        {
            **_dq("silver.trades", 7, D3, 4, {"price_positive": 1, "side_buy_or_sell": 1}),
            "engine": "gx",
            "details_json": GX_RESULT.read_text(),
        },
    ]
    write_rows(lake, GOLD_DQ_RESULTS, dq)
    at = datetime(2026, 12, 1, 12, tzinfo=UTC)
    quarantine = [
        ("silver.trades", "binance", "{}", "expectation:price_positive", 2, at),
        ("silver.trades", "binance", '{"a":1}', "expectation:price_positive", 2, at),
        ("silver.trades", "kucoin", "{}", "unknown_market", 2, at),
        ("silver.l1_quotes", "coinbase", "{}", "expectation:bid_at_most_ask", 1, at),
    ]
    write_rows(lake, SILVER_QUARANTINE, quarantine)
    one, half, r = Decimal(1), Decimal("0.5"), Decimal("1.0000000000")
    m = [datetime(2026, 12, 1, 12, i, tzinfo=UTC) for i in range(3)]
    completeness = [
        ("binance", "BTC-USDT", "BTCUSDT", m[0], 10, one, 10, one, r, r, False, at, at),
        (
            "binance",
            "BTC-USDT",
            "BTCUSDT",
            m[1],
            5,
            half,
            10,
            one,
            Decimal("0.5"),
            Decimal("0.5"),
            True,
            at,
            at,
        ),
        ("binance", "BTC-USDT", "BTCUSDT", m[2], 10, one, 10, one, r, r, False, at, at),
        (
            "kucoin",
            "BTC-USDT",
            "BTC-USDT",
            m[0],
            4,
            Decimal(3),
            None,
            Decimal(4),
            None,
            Decimal("0.75"),
            False,
            at,
            at,
        ),
    ]
    write_rows(lake, GOLD_COMPLETENESS_1M, completeness)


class _Cells(HTMLParser):
    """Collects ``data-metric`` cell texts under their row's data attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.metrics: dict[str, str] = {}
        self._metric: str | None = None
        self.tags: set[str] = set()
        self.polylines: dict[str, int] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        self.tags.add(tag)
        if tag == "tr" and any(k.startswith("data-") for k in a):
            self.rows.append({k[5:]: v for k, v in a.items() if k.startswith("data-")})
        if tag == "polyline":
            self.polylines[a["data-exchange"]] = int(a["data-points"])
        self._metric = a.get("data-metric")

    def handle_data(self, data: str) -> None:
        if self._metric:
            target = (
                self.rows[-1] if self.rows and self._metric not in ("generated", "quarantine-total") else None
            )
            (target if target is not None else self.metrics)[self._metric] = data.strip()
            self._metric = None


def _row(cells: _Cells, **match: str) -> dict[str, str]:
    found = [r for r in cells.rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, cells.rows)
    return found[0]


def _chromium() -> list[str]:
    binary = shutil.which("chromium")
    assert binary, "chromium is missing: `make test` installs it (infra/setup.sh chromium)"
    return [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]


def _png_pixels(data: bytes) -> tuple[int, int, int, list[bytes]]:
    """Width, height, bytes per pixel and the unfiltered RGB(A) rows of an 8-bit PNG (what Chromium
    writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        header = chunk if kind == b"IHDR" else header
        idat += chunk if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6)
    bpp = 3 if colour == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - bpp] if i >= bpp else 0
            up, corner = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


def test_the_report_rendered_in_chromium_shows_pass_rates_failures_quarantine_and_completeness(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_tables(lake)
    monkeypatch.setenv("CRYPTOLAKE_LAKE_ROOT", lake.settings.root)
    out = tmp_path / "report" / "index.html"
    assert main(["report", "--out", str(out)]) == 0
    page = out.read_text()
    # Self-contained: no script, no stylesheet or image link, no URL but the SVG namespace.
    assert not re.search(r"<script|<link|<img|@import|url\(", page)
    assert set(re.findall(r"https?://[^\s\"')]+", page)) == {"http://www.w3.org/2000/svg"}

    run = subprocess.run(
        [*_chromium(), "--dump-dom", out.as_uri()],
        capture_output=True,
        text=True,
        timeout=seconds(90),
        check=True,
    )
    cells = _Cells()
    cells.feed(run.stdout)
    assert {"svg", "polyline", "table"} <= cells.tags

    # Pass rate per table and day: day 1 of silver.trades had 2 batches, one failing (9 of 100 rows).
    d1 = _row(cells, table="silver.trades", day=str(D1))
    assert (d1["batches"], d1["passed"], d1["pass-rate"]) == ("2", "1", "50.0 %")
    assert (d1["evaluated"], d1["failed"], d1["row-pass-rate"]) == ("200", "9", "95.5 %")
    d2 = _row(cells, table="silver.trades", day=str(D2))
    assert (d2["batches"], d2["pass-rate"], d2["row-pass-rate"]) == ("1", "100.0 %", "100.0 %")
    q = _row(cells, table="silver.l1_quotes", day=str(D2))
    assert (q["pass-rate"], q["failed"], q["row-pass-rate"]) == ("0.0 %", "3", "92.5 %")
    d3 = _row(cells, table="silver.trades", day=str(D3))
    assert (d3["batches"], d3["passed"], d3["failed"], d3["row-pass-rate"]) == ("1", "0", "2", "50.0 %")
    # Top failing expectations, most failed rows first.
    top = [(r["table"], r["expectation"], r["failed"]) for r in cells.rows if "expectation" in r]
    assert top == [
        ("silver.trades", "price_positive", "8"),
        ("silver.l1_quotes", "bid_at_most_ask", "3"),
        ("silver.trades", "size_positive", "2"),
        ("silver.trades", "side_buy_or_sell", "1"),
    ]
    # Quarantine counts and reasons.
    assert cells.metrics["quarantine-total"] == "4"
    assert _row(cells, table="silver.trades", reason="expectation:price_positive")["rows"] == "2"
    assert _row(cells, table="silver.trades", reason="unknown_market")["rows"] == "1"
    # Completeness per exchange: binance 25 of 30 trades, volume 2.5 of 3; one short minute, in a gap.
    b = _row(cells, exchange="binance")
    assert (b["minutes"], b["complete"], b["short"], b["in-gap"]) == ("3", "2", "1", "1")
    assert (b["trades"], b["exchange-trades"], b["volume-completeness"], b["worst-minute"]) == (
        "25",
        "30",
        "83.3 %",
        "50.0 %",
    )
    k = _row(cells, exchange="kucoin")
    assert (k["minutes"], k["exchange-trades"], k["volume-completeness"]) == ("1", "n/a", "75.0 %")
    assert cells.polylines == {"binance": 3, "kucoin": 1}

    # GX's own Data Docs, built from the suites and the GX result kept in gold.dq_results.
    link = re.search(r'<a data-docs href="([^"]+)"', page)
    assert link is not None
    site = out.parent / link.group(1)
    assert site.name == "index.html" and site.is_file()
    (validation,) = (site.parent / "validations" / "silver" / "trades").rglob("*.html")
    shown = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", validation.read_text()))
    # The unknown side of the fixture's batch, as GX renders an unexpected value.
    assert "1 unexpected values found. 25% of 4 total rows. Sampled Unexpected Values hold" in shown
    assert {p.stem for p in (site.parent / "expectations").rglob("*.html")} >= {"trades", "l1_quotes"}

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dq-report.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [*_chromium(), f"--screenshot={shot}", "--window-size=1100,1500", out.as_uri()],
        capture_output=True,
        timeout=seconds(90),
        check=True,
    )
    width, height, bpp, rows = _png_pixels(shot.read_bytes())
    assert (width, height) == (1100, 1500)
    # The chart was drawn: the binance legend's colour (#1f77b4) is on screen.
    blue = bytes((0x1F, 0x77, 0xB4))
    assert any(row[i : i + 3] == blue for row in rows for i in range(0, len(row), bpp))
