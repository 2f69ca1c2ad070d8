"""``python -m infra.check_imports`` (``make check``) fails on an import cycle between packages or a
benchmark import from production code, names the imports that do it, and passes on this repository."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.check_imports import main, problems

REPO = Path(__file__).resolve().parents[1]


def _tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_cycle_through_a_function_level_import_fails_naming_each_import(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "lake/__init__.py": "",
            "lake/config.py": "def load():\n    from extractors.settings import ExtractorSettings\n",
            "extractors/__init__.py": "",
            "extractors/settings.py": "from lake import config\n",
        },
    )

    assert problems(root) == [
        "import cycle: extractors -> lake -> extractors\n"
        "  extractors -> lake: extractors/settings.py:1 (extractors.settings) imports lake.config\n"
        "  lake -> extractors: lake/config.py:2 (lake.config) imports extractors.settings"
    ]


def test_lake_serve_is_a_layer_of_its_own_but_lake_core_importing_it_is_a_cycle(tmp_path: Path) -> None:
    files = {
        "lake/__init__.py": "",
        "lake/tables.py": "",
        "lake/serve/__init__.py": "",
        "lake/serve/decode.py": "import extractors.exchanges\nfrom lake.tables import x\n",
        "extractors/__init__.py": "",
        "extractors/exchanges.py": "from lake.tables import x\n",
    }
    assert problems(_tree(tmp_path / "ok", files)) == []

    bad = _tree(tmp_path / "bad", {**files, "lake/sql.py": "from lake.serve import decode\n"})
    assert problems(bad) == [
        "import cycle: extractors -> lake -> lake.serve -> extractors\n"
        "  extractors -> lake: extractors/exchanges.py:1 (extractors.exchanges) imports lake.tables\n"
        "  lake -> lake.serve: lake/sql.py:1 (lake.sql) imports lake.serve.decode\n"
        "  lake.serve -> extractors: lake/serve/decode.py:1 (lake.serve.decode) imports extractors.exchanges"
    ]


def test_a_production_module_importing_benchmark_code_fails(tmp_path: Path) -> None:
    root = _tree(
        tmp_path,
        {
            "infra/__init__.py": "",
            "infra/bench/__init__.py": "",
            "infra/bench/silver.py": "from infra.bench import gold\n",
            "infra/bench/gold.py": "",
            "spark_jobs/__init__.py": "",
            "spark_jobs/pipeline.py": "def main():\n    from infra.bench.silver import run\n",
        },
    )

    assert problems(root) == [
        "benchmark import from a production module: spark_jobs/pipeline.py:2 (spark_jobs.pipeline) imports "
        "infra.bench.silver (benchmark code lives in infra/bench/; only it and tests/ import it)"
    ]


def test_this_repository_has_no_cycle_and_no_benchmark_import(capsys: pytest.CaptureFixture[str]) -> None:
    assert problems(REPO) == []
    assert main(["--root", str(REPO)]) == 0
    assert "no import cycle" in capsys.readouterr().out
