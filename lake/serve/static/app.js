// cryptolake live page: a WebSocket of live market states, and REST reads of the lake's gold tables.
"use strict";

const state = {
  markets: new Map(),  // "exchange|native_symbol" -> {row, cells, data}
  selected: null,      // {exchange, symbol}
  updates: 0,          // live states applied (read by the browser test)
  chartBars: 0,        // bars drawn
  chart: null, candles: null, volume: null,
};
window.cryptolake = state;

const $ = (sel) => document.querySelector(sel);
const fmt = (text, digits) => {
  if (text === null || text === undefined) return "–";
  const n = Number(text);
  if (!Number.isFinite(n)) return text;
  const d = digits ?? (n >= 1000 ? 2 : n >= 1 ? 4 : 6);
  return n.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
};
const age = (ms) => (ms === null ? "–" : ms < 1000 ? `${ms} ms` : ms < 60000 ? `${(ms / 1000).toFixed(1)} s`
  : ms < 3600000 ? `${Math.round(ms / 60000)} min` : `${(ms / 3600000).toFixed(1)} h`);

// --- the live table --------------------------------------------------------------------------

const COLUMNS = ["last", "bid", "ask", "last_usdt", "mid_usdt"];

function rowFor(s) {
  const key = `${s.exchange}|${s.native_symbol}`;
  let m = state.markets.get(key);
  if (m) return m;
  const row = document.createElement("tr");
  const cells = {};
  for (const name of ["symbol", "exchange", ...COLUMNS, "age"]) {
    const td = document.createElement("td");
    if (COLUMNS.includes(name) || name === "age") td.className = "num";
    row.appendChild(td);
    cells[name] = td;
  }
  row.addEventListener("click", () => select(s.exchange, m.data.symbol || s.native_symbol));
  m = { row, cells, data: {} };
  state.markets.set(key, m);
  insertSorted(m, s);
  return m;
}

function label(s) { return s.symbol || s.native_symbol; }

function insertSorted(m, s) {
  const body = $("#prices tbody");
  const name = `${label(s)} ${s.exchange}`;
  m.sortKey = name;
  const after = [...body.children].find((r) => r.dataset.sort > name);
  m.row.dataset.sort = name;
  body.insertBefore(m.row, after || null);
  applyFilter(m);
}

function applyFilter(m) {
  const f = $("#filter").value.trim().toUpperCase();
  m.row.hidden = f !== "" && !m.row.dataset.sort.toUpperCase().includes(f);
}

function apply(s) {
  const m = rowFor(s);
  const before = m.data;
  m.cells.symbol.textContent = label(s);
  m.cells.exchange.textContent = s.exchange;
  for (const name of COLUMNS) {
    const td = m.cells[name];
    const old = before[name];
    td.textContent = fmt(s[name]);
    if (old !== undefined && old !== null && s[name] !== null && s[name] !== old) {
      const up = Number(s[name]) > Number(old);
      td.classList.remove("flash-up", "flash-down", "up", "down");
      void td.offsetWidth;  // restart the animation
      td.classList.add(up ? "flash-up" : "flash-down", up ? "up" : "down");
    }
  }
  if (label(s) !== label(before) && before.exchange) insertSorted(m, s);
  m.data = s;
  state.updates += 1;
}

setInterval(() => {
  const now = Date.now();
  for (const m of state.markets.values()) {
    const t = m.data.recv_ts_ns ? m.data.recv_ts_ns / 1e6 : null;  // since the extractor received it
    m.cells.age.textContent = t ? age(Math.max(0, Math.round(now - t))) : "–";
  }
  liveSpread();
}, 1000);

$("#filter").addEventListener("input", () => state.markets.forEach(applyFilter));

// --- the stream ------------------------------------------------------------------------------

function status(text, kind) {
  const el = $("#status");
  el.textContent = text;
  el.className = `pill pill-${kind}`;
}

function connect(delay = 500) {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws/stream`);
  ws.onopen = () => { delay = 500; status("live", "ok"); };
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === "quotes") msg.data.forEach(apply);
  };
  ws.onclose = () => {
    status("reconnecting…", "bad");
    setTimeout(() => connect(Math.min(delay * 2, 10000)), delay * (0.5 + Math.random()));
  };
}

// --- the chart -------------------------------------------------------------------------------

function makeChart() {
  if (typeof LightweightCharts === "undefined") {
    $("#chart-note").textContent = "lightweight-charts is not installed: run `make setup`.";
    return;
  }
  const chart = LightweightCharts.createChart($("#chart"), {
    autoSize: true,
    layout: { background: { color: "#ffffff" }, textColor: "#1d2330" },
    grid: { vertLines: { color: "#f0f2f5" }, horzLines: { color: "#f0f2f5" } },
    timeScale: { timeVisible: true, secondsVisible: false },
  });
  state.candles = chart.addSeries(LightweightCharts.CandlestickSeries, {
    upColor: "#0a8f5a", downColor: "#c8372d", borderVisible: false,
    wickUpColor: "#0a8f5a", wickDownColor: "#c8372d",
  });
  state.volume = chart.addSeries(LightweightCharts.HistogramSeries, {
    priceFormat: { type: "volume" }, priceScaleId: "",
  });
  state.volume.priceScale().applyOptions({ scaleMargins: { top: 0.8, bottom: 0 } });
  state.candles.priceScale().applyOptions({ scaleMargins: { top: 0.05, bottom: 0.25 } });
  state.chart = chart;
}

async function getJSON(url) {
  const r = await fetch(url);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

async function loadBars() {
  if (!state.selected || !state.candles) return;
  const { exchange, symbol } = state.selected;
  $("#chart-title").textContent = `${symbol} · ${exchange} · 1m`;
  try {
    const bars = await getJSON(`/api/bars?exchange=${encodeURIComponent(exchange)}&symbol=${encodeURIComponent(symbol)}&interval=1m&limit=500`);
    state.candles.setData(bars.map((b) => ({ time: b.time, open: +b.open, high: +b.high, low: +b.low, close: +b.close })));
    state.volume.setData(bars.map((b) => ({
      time: b.time, value: +b.volume, color: +b.close >= +b.open ? "rgba(10,143,90,0.35)" : "rgba(200,55,45,0.35)",
    })));
    if (state.fitted !== `${exchange}|${symbol}`) {  // fit a newly chosen market; keep the user's zoom after
      state.chart.timeScale().fitContent();
      state.fitted = `${exchange}|${symbol}`;
    }
    state.chartBars = bars.length;
    $("#chart-note").textContent = bars.length ? `${bars.length} bars from gold.ohlcv_1m` : "no bars yet for this market";
  } catch (e) {
    $("#chart-note").textContent = `bars: ${e.message}`;
  }
}

function select(exchange, symbol) {
  state.selected = { exchange, symbol };
  const value = `${exchange}|${symbol}`;
  const sel = $("#market");
  if (![...sel.options].some((o) => o.value === value)) sel.add(new Option(`${symbol} · ${exchange}`, value));
  sel.value = value;
  for (const m of state.markets.values()) {
    m.row.classList.toggle("selected", m.data.exchange === exchange && label(m.data) === symbol);
  }
  loadBars();
  loadSpread();
}

$("#market").addEventListener("change", (e) => {
  const [exchange, symbol] = e.target.value.split("|");
  select(exchange, symbol);
});

async function loadMarkets() {
  let rows = [];
  try { rows = await getJSON("/api/latest"); } catch (e) { $("#chart-note").textContent = `markets: ${e.message}`; }
  const sel = $("#market");
  for (const r of rows) sel.add(new Option(`${r.symbol} · ${r.exchange}`, `${r.exchange}|${r.symbol}`));
  const first = rows.find((r) => r.symbol === "BTC-USDT") || rows[0];
  if (first && !state.selected) select(first.exchange, first.symbol);
}

// --- spread, freshness, quality --------------------------------------------------------------

function kv(el, pairs) {
  el.innerHTML = "";
  for (const [k, v, cls] of pairs) {
    const a = document.createElement("div"); a.className = "k"; a.textContent = k;
    const b = document.createElement("div"); b.className = `v ${cls || ""}`; b.textContent = v;
    el.append(a, b);
  }
}

let goldSpread = null;

function liveSpread() {
  if (!state.selected) return;
  const base = state.selected.symbol.split("-")[0];
  const mids = [...state.markets.values()].map((m) => m.data)
    .filter((d) => d.base === base && d.mid_usdt !== null && d.mid_usdt !== undefined);
  const pairs = [];
  if (mids.length > 1) {
    const lo = mids.reduce((a, b) => (+a.mid_usdt <= +b.mid_usdt ? a : b));
    const hi = mids.reduce((a, b) => (+a.mid_usdt >= +b.mid_usdt ? a : b));
    pairs.push(["live venues", String(mids.length)]);
    pairs.push(["live low mid", `${fmt(lo.mid_usdt)} ${lo.exchange}`]);
    pairs.push(["live high mid", `${fmt(hi.mid_usdt)} ${hi.exchange}`]);
    pairs.push(["live spread", `${((hi.mid_usdt - lo.mid_usdt) / lo.mid_usdt * 1e4).toFixed(2)} bps`]);
  } else {
    pairs.push(["live", "fewer than 2 venues quoted"]);
  }
  if (goldSpread && goldSpread.venues > 1) {
    pairs.push(["gold venues", String(goldSpread.venues)]);
    pairs.push(["gold mid spread", `${Number(goldSpread.mid_spread_bps).toFixed(2)} bps`]);
    pairs.push(["gold best bid / ask", `${fmt(goldSpread.best_bid)} / ${fmt(goldSpread.best_ask)}`]);
  }
  $("#spread-base").textContent = `${base} in USDT`;
  kv($("#spread"), pairs);
}

async function loadSpread() {
  if (!state.selected) return;
  try { goldSpread = await getJSON(`/api/spread?base=${encodeURIComponent(state.selected.symbol.split("-")[0])}`); }
  catch (e) { goldSpread = null; }
  liveSpread();
}

async function loadStatus() {
  try {
    const [q, h] = await Promise.all([getJSON("/api/quality"), getJSON("/api/health")]);
    const f = h.feed;
    const pairs = [["feed", `${f.source}, ${f.envelopes} envelopes`]];
    pairs.push(["newest receive", f.newest_recv_age_s === null ? "–" : `${f.newest_recv_age_s.toFixed(1)} s ago`,
      f.newest_recv_age_s !== null && f.newest_recv_age_s < 5 ? "ok" : "bad"]);
    for (const r of q.freshness || []) {
      pairs.push([`${r.exchange} quote`, r.quote_age_s === null ? "–" : `${age(Math.round(r.quote_age_s * 1000))} old`]);
      pairs.push([`${r.exchange} trade`, r.trade_age_s === null ? "–" : `${age(Math.round(r.trade_age_s * 1000))} old`]);
    }
    kv($("#fresh"), pairs);
    const dq = (q.quality || []).map((r) => [r.table, r.last_success ? `pass (${r.failed} failed rows)` : "FAIL",
      r.last_success ? "ok" : "bad"]);
    if (q.missing.length) dq.push(["not in lake yet", q.missing.join(", ")]);
    kv($("#dq"), dq.length ? dq : [["quality", "no results yet"]]);
  } catch (e) {
    kv($("#fresh"), [["status", e.message, "bad"]]);
  }
}

makeChart();
connect();
loadMarkets();
loadStatus();
setInterval(loadBars, 10000);
setInterval(loadSpread, 5000);
setInterval(loadStatus, 10000);
