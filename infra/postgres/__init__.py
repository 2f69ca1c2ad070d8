"""PostgreSQL for the optional live-update store: Debian's server binaries, run on 127.0.0.1.

Installed when asked (``make infra-up ONLY=postgres``, ``make test``, ``bash infra/setup.sh
postgres``: ``apt-get install postgresql``, whose binaries land in ``/usr/lib/postgresql/<major>/bin``
and are not on ``PATH``); :mod:`infra.services` runs ``initdb`` once per data folder and then
``postgres`` in the background, TCP only (no Unix socket). Set ``CRYPTOLAKE_POSTGRES_BIN`` to use
another installation's ``bin`` folder.

PostgreSQL refuses to run as root: as root, the server and ``initdb`` run as the ``postgres`` user
the Debian package creates, and the service folder must be reachable by that user. The password of
the superuser ``cryptolake`` comes from ``CRYPTOLAKE_STORES_POSTGRES_PASSWORD`` or is generated at
random on first start and kept (mode 0600) in the service's state file.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
from pathlib import Path

DEBIAN_ROOT = Path("/usr/lib/postgresql")
USER = "cryptolake"
DATABASE = "cryptolake"
#: The OS user the server runs as when we are root (created by Debian's postgresql-common).
OS_USER = "postgres"


class PostgresSetupError(RuntimeError):
    """The server binaries are missing or cannot run here; the message says how to fix it."""


def bin_dir() -> Path:
    """``CRYPTOLAKE_POSTGRES_BIN``, else the newest ``/usr/lib/postgresql/*/bin``, else ``PATH``."""
    override = os.environ.get("CRYPTOLAKE_POSTGRES_BIN")
    candidates = [Path(override)] if override else []
    majors = sorted(
        DEBIAN_ROOT.glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0
    )
    candidates += reversed(majors)
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if (folder / "postgres").is_file() and (folder / "initdb").is_file():
            return folder
    raise PostgresSetupError(
        "no PostgreSQL server (postgres and initdb) found in /usr/lib/postgresql/*/bin or on PATH: "
        "run `bash infra/setup.sh postgres` (apt-get install postgresql) or set CRYPTOLAKE_POSTGRES_BIN"
    )


def run_as() -> str | None:
    """The OS user to run the server as: ``postgres`` when we are root, else ourselves (``None``)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        raise PostgresSetupError(
            "running as root, but there is no 'postgres' user to run the server as: "
            "install Debian's postgresql (it creates the user) or run as another user"
        ) from None
    return OS_USER


def check_reachable(folder: Path, user: str) -> None:
    """Fail early, with the reason, when ``user`` cannot enter ``folder`` (a 0700 parent)."""
    uid = pwd.getpwnam(user).pw_uid
    for parent in [folder, *folder.parents]:
        if not parent.exists():
            continue
        st = parent.stat()
        if st.st_uid != uid and not st.st_mode & 0o001:
            raise PostgresSetupError(
                f"the '{user}' user the server runs as cannot enter {parent} (mode {st.st_mode & 0o777:o}): "
                "keep the service folder under a path others may traverse (CRYPTOLAKE_SERVICES_DIR)"
            )


def chown(path: Path, user: str) -> None:
    """Give ``path`` (a file, or a folder and everything in it) to ``user``."""
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.chown(name, entry.pw_uid, entry.pw_gid)


def initdb_command(*, data_dir: Path, password_file: Path) -> list[str]:
    return [
        str(bin_dir() / "initdb"),
        "-D",
        str(data_dir),
        "-U",
        USER,
        f"--pwfile={password_file}",
        "--auth=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C",
        "--no-sync",
    ]


def server_command(*, data_dir: Path, host: str, port: int) -> list[str]:
    return [
        str(bin_dir() / "postgres"),
        "-D",
        str(data_dir),
        "-c",
        f"listen_addresses={host}",
        "-p",
        str(port),
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=50",
    ]


def random_password() -> str:
    return secrets.token_urlsafe(18)


def is_ready(*, host: str, port: int, password: str) -> bool:
    """Whether the server accepts our user's login and answers ``SELECT 1``."""
    import psycopg

    try:
        with psycopg.connect(
            host=host, port=port, user=USER, password=password, dbname="postgres", connect_timeout=2
        ) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return False
    return True


def ensure_database(*, host: str, port: int, password: str, dbname: str = DATABASE) -> None:
    """Create ``dbname`` unless it exists."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=host, port=port, user=USER, password=password, dbname="postgres", autocommit=True
    ) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
