"""``python -m infra.services``: up starts MinIO in the background, status finds it, down stops it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra import minio
from infra.services import MinioService, ServiceError
from tests.conftest import seconds

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _cli(state_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "infra.services", "--state-dir", str(state_dir), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=seconds(90),
        check=False,
    )


def _status(state_dir: Path) -> dict:
    result = _cli(state_dir, "status", "--only", "minio", "--json")
    return json.loads(result.stdout)["minio"]


def test_cli_up_reuses_running_minio_and_down_stops_it(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if "MINIO_ROOT" not in k}
    up = _cli(tmp_path, "up", "--only", "minio", env=env)
    try:
        assert up.returncode == 0, up.stderr
        first = _status(tmp_path)
        assert first["running"] and first["ready"]
        assert "secret_key" not in first, "status must not print the secret key"
        assert minio.is_live(first["endpoint"])
        state = json.loads((tmp_path / "minio" / "state.json").read_text())
        assert (tmp_path / "minio" / "state.json").stat().st_mode & 0o077 == 0
        # the lake bucket exists, reachable with the generated keys recorded in the state file
        client = MinioService(state_dir=tmp_path).s3_client()
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == [minio.DEFAULT_BUCKET]
        assert state["access_key"] and len(state["secret_key"]) >= 8

        again = _cli(tmp_path, "up", "--only", "minio", env=env)
        assert again.returncode == 0, again.stderr
        assert _status(tmp_path)["pid"] == first["pid"], "a second up must reuse the running server"
    finally:
        down = _cli(tmp_path, "down", "--only", "minio")
    assert down.returncode == 0, down.stderr
    stopped = _cli(tmp_path, "status", "--only", "minio")
    assert stopped.returncode == 3
    assert stopped.stdout.startswith("minio  stopped")
    assert not minio.is_live(first["endpoint"])


def test_bad_minio_credentials_fail_naming_service_and_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRYPTOLAKE_MINIO_ROOT_USER", "admin")
    monkeypatch.setenv("CRYPTOLAKE_MINIO_ROOT_PASSWORD", "short")
    with pytest.raises(ServiceError) as failure:
        MinioService(state_dir=tmp_path).start(timeout=seconds(30))
    assert failure.value.service == "minio"
    assert "CRYPTOLAKE_MINIO_ROOT_PASSWORD" in str(failure.value)
