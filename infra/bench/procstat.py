"""What the benchmarks read about a process (Linux ``/proc``) and how they stop one."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from infra.services.process import free_port as free_port  # the benchmarks start servers on it


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def terminate(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float = 30
) -> tuple[int, float]:
    """SIGTERM, wait (SIGKILL after ``timeout_s``); the exit code and the seconds it took."""
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        code = proc.wait()
    return code, time.monotonic() - started
