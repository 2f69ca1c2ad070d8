"""Start the children of a :class:`~infra.run.plan.Plan`, keep them alive, stop them in order.

Each child runs in its own process group (a terminal's Ctrl-C reaches only the supervisor, which
then stops the children one after the other) and, on Linux, gets SIGTERM if the supervisor
itself dies. Its stdout and stderr go to ``<data>/_run/<child>.log`` (appended, one header line
per start). A child that exits while the run is on is started again after the delay its
:class:`~infra.run.policy.RestartPolicy` gives; it resumes from what it persisted (the
extractor's resume points and spool, the Spark query's checkpoint). A child that keeps dying
ends the run: its last log lines are printed and every other child is stopped.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from infra.run.plan import ChildSpec, Plan, sql_hints
from infra.run.policy import GiveUp, RestartPolicy
from infra.run.status import (
    TABLES,
    BatchLog,
    ChildStatus,
    ExtractorWatch,
    Snapshot,
    TableWatch,
    format_status_line,
    render,
)

#: What a restarted child resumes from, for the log line that says so.
RESUMES = {
    "extractor": "its resume points and spool",
    "spark": "its checkpoint",
    "server": "the lake and the feed",
    "simulator": "the same ports",
}


def _die_with_parent() -> None:  # pragma: no cover (runs in the child between fork and exec)
    """Linux: SIGTERM this child when the supervisor dies (PR_SET_PDEATHSIG)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exit code {code}"


class Child:
    """One supervised process."""

    def __init__(
        self, spec: ChildSpec, *, env: Mapping[str, str], log_dir: Path, policy: RestartPolicy
    ) -> None:
        self.spec = spec
        self.env = {**os.environ, **env, **spec.env}
        self.log_path = log_dir / f"{spec.name}.log"
        self.policy = policy
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.starts = 0
        self.restart_at: float | None = None
        self.state = "starting"
        self.note = ""
        self._log: IO[bytes] | None = None
        self._log_offset = 0

    @property
    def restarts(self) -> int:
        return max(0, self.starts - 1)

    def start(self, now: float) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._log is not None:
            self._log.close()
        self._log = self.log_path.open("ab")
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._log.write(f"=== {stamp} start #{self.starts + 1}: {self.spec.command_line()}\n".encode())
        self._log.flush()
        self._log_offset = self._log.tell()
        self.proc = subprocess.Popen(
            self.spec.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        self.starts += 1
        self.started_at = now
        self.restart_at = None
        self.state = "running"

    def poll(self) -> int | None:
        """The exit code if the process has ended (and was not waited for yet)."""
        if self.proc is None or self.state != "running":
            return None
        return self.proc.poll()

    def stop(self, *, timeout_s: float | None = None) -> tuple[int | None, float, bool]:
        """SIGTERM, wait, then SIGKILL: ``(exit code, seconds taken, whether it had to be killed)``."""
        started = time.monotonic()
        self.restart_at = None
        if self.proc is None or self.proc.poll() is not None:
            self.state = "stopped"
            return (None if self.proc is None else self.proc.returncode), 0.0, False
        killed = False
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=self.spec.stop_timeout_s if timeout_s is None else timeout_s)
        except subprocess.TimeoutExpired:
            killed = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            code = self.proc.wait()
        self.state = "stopped"
        return code, time.monotonic() - started, killed

    def tail(self, lines: int = 20) -> list[str]:
        """The last ``lines`` lines this start of the child wrote."""
        try:
            with self.log_path.open("rb") as handle:
                handle.seek(self._log_offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass(frozen=True, kw_only=True)
class Options:
    """How the supervisor shows and paces things."""

    source: str
    bus: str
    interactive: bool
    status_every_s: float = 10.0
    tick_s: float = 0.5
    storage_options: Mapping[str, str] | None = None


class Supervisor:
    """Runs a plan until :meth:`request_stop` or a child that keeps dying; see the module docstring."""

    def __init__(
        self,
        plan: Plan,
        options: Options,
        *,
        policy_factory: Callable[[], RestartPolicy] = RestartPolicy,
        out: Callable[[str], None] | None = None,
    ) -> None:
        self.plan = plan
        self.options = options
        self.children = {
            spec.name: Child(spec, env=plan.env, log_dir=plan.layout.logs, policy=policy_factory())
            for spec in plan.children
        }
        self._first_signal: float | None = None
        self._hurry = False
        self._print = out or (lambda line: print(line, flush=True))
        self._started = time.monotonic()
        self._server_up = False
        names = [name for name, _ in TABLES]
        self.extractor_watch = ExtractorWatch(
            plan.metrics_url, plan.env["CRYPTOLAKE_EXTRACTORS_EXCHANGES"].split(",")
        )
        self.tables = [
            TableWatch(name, self._table_uri(name), column, options.storage_options)
            for name, column in TABLES
            if name in names
        ]
        self.batches = BatchLog(plan.layout.logs / "spark.log")
        self._events = plan.layout.logs / "supervisor.log"

    def _table_uri(self, name: str) -> str:
        from lake.tables import Lake, LakeSettings

        path = Lake(LakeSettings(root=self.plan.layout.lake_root)).path(name)
        return "s3://" + path[len("s3a://") :] if path.startswith("s3a://") else path

    # --- events -----------------------------------------------------------------------------

    def say(self, message: str, *, stamp: bool = True) -> None:
        """An event: to the terminal (above the live view) and to ``_run/supervisor.log``."""
        line = f"[run {datetime.now(UTC).strftime('%H:%M:%S')}] {message}" if stamp else message
        self._print(line)
        with contextlib.suppress(OSError), self._events.open("a") as handle:
            handle.write(line + "\n")

    def request_stop(self, signum: int = signal.SIGINT, frame: object = None) -> None:
        """The first signal stops the run in order; another one a second later hurries the stop.

        (One signal can arrive twice at once: ``timeout`` and some shells send it to the process
        and to its group.)
        """
        now = time.monotonic()
        if self._first_signal is None:
            self._first_signal = now
        elif now - self._first_signal >= 1.0:
            self._hurry = True

    # --- the loop ---------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        now = time.monotonic()
        children = [
            ChildStatus(
                name=c.spec.name,
                state=c.state,
                pid=c.proc.pid if c.proc is not None and c.state == "running" else None,
                restarts=c.restarts,
                uptime_s=(now - c.started_at) if c.state == "running" else 0.0,
                note=c.note,
            )
            for c in self.children.values()
        ]
        tables = [t.update(now=now) for t in self.tables]
        dq = next((t for t in self.tables if t.name == "gold.dq_results"), None)
        durations = self.batches.update()
        dq_rate = None
        if dq is not None and dq.status.version >= 0:
            with contextlib.suppress(Exception):
                dq_rate = dq.dq_pass_rate()
        return Snapshot(
            uptime_s=now - self._started,
            source=self.options.source,
            bus=self.options.bus,
            lake_root=self.plan.layout.lake_root,
            serve_url=self.plan.serve_url,
            children=children,
            exchanges=self.extractor_watch.update(now=now),
            tables=tables,
            batches=len(durations),
            batch_last_s=durations[-1] if durations else None,
            batch_p50_s=statistics.median(durations) if durations else None,
            dq_pass_rate=dq_rate,
        )

    def _check_server(self) -> None:
        if self._server_up or self.children.get("server") is None:
            return
        try:
            with urllib.request.urlopen(self.plan.serve_url + "api/health", timeout=0.5):
                pass
        except OSError:
            return
        self._server_up = True
        self.say(f"server answering: {self.plan.serve_url}")

    def _supervise(self, now: float) -> bool:
        """Restart what died; ``False`` when a child keeps dying (the run must end)."""
        for child in self.children.values():
            code = child.poll()
            if code is not None:
                uptime = now - child.started_at
                decision = child.policy.on_exit(now=now, uptime_s=uptime)
                tail = child.tail(12)
                if isinstance(decision, GiveUp):
                    child.state = "failed"
                    child.note = f"died {decision.failures}x in {decision.window_s:.0f} s"
                    self.say(
                        f"{child.spec.name} died {decision.failures} times within {decision.window_s:.0f} s "
                        f"(last: {describe_exit(code)} after {uptime:.0f} s): giving up. "
                        f"Its last log lines ({child.log_path}):"
                    )
                    for line in tail:
                        self.say(f"    {line}", stamp=False)
                    return False
                child.state = "restarting"
                child.restart_at = now + decision.delay_s
                child.note = f"{describe_exit(code)}"
                self.say(
                    f"{child.spec.name} exited ({describe_exit(code)}) after {uptime:.0f} s; "
                    f"restarting in {decision.delay_s:.1f} s ({decision.failures} of "
                    f"{child.policy.max_failures} deaths allowed within {child.policy.window_s:.0f} s)"
                    + (f"; last line: {tail[-1][:200]}" if tail else "")
                )
                if child.spec.name == "server":
                    self._server_up = False
            if child.restart_at is not None and now >= child.restart_at:
                child.start(now)
                child.note = f"restarted: resumes from {RESUMES.get(child.spec.name, 'its state')}"
                self.say(
                    f"{child.spec.name} restarted (pid {child.proc.pid if child.proc else '?'}, "
                    f"restart {child.restarts}): resumes from {RESUMES.get(child.spec.name, 'its state')}"
                )
        return True

    def _start_all(self) -> None:
        for child in self.children.values():
            child.start(time.monotonic())
            pid = child.proc.pid if child.proc else "?"
            self.say(f"started {child.spec.name} (pid {pid}), log {child.log_path}")
            if child.spec.name == "simulator":
                self._wait_for_ports(self.plan.sim_ports, timeout_s=15.0)

    def _wait_for_ports(self, ports: tuple[int, ...], *, timeout_s: float) -> None:
        """Until every port accepts a connection (the extractor's first connect then succeeds)."""
        deadline = time.monotonic() + timeout_s
        waiting = list(ports)
        while waiting and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", waiting[0]), timeout=0.5):
                    waiting.pop(0)
            except OSError:
                time.sleep(0.1)

    def run(self) -> int:
        """Until a signal (exit 0 after a clean stop) or a child that keeps dying (exit 1)."""
        self._start_all()
        failed = False
        live: Any = None
        if self.options.interactive:
            from rich.live import Live

            # No refresh thread: children are forked from this process, better with one thread.
            live = Live(auto_refresh=False, transient=False, redirect_stdout=False)
            live.start()
            self._print = lambda line: live.console.print(line, markup=False, highlight=False)
        last_status = 0.0
        try:
            while self._first_signal is None:
                now = time.monotonic()
                if not self._supervise(now):
                    failed = True
                    break
                self._check_server()
                every = 1.0 if live is not None else self.options.status_every_s
                if now - last_status >= every:
                    last_status = now
                    snap = self.snapshot()
                    if live is not None:
                        live.update(render(snap), refresh=True)
                    else:
                        self._print(format_status_line(snap))
                time.sleep(self.options.tick_s)
        finally:
            if live is not None:
                live.stop()
                self._print = lambda line: print(line, flush=True)
        self.stop_all()
        if not failed:
            self.print_where()
        for child in self.children.values():
            child.close()
        return 1 if failed else 0

    def stop_all(self) -> None:
        """In :attr:`Plan.stop_order`; a second Ctrl-C shortens every wait to 5 s."""
        self.say("stopping: extractor first (flushes its buffers), then Spark at a batch boundary, ...")
        for name in self.plan.stop_order:
            child = self.children[name]
            if child.proc is None or child.proc.poll() is not None:
                child.state = "stopped"
                continue
            if name == "spark":
                self.say(
                    "spark: finishing the running micro-batch, then the open minutes' prices and gold "
                    f"(up to {child.spec.stop_timeout_s:.0f} s; Ctrl-C again to hurry)"
                )
            timeout = 5.0 if self._hurry else None
            code, took, killed = child.stop(timeout_s=timeout)
            if killed:
                how = f"killed after {took:.0f} s (did not stop)"
            elif code == -signal.SIGTERM:
                how = "ended on SIGTERM"  # uvicorn re-raises the signal once it has shut down
            else:
                how = describe_exit(code or 0)
            self.say(f"stopped {name}: {how}, {took:.1f} s")

    def print_where(self) -> None:
        layout, env = self.plan.layout, self.plan.env
        lines = [
            "",
            "The data of this run:",
            f"  Delta tables      {layout.lake_root}   (checkpoints in _checkpoints/)",
            (
                f"  bus               Kafka {env.get('CRYPTOLAKE_KAFKA_BOOTSTRAP_SERVERS')}, topics "
                f"{env.get('CRYPTOLAKE_KAFKA_TOPIC_PREFIX', '')}raw.<exchange>.<channel>"
                if self.options.bus == "kafka"
                else f"  landing zone      {layout.landing_root}"
            ),
            f"  extractor state   {layout.state} (resume points), spool {layout.spool}",
            f"  logs              {layout.logs}",
            "Three queries to try (DuckDB over Delta, no JVM; or: .venv/bin/python -m lake sql '...'):",
            *(f"  {hint}" for hint in sql_hints(layout.lake_root)),
            "make run again continues where this run stopped (same folders, checkpoints and resume points).",
        ]
        for line in lines:
            self._print(line)
