"""The sans-I/O TradeTracker, table-driven: a sequence of events in, fill requests and gap records out.

Each case plays events against a fresh tracker and compares everything it asked for, in order,
plus the resume points it would persist. Events (tuples):

``track S..``, ``open S..``, ``drop S..``, ``sub S..``, ``bad S..``, ``list S``, ``forget S``:
market and connection events; ``trade S id``; ``hb S announced now``; ``tick now``;
``take``: the next fill a worker would run (output ``take``); ``page ids gap``: a REST page of
the fill taken last; ``done``: that fill completed; ``fail``: it raised; ``mark S``: an
envelope about S was handed on (marks are numbered from 0); ``durable i..``: those marks'
envelopes are durable; ``shutdown``.

Outputs: ``("fill", S, after, until, reason)``, ``("gap", S, after, before, reason)``,
``("dup", S, id)``, ``("take", S, after, until, reason, attempt)`` or ``("take", None)``.
"""

from __future__ import annotations

from typing import Any

import pytest

from extractors.tracking import Duplicate, FillRequest, GapRecord, Mark, TradeTracker

Event = tuple[Any, ...]


def out(action: object) -> tuple[Any, ...]:
    if isinstance(action, FillRequest):
        return ("fill", action.native_symbol, action.after_id, action.until_id, action.reason)
    if isinstance(action, GapRecord):
        return ("gap", action.native_symbol, action.after_id, action.before_id, action.reason)
    assert isinstance(action, Duplicate)
    return ("dup", action.native_symbol, action.trade_id)


def play(
    events: list[Event], *, consecutive: bool = True, resume: dict[str, int] | None = None
) -> tuple[list[tuple[Any, ...]], TradeTracker]:
    tracker = TradeTracker(consecutive_ids=consecutive, resume=resume, max_attempts=2)
    outputs: list[tuple[Any, ...]] = []
    taken: FillRequest | None = None
    marks: list[Mark] = []
    for event in events:
        name, args = event[0], event[1:]
        actions: list[Any] = []
        if name == "track":
            tracker.track(args)
        elif name == "open":
            tracker.opened(args)
        elif name == "drop":
            tracker.dropped(args)
        elif name == "sub":
            actions = tracker.subscribed(args)
        elif name == "bad":
            actions = tracker.bad_frame(args)
        elif name == "list":
            actions = tracker.listed(args[0])
        elif name == "forget":
            tracker.forget(args[0])
        elif name == "trade":
            actions = tracker.trade(args[0], args[1])
        elif name == "hb":
            tracker.heartbeat(args[0], args[1], args[2])
        elif name == "tick":
            actions = tracker.tick(args[0])
        elif name == "take":
            got = tracker.take_fill()
            if got is None:
                outputs.append(("take", None))
            else:
                outputs.append(
                    ("take", got.native_symbol, got.after_id, got.until_id, got.reason, got.attempt)
                )
                taken = got
        elif name == "page":
            assert taken is not None
            actions = tracker.fill_page(taken, args[0], args[1])
        elif name == "done":
            assert taken is not None
            tracker.fill_done(taken)
        elif name == "fail":
            assert taken is not None
            actions = tracker.fill_failed(taken, "boom")
        elif name == "mark":
            marks.append(tracker.mark(args[0]))
        elif name == "durable":
            tracker.durable(marks[i] for i in args)
        elif name == "shutdown":
            actions = tracker.shutdown()
        else:
            raise AssertionError(f"unknown event {name}")
        outputs += [out(a) for a in actions]
    return outputs, tracker


def started(*symbols: str) -> list[Event]:
    """Markets tracked, subscribed, and their baseline fills run (empty pages)."""
    events: list[Event] = [("track", *symbols), ("open", *symbols), ("sub", *symbols)]
    for _ in symbols:
        events += [("take",), ("page", (), None), ("done",)]
    return events


def baseline_outputs(*symbols: str) -> list[tuple[Any, ...]]:
    fills = [("fill", s, None, None, "start") for s in symbols]
    return fills + [("take", s, None, None, "start", 1) for s in symbols]


CASES = [
    pytest.param(
        True,
        None,
        [*started("A"), ("trade", "A", 7), ("trade", "A", 8), ("trade", "A", 8), ("trade", "A", 12)],
        [*baseline_outputs("A"), ("dup", "A", 8), ("fill", "A", 8, 12, "id_jump")],
        {},
        id="an-id-jump-asks-for-the-trades-between-and-a-repeated-id-is-a-duplicate",
    ),
    pytest.param(
        False,
        None,
        [*started("A"), ("trade", "A", 100), ("trade", "A", 103), ("trade", "A", 109)],
        baseline_outputs("A"),
        {},
        id="kucoin-sequences-only-order-trades",
    ),
    pytest.param(
        True,
        None,
        [*started("A"), ("trade", "A", 10), ("drop", "A"), ("open", "A"), ("trade", "A", 20), ("sub", "A")],
        [*baseline_outputs("A"), ("fill", "A", 10, 20, "id_jump"), ("fill", "A", 10, None, "reconnect")],
        {},
        id="a-reconnect-fills-from-the-last-id-before-the-drop",
    ),
    pytest.param(
        False,
        None,
        [
            *started("A"),
            ("trade", "A", 10),
            ("drop", "A"),
            ("open", "A"),
            ("trade", "A", 20),
            ("drop", "A"),  # dropped again before the resubscription was acknowledged
            ("open", "A"),
            ("trade", "A", 30),
            ("sub", "A"),
        ],
        [*baseline_outputs("A"), ("fill", "A", 10, None, "reconnect")],
        {},
        id="a-second-drop-before-resubscribing-keeps-the-first-drops-point",
    ),
    pytest.param(
        False,
        None,
        [
            ("track", "A", "B"),
            ("open", "A", "B"),
            ("trade", "A", 5),  # trades stream before the subscriptions are all acknowledged
            ("take",),
            ("page", (3, 4, 5), None),
            ("done",),
            ("drop", "A", "B"),  # and the connection drops before they are
            ("open", "A", "B"),
            ("trade", "A", 9),
            ("sub", "A", "B"),
        ],
        [
            ("fill", "A", None, None, "start"),
            ("take", "A", None, None, "start", 1),
            ("fill", "A", 5, None, "reconnect"),
            ("fill", "B", None, None, "start"),
        ],
        {},
        id="the-baseline-runs-at-the-first-socket-trade-and-a-drop-before-the-acks-fills-from-the-last-id",
    ),
    pytest.param(
        True,
        None,
        [*started("A", "B"), ("trade", "A", 5), ("trade", "B", 50), *[("bad", "A", "B")] * 50],
        [
            *baseline_outputs("A", "B"),
            *[("fill", "A", 5, None, "bad_frame"), ("fill", "B", 50, None, "bad_frame")] * 50,
        ],
        None,
        id="fifty-bad-frames-ask-fifty-times-but-queue-one-fill-per-market",
    ),
    pytest.param(
        True,
        None,
        [
            *started("A"),
            ("trade", "A", 10),
            ("trade", "A", 14),
            ("bad", "A"),
            ("take",),
            ("take",),
        ],
        [
            *baseline_outputs("A"),
            ("fill", "A", 10, 14, "id_jump"),
            ("fill", "A", 14, None, "bad_frame"),
            ("take", "A", 10, None, "id_jump", 1),
            ("take", None),
        ],
        {},
        id="requests-for-a-queued-market-merge-from-the-older-point-to-the-wider-end",
    ),
    pytest.param(
        True,
        None,
        [
            *started("A"),
            ("trade", "A", 10),
            ("trade", "A", 14),
            ("take",),
            ("trade", "A", 20),
            ("take",),  # A's fill runs: the one queued behind it waits
            ("page", (11, 12, 13), None),
            ("done",),
            ("take",),
        ],
        [
            *baseline_outputs("A"),
            ("fill", "A", 10, 14, "id_jump"),
            ("take", "A", 10, 14, "id_jump", 1),
            ("fill", "A", 14, 20, "id_jump"),
            ("take", None),
            ("take", "A", 14, 20, "id_jump", 1),
        ],
        {},
        id="one-fill-per-market-runs-at-a-time",
    ),
    pytest.param(
        True,
        None,
        [
            *started("A", "B"),
            ("trade", "A", 10),
            ("trade", "B", 10),
            ("hb", "A", 12, 0.0),
            ("hb", "B", 11, 0.0),
            ("tick", 0.5),
            ("trade", "B", 11),  # B's trade frame was only late
            ("tick", 1.0),
        ],
        [*baseline_outputs("A", "B"), ("fill", "A", 10, 13, "heartbeat")],
        {},
        id="a-heartbeat-announced-trade-that-never-comes-is-filled-after-the-grace",
    ),
    pytest.param(
        True,
        None,
        [*started("A"), ("trade", "A", 10), ("trade", "A", 14), ("take",), ("fail",), ("take",), ("fail",)],
        [
            *baseline_outputs("A"),
            ("fill", "A", 10, 14, "id_jump"),
            ("take", "A", 10, 14, "id_jump", 1),
            ("take", "A", 10, 14, "id_jump", 2),
            ("gap", "A", 10, 14, "rest_failed: boom"),
        ],
        {},
        id="a-fill-failing-every-attempt-becomes-its-window-as-a-gap",
    ),
    pytest.param(
        True,
        None,
        [
            *started("A", "B", "C"),
            ("trade", "A", 10),
            ("trade", "A", 14),
            ("trade", "B", 3),
            ("bad", "B"),
            ("trade", "B", 4),
            ("trade", "B", 5),
            ("trade", "C", 9),
            ("bad", "C"),
            ("shutdown",),
            ("take",),
        ],
        [
            *baseline_outputs("A", "B", "C"),
            ("fill", "A", 10, 14, "id_jump"),
            ("fill", "B", 3, None, "bad_frame"),
            ("fill", "C", 9, None, "bad_frame"),
            ("gap", "A", 10, 14, "shutdown: id_jump"),
            # Open at the top: bounded by the newest id seen; C saw nothing newer, nothing to record.
            ("gap", "B", 3, 6, "shutdown: bad_frame"),
            ("take", None),
        ],
        None,
        id="fills-still-queued-at-shutdown-become-gaps-records",
    ),
    pytest.param(
        True,
        {"A": 50, "B": 7},
        [("track", "A"), ("open", "A"), ("trade", "A", 300), ("sub", "A"), ("take",)],
        [("fill", "A", 50, None, "resume"), ("take", "A", 50, None, "resume", 1)],
        {"A": 50, "B": 7},
        id="a-restart-fills-each-market-from-its-resume-point-when-subscribed",
    ),
    pytest.param(
        False,
        {"A": 50},
        [
            ("track", "A"),
            ("open", "A"),
            ("trade", "A", 300),
            ("drop", "A"),  # the first connection after the restart drops before subscribing
            ("open", "A"),
            ("trade", "A", 400),
            ("sub", "A"),
            ("take",),
            ("page", (350, 360), (50, 350)),  # KuCoin: only the newest trades are served
        ],
        [
            ("fill", "A", 50, None, "resume"),
            ("take", "A", 50, None, "resume", 1),
            ("gap", "A", 50, 350, "resume"),
        ],
        {"A": 50},
        id="what-the-exchange-no-longer-serves-after-a-restart-is-a-gap-with-the-exact-window",
    ),
    pytest.param(
        False,
        {"A": 50},
        [
            ("track", "A"),
            ("open", "A"),
            ("trade", "A", 300),
            ("sub", "A"),
            ("take",),
            ("page", (350, 360), (50, 350)),
        ],
        [
            ("fill", "A", 50, None, "resume"),
            ("take", "A", 50, None, "resume", 1),
            ("gap", "A", 50, 300, "resume"),
        ],
        {"A": 50},
        id="a-gap-is-narrowed-to-the-first-trade-the-socket-delivered",
    ),
    pytest.param(
        True,
        None,
        [*started("A"), ("trade", "A", 10), ("mark", "A"), ("trade", "A", 11), ("mark", "A"), ("durable", 1)],
        baseline_outputs("A"),
        {},
        id="a-mark-durable-before-an-earlier-one-does-not-move-the-resume-point",
    ),
    pytest.param(
        True,
        None,
        [
            *started("A"),
            ("trade", "A", 10),
            ("mark", "A"),
            ("trade", "A", 11),
            ("mark", "A"),
            ("durable", 1),
            ("durable", 0),
        ],
        baseline_outputs("A"),
        {"A": 11},
        id="the-resume-point-is-the-last-id-durable-with-everything-before-it",
    ),
    pytest.param(
        True,
        None,
        [
            *started("A"),
            ("trade", "A", 10),
            ("mark", "A"),  # 0
            ("trade", "A", 14),
            ("mark", "A"),  # 1: 11-13 are missing
            ("trade", "A", 15),
            ("mark", "A"),  # 2
            ("durable", 0, 1, 2),
            ("take",),
            ("page", (11, 12, 13), None),
            ("done",),
            ("mark", "A"),  # 3: the page that closes the hole
        ],
        [*baseline_outputs("A"), ("fill", "A", 10, 14, "id_jump"), ("take", "A", 10, 14, "id_jump", 1)],
        {"A": 10},
        id="an-unfinished-fill-holds-the-resume-point-at-its-start",
    ),
    pytest.param(
        True,
        None,
        [
            *started("A"),
            ("trade", "A", 10),
            ("mark", "A"),
            ("trade", "A", 14),
            ("mark", "A"),
            ("take",),
            ("page", (11, 12, 13), None),
            ("done",),
            ("mark", "A"),
            ("durable", 0, 1, 2),
        ],
        [*baseline_outputs("A"), ("fill", "A", 10, 14, "id_jump"), ("take", "A", 10, 14, "id_jump", 1)],
        {"A": 14},
        id="a-completed-fill-once-durable-releases-the-resume-point",
    ),
    pytest.param(
        True,
        {"A": 5},
        [
            ("track", "A"),
            ("open", "A"),
            ("trade", "A", 9),
            ("mark", "A"),
            ("durable", 0),
        ],
        [],
        {"A": 5},
        id="frames-durable-before-the-resume-fill-ran-do-not-skip-it",
    ),
    pytest.param(
        True,
        None,
        [
            *started("A"),
            ("trade", "A", 10),
            ("trade", "A", 14),
            ("mark", "A"),
            ("shutdown",),
            ("mark", "A"),  # the gap record
            ("durable", 0, 1),
        ],
        [*baseline_outputs("A"), ("fill", "A", 10, 14, "id_jump"), ("gap", "A", 10, 14, "shutdown: id_jump")],
        {"A": 14},
        id="a-durable-gap-record-lets-the-resume-point-pass-its-window",
    ),
    pytest.param(
        True,
        {"A": 5},
        [*started("B"), ("trade", "B", 1), ("bad", "B"), ("forget", "B"), ("take",), ("forget", "A")],
        [*baseline_outputs("B"), ("fill", "B", 1, None, "bad_frame"), ("take", None)],
        {},
        id="a-delisted-market-loses-its-queued-fill-and-resume-point",
    ),
    pytest.param(
        True,
        None,
        [*started("A"), ("list", "N"), ("take",)],
        [
            *baseline_outputs("A"),
            ("fill", "N", None, None, "listing"),
            ("take", "N", None, None, "listing", 1),
        ],
        {},
        id="a-new-listing-gets-a-baseline-fill",
    ),
]


@pytest.mark.parametrize(("consecutive", "resume", "events", "expected", "resume_after"), CASES)
def test_tracker(
    consecutive: bool,
    resume: dict[str, int] | None,
    events: list[Event],
    expected: list[tuple[Any, ...]],
    resume_after: dict[str, int] | None,
) -> None:
    outputs, tracker = play(events, consecutive=consecutive, resume=resume)
    assert outputs == expected
    if resume_after is not None:
        assert tracker.resume_points() == resume_after


def test_bad_frames_keep_the_queue_bounded_by_the_number_of_markets() -> None:
    _, tracker = play([*started("A", "B", "C"), *[("bad", "A", "B", "C")] * 1000])
    assert tracker.queued == 3


def test_the_resume_points_change_flag_is_set_only_when_a_point_moves() -> None:
    _, tracker = play([*started("A"), ("trade", "A", 3), ("mark", "A"), ("durable", 0)])
    assert tracker.resume_changed and tracker.resume_points() == {"A": 3}
    tracker.resume_changed = False
    tracker.durable([tracker.mark("A")])
    assert not tracker.resume_changed


def test_a_mark_from_before_a_delisting_does_not_count_for_the_market_listed_again() -> None:
    _, tracker = play([*started("A"), ("trade", "A", 3)])
    old = tracker.mark("A")
    tracker.forget("A")
    tracker.listed("A")
    tracker.trade("A", 10)
    tracker.mark("A")  # not durable yet: the same number as the old mark, in the new life
    tracker.durable([old])
    assert tracker.resume_points() == {}
