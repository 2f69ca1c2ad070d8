"""Gap fill: the I/O the trade tracker asks for (REST fills, ``gaps`` records, durable marks).

The :class:`~extractors.tracking.TradeTracker` decides (no I/O); a :class:`GapFiller` does what
it decided, for one exchange runner:

* :meth:`GapFiller.handle` performs the tracker's actions: counts duplicates and detected gaps,
  lands a ``gaps`` record for trades REST cannot return, and wakes the fill workers;
* :meth:`GapFiller.hand_on` emits an envelope about a market's trades with the tracker's mark,
  and :meth:`GapFiller.durable` hands the marks back once the sinks made the envelopes durable,
  so the resume points advance only past what is on disk;
* ``_GAP_WORKERS`` :meth:`GapFiller.worker` tasks take the queued fills and walk the exchange's
  REST trade pages (a baseline, after a subscription, takes the first page only); each page lands
  with ``source="rest"``. A failing fill is retried up to the tracker's attempt limit, then
  recorded as a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Container, Iterable, Sequence

from extractors.backoff import is_retryable
from extractors.envelope import Envelope
from extractors.exchanges.base import Connector, RestRequest
from extractors.metrics import Metrics
from extractors.rest import RestClient, RestError
from extractors.tracking import Action, Duplicate, FillRequest, GapRecord, Mark, TradeTracker

logger = logging.getLogger(__name__)

#: Fill workers per exchange runner (fills of different markets run side by side).
GAP_WORKERS = 2
#: Attempts of one fill before its trades are recorded as a gap.
GAP_JOB_ATTEMPTS = 3


class GapFiller:
    """Performs one exchange runner's tracker actions and REST gap fills; see the module docstring.

    ``markets`` is the runner's live view of its subscribed markets: a fill for a market no
    longer in it (delisted meanwhile) is dropped. ``rest_id`` names the next REST request (one
    sequence per runner, shared with the other REST pages it lands).
    """

    def __init__(
        self,
        connector: Connector,
        *,
        rest: RestClient,
        tracker: TradeTracker,
        markets: Container[str],
        emit: Callable[[Envelope], None],
        rest_id: Callable[[], str],
        metrics: Metrics,
        stop: asyncio.Event,
    ) -> None:
        self.c = connector
        self.name = connector.NAME
        self.rest = rest
        self.tracker = tracker
        self._markets = markets
        self._emit = emit
        self._rest_id = rest_id
        self.m = metrics
        self._stop = stop
        #: The tracker's mark of every envelope handed on and not yet durable, by object id.
        self._marks: dict[int, Mark] = {}
        self._fill_ready = asyncio.Event()

    def hand_on(self, envelope: Envelope, symbol: str | None) -> None:
        """Emit an envelope about ``symbol``'s trades with the tracker's mark."""
        self._emit(envelope)
        if symbol is not None and self.tracker.tracks(symbol):
            self._marks[id(envelope)] = self.tracker.mark(symbol)

    def handle(self, actions: Sequence[Action]) -> None:
        """Perform what the tracker asked for."""
        for action in actions:
            if isinstance(action, Duplicate):
                self.m.duplicates.labels(self.name).inc()
            elif isinstance(action, FillRequest):
                self.m.gaps_detected.labels(self.name, action.reason).inc()
            elif isinstance(action, GapRecord):
                self._record_gap(action)
        if self.tracker.queued:
            self._fill_ready.set()

    def durable(self, envelopes: Iterable[Envelope]) -> None:
        """The sinks have made these envelopes durable: let the resume points advance."""
        marks = [m for m in (self._marks.pop(id(e), None) for e in envelopes) if m is not None]
        if marks:
            self.tracker.durable(marks)

    async def worker(self, n: int) -> None:
        """Run queued fills until the stop event fires and none is left."""
        while True:
            job = self.tracker.take_fill()
            if job is None:
                if self._stop.is_set():
                    return
                self._fill_ready.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._fill_ready.wait(), 0.25)
                continue
            if job.native_symbol not in self._markets:
                self.tracker.fill_done(job)
                continue
            try:
                await self._fill(job)
            except Exception as exc:
                if not is_retryable(exc) and not isinstance(exc, RestError | ValueError | KeyError):
                    raise
                actions = self.tracker.fill_failed(job, str(exc))
                if actions:
                    logger.error("gap fill %s failed for good: %s", job, exc, extra={"exchange": self.name})
                else:
                    logger.warning(
                        "gap fill %s failed (%s); retrying", job, exc, extra={"exchange": self.name}
                    )
                self.handle(actions)
            finally:
                self.handle([])  # a fill queued behind this one for the same market may go now

    async def _fill(self, job: FillRequest) -> None:
        """Fetch ``job``'s pages; a baseline (no ``after_id``) takes the first page only."""
        symbol = job.native_symbol
        rest_id = self._rest_id()
        baseline = job.after_id is None
        if job.after_id is None:
            request: RestRequest | None = self.c.recent_trades_request(symbol)
        else:
            request = self.c.gap_fill_request(symbol, after_id=job.after_id, until_id=job.until_id)
        page_no = 0
        recovered = 0
        while request is not None:
            page_no += 1
            response = await self.rest.call(request)
            envelope = Envelope(
                exchange=self.name,
                channel="trades",
                stream=request.target,
                payload=response.body,
                recv_ts_ns=response.recv_ts_ns,
                conn_id=rest_id,
                conn_seq=page_no,
                source="rest",
                native_symbol=symbol,
            )
            try:
                page = self.c.parse_trades_page(
                    response.body,
                    request=request,
                    headers=response.headers,
                    after_id=job.after_id if job.after_id is not None else -1,
                    until_id=job.until_id,
                )
            except Exception:
                self._emit(envelope)  # the raw page is kept; the fill is retried
                raise
            recovered += len(page.ids)
            # Gap records go out before the page, and the hole closes before the last page's
            # mark: the resume point passes the hole only once both are durable.
            self.handle(self.tracker.fill_page(job, page.ids, page.gap))
            request = None if baseline else page.next_request
            if request is None:
                self.tracker.fill_done(job)
            self.hand_on(envelope, symbol)
        self.m.gap_trades.labels(self.name).inc(recovered)
        self.m.gaps_filled.labels(self.name).inc()

    def _record_gap(self, gap: GapRecord) -> None:
        """Land a ``gaps`` record: trades strictly between its two ids are lost for good."""
        self.m.gaps_unrecoverable.labels(self.name).inc()
        logger.warning(
            "unrecoverable gap in %s: trades after %s and before %s (%s)",
            gap.native_symbol,
            gap.after_id,
            gap.before_id,
            gap.reason,
            extra={"exchange": self.name},
        )
        envelope = Envelope(
            exchange=self.name,
            channel="gaps",
            stream="gap",
            payload=json.dumps(gap.payload()),
            recv_ts_ns=time.time_ns(),
            conn_id="runner",
            conn_seq=0,
            source="rest",
            native_symbol=gap.native_symbol,
            error=None,
        )
        self.hand_on(envelope, gap.native_symbol)
