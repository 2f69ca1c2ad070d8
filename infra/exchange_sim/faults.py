"""Fault specifications and the per-connection / per-server fault state.

Faults are count-based, so they are deterministic: "the next 3 data frames", never "10 % of
frames". Websocket faults count **data frames** only (market data; not welcome/ack/pong/
subscriptions replies) and apply to the connections open when injected (``scope="open"``,
falling back to the next connection when none is open), to the next connection only
(``scope="next"``), or to every open and future connection until cleared (``scope="all"``).

Faults and their parameters:

* ``close_after(frames=0, abrupt=False, code=1001)``: send N more data frames, then close with
  a close frame carrying ``code`` (or abort the TCP connection when ``abrupt``).
* ``stall(after=0, seconds=None)``: after N data frames stop sending anything (data, replies,
  pings, pongs) without closing; frames published meanwhile are dropped. With ``seconds``,
  sending resumes after that time.
* ``malformed(count=1, replace=False)``: send a truncated (invalid JSON) copy before each of the
  next N data frames; with ``replace`` the truncated copy replaces the frame (its trade is then
  not delivered).
* ``duplicate(count=1)``: send each of the next N data frames twice.
* ``reorder(count=1)``: swap the next N pairs of consecutive data frames.
* ``no_pong()``: ignore client pings (websocket ping frames and JSON pings).
* ``reject_subscribe(count=1)``: answer the next N subscribe requests on the exchange with its
  documented error reply.
* ``rest_error(status=429, count=1, retry_after=1)``: answer the next N REST requests with that
  status (429 or 5xx) and the exchange's error body (429 with ``Retry-After``).

Data faults change what the exchange says, not how it is delivered (exchange-wide, on every
connection and in the REST history alike):

* ``bad_trade(kind, count=1)``: the next N generated trades are bad in one way: ``kind`` is
  ``negative_price``, ``zero_size`` or ``future_ts`` (stamped an hour ahead). Their
  truth records carry ``fault=kind``: they must reach quarantine, never silver.
* ``crossed_book(count=1)``: for each of the next N trades the book top has bid and ask swapped
  (bid > ask) while that trade's frames go out (tickers carrying bid/ask) and again while the
  quote after it goes out (L1). The server lists both crossed tops in ``crossed_quotes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

FaultName = Literal[
    "close_after",
    "stall",
    "malformed",
    "duplicate",
    "reorder",
    "no_pong",
    "reject_subscribe",
    "rest_error",
    "bad_trade",
    "crossed_book",
]
Scope = Literal["open", "next", "all"]
WS_FAULTS: frozenset[str] = frozenset(
    {"close_after", "stall", "malformed", "duplicate", "reorder", "no_pong"}
)
FAULT_NAMES: frozenset[str] = frozenset(get_args(FaultName))
BadTradeKind = Literal["negative_price", "zero_size", "future_ts"]
BAD_TRADE_KINDS: frozenset[str] = frozenset(get_args(BadTradeKind))

_PARAMS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "close_after": {"frames": int, "abrupt": bool, "code": int},
    "stall": {"after": int, "seconds": (int, float, type(None))},
    "malformed": {"count": int, "replace": bool},
    "duplicate": {"count": int},
    "reorder": {"count": int},
    "no_pong": {},
    "reject_subscribe": {"count": int},
    "rest_error": {"status": int, "count": int, "retry_after": int},
    "bad_trade": {"kind": str, "count": int},
    "crossed_book": {"count": int},
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault request: its name, websocket scope and parameters (validated)."""

    name: FaultName
    scope: Scope = "open"
    params: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, name: str, *, scope: str = "open", **params: Any) -> Fault:
        """Validate a fault request from keyword arguments or a control-endpoint JSON body.

        Raises ``ValueError`` naming the unknown fault, scope or parameter.
        """
        if name not in FAULT_NAMES:
            raise ValueError(f"unknown fault {name!r}; known: {sorted(FAULT_NAMES)}")
        if scope not in ("open", "next", "all"):
            raise ValueError(f"unknown scope {scope!r}; use open, next or all")
        allowed = _PARAMS[name]
        for key, value in params.items():
            if key not in allowed:
                raise ValueError(f"fault {name!r} has no parameter {key!r}; known: {sorted(allowed)}")
            if isinstance(value, bool) and allowed[key] is not bool:
                raise ValueError(f"fault {name!r} parameter {key!r} must not be a boolean")
            if not isinstance(value, allowed[key]):
                raise ValueError(f"fault {name!r} parameter {key!r} has the wrong type")
        if name == "rest_error" and not (params.get("status", 429) == 429 or params["status"] >= 500):
            raise ValueError("rest_error status must be 429 or 5xx")
        if name == "bad_trade" and params.get("kind") not in BAD_TRADE_KINDS:
            raise ValueError(f"bad_trade needs kind= one of {sorted(BAD_TRADE_KINDS)}")
        return cls(name=name, scope=scope, params=dict(params))  # type: ignore[arg-type]


@dataclass(slots=True)
class ConnFaults:
    """The fault state of one websocket connection; the connection's writer consults it."""

    close_after: int | None = None
    close_abrupt: bool = False
    close_code: int = 1001
    stall_after: int | None = None
    stall_seconds: float | None = None
    stall_until: float | None = None
    stalled_forever: bool = False
    malformed: int = 0
    malformed_replace: bool = False
    duplicate: int = 0
    reorder: int = 0
    no_pong: bool = False

    def apply(self, fault: Fault) -> None:
        p = fault.params
        if fault.name == "close_after":
            self.close_after = int(p.get("frames", 0))
            self.close_abrupt = bool(p.get("abrupt", False))
            self.close_code = int(p.get("code", 1001))
        elif fault.name == "stall":
            self.stall_after = int(p.get("after", 0))
            seconds = p.get("seconds")
            self.stall_seconds = float(seconds) if seconds is not None else None
        elif fault.name == "malformed":
            self.malformed += int(p.get("count", 1))
            self.malformed_replace = bool(p.get("replace", False))
        elif fault.name == "duplicate":
            self.duplicate += int(p.get("count", 1))
        elif fault.name == "reorder":
            self.reorder += int(p.get("count", 1))
        elif fault.name == "no_pong":
            self.no_pong = True


@dataclass(slots=True)
class ServerFaults:
    """Exchange-wide fault state: subscribe rejections, REST errors, data faults, pending/sticky ws faults."""

    reject_subscribe: int = 0
    rest_errors: list[tuple[int, int]] = field(default_factory=list)  # (status, retry_after)
    bad_trades: list[BadTradeKind] = field(default_factory=list)
    crossed_books: int = 0
    next_conn: list[Fault] = field(default_factory=list)
    sticky: list[Fault] = field(default_factory=list)

    def take_rest_error(self) -> tuple[int, int] | None:
        return self.rest_errors.pop(0) if self.rest_errors else None

    def take_reject(self) -> bool:
        if self.reject_subscribe > 0:
            self.reject_subscribe -= 1
            return True
        return False

    def take_bad_trade(self) -> BadTradeKind | None:
        return self.bad_trades.pop(0) if self.bad_trades else None

    def take_crossed_book(self) -> bool:
        if self.crossed_books > 0:
            self.crossed_books -= 1
            return True
        return False

    def for_new_connection(self) -> list[Fault]:
        taken, self.next_conn = self.next_conn, []
        return taken + list(self.sticky)

    def clear(self) -> None:
        self.reject_subscribe = 0
        self.rest_errors.clear()
        self.bad_trades.clear()
        self.crossed_books = 0
        self.next_conn.clear()
        self.sticky.clear()
