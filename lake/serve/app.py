"""The Starlette application: REST over gold, the live streams, the page and its script.

Routes (``lake.serve.openapi`` describes each): ``/api/*`` (JSON), ``/ws/stream`` (WebSocket),
``/sse/stream`` (Server-Sent Events), ``/`` (the page), ``/static/*`` (its CSS and JS),
``/vendor/lightweight-charts.js`` (TradingView's library, from the npm folder ``make setup``
fills: never from a CDN), ``/openapi.json``.

The live feed runs as one task of the app's lifespan (:func:`lake.serve.feeds.run_feed`); REST
queries run in worker threads, the streams on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket, WebSocketDisconnect

from lake.serve import api
from lake.serve.decode import MarketBook, MarketInfo
from lake.serve.feeds import FeedStats, Source, run_feed
from lake.serve.hub import Filter, Hub, Published, Subscription
from lake.serve.openapi import spec
from lake.serve.queries import LakeReader, MissingTable
from lake.serve.settings import ServeSettings
from lake.serve.stores import StoreWriter
from lake.tables import Lake

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
CHARTS_JS = "node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js"


class _JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


@dataclass
class Server:
    """What the handlers share."""

    settings: ServeSettings
    reader: LakeReader
    hub: Hub
    book: MarketBook
    stats: FeedStats
    source_factory: Callable[[], Source] | None
    stores: list[StoreWriter] = field(default_factory=list)
    started: float = field(default_factory=time.time)


def _server(request: Request | WebSocket) -> Server:
    return request.app.state.server  # type: ignore[no-any-return]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _when(text: str | None) -> datetime | None:
    """ISO 8601 (``Z`` or an offset; naive is UTC) or epoch seconds -> aware UTC datetime."""
    if text is None or text == "":
        return None
    try:
        return datetime.fromtimestamp(float(text), tz=UTC)
    except ValueError:
        pass
    ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


async def _answer(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Response:
    try:
        return _JSON(await asyncio.to_thread(fn, *args, **kwargs))
    except MissingTable as exc:
        return _error(503, str(exc))
    except ValueError as exc:
        return _error(400, str(exc))


def _q(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return value if value else None


async def latest(request: Request) -> Response:
    s = _server(request)
    return await _answer(api.latest, s.reader, exchange=_q(request, "exchange"), symbol=_q(request, "symbol"))


async def bars(request: Request) -> Response:
    s = _server(request)
    exchange, symbol = _q(request, "exchange"), _q(request, "symbol")
    interval = _q(request, "interval") or "1m"
    if not exchange or not symbol:
        return _error(400, "exchange and symbol are required")
    if interval not in api.INTERVALS:
        return _error(400, f"interval must be one of {', '.join(api.INTERVALS)}")
    try:
        start, end = _when(_q(request, "start")), _when(_q(request, "end"))
        limit = int(_q(request, "limit") or 500)
    except ValueError as exc:
        return _error(400, f"bad start, end or limit: {exc}")
    return await _answer(
        api.bars,
        s.reader,
        exchange=exchange,
        symbol=symbol,
        interval=interval,
        start=start,
        end=end,
        limit=limit,
    )


async def spread(request: Request) -> Response:
    s = _server(request)
    return await _answer(api.spread, s.reader, base=_q(request, "base"), symbol=_q(request, "symbol"))


async def volume_share(request: Request) -> Response:
    s = _server(request)
    text = _q(request, "date")
    try:
        day = date.fromisoformat(text) if text else None
    except ValueError:
        return _error(400, f"date must be YYYY-MM-DD, got {text!r}")
    return await _answer(api.volume_share, s.reader, day=day, symbol=_q(request, "symbol"))


async def quality(request: Request) -> Response:
    s = _server(request)
    return await _answer(api.quality, s.reader)


async def markets(request: Request) -> Response:
    return await _answer(api.markets, _server(request).reader)


def _filter(request: Request | WebSocket) -> Filter:
    q = request.query_params
    return Filter.of(exchanges=q.getlist("exchange"), symbols=q.getlist("symbol"))


async def live(request: Request) -> Response:
    s = _server(request)
    flt = _filter(request)
    return _JSON([item.state for item in s.hub.latest.values() if flt.matches(item.state)])


async def health(request: Request) -> Response:
    s = _server(request)
    st = s.stats
    age = (time.time_ns() - st.last_recv_ts_ns) / 1e9 if st.last_recv_ts_ns else None
    return _JSON(
        {
            "uptime_s": round(time.time() - s.started, 3),
            "feed": {
                "source": st.source,
                "envelopes": st.envelopes,
                "states": st.states,
                "bad_lines": st.bad_lines,
                "errors": st.errors,
                "last_error": st.last_error,
                "newest_recv_age_s": round(age, 3) if age is not None else None,
            },
            "streams": {"clients": len(s.hub.subscriptions), "markets": len(s.hub.latest)},
            "cache": {"hits": s.reader.hits, "misses": s.reader.misses},
            "stores": {w.store.name: w.status() for w in s.stores},
        }
    )


async def openapi(request: Request) -> Response:
    return _JSON(spec())


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html")


async def charts_js(request: Request) -> Response:
    path = Path(_server(request).settings.web_dir) / CHARTS_JS
    if not path.is_file():
        return Response(
            f"// {path} is missing: run `make setup` (it installs lightweight-charts from npm)\n",
            status_code=404,
            media_type="text/javascript",
        )
    return FileResponse(path, media_type="text/javascript")


def _payload(kind: str, **fields: Any) -> bytes:
    return orjson.dumps({"type": kind, **fields})


def _quotes(batch: list[Published]) -> bytes:
    """``{"type":"quotes","data":[...]}`` from the states' JSON, serialized once at publish."""
    return b'{"type":"quotes","data":[' + b",".join(p.json for p in batch) + b"]}"


def _names(value: Any) -> list[str]:
    """A client's list of names (a single string is one name; anything else counts as none)."""
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value if isinstance(v, str)] if isinstance(value, list) else []


async def ws_stream(websocket: WebSocket) -> None:
    s = _server(websocket)
    await websocket.accept()
    flt = _filter(websocket)
    sub = s.hub.subscribe(flt, snapshot=False)
    #: Filters asked for and not applied yet; only the sender applies them (then acks, then the
    #: new filter's snapshot follows), so an ack never overtakes or drops states.
    asked: list[Filter] = [flt]

    async def receive() -> None:
        while True:
            try:
                message = orjson.loads(await websocket.receive_text())
            except orjson.JSONDecodeError:
                continue
            if isinstance(message, dict) and message.get("op") == "subscribe":
                exchanges, symbols = _names(message.get("exchanges")), _names(message.get("symbols"))
                asked.append(Filter.of(exchanges=exchanges, symbols=symbols))
                sub.wake.set()

    async def send() -> None:
        while True:
            if asked:
                flt = asked[-1]
                asked.clear()
                s.hub.refilter(sub, flt)
                ack = _payload("subscribed", exchanges=sorted(flt.exchanges), symbols=sorted(flt.symbols))
                await websocket.send_text(ack.decode())
            batch = await sub.next_batch(timeout=s.settings.heartbeat_s)
            if sub.closed:
                await websocket.close(code=1013, reason="too far behind")
                return
            if asked:
                continue  # states of the old filter: the new one is primed afresh
            message = _quotes(batch) if batch else _payload("heartbeat")
            try:
                await asyncio.wait_for(websocket.send_text(message.decode()), s.settings.send_timeout_s)
            except TimeoutError:
                await websocket.close(code=1013, reason="send timed out")
                return
            if s.settings.min_interval_s:
                await asyncio.sleep(s.settings.min_interval_s)

    tasks = [asyncio.create_task(receive()), asyncio.create_task(send())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
                await task
        s.hub.unsubscribe(sub)


def _sse(event: str, data: Any) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _sse_quotes(batch: list[Published]) -> bytes:
    return b"event: quotes\ndata: [" + b",".join(p.json for p in batch) + b"]\n\n"


async def sse_stream(request: Request) -> Response:
    s = _server(request)
    flt = _filter(request)

    async def events() -> AsyncIterator[bytes]:
        sub: Subscription = s.hub.subscribe(flt)  # here, so the finally below always unsubscribes
        try:
            yield b"retry: 2000\n" + _sse(
                "subscribed", {"exchanges": sorted(flt.exchanges), "symbols": sorted(flt.symbols)}
            )
            while True:
                batch = await sub.next_batch(timeout=s.settings.heartbeat_s)
                if sub.closed:
                    yield _sse("dropped", {"reason": "too far behind"})
                    return
                yield _sse_quotes(batch) if batch else b": heartbeat\n\n"
                if s.settings.min_interval_s:
                    await asyncio.sleep(s.settings.min_interval_s)
        finally:
            s.hub.unsubscribe(sub)

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)


def _prime_markets(server: Server) -> None:
    """Names of known markets from ``silver.markets`` (the feed learns new ones from snapshots)."""
    try:
        rows = api.markets(server.reader)
    except MissingTable:
        return
    server.book.add_markets(
        {(r["exchange"], r["native_symbol"]): MarketInfo(r["symbol"], r["base"], r["quote"]) for r in rows}
    )


@contextlib.asynccontextmanager
async def _lifespan(app: Starlette) -> AsyncIterator[None]:
    server: Server = app.state.server
    await asyncio.to_thread(_prime_markets, server)
    task = None
    for writer in server.stores:
        writer.start()
    if server.source_factory is not None:
        feed = run_feed(
            server.source_factory,
            server.book,
            server.hub,
            server.stats,
            interval_s=server.settings.poll_s,
            taps=[w.offer for w in server.stores],
        )
        task = asyncio.create_task(feed, name="live-feed")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for writer in server.stores:
            await asyncio.to_thread(writer.close)


ROUTES = [
    Route("/", index),
    Route("/api/latest", latest),
    Route("/api/bars", bars),
    Route("/api/spread", spread),
    Route("/api/volume-share", volume_share),
    Route("/api/quality", quality),
    Route("/api/markets", markets),
    Route("/api/live", live),
    Route("/api/health", health),
    Route("/openapi.json", openapi),
    Route("/vendor/lightweight-charts.js", charts_js),
    Route("/sse/stream", sse_stream),
    WebSocketRoute("/ws/stream", ws_stream),
    Mount("/static", StaticFiles(directory=STATIC), name="static"),
]


def create_app(
    settings: ServeSettings,
    lake: Lake,
    *,
    source_factory: Callable[[], Source] | None = None,
    source_name: str = "none",
    stores: Sequence[StoreWriter] = (),
) -> Starlette:
    """The app; ``source_factory`` builds the live feed's source at start-up (``None``: no feed).
    ``stores``: the live-update stores' writers, started and closed with the app, fed every batch
    the feed publishes."""
    app = Starlette(routes=ROUTES, lifespan=_lifespan)
    app.state.server = Server(
        settings=settings,
        reader=LakeReader(lake, check_s=settings.cache_check_s),
        hub=Hub(max_pending=settings.max_pending),
        book=MarketBook(),
        stats=FeedStats(source=source_name),
        source_factory=source_factory,
        stores=list(stores),
    )
    return app
