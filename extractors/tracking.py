"""Per-market trade-id bookkeeping of one exchange runner, with no I/O: events in, actions out.

:class:`TradeTracker` is the runner's memory of where each market's trades stand, in the style of
a sans-I/O protocol core: it never sleeps, reads a clock, opens a socket or touches a file. The
runner tells it what happened (a trade id was seen on the socket, a connection dropped or was
resubscribed, a REST page came back or failed, a batch became durable, shutdown) and performs
what it asks for: :class:`FillRequest` (fetch these trades over REST), :class:`GapRecord` (land a
``gaps`` envelope: these trades are lost for good) and :class:`Duplicate` (count it). Time, where
it matters (heartbeat rechecks), is passed in as monotonic seconds.

Ids are the exchange's per-market *ordering ids* (see :mod:`extractors.exchanges.base`). The
invariants it keeps:

* **At most one queued fill per market.** A new request for a market that already has one
  queued is merged into it (the older ``after_id``, the wider ``until_id``), so a storm of bad
  frames or reconnects costs one REST walk per market, and the queue is bounded by the number
  of markets. One more fill of the market may be running meanwhile.
* **The oldest unfilled point wins.** A connection that drops again before it was resubscribed
  keeps the first drop's ids; the reconnect fill starts there.
* **Resume point = last durable id below every open hole.** Every envelope that concerns a
  market's trades (socket frame, REST page, gap record) takes a :class:`Mark` when it is handed
  on; the mark carries the market's *safe point* at that moment (the newest id such that every
  earlier trade has been handed on or recorded as a gap: the last id seen, held down by any
  queued/running fill or unfilled drop). When the sinks have made a mark's envelope durable, and
  every earlier mark of the market too, the market's resume point advances to that mark's safe
  point. A restarted process fills from there, so trades received but not yet durable at a
  crash are fetched again, and a hole whose fill never finished is never skipped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

#: A queued fill's ``reason`` for a market resumed from a persisted point at start.
RESUME = "resume"
#: A fill of the recent trades of a market seen for the first time (no gap can be proven).
BASELINE = "start"


@dataclass(frozen=True, slots=True)
class FillRequest:
    """Fetch the trades of ``native_symbol`` after ``after_id`` (exclusive) over REST.

    ``after_id`` ``None``: a baseline (recent trades only, one page; nothing can be called lost).
    ``until_id``: stop before this id (exclusive); ``None``: up to the newest trade.
    ``attempt`` counts from 1.
    """

    native_symbol: str
    after_id: int | None
    until_id: int | None
    reason: str
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class GapRecord:
    """Trades of ``native_symbol`` strictly between ``after_id`` and ``before_id`` are lost.

    ``before_id`` ``None``: no newer trade was seen (open at the top).
    """

    native_symbol: str
    after_id: int
    before_id: int | None
    reason: str

    def payload(self) -> dict[str, Any]:
        return {
            "native_symbol": self.native_symbol,
            "after_id": self.after_id,
            "before_id": self.before_id,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Duplicate:
    """A trade id at or below the market's last id (landed anyway; downstream dedupes)."""

    native_symbol: str
    trade_id: int


Action = FillRequest | GapRecord | Duplicate


@dataclass(frozen=True, slots=True)
class Mark:
    """Taken when an envelope about a market's trades is handed on; returned when it is durable.

    ``n`` orders the market's marks; ``safe`` is the market's safe point when it was taken;
    ``generation`` tells a market tracked again after a delisting from its earlier life.
    """

    native_symbol: str
    n: int
    safe: int | None
    generation: int = 0


@dataclass(slots=True)
class _Market:
    generation: int = 0
    last_id: int | None = None
    #: First trade id seen on the current connection (narrows gap records to what was lost).
    first_on_conn: int | None = None
    #: Where a reconnect (or the restart) must fill from, until the resubscription asks for it.
    drop_point: int | None = None
    #: The market has a drop point or has never been subscribed: fill it when subscribed.
    unfilled: bool = True
    #: Why the fill at the next subscription runs (``start``, ``resume``, ``reconnect``, ``listing``).
    drop_reason: str = BASELINE
    queued: FillRequest | None = None
    running: FillRequest | None = None
    #: Heartbeat announced a newer trade: (last id then, announced id, due time).
    check: tuple[int, int, float] | None = None
    next_mark: int = 0
    #: Marks handed out and not yet durable in order: [n, safe, durable].
    outstanding: deque[list[Any]] = field(default_factory=deque)


class TradeTracker:
    """See the module docstring. One instance per exchange runner (per process and shard).

    ``consecutive_ids``: a jump of more than one proves a gap (Binance, Coinbase), else ids only
    order trades (KuCoin). ``resume``: persisted resume points from the previous run. A market
    takes part once :meth:`track` names it. ``max_attempts``: REST tries per fill before its
    window becomes a gap record. ``heartbeat_grace_s``: how long a heartbeat's newer id may wait
    for its trade frame before it counts as missed.
    """

    def __init__(
        self,
        *,
        consecutive_ids: bool,
        resume: Mapping[str, int] | None = None,
        max_attempts: int = 3,
        heartbeat_grace_s: float = 1.0,
    ) -> None:
        self.consecutive_ids = consecutive_ids
        self.max_attempts = max_attempts
        self.heartbeat_grace_s = heartbeat_grace_s
        self._markets: dict[str, _Market] = {}
        self._resume: dict[str, int] = dict(resume or {})
        #: Markets with a queued fill, oldest first (dict as an ordered set).
        self._queue: dict[str, None] = {}
        self._generation = 0
        self.resume_changed = False

    # --- markets --------------------------------------------------------------------------------

    def track(self, symbols: Iterable[str]) -> None:
        """Markets this runner extracts; those with a resume point fill from it when subscribed."""
        for symbol in symbols:
            if symbol in self._markets:
                continue
            self._generation += 1
            market = self._markets[symbol] = _Market(self._generation)
            point = self._resume.get(symbol)
            if point is not None:
                market.drop_point, market.drop_reason = point, RESUME

    def listed(self, symbol: str) -> list[Action]:
        """A market added live (rediscovery): fill it now (it is subscribed on a live connection)."""
        fresh = symbol not in self._markets
        self.track([symbol])
        market = self._markets[symbol]
        if fresh and market.drop_point is None:
            market.drop_reason = "listing"
        return self.subscribed([symbol])

    def forget(self, symbol: str) -> None:
        """A delisted market: no more fills, and no resume point."""
        self._markets.pop(symbol, None)
        self._queue.pop(symbol, None)
        if self._resume.pop(symbol, None) is not None:
            self.resume_changed = True

    def tracks(self, symbol: str) -> bool:
        return symbol in self._markets

    def last_id(self, symbol: str) -> int | None:
        market = self._markets.get(symbol)
        return market.last_id if market is not None else None

    @property
    def last_ids(self) -> dict[str, int]:
        return {s: m.last_id for s, m in self._markets.items() if m.last_id is not None}

    # --- socket events --------------------------------------------------------------------------

    def opened(self, symbols: Iterable[str]) -> None:
        """A new connection for these markets is open (gap records narrow to its first ids)."""
        for symbol in symbols:
            market = self._markets.get(symbol)
            if market is not None:
                market.first_on_conn = None

    def trade(self, symbol: str, trade_id: int) -> list[Action]:
        """A trade id seen on the socket (the frame is handed on: take a :meth:`mark` after)."""
        market = self._markets.get(symbol)
        if market is None:
            return []  # not (or no longer) extracted here
        if market.first_on_conn is None:
            market.first_on_conn = trade_id
        last = market.last_id
        if last is None:
            market.last_id = trade_id
            if market.unfilled and market.drop_point is None:
                # The socket streams this market: fetch its recent trades now (the head of the
                # run), before a drop could turn the pending baseline into a fill from here.
                market.unfilled = False
                return self._request(FillRequest(symbol, None, None, market.drop_reason))
            return []
        if trade_id <= last:
            return [Duplicate(symbol, trade_id)]
        market.last_id = trade_id
        if self.consecutive_ids and trade_id > last + 1:
            return self._request(FillRequest(symbol, last, trade_id, "id_jump"))
        return []

    def heartbeat(self, symbol: str, announced: int, now: float) -> None:
        """The exchange says its newest trade is ``announced``; recheck at ``now`` + grace."""
        market = self._markets.get(symbol)
        if market is None or market.last_id is None or announced <= market.last_id or market.check:
            return
        market.check = (market.last_id, announced, now + self.heartbeat_grace_s)

    def tick(self, now: float) -> list[Action]:
        """Timers: a heartbeat-announced trade that still has not come is filled."""
        actions: list[Action] = []
        for symbol, market in self._markets.items():
            if market.check is None or market.check[2] > now:
                continue
            seen, announced, _ = market.check
            market.check = None
            if market.last_id == seen and seen < announced:
                market.last_id = announced
                actions += self._request(FillRequest(symbol, seen, announced + 1, "heartbeat"))
        return actions

    def dropped(self, symbols: Iterable[str]) -> None:
        """The connection of these markets dropped. An earlier unfilled drop point is kept."""
        for symbol in symbols:
            market = self._markets.get(symbol)
            if market is None:
                continue
            market.check = None
            if market.unfilled and (market.drop_point is not None or market.last_id is None):
                # Still waiting for the first drop's fill: keep the oldest point (a market that
                # never traded keeps its baseline).
                continue
            market.unfilled = True
            market.drop_point, market.drop_reason = market.last_id, "reconnect"

    def subscribed(self, symbols: Iterable[str]) -> list[Action]:
        """Subscriptions of these markets are acknowledged: fill what the socket did not see.

        From the drop point (or the persisted resume point at start); a market never seen before
        gets a baseline fill of its recent trades (at its first socket trade, if that came first).
        """
        actions: list[Action] = []
        for symbol in symbols:
            market = self._markets.get(symbol)
            if market is None or not market.unfilled:
                continue
            market.unfilled = False
            point, why = market.drop_point, market.drop_reason
            market.drop_point = None
            actions += self._request(FillRequest(symbol, point, None, why))
        return actions

    def bad_frame(self, symbols: Sequence[str]) -> list[Action]:
        """A frame that may have carried a trade of these markets could not be read."""
        actions: list[Action] = []
        for symbol in symbols:
            market = self._markets.get(symbol)
            if market is not None:
                actions += self._request(FillRequest(symbol, market.last_id, None, "bad_frame"))
        return actions

    # --- fills ----------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Fills waiting to run (at most one per market)."""
        return len(self._queue)

    @property
    def awaiting(self) -> int:
        """Markets whose drop (or start) waits for a subscription before its fill is queued."""
        return sum(1 for m in self._markets.values() if m.unfilled)

    @property
    def running(self) -> int:
        return sum(1 for m in self._markets.values() if m.running is not None)

    def take_fill(self) -> FillRequest | None:
        """The oldest queued fill of a market with no fill running; it is running from now on."""
        for symbol in self._queue:
            market = self._markets[symbol]
            if market.running is None:
                del self._queue[symbol]
                request, market.queued = market.queued, None
                market.running = request
                return request
        return None

    def fill_page(
        self, request: FillRequest, ids: Sequence[int], gap: tuple[int, int] | None
    ) -> list[Action]:
        """One REST page of ``request`` was fetched: its ids and the gap it proves, if any.

        Hand on the returned gap records (with their marks) first, then, after :meth:`fill_done`
        on the last page, the page itself with its mark: so the resume point can only pass the
        hole once the gap record and the page are both durable.
        """
        market = self._markets.get(request.native_symbol)
        if market is None:
            return []
        if ids:
            newest = max(ids)
            if market.last_id is None or newest > market.last_id:
                market.last_id = newest
        if gap is not None and request.after_id is not None:
            return self._gap(request.native_symbol, gap[0], gap[1], request.reason)
        return []

    def fill_done(self, request: FillRequest) -> None:
        """The fill is complete: its hole closes (take the last page's mark after this)."""
        market = self._markets.get(request.native_symbol)
        if market is not None and market.running is request:
            market.running = None

    def fill_failed(self, request: FillRequest, error: str) -> list[Action]:
        """A fill raised; it is queued again, or after ``max_attempts`` its window is a gap."""
        market = self._markets.get(request.native_symbol)
        if market is None:
            return []
        if market.running is request:
            market.running = None
        if request.attempt < self.max_attempts:
            self._enqueue(replace(request, attempt=request.attempt + 1))
            return []
        if request.after_id is None:
            return []
        return self._gap(request.native_symbol, request.after_id, request.until_id, f"rest_failed: {error}")

    def shutdown(self) -> list[Action]:
        """Shutdown's budget ran out: every queued or running fill becomes a gap record.

        A fill open at the top (``until_id`` ``None``) is bounded by the newest id seen; with
        nothing newer seen there is nothing to record (the resume point stays at ``after_id``).
        Unfilled drops are not recorded: the resume point stays at them and the next start fills.
        """
        actions: list[Action] = []
        for symbol, market in self._markets.items():
            for request in (market.running, market.queued):
                if request is None or request.after_id is None:
                    continue
                before = request.until_id
                if before is None and market.last_id is not None and market.last_id > request.after_id:
                    before = market.last_id + 1
                if before is not None:
                    actions += self._gap(symbol, request.after_id, before, f"shutdown: {request.reason}")
            market.running = market.queued = None
        self._queue.clear()
        return actions

    # --- durability and resume points -----------------------------------------------------------

    def safe_point(self, symbol: str) -> int | None:
        """Newest id such that every earlier trade was handed on or recorded as a gap."""
        market = self._markets.get(symbol)
        if market is None:
            return None
        if market.queued is None and market.running is None and not market.unfilled:
            return market.last_id  # no fill pending: nearly always, and per trade frame
        holes = [
            r.after_id for r in (market.queued, market.running) if r is not None and r.after_id is not None
        ]
        if market.unfilled and market.drop_point is not None:
            holes.append(market.drop_point)
        candidates = holes + ([market.last_id] if market.last_id is not None else [])
        return min(candidates) if candidates else None

    def mark(self, symbol: str) -> Mark:
        """Take a mark for an envelope about ``symbol``'s trades, just handed on."""
        market = self._markets.get(symbol)
        if market is None:
            return Mark(symbol, -1, None)
        mark = Mark(symbol, market.next_mark, self.safe_point(symbol), market.generation)
        market.next_mark += 1
        market.outstanding.append([mark.n, mark.safe, False])
        return mark

    def durable(self, marks: Iterable[Mark]) -> None:
        """The sinks have made these marks' envelopes durable; advance the resume points."""
        touched: set[str] = set()
        for mark in marks:
            market = self._markets.get(mark.native_symbol)
            if market is None or market.generation != mark.generation or not market.outstanding:
                continue
            index = mark.n - market.outstanding[0][0]
            if 0 <= index < len(market.outstanding):
                market.outstanding[index][2] = True
                touched.add(mark.native_symbol)
        for symbol in touched:
            market = self._markets[symbol]
            safe: int | None = None
            while market.outstanding and market.outstanding[0][2]:
                entry = market.outstanding.popleft()
                if entry[1] is not None:
                    safe = entry[1]
            current = self._resume.get(symbol)
            if safe is not None and (current is None or safe > current):
                self._resume[symbol] = safe
                self.resume_changed = True

    def resume_points(self) -> dict[str, int]:
        """Per market, the last id up to which every trade is durable or recorded as a gap."""
        return dict(self._resume)

    # --- internals ------------------------------------------------------------------------------

    def _request(self, request: FillRequest) -> list[Action]:
        self._enqueue(request)
        return [request]

    def _enqueue(self, request: FillRequest) -> None:
        market = self._markets[request.native_symbol]
        queued = market.queued
        if queued is not None:
            afters = [a for a in (queued.after_id, request.after_id) if a is not None]
            until: int | None = None
            if queued.until_id is not None and request.until_id is not None:
                until = max(queued.until_id, request.until_id)
            request = FillRequest(
                request.native_symbol,
                min(afters) if afters else None,
                until,
                queued.reason,
                min(queued.attempt, request.attempt),
            )
        market.queued = request
        self._queue.setdefault(request.native_symbol, None)

    def _gap(self, symbol: str, after_id: int, before_id: int | None, reason: str) -> list[Action]:
        """A gap record, narrowed to the first id the current connection delivered."""
        market = self._markets.get(symbol)
        first = market.first_on_conn if market is not None else None
        if first is not None and first > after_id and (before_id is None or first < before_id):
            before_id = first
        if before_id is not None and before_id <= after_id + 1 and self.consecutive_ids:
            return []
        return [GapRecord(symbol, after_id, before_id, reason)]
