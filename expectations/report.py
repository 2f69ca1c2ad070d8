"""``make dq-report``: one self-contained HTML page about the lake's data quality.

Sections: pass rate per table and day (``gold.dq_results``), the expectations that failed most
rows, quarantine counts per table and reason (``silver.quarantine``), and completeness per
exchange against the exchanges' own candles (``gold.completeness_1m``) with an inline SVG chart.
The page has no script, no external stylesheet, font or image: it opens from disk with no server
and no network. Tables are read with DuckDB (no JVM); a missing table is a section that says so.

Numbers a test (or a reader's script) looks for carry ``data-*`` attributes: each row of a
section has ``data-table``/``data-day``/``data-exchange``..., each value cell ``data-metric``.

:func:`build_data_docs` also builds GX's own Data Docs site next to the page, from the suites and
the full GX results that ``gold.dq_results`` keeps (``engine = gx``, the result JSON in
``details_json``: the sampled batches, see ``gx_every_n_batches``). Spark-engine batches carry no
GX result, so they are not in it. Unlike the summary page, GX's pages load their CSS and
JavaScript from public CDNs.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from lake.sql import duckdb_connect
from lake.tables import GOLD_COMPLETENESS_1M, GOLD_DQ_RESULTS, SILVER_QUARANTINE, Lake

logger = logging.getLogger(__name__)

TABLES = (GOLD_DQ_RESULTS.name, SILVER_QUARANTINE.name, GOLD_COMPLETENESS_1M.name)
TOP_EXPECTATIONS = 10
#: One colour per exchange line in the chart (then cycled).
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

PASS_RATE_SQL = """
SELECT "table", checked_date AS day, count(*) AS batches, count(*) FILTER (WHERE success) AS passed,
       sum(evaluated) AS evaluated, sum(failed) AS failed, sum(quarantined) AS quarantined
FROM gold.dq_results GROUP BY 1, 2 ORDER BY 1, 2
"""
TOP_FAILING_SQL = f"""
SELECT "table", e.name AS expectation, sum(e.failed) AS failed, sum(e.evaluated) AS evaluated
FROM (SELECT "table", unnest(expectations) AS e FROM gold.dq_results)
GROUP BY 1, 2 HAVING sum(e.failed) > 0 ORDER BY 3 DESC, 1, 2 LIMIT {TOP_EXPECTATIONS}
"""
QUARANTINE_SQL = """
SELECT source_table, reason, count(*) AS rows, CAST(max(quarantined_ts) AS VARCHAR) AS last_ts
FROM silver.quarantine GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2
"""
COMPLETENESS_SQL = """
SELECT exchange, count(*) AS minutes, count(*) FILTER (WHERE volume_ratio = 1) AS complete,
       count(*) FILTER (WHERE volume_ratio < 1) AS short, count(*) FILTER (WHERE in_gap) AS in_gap,
       sum(trade_count) AS trades, sum(exchange_trade_count) AS exchange_trades,
       sum(volume) / nullif(sum(exchange_volume), 0) AS volume_ratio, min(volume_ratio) AS worst
FROM gold.completeness_1m GROUP BY 1 ORDER BY 1
"""
GX_RESULTS_SQL = """
SELECT suite, "table", batch_id, CAST(checked_ts AS VARCHAR), details_json FROM gold.dq_results
WHERE engine = 'gx' AND details_json IS NOT NULL ORDER BY checked_ts DESC LIMIT ?
"""
SERIES_SQL = """
SELECT exchange, minute, sum(volume) / nullif(sum(exchange_volume), 0) AS ratio
FROM gold.completeness_1m GROUP BY 1, 2 HAVING sum(exchange_volume) > 0 ORDER BY 1, 2
"""

_VIEWS_SQL = "SELECT schema_name, view_name FROM duckdb_views()"

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:70em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:.5em 0}th,td{padding:.25em .7em;border:1px solid #ddd;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child,td.text{text-align:left}
.bad{color:#b00020;font-weight:600}.ok{color:#1b5e20}.none{color:#777;font-style:italic}
svg text{font:11px system-ui,sans-serif}
"""


@dataclass(frozen=True)
class Section:
    title: str
    body: str


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def percent(part: int | Decimal | None, whole: int | Decimal | None) -> str:
    """``part / whole`` as a percentage with one decimal (``98.5 %``), ``n/a`` when whole is 0."""
    if not whole or part is None:
        return "n/a"
    return f"{Decimal(part) * 100 / Decimal(whole):.1f} %"


def _cell(metric: str, value: Any, *, css: str = "") -> str:
    cls = f' class="{css}"' if css else ""
    return f'<td data-metric="{metric}"{cls}>{_esc(value)}</td>'


def _table(headers: Sequence[str], rows: Sequence[str]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _missing(name: str) -> str:
    return f'<p class="none" data-missing="{_esc(name)}">{_esc(name)} has no rows yet.</p>'


def pass_rate_section(rows: Sequence[tuple[Any, ...]]) -> Section:
    out = []
    for table, day, batches, passed, evaluated, failed, quarantined in rows:
        rate = percent(passed, batches)
        out.append(
            f'<tr data-table="{_esc(table)}" data-day="{_esc(day)}"><td class="text">{_esc(table)}</td>'
            f'<td class="text">{_esc(day)}</td>'
            + _cell("batches", batches)
            + _cell("passed", passed)
            + _cell("pass-rate", rate, css="ok" if passed == batches else "bad")
            + _cell("evaluated", evaluated)
            + _cell("failed", failed)
            + _cell("row-pass-rate", percent(evaluated - failed, evaluated))
            + _cell("quarantined", quarantined)
            + "</tr>"
        )
    headers = (
        "table",
        "day",
        "batches",
        "passed",
        "pass rate",
        "rows",
        "failed",
        "rows passing",
        "quarantined",
    )
    body = _table(headers, out) if out else _missing(GOLD_DQ_RESULTS.name)
    return Section("Pass rate per table and day", body)


def top_failing_section(rows: Sequence[tuple[Any, ...]]) -> Section:
    out = [
        f'<tr data-table="{_esc(t)}" data-expectation="{_esc(name)}"><td class="text">{_esc(t)}</td>'
        f'<td class="text">{_esc(name)}</td>'
        + _cell("failed", failed)
        + _cell("evaluated", evaluated)
        + _cell("fail-rate", percent(failed, evaluated))
        + "</tr>"
        for t, name, failed, evaluated in rows
    ]
    body = _table(("table", "expectation", "rows failed", "rows judged", "share"), out) if out else ""
    return Section("Top failing expectations", body or '<p class="none">No expectation failed.</p>')


def quarantine_section(rows: Sequence[tuple[Any, ...]]) -> Section:
    out = [
        f'<tr data-table="{_esc(t)}" data-reason="{_esc(reason)}"><td class="text">{_esc(t)}</td>'
        f'<td class="text">{_esc(reason)}</td>'
        + _cell("rows", n)
        + f'<td class="text">{_esc(last)}</td></tr>'
        for t, reason, n, last in rows
    ]
    total = sum(r[2] for r in rows)
    lead = f'<p>Quarantined rows: <span data-metric="quarantine-total">{total}</span>.</p>'
    body = (
        lead + _table(("table", "reason", "rows", "last"), out) if out else _missing(SILVER_QUARANTINE.name)
    )
    return Section("Quarantine: counts and reasons", body)


def chart(series: dict[str, list[tuple[datetime, Decimal]]], *, width: int = 760, height: int = 240) -> str:
    """An inline SVG line chart of completeness (0-100 %) per exchange over minutes."""
    points = [p for values in series.values() for p in values]
    if not points:
        return ""
    left, right, top, bottom = 48, 110, 12, 28
    t0 = min(t for t, _ in points).timestamp()
    t1 = max(t for t, _ in points).timestamp()
    top_ratio = max(Decimal(1), max(r for _, r in points))

    def x(t: datetime) -> float:
        span = (t1 - t0) or 1.0
        return left + (t.timestamp() - t0) / span * (width - left - right)

    def y(r: Decimal) -> float:
        return top + (1 - float(r / top_ratio)) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img"']
    parts.append(' aria-label="completeness per exchange over time" data-chart="completeness">')
    for pct in (0, 50, 100):
        yy = y(Decimal(pct) / 100)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{pct} %</text>')
    first, last = min(t for t, _ in points), max(t for t, _ in points)
    for t, anchor in ((first, "start"), (last, "end")):
        label = t.strftime("%Y-%m-%d %H:%M")
        parts.append(f'<text x="{x(t):.1f}" y="{height - 8}" text-anchor="{anchor}">{label} UTC</text>')
    for i, (exchange, values) in enumerate(sorted(series.items())):
        colour = COLOURS[i % len(COLOURS)]
        coords = " ".join(f"{x(t):.1f},{y(r):.1f}" for t, r in values)
        parts.append(
            f'<polyline data-exchange="{_esc(exchange)}" data-points="{len(values)}" fill="none" '
            f'stroke="{colour}" stroke-width="1.5" points="{coords}"/>'
        )
        for t, r in values if len(values) == 1 else ():
            parts.append(f'<circle cx="{x(t):.1f}" cy="{y(r):.1f}" r="3" fill="{colour}"/>')
        ly = top + 14 * i + 8
        parts.append(f'<rect x="{width - right + 10}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{width - right + 24}" y="{ly + 1}">{_esc(exchange)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def completeness_section(
    rows: Sequence[tuple[Any, ...]], series: dict[str, list[tuple[datetime, Decimal]]]
) -> Section:
    out = []
    for exchange, minutes, complete, short, in_gap, trades, exchange_trades, ratio, worst in rows:
        out.append(
            f'<tr data-exchange="{_esc(exchange)}"><td class="text">{_esc(exchange)}</td>'
            + _cell("minutes", minutes)
            + _cell("complete", complete)
            + _cell("short", short, css="bad" if short else "")
            + _cell("in-gap", in_gap)
            + _cell("trades", trades)
            + _cell("exchange-trades", "n/a" if exchange_trades is None else exchange_trades)
            + _cell("volume-completeness", percent(ratio, 1))
            + _cell("worst-minute", percent(worst, 1))
            + "</tr>"
        )
    if not out:
        return Section("Completeness per exchange", _missing(GOLD_COMPLETENESS_1M.name))
    headers = (
        "exchange",
        "minutes",
        "complete (100 %)",
        "short",
        "in a recorded gap",
        "our trades",
        "exchange trades",
        "volume completeness",
        "worst minute",
    )
    note = (
        "<p>Our base volume per minute divided by the exchange's own 1-minute candle; the exchange's"
        " trade count is published by Binance only.</p>"
    )
    return Section("Completeness per exchange", note + _table(headers, out) + chart(series))


def render(
    sections: Sequence[Section], *, generated: datetime, lake_root: str, data_docs: str | None = None
) -> str:
    body = "".join(f"<section><h2>{_esc(s.title)}</h2>{s.body}</section>" for s in sections)
    stamp = generated.strftime("%Y-%m-%d %H:%M:%S UTC")
    docs = (
        f'<p>Great Expectations Data Docs (sampled GX runs): <a data-docs href="{_esc(data_docs)}">'
        f"{_esc(data_docs)}</a> (its pages load CSS and JavaScript from CDNs).</p>"
        if data_docs
        else ""
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        "<title>cryptolake data quality</title>"
        f"<style>{CSS}</style></head><body><h1>cryptolake data quality</h1>"
        f'<p>Generated <span data-metric="generated">{stamp}</span>'
        f" from the lake at <code>{_esc(lake_root)}</code>.</p>{docs}{body}</body></html>\n"
    )


def build(lake: Lake, *, now: datetime | None = None, data_docs: str | None = None) -> str:
    """The report page for ``lake`` (read with DuckDB); ``data_docs`` links GX's site."""
    con = duckdb_connect(lake, tables=TABLES)
    try:
        present = {f"{s}.{t}" for s, t in con.execute(_VIEWS_SQL).fetchall()}

        def rows(table: str, sql: str) -> list[tuple[Any, ...]]:
            return con.execute(sql).fetchall() if table in present else []

        series: dict[str, list[tuple[datetime, Decimal]]] = {}
        for exchange, minute, ratio in rows(GOLD_COMPLETENESS_1M.name, SERIES_SQL):
            series.setdefault(exchange, []).append((minute.replace(tzinfo=None), Decimal(ratio)))
        sections = [
            pass_rate_section(rows(GOLD_DQ_RESULTS.name, PASS_RATE_SQL)),
            top_failing_section(rows(GOLD_DQ_RESULTS.name, TOP_FAILING_SQL)),
            quarantine_section(rows(SILVER_QUARANTINE.name, QUARANTINE_SQL)),
            completeness_section(rows(GOLD_COMPLETENESS_1M.name, COMPLETENESS_SQL), series),
        ]
    finally:
        con.close()
    return render(sections, generated=now or datetime.now(UTC), lake_root=lake.root, data_docs=data_docs)


def build_data_docs(lake: Lake, root: str | Path, *, max_results: int = 200) -> Path | None:
    """GX Data Docs under ``root`` (a file context): every suite, and the newest ``max_results``
    GX results of ``gold.dq_results``. Returns the site's index.html, or ``None`` when there is
    no GX result to show."""
    import great_expectations as gx
    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    from expectations.suites import SUITES, DqSettings

    con = duckdb_connect(lake, tables=(GOLD_DQ_RESULTS.name,))
    try:
        if GOLD_DQ_RESULTS.name not in {f"{a}.{b}" for a, b in con.execute(_VIEWS_SQL).fetchall()}:
            return None
        results = con.execute(GX_RESULTS_SQL, [max_results]).fetchall()
    finally:
        con.close()
    if not results:
        return None
    context = gx.get_context(mode="file", project_root_dir=str(root))
    for spec in SUITES.values():
        suite = spec.build(DqSettings())
        if suite.name not in {s.name for s in context.suites.all()}:
            context.suites.add(suite)
    for suite_name, table, batch_id, checked, details in results:
        doc = json.loads(details)
        result = ExpectationSuiteValidationResult(
            **{**doc, "suite_name": doc.get("suite_name") or suite_name}
        )
        key = ValidationResultIdentifier(
            ExpectationSuiteIdentifier(suite_name),
            RunIdentifier(run_name=f"batch-{batch_id}", run_time=checked),
            f"{table}-{batch_id}",
        )
        context.validation_results_store.set(key, result)
    urls = context.build_data_docs()
    site = urls.get("local_site", "")
    logger.info("GX Data Docs: %d results, %s", len(results), site)
    return Path(site.removeprefix("file://")) if site else None


def write(lake: Lake, out: str | Path, *, now: datetime | None = None, data_docs: bool = True) -> Path:
    """Build the page (and, with ``data_docs``, GX's site in ``<out folder>/data-docs``) and write it
    to ``out`` (folders created); returns the page's path."""
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    site = build_data_docs(lake, path.parent / "data-docs") if data_docs else None
    link = site.relative_to(path.parent.resolve()).as_posix() if site is not None else None
    path.write_text(build(lake, now=now, data_docs=link), encoding="utf-8")
    return path
