"""When a supervised child that died is started again, and when the supervisor gives up (pure).

One mechanism for every delay in the project: :class:`extractors.backoff.Backoff` (random start,
doubling, a hard cap, full jitter). A child that stayed up for ``healthy_after_s`` resets the
backoff, so one crash after an hour waits a short delay. A child that died ``max_failures``
times within ``window_s`` seconds is not restarted again: the supervisor reports it with its last
stderr lines and stops, instead of retrying silently forever.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from extractors.backoff import Backoff


@dataclass(frozen=True)
class Restart:
    """Start the child again after ``delay_s`` seconds; ``failures`` counts deaths within the window."""

    delay_s: float
    failures: int


@dataclass(frozen=True)
class GiveUp:
    """Too many deaths: ``failures`` within ``window_s`` seconds."""

    failures: int
    window_s: float


class RestartPolicy:
    """Decides, for one child, what follows each unexpected exit. Times are monotonic seconds."""

    def __init__(
        self,
        *,
        initial_s: float = 1.0,
        cap_s: float = 30.0,
        max_failures: int = 5,
        window_s: float = 300.0,
        healthy_after_s: float = 60.0,
        rng: random.Random | None = None,
    ) -> None:
        if max_failures < 1 or window_s <= 0 or healthy_after_s < 0:
            raise ValueError("need max_failures >= 1, window_s > 0 and healthy_after_s >= 0")
        self.max_failures = max_failures
        self.window_s = window_s
        self.healthy_after_s = healthy_after_s
        self._backoff = Backoff(initial=initial_s, cap=cap_s, rng=rng)
        self._deaths: deque[float] = deque()

    def on_exit(self, *, now: float, uptime_s: float) -> Restart | GiveUp:
        """The child died at ``now`` after running ``uptime_s`` seconds."""
        if uptime_s >= self.healthy_after_s:
            self._backoff.reset()
        self._deaths.append(now)
        while self._deaths and self._deaths[0] <= now - self.window_s:
            self._deaths.popleft()
        failures = len(self._deaths)
        if failures >= self.max_failures:
            return GiveUp(failures=failures, window_s=self.window_s)
        return Restart(delay_s=next(self._backoff), failures=failures)
