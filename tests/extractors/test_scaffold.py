"""``python -m extractors new-exchange``: the skeleton passes the checks and its test lists what is left."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from extractors.__main__ import main
from extractors.exchanges.base import Connector
from extractors.scaffold import new_exchange
from spark_jobs.parsers import ExchangeParser

REPO = Path(__file__).resolve().parents[2]
MODULES = ("extractors/exchanges/gemini.py", "spark_jobs/parsers/gemini.py", "infra/exchange_sim/gemini.py")
TEST = "tests/test_gemini_todo.py"


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def members(protocol: type) -> set[str]:
    return {n for n in vars(protocol) if not n.startswith("_")} | set(protocol.__annotations__)


def run(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args], input=stdin, capture_output=True, text=True, cwd=REPO
    )


def test_the_skeleton_passes_ruff_and_mypy_as_repository_files_and_defines_every_protocol_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["new-exchange", "gemini", "--root", str(tmp_path)]) == 0
    assert "wrote" in capsys.readouterr().out
    for rel in (*MODULES, TEST):
        text = (tmp_path / rel).read_text()
        # Checked as the repository file it becomes (the same settings, first-party imports).
        for check in (
            ("ruff", "check", "--stdin-filename", rel, "-"),
            ("ruff", "format", "--check", "--stdin-filename", rel, "-"),
        ):
            result = run(*check, stdin=text)
            assert result.returncode == 0, (rel, result.stdout, result.stderr)
        typed = subprocess.run(
            [sys.executable, "-m", "mypy", "-c", text], capture_output=True, text=True, cwd=REPO
        )
        assert typed.returncode == 0, (rel, typed.stdout)
    connector = load(tmp_path / MODULES[0], "scaffold_gemini_connector")
    assert members(Connector) <= set(vars(connector)) and connector.NAME == "gemini"
    parser = load(tmp_path / MODULES[1], "scaffold_gemini_parser")
    assert members(ExchangeParser) <= set(vars(parser))
    sim = load(tmp_path / MODULES[2], "scaffold_gemini_sim")
    assert sim.GeminiServer.name == "gemini"
    with pytest.raises(NotImplementedError, match="TODO\\(new-exchange\\) gemini"):
        connector.classify("{}")
    assert sorted(p.name for p in (tmp_path / "tests" / "fixtures" / "gemini").iterdir()) == [
        "control.jsonl", "markets.jsonl", "ticker.jsonl", "trades.jsonl",
    ]  # fmt: skip


def test_the_generated_test_fails_listing_what_is_left_and_nothing_is_overwritten(tmp_path: Path) -> None:
    new_exchange("gemini", root=tmp_path)
    todo = load(tmp_path / TEST, "scaffold_gemini_todo")
    with pytest.raises(AssertionError) as failed:
        todo.test_gemini_is_filled_in_and_registered()
    message = str(failed.value)
    for expected in (
        "extractors/exchanges/gemini.py:",
        "spark_jobs/parsers/gemini.py:",
        "infra/exchange_sim/gemini.py:",
        "tests/fixtures/gemini/trades.jsonl",
        "add the module to CONNECTORS",
        "add the module to EXCHANGES",
        "_server_class",
        "docs/exchanges.md",
    ):
        assert expected in message
    with pytest.raises(FileExistsError):
        new_exchange("gemini", root=tmp_path)
    with pytest.raises(ValueError):
        new_exchange("../gemini", root=tmp_path)
    assert main(["new-exchange", "gemini", "--root", str(tmp_path)]) == 2
