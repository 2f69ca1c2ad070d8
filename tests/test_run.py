"""``make run`` (``python -m infra.run``): the pure parts, then the supervisor end to end on the simulator."""

from __future__ import annotations

import os
import queue
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from infra.run.plan import ChildSpec, Plan, build_plan, layout, sim_urls, sql_hints
from infra.run.policy import GiveUp, Restart, RestartPolicy
from infra.run.source import decide
from infra.run.status import (
    ChildStatus,
    ExchangeStatus,
    ExtractorWatch,
    Snapshot,
    TableStatus,
    format_status_line,
    parse_metrics,
    render,
)
from infra.run.supervisor import Options, Supervisor
from tests.conftest import seconds

REPO = Path(__file__).resolve().parent.parent

# --- restart policy -------------------------------------------------------------------------


def test_restart_policy_backs_off_with_jitter_up_to_the_cap_then_gives_up_on_the_fifth_death() -> None:
    policy = RestartPolicy(initial_s=1.0, cap_s=4.0, max_failures=5, window_s=300.0, rng=random.Random(3))
    decisions = [policy.on_exit(now=10.0 * i, uptime_s=5.0) for i in range(1, 6)]
    restarts = decisions[:4]
    assert all(isinstance(d, Restart) for d in restarts)
    delays = [d.delay_s for d in restarts if isinstance(d, Restart)]
    assert 0 <= delays[0] <= 1.0  # a random start
    assert 1.0 <= delays[1] <= 2.0 and 2.0 <= delays[2] <= 4.0 and 2.0 <= delays[3] <= 4.0  # doubling, capped
    assert [d.failures for d in restarts if isinstance(d, Restart)] == [1, 2, 3, 4]
    assert decisions[4] == GiveUp(failures=5, window_s=300.0)


def test_restart_policy_forgets_deaths_older_than_the_window() -> None:
    policy = RestartPolicy(max_failures=3, window_s=60.0, rng=random.Random(1))
    assert isinstance(policy.on_exit(now=0.0, uptime_s=1.0), Restart)
    assert isinstance(policy.on_exit(now=10.0, uptime_s=1.0), Restart)
    third = policy.on_exit(now=100.0, uptime_s=1.0)  # the first two are out of the window
    assert isinstance(third, Restart) and third.failures == 1


def test_restart_policy_resets_the_backoff_after_a_healthy_run() -> None:
    policy = RestartPolicy(
        initial_s=1.0, cap_s=30.0, healthy_after_s=60.0, window_s=10_000, rng=random.Random(2)
    )
    for i in range(3):
        policy.on_exit(now=float(i), uptime_s=1.0)
    after_a_long_run = policy.on_exit(now=1000.0, uptime_s=600.0)
    assert isinstance(after_a_long_run, Restart) and after_a_long_run.delay_s <= 1.0


# --- the source: real exchanges or the simulator ----------------------------------------------

EXCHANGES = ("binance", "kucoin", "coinbase")


def test_no_exchange_answering_means_the_simulator_with_a_one_line_reason() -> None:
    choice = decide("auto", exchanges=EXCHANGES, reachable={ex: False for ex in EXCHANGES})
    assert (choice.source, choice.exchanges) == ("sim", EXCHANGES)
    assert (
        "\n" not in choice.message
        and "no exchange answered" in choice.message
        and "simulator" in choice.message
    )


def test_the_exchanges_that_answer_are_extracted_live_and_the_others_named() -> None:
    choice = decide(
        "auto", exchanges=EXCHANGES, reachable={"binance": True, "kucoin": False, "coinbase": True}
    )
    assert (choice.source, choice.exchanges) == ("live", ("binance", "coinbase"))
    assert "left out: kucoin" in choice.message


def test_source_sim_and_live_force_either_without_probing() -> None:
    assert decide("sim", exchanges=EXCHANGES, reachable=None).source == "sim"
    live = decide("live", exchanges=EXCHANGES, reachable=None)
    assert (live.source, live.exchanges) == ("live", EXCHANGES)


# --- the plan ---------------------------------------------------------------------------------


def test_simulated_data_goes_to_its_own_lake_locally_and_on_s3(tmp_path: Path) -> None:
    assert layout(workdir=tmp_path, source="live", lake=None).lake_root == str(tmp_path / "lake-data")
    sim = layout(workdir=tmp_path, source="sim", lake=None)
    assert sim.lake_root == str(tmp_path / "lake-sim") and sim.landing_root == str(
        tmp_path / "lake-sim" / "_landing"
    )
    s3 = layout(workdir=tmp_path, source="sim", lake="s3a://bucket/lake")
    assert (s3.lake_root, s3.landing_root) == ("s3a://bucket/lake-sim", "s3://bucket/lake-sim/_landing")


def test_the_plan_points_the_extractor_at_the_simulator_and_keeps_the_users_tunables(tmp_path: Path) -> None:
    where = layout(workdir=tmp_path, source="sim", lake=None)
    plan = build_plan(
        layout=where,
        source="sim",
        exchanges=EXCHANGES,
        bus="kafka",
        trigger="processingTime=1 second",
        serve_port=8400,
        metrics_port=9200,
        sim_port=7000,
        kafka_bootstrap="127.0.0.1:9999",
        user_env={"CRYPTOLAKE_LANDING_ROLL_SECONDS": "2"},
    )
    assert [c.name for c in plan.children] == ["simulator", "spark", "extractor", "server"]
    assert plan.stop_order == ("extractor", "spark", "server", "simulator")
    assert sim_urls(EXCHANGES, first_port=7000)["kucoin"] == ("http://127.0.0.1:7001", "ws://127.0.0.1:7001/")
    env = plan.env
    assert env["CRYPTOLAKE_EXTRACTORS_BINANCE_REST_URL"] == "http://127.0.0.1:7000"
    assert env["CRYPTOLAKE_EXTRACTORS_KUCOIN_WS_URL"] == ""  # from its bullet-public token
    assert env["CRYPTOLAKE_KAFKA_TOPIC_PREFIX"] == "sim." and env["CRYPTOLAKE_BRONZE_SOURCE"] == "kafka"
    assert env["CRYPTOLAKE_BRONZE_KAFKA_TOPIC_PATTERN"] == r"sim\.raw\..*"
    assert "CRYPTOLAKE_LANDING_ROLL_SECONDS" not in env  # the user's 2 s stays
    assert plan.serve_url == "http://127.0.0.1:8400/" and "--metrics-port" in plan.children[2].argv
    assert all("make sql Q=" in hint and str(where.lake_root) in hint for hint in sql_hints(where.lake_root))


# --- status -----------------------------------------------------------------------------------

METRICS = """\
# TYPE cryptolake_extractor_frames_total counter
cryptolake_extractor_frames_total{channel="trades",exchange="binance",kind="data"} 120.0
cryptolake_extractor_frames_total{channel="ticker",exchange="binance",kind="data"} 30.0
cryptolake_extractor_frames_total{channel="",exchange="binance",kind="control"} 7.0
cryptolake_extractor_reconnects_total{exchange="binance",reason="stale"} 2.0
cryptolake_extractor_gaps_filled_total{exchange="binance"} 3.0
cryptolake_extractor_gaps_unrecoverable_total{exchange="binance"} 1.0
cryptolake_extractor_connections{exchange="binance"} 2.0
"""


def test_metrics_are_read_per_exchange_counting_data_frames_only() -> None:
    assert parse_metrics(METRICS) == {
        "binance": {
            "frames": 150.0,
            "reconnects": 2.0,
            "gaps_filled": 3.0,
            "gaps_recorded": 1.0,
            "connections": 2.0,
        }
    }


def test_extractor_totals_survive_a_restart_and_rates_are_per_second() -> None:
    watch = ExtractorWatch("http://127.0.0.1:1/metrics", ["binance"])
    watch.update(now=0.0, text=METRICS)
    after = METRICS.replace("} 120.0", "} 170.0")
    assert watch.update(now=10.0, text=after)[0].frames_per_s == pytest.approx(5.0)
    restarted = 'cryptolake_extractor_frames_total{channel="trades",exchange="binance",kind="data"} 20.0\n'
    status = watch.update(now=20.0, text=restarted)[0]
    assert status.frames == 200 + 20 and status.reconnects == 2 and status.connections == 0


def test_the_status_line_is_one_line_of_key_values() -> None:
    snap = Snapshot(
        uptime_s=42.4,
        source="sim",
        bus="landing",
        lake_root="/x/lake-sim",
        serve_url="http://127.0.0.1:8321/",
        children=[ChildStatus("extractor", "running", pid=7, restarts=1), ChildStatus("spark", "running")],
        exchanges=[ExchangeStatus("binance", connections=1, frames_per_s=12.25, frames=500, reconnects=1)],
        tables=[TableStatus("silver.trades", rows=1234, version=5, last_commit_age_s=2.04, behind_s=31.55)],
        batches=3,
        batch_last_s=4.25,
        batch_p50_s=5.0,
        dq_pass_rate=0.99875,
    )
    assert format_status_line(snap) == (
        "status uptime_s=42 source=sim extractor=running/restarts:1 spark=running binance.conns=1 "
        "binance.fps=12.2 binance.reconnects=1 binance.gaps_filled=0 binance.gaps_recorded=0 "
        "silver.trades.rows=1234 silver.trades.commit_age_s=2.0 silver.trades.behind_s=31.6 "
        "batches=3 batch_last_s=4.2 batch_p50_s=5.0 dq_pass=99.88%"
    )


def test_the_terminal_view_shows_every_child_exchange_and_table() -> None:
    from rich.console import Console

    snap = Snapshot(
        uptime_s=1.0,
        source="live",
        bus="kafka",
        lake_root="/x/lake-data",
        serve_url="http://127.0.0.1:8321/",
        children=[ChildStatus("spark", "restarting", restarts=2, note="exit code 1")],
        exchanges=[ExchangeStatus("kucoin", frames_per_s=3.0)],
        tables=[TableStatus("gold.ohlcv_1m"), TableStatus("silver.trades", rows=12_345, version=9)],
    )
    console = Console(width=150, record=True)
    console.print(render(snap))
    text = console.export_text()
    for expected in ("spark", "restarting", "exit code 1", "kucoin", "gold.ohlcv_1m", "not yet", "12,345"):
        assert expected in text


# --- the supervisor, with stand-in children ---------------------------------------------------


def test_a_child_that_keeps_dying_is_reported_with_its_last_lines_and_the_run_stops(tmp_path: Path) -> None:
    where = layout(workdir=tmp_path, source="sim", lake=None)
    plan = Plan(
        layout=where,
        children=(
            ChildSpec(
                name="extractor",
                argv=(sys.executable, "-c", "print('boom: bad config'); raise SystemExit(3)"),
            ),
            ChildSpec(
                name="server", argv=(sys.executable, "-c", "import time; time.sleep(60)"), stop_timeout_s=5
            ),
        ),
        serve_url="http://127.0.0.1:1/",
        metrics_url="http://127.0.0.1:1/metrics",
        env={"CRYPTOLAKE_EXTRACTORS_EXCHANGES": "binance"},
    )
    out: list[str] = []
    supervisor = Supervisor(
        plan,
        Options(source="sim", bus="landing", interactive=False, status_every_s=0.2, tick_s=0.05),
        policy_factory=lambda: RestartPolicy(initial_s=0.05, cap_s=0.1, max_failures=3, window_s=60),
        out=out.append,
    )
    started = time.monotonic()
    assert supervisor.run() == 1
    assert time.monotonic() - started < seconds(20)
    text = "\n".join(out)
    assert len(re.findall(r"extractor exited \(exit code 3\) after \d+ s; restarting in", text)) == 2
    assert "extractor died 3 times within 60 s (last: exit code 3" in text and "giving up" in text
    assert "    boom: bad config" in text  # its last log lines
    assert "stopped server: ended on SIGTERM" in text or "stopped server: exit code" in text
    assert "extractor=restarting/restarts:" in text or "extractor=running/restarts:" in text
    assert (where.logs / "extractor.log").read_text().count("=== ") == 3  # one header per start


# --- end to end -------------------------------------------------------------------------------


def _silver_trades_rows(lake: Path) -> int:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    path = lake / "silver" / "trades"
    if not (path / "_delta_log").is_dir():
        return 0
    try:  # the folder appears before the table's first commit
        adds = DeltaTable(str(path)).get_add_actions(flatten=True)
    except TableNotFoundError:
        return 0
    return int(sum(n or 0 for n in adds.column("num_records").to_pylist()))


@pytest.mark.spark
def test_make_run_on_the_simulator_lands_trades_restarts_a_killed_extractor_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        "SOURCE": "sim",
        # Small and quick: silver only, one shuffle partition.
        "CRYPTOLAKE_SILVER_GOLD_INTERVAL_S": "0",
        "CRYPTOLAKE_SILVER_QUALITY": "false",
        "CRYPTOLAKE_SPARK_MASTER": "local[2]",
        "CRYPTOLAKE_SPARK_SHUFFLE_PARTITIONS": "1",
        "CRYPTOLAKE_LANDING_ROLL_SECONDS": "1",
    }
    argv = [sys.executable, "-m", "infra.run", "--workdir", str(tmp_path), "--port", "0"]
    argv += ["--sim-symbols", "3", "--sim-rate", "5", "--status-every", "2"]
    proc = subprocess.Popen(
        argv, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: queue.Queue[str] = queue.Queue()
    seen: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()

    def wait_for(pattern: str, timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        for line in seen:
            if match := re.search(pattern, line):
                return match
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                assert proc.poll() is None, "the supervisor exited:\n" + "\n".join(seen)
                continue
            seen.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no line matching {pattern!r} in {timeout_s} s:\n" + "\n".join(seen[-40:]))

    lake = tmp_path / "lake-sim"
    try:
        extractor_pid = int(wait_for(r"started extractor \(pid (\d+)\)", seconds(30)).group(1))
        url = wait_for(r"server answering: (http://\S+)", seconds(60)).group(1)
        with urllib.request.urlopen(url + "api/health", timeout=seconds(5)) as response:
            assert response.status == 200
        wait_for(r"binance\.conns=1 binance\.fps=[1-9]", seconds(60))  # it is extracting
        os.kill(extractor_pid, signal.SIGKILL)
        wait_for(r"extractor exited \(killed by SIGKILL\).*restarting in", seconds(10))
        restarted = wait_for(r"extractor restarted \(pid (\d+), restart 1\): resumes from", seconds(20))
        assert int(restarted.group(1)) != extractor_pid
        wait_for(r"extractor=running/restarts:1", seconds(10))
        deadline = time.monotonic() + seconds(240)
        while _silver_trades_rows(lake) == 0:
            assert time.monotonic() < deadline, "no rows in silver.trades:\n" + "\n".join(seen[-40:])
            assert proc.poll() is None, "the supervisor exited:\n" + "\n".join(seen)
            time.sleep(1)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=seconds(240))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    time.sleep(0.2)
    while not lines.empty():
        seen.append(lines.get())
    output = "\n".join(seen)
    assert code == 0, output
    assert re.search(r"stopped extractor: exit code 0", output), output
    assert re.search(r"stopped spark: exit code 0", output), output
    assert f"Delta tables      {lake}" in output
    assert len(re.findall(r"make sql Q=", output)) == 3
