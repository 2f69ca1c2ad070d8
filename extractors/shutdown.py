"""The one deadline of an extractor's shutdown, shared out among its steps."""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ShutdownBudget:
    """One deadline for the whole shutdown, measured from the stop signal (``time.monotonic()``).

    The steps run one after the other, each by its own point inside the budget and each taking
    only what it needs (what one leaves, the next gets): in-flight gap fills until half of it
    (:data:`FILL_SHARE`; what is still queued then becomes ``gaps`` records), the final flush of
    the batcher and the writes of the batches queued for the sinks until :data:`WRITE_SHARE` (what
    is not durable by then is excluded from the resume state, so the next start fetches it over
    REST), then closing the sinks (spool drain, landing parts, Kafka producer) by ``deadline``.
    """

    #: Gap fills may use this share of the budget.
    FILL_SHARE = 0.5
    #: The final flush and the sink writes end at this share; closing the sinks has the rest.
    WRITE_SHARE = 0.8

    started: float
    total_s: float

    @classmethod
    def start(cls, total_s: float, *, now: float | None = None) -> ShutdownBudget:
        return cls(time.monotonic() if now is None else now, max(0.0, total_s))

    @property
    def deadline(self) -> float:
        return self.started + self.total_s

    @property
    def fills_until(self) -> float:
        return self.started + self.total_s * self.FILL_SHARE

    @property
    def writes_until(self) -> float:
        return self.started + self.total_s * self.WRITE_SHARE

    def left(self, until: float) -> float:
        """Seconds from now until ``until`` (0 when it has passed)."""
        return max(0.0, until - time.monotonic())
