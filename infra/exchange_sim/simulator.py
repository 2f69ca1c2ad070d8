"""``ExchangeSimulator`` (async context manager) and ``SimulatorThread`` (for synchronous code)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from infra.exchange_sim.faults import Fault
from infra.exchange_sim.markets import PriceOracle, SimClock
from infra.exchange_sim.server import ExchangeServer, SimConfig
from infra.exchange_sim.truth import GroundTruth

logger = logging.getLogger(__name__)

EXCHANGES: tuple[str, ...] = ("binance", "kucoin", "coinbase", "kraken", "okx", "bybit")
FaultSpec = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ExchangeUrls:
    """Base URLs to configure an extractor with, exactly like the real exchange's.

    binance: rest ``http://127.0.0.1:P`` (``/api/v3/...``), ws ``ws://127.0.0.1:P``
    (append ``/ws/<stream>`` or ``/stream?streams=...``); kucoin: rest ``http://127.0.0.1:P``
    (``POST /api/v1/bullet-public`` returns the ws endpoint ``ws://127.0.0.1:P/``); coinbase:
    rest ``http://127.0.0.1:P`` (``/products``), ws ``ws://127.0.0.1:P`` (the feed itself);
    kraken: rest ``http://127.0.0.1:P`` (``/0/public/...``), ws ``ws://127.0.0.1:P`` (v2 itself);
    okx: rest ``http://127.0.0.1:P`` (``/api/v5/...``), ws ``ws://127.0.0.1:P`` (also ``/ws/v5/public``).
    bybit: rest ``http://127.0.0.1:P`` (``/v5/market/...``), ws ``ws://127.0.0.1:P`` (the spot stream).
    """

    rest: str
    ws: str


def _server_class(exchange: str) -> type[ExchangeServer]:
    if exchange == "binance":
        from infra.exchange_sim.binance import BinanceServer

        return BinanceServer
    if exchange == "kucoin":
        from infra.exchange_sim.kucoin import KucoinServer

        return KucoinServer
    if exchange == "coinbase":
        from infra.exchange_sim.coinbase import CoinbaseServer

        return CoinbaseServer
    if exchange == "kraken":
        from infra.exchange_sim.kraken import KrakenServer

        return KrakenServer
    if exchange == "okx":
        from infra.exchange_sim.okx import OkxServer

        return OkxServer
    if exchange == "bybit":
        from infra.exchange_sim.bybit import BybitServer

        return BybitServer
    raise ValueError(f"unknown exchange {exchange!r}; known: {', '.join(EXCHANGES)}")


class ExchangeSimulator:
    """Simulated Binance/KuCoin/Coinbase servers on 127.0.0.1, one port per exchange.

    ``faults`` maps an exchange to fault specs applied at start, e.g.
    ``{"binance": [{"fault": "close_after", "frames": 50}]}`` (scope defaults to the next
    connection). ``port`` 0 picks free ports; otherwise exchanges get ``port``, ``port+1``, …
    Extra keyword arguments go to :class:`~infra.exchange_sim.server.SimConfig`.
    """

    def __init__(
        self,
        exchanges: Iterable[str] = EXCHANGES,
        *,
        symbols: int = 50,
        rate: float = 200.0,
        seed: int = 7,
        truth_path: str | Path | None = None,
        faults: Mapping[str, Iterable[FaultSpec]] | None = None,
        port: int = 0,
        host: str = "127.0.0.1",
        **options: Any,
    ) -> None:
        self.config = SimConfig(symbols=symbols, rate=rate, seed=seed, host=host, **options)
        self.exchanges = tuple(exchanges)
        self.truth = GroundTruth(truth_path)
        self.oracle = PriceOracle(seed)
        self.clock = SimClock(self.config.clock_speed, self.config.clock_lag_s)
        self.servers: dict[str, ExchangeServer] = {}
        for name in self.exchanges:
            self.servers[name] = _server_class(name)(self.config, self.oracle, self.truth)
            self.servers[name].clock = self.clock
        self._initial_faults = {ex: list(specs) for ex, specs in (faults or {}).items()}
        self._port = port
        self._runners: list[web.AppRunner] = []
        self._flusher: asyncio.Task[None] | None = None
        self.urls: dict[str, ExchangeUrls] = {}

    async def start(self) -> ExchangeSimulator:
        host = self.config.host
        for offset, (name, server) in enumerate(self.servers.items()):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, self._port + offset if self._port else 0))
            server.port = sock.getsockname()[1]
            server.rest_url = f"http://{host}:{server.port}"
            server.ws_url = f"ws://{host}:{server.port}" + ("/" if name == "kucoin" else "")
            runner = web.AppRunner(server.build_app(), access_log=None, handle_signals=False)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            self._runners.append(runner)
            self.urls[name] = ExchangeUrls(rest=server.rest_url, ws=server.ws_url)
        for name, specs in self._initial_faults.items():
            for spec in specs:
                self.inject(name, **{"scope": "next", **spec})
        for server in self.servers.values():
            server.start_loops()
        self._flusher = asyncio.create_task(self._flush_loop())
        logger.info("exchange simulator up: %s", {k: (v.rest, v.ws) for k, v in self.urls.items()})
        return self

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for server in self.servers.values():
            await server.stop_loops()
        for runner in self._runners:
            await runner.cleanup()
        self._runners.clear()
        self.truth.close()

    async def __aenter__(self) -> ExchangeSimulator:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            self.truth.flush()

    def server(self, exchange: str) -> ExchangeServer:
        try:
            return self.servers[exchange]
        except KeyError:
            raise KeyError(f"exchange {exchange!r} is not simulated here") from None

    def inject(self, exchange: str, fault: str, **params: Any) -> None:
        """Inject a fault (see :mod:`infra.exchange_sim.faults`); ``scope=`` selects connections."""
        scope = params.pop("scope", "open")
        self.server(exchange).inject(Fault.build(fault, scope=scope, **params))

    def clear_faults(self, exchange: str) -> None:
        self.server(exchange).clear_faults()

    def delist(self, exchange: str, native_symbol: str) -> None:
        """Stop trading a market; discovery shows it delisted (Binance ``BREAK``)."""
        self.server(exchange).set_status(native_symbol, "delisted")

    def halt(self, exchange: str, native_symbol: str) -> None:
        """Pause a market (Binance ``HALT``, KuCoin ``enableTrading`` false, Coinbase trading_disabled)."""
        self.server(exchange).set_status(native_symbol, "halted")

    def resume(self, exchange: str, native_symbol: str) -> None:
        self.server(exchange).set_status(native_symbol, "trading")

    def list_market(self, exchange: str, base: str, quote: str, *, usd_price: float | None = None) -> str:
        """List a new market at runtime and return its native symbol."""
        return self.server(exchange).add_market(base, quote, usd_price=usd_price).native

    def markets(self, exchange: str) -> list[str]:
        """Native symbols of every listed market (any status)."""
        return list(self.server(exchange).markets)

    def now(self) -> float:
        """The simulated time trades are stamped with (seconds since the epoch)."""
        return self.clock.now()


class SimulatorThread:
    """Run an :class:`ExchangeSimulator` on its own event loop in a daemon thread.

    ``with SimulatorThread(symbols=10) as sim: sim.urls["binance"].rest`` — the same
    ``urls``/``truth`` attributes; ``inject``/``delist``/``halt``/``resume``/``list_market``
    run on the simulator's loop and return once applied.
    """

    def __init__(self, exchanges: Iterable[str] = EXCHANGES, **kwargs: Any) -> None:
        self._args = (tuple(exchanges), kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="exchange-sim", daemon=True)
        self._ready: Future[ExchangeSimulator] = Future()
        self._stop: asyncio.Event | None = None
        self.sim: ExchangeSimulator | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        exchanges, kwargs = self._args
        self._stop = asyncio.Event()
        try:
            sim = ExchangeSimulator(exchanges, **kwargs)
            await sim.start()
        except BaseException as exc:
            self._ready.set_exception(exc)
            return
        self._ready.set_result(sim)
        try:
            await self._stop.wait()
        finally:
            await sim.stop()

    def start(self, timeout: float = 30.0) -> SimulatorThread:
        self._thread.start()
        self.sim = self._ready.result(timeout)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _sim(self) -> ExchangeSimulator:
        if self.sim is None:
            raise RuntimeError("SimulatorThread is not started")
        return self.sim

    @property
    def urls(self) -> dict[str, ExchangeUrls]:
        return self._sim().urls

    @property
    def truth(self) -> GroundTruth:
        return self._sim().truth

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        sim = self._sim()

        async def call() -> Any:
            return getattr(sim, method)(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(30.0)

    def inject(self, exchange: str, fault: str, **params: Any) -> None:
        self._call("inject", exchange, fault, **params)

    def clear_faults(self, exchange: str) -> None:
        self._call("clear_faults", exchange)

    def delist(self, exchange: str, native_symbol: str) -> None:
        self._call("delist", exchange, native_symbol)

    def halt(self, exchange: str, native_symbol: str) -> None:
        self._call("halt", exchange, native_symbol)

    def resume(self, exchange: str, native_symbol: str) -> None:
        self._call("resume", exchange, native_symbol)

    def list_market(self, exchange: str, base: str, quote: str, *, usd_price: float | None = None) -> str:
        result: str = self._call("list_market", exchange, base, quote, usd_price=usd_price)
        return result

    def markets(self, exchange: str) -> list[str]:
        result: list[str] = self._call("markets", exchange)
        return result
