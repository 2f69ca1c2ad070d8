"""``python -m tests.extractors.outage_launcher <flag> run ...``: ``python -m extractors`` itself, except
that the landing sink fails (a retryable :class:`SinkError`, as in a disk or S3 outage) while the
file ``<flag>`` exists. The crash-recovery test uses it to kill the extractor during a sink outage.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from extractors.__main__ import main
from extractors.envelope import Batch
from extractors.sinks import landing
from extractors.sinks.base import SinkError

_flag = Path(sys.argv[1])
_write_many = landing.LandingSink.write_many


async def _failing_while_flagged(self: landing.LandingSink, batches: Sequence[Batch]) -> None:
    if _flag.exists():
        raise SinkError(f"landing outage (test flag {_flag})", retryable=True)
    await _write_many(self, batches)


# write() goes through write_many() too: one patch covers both.
landing.LandingSink.write_many = _failing_while_flagged  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[2:]))
