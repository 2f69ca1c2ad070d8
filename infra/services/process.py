"""Background processes for the local services: ports, PID files, state files, readiness, stopping.

Nothing here knows Kafka or MinIO; :mod:`infra.services` wires them. A service lives in its own
folder ``<state dir>/<name>/`` holding ``<name>.pid``, ``state.json`` (ports, endpoints, the PID)
and its log, so another process (``python -m infra.services status``, the tests, ``make run``) can
find a running service and tell it from a recycled PID: the process's command line must mention
the service folder.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import logging
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
_LIBC: Any = None
with contextlib.suppress(OSError):
    _LIBC = ctypes.CDLL(None, use_errno=True)


class ServiceError(RuntimeError):
    """A service could not start, stop or be reached; the message names the service and why."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service}: {reason}")
        self.service = service
        self.reason = reason


#: Where :func:`free_port` looks first: above the usual fixed ports, below the ephemeral range.
_FIRST_PORT = 16384


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now, for a server started next.

    Taken below the ephemeral range where there is room: ``bind(0)`` hands out a port from that
    range, which every outgoing connection draws from too, so between this check and the
    server's bind a client socket (Spark's, Kafka's) could take it ("Address already in use",
    seen with the tests under load). Below it only another listener can.
    """
    low = _ephemeral_low()
    for _ in range(50 if low - _FIRST_PORT > 1000 else 0):
        port = random.randrange(_FIRST_PORT, low)
        if port_is_free(port, host):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def port_accepts(port: int, host: str = "127.0.0.1", *, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file, or a note that it is missing (for error messages)."""
    try:
        with path.open("rb") as file:
            file.seek(0, os.SEEK_END)
            size = file.tell()
            file.seek(max(0, size - 64 * 1024))
            text = file.read().decode("utf-8", errors="replace")
    except OSError:
        return f"(no log at {path})"
    chosen = text.splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in chosen) if chosen else f"(log {path} is empty)"


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder/.lock`` so two processes never start one service twice."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_state(folder: Path) -> dict[str, Any] | None:
    """The ``state.json`` of a service folder, or ``None`` when there is none (never started)."""
    try:
        data = json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_state(folder: Path, state: Mapping[str, Any]) -> None:
    """Write ``state.json`` atomically, readable by the owner only (it may hold MinIO keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "state.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        json.dump(dict(state), file, indent=2, sort_keys=True)
    os.replace(tmp, folder / "state.json")


def pid_is_running(pid: int, *, marker: str) -> bool:
    """Whether ``pid`` is alive, not a zombie, and its command line contains ``marker``."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    if state in ("Z", "X"):
        return False
    return marker in raw.replace(b"\0", b" ").decode("utf-8", errors="replace")


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(
    command: Sequence[str],
    *,
    log_path: Path,
    pid_path: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    die_with_parent: bool = False,
    user: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in its own session, stdout and stderr appended to ``log_path``.

    ``die_with_parent`` asks Linux to SIGTERM the child when this process dies, so a test session
    killed hard leaves no broker behind (safe to call from any thread); ``python -m infra.services
    up`` leaves it off so the services outlive the command. ``user``: run as that OS user (root
    starting PostgreSQL, which refuses to run as root).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)

    def popen() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            return subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent if die_with_parent else None,
                user=user,
            )

    # Linux sends the death signal when the *thread* that forked exits, not the process: fork
    # from one thread that lives as long as the process, so a service started (or restarted)
    # from a short-lived worker thread is not killed when that thread ends.
    proc = _spawner().submit(popen).result() if die_with_parent else popen()
    pid_path.write_text(f"{proc.pid}\n")
    return proc


_SPAWNER: ThreadPoolExecutor | None = None
_SPAWNER_LOCK = threading.Lock()


def _spawner() -> ThreadPoolExecutor:
    """One worker thread, idle between spawns and alive until the interpreter exits."""
    global _SPAWNER
    with _SPAWNER_LOCK:
        if _SPAWNER is None:
            _SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="service-spawner")
        return _SPAWNER


def wait_ready(
    service: str,
    check: Callable[[], bool],
    *,
    proc: subprocess.Popen[bytes] | None,
    logs: Sequence[Path],
    timeout: float,
    interval: float = 0.2,
) -> None:
    """Poll ``check`` until it is true; raise :class:`ServiceError` with the tails of ``logs``
    when the process exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise ServiceError(
                service, f"exited with code {proc.returncode} while starting\n{log_tails(logs)}"
            )
        if check():
            return
        if time.monotonic() > deadline:
            raise ServiceError(service, f"not ready after {timeout:.0f} s\n{log_tails(logs)}")
        time.sleep(interval)


def log_tails(logs: Sequence[Path], lines: int = 25) -> str:
    """The tails of the logs that exist and are not empty, each under its path."""
    parts = [
        f"  last lines of {path}:\n{tail(path, lines)}"
        for path in logs
        if path.is_file() and path.stat().st_size > 0
    ]
    return "\n".join(parts) if parts else "  (no log output: " + ", ".join(map(str, logs)) + ")"


def stop_pid(
    pid: int,
    *,
    marker: str,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 30.0,
    hard: bool = False,
) -> None:
    """Stop the process group of ``pid``: SIGTERM (SIGKILL when ``hard``), SIGKILL after ``timeout``.

    Does nothing when ``pid`` no longer runs the service (``marker`` not in its command line).
    """
    if not pid_is_running(pid, marker=marker):
        if proc is not None:
            proc.poll()
        return
    _signal_group(pid, signal.SIGKILL if hard else signal.SIGTERM)
    if _wait_gone(pid, marker=marker, proc=proc, timeout=timeout):
        return
    logger.warning("pid %d ignored SIGTERM for %.0f s; killing it", pid, timeout)
    _signal_group(pid, signal.SIGKILL)
    _wait_gone(pid, marker=marker, proc=proc, timeout=10.0)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _wait_gone(pid: int, *, marker: str, proc: subprocess.Popen[bytes] | None, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            try:
                proc.wait(timeout=0.1)
                return True
            except subprocess.TimeoutExpired:
                continue
        if not pid_is_running(pid, marker=marker):
            return True
        time.sleep(0.1)
    return False


def remove_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise
