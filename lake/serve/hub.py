"""Fan-out of live market states to stream clients, conflated per market, with bounded memory.

Every client has a :class:`Subscription`: a filter (exchanges and symbols, or all) and a pending
map keyed by market (exchange, native symbol). Publishing a state replaces the pending state of
its market, so a client that reads slowly gets the latest value of each market, never a backlog:
its memory is at most one state per market it subscribed to. A client with more than
``max_pending`` markets pending (a filter of "all" on a huge universe) is dropped (``closed``)
rather than allowed to grow. Publishing never waits for a client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Published:
    """A market state and its JSON, serialized once when published (not once per client)."""

    state: dict[str, Any]
    json: bytes

    @classmethod
    def of(cls, state: dict[str, Any]) -> Published:
        return cls(state, orjson.dumps(state))


@dataclass(frozen=True)
class Filter:
    """Which markets a client wants: empty sets mean all. A symbol matches the canonical
    ``BASE-QUOTE`` or the exchange's native symbol, case-insensitively."""

    exchanges: frozenset[str] = frozenset()
    symbols: frozenset[str] = frozenset()

    @classmethod
    def of(cls, *, exchanges: Iterable[str] = (), symbols: Iterable[str] = ()) -> Filter:
        def norm(values: Iterable[str]) -> set[str]:
            out = {v.strip() for value in values for v in str(value).split(",")}
            return {v for v in out if v and v != "*"}

        return cls(frozenset(e.lower() for e in norm(exchanges)), frozenset(s.upper() for s in norm(symbols)))

    def matches(self, state: dict[str, Any]) -> bool:
        if self.exchanges and str(state.get("exchange", "")) not in self.exchanges:
            return False
        if not self.symbols:
            return True
        native = str(state.get("native_symbol", "")).upper()
        symbol = str(state.get("symbol") or "").upper()
        return native in self.symbols or symbol in self.symbols


@dataclass(eq=False)
class Subscription:
    """One client's filter and its pending states (latest per market)."""

    filter: Filter
    max_pending: int
    pending: dict[Key, Published] = field(default_factory=dict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    closed: bool = False
    #: States replaced before the client took them (conflated away).
    conflated: int = 0

    def offer(self, key: Key, item: Published) -> None:
        if self.closed or not self.filter.matches(item.state):
            return
        if key in self.pending:
            self.conflated += 1
        elif len(self.pending) >= self.max_pending:
            self.closed = True  # dropped: the sender sees it and closes the connection
            self.pending.clear()
            self.wake.set()
            return
        self.pending[key] = item
        self.wake.set()

    async def next_batch(self, *, timeout: float | None = None) -> list[Published]:
        """Wait for pending states and take them all (oldest market first); ``[]`` on timeout."""
        if not self.pending and not self.closed:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout)
            except TimeoutError:
                return []
        self.wake.clear()
        batch = list(self.pending.values())
        self.pending.clear()
        return batch


class Hub:
    """Holds the latest state of every market and the subscriptions; all on one event loop."""

    def __init__(self, *, max_pending: int = 10_000) -> None:
        self.max_pending = max_pending
        self.latest: dict[Key, Published] = {}
        self.subscriptions: set[Subscription] = set()
        self.published = 0

    def subscribe(self, flt: Filter, *, snapshot: bool = True) -> Subscription:
        """A new subscription, primed with the latest state of every matching market."""
        sub = Subscription(flt, self.max_pending)
        if snapshot:
            for key, item in self.latest.items():
                sub.offer(key, item)
        self.subscriptions.add(sub)
        return sub

    def refilter(self, sub: Subscription, flt: Filter) -> None:
        """Replace a subscription's filter: its pending states are dropped and it is primed anew."""
        sub.filter = flt
        sub.pending.clear()
        for key, item in self.latest.items():
            sub.offer(key, item)
        sub.wake.set()

    def unsubscribe(self, sub: Subscription) -> None:
        self.subscriptions.discard(sub)
        sub.closed = True
        sub.wake.set()

    def publish(self, states: Iterable[dict[str, Any]]) -> None:
        for state in states:
            key = (str(state["exchange"]), str(state["native_symbol"]))
            item = Published.of(state)
            self.latest[key] = item
            self.published += 1
            for sub in self.subscriptions:
                sub.offer(key, item)
