"""Run the local Kafka (KRaft) and MinIO in the background, find running ones, stop them.

Each service keeps its files in ``<state dir>/<name>/`` (default state dir ``.cache/services``):
``<name>.pid``, ``state.json`` (PID, ports, endpoints; MinIO's keys, so mode 0600), its data and
its logs. ``python -m infra.services up|down|status`` drives them from a shell; the tests
(``tests/service_fixtures.py``) use :class:`KafkaService` and :class:`MinioService` directly.

A ``start()`` on a folder whose service already runs and answers reuses it (and returns
``False``); otherwise it starts one on free 127.0.0.1 ports (the previous ones when still free,
so a restart keeps the endpoints). Failures raise :class:`ServiceError`, which names the service
and the reason: java missing, a setup step not run, or the tail of the service's log.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from infra import kafka, minio, postgres, redis
from infra.services.process import (
    ServiceError,
    free_port,
    locked,
    log_tails,
    pid_is_running,
    port_is_free,
    read_state,
    remove_quietly,
    spawn,
    stop_pid,
    wait_ready,
    write_state,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "DEFAULT_STATE_DIR",
    "SERVICE_NAMES",
    "KafkaService",
    "MinioService",
    "PostgresService",
    "RedisService",
    "ServiceError",
    "ServiceName",
    "down",
    "service",
    "status",
    "up",
]

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Where ``make infra-up`` keeps the services; override with ``CRYPTOLAKE_SERVICES_DIR``.
DEFAULT_STATE_DIR = Path(os.environ.get("CRYPTOLAKE_SERVICES_DIR") or REPO_ROOT / ".cache" / "services")
HOST = "127.0.0.1"

ServiceName = Literal["kafka", "minio", "postgres", "redis"]
SERVICE_NAMES: tuple[ServiceName, ...] = ("kafka", "minio", "postgres", "redis")
#: What ``up`` starts without ``--only``: the live-update stores are optional, asked for by name.
DEFAULT_SERVICES: tuple[ServiceName, ...] = ("kafka", "minio")


class _Service:
    """What both services share: a folder, a PID file, a state file, a readiness check."""

    name: ClassVar[str]

    def __init__(self, *, state_dir: Path = DEFAULT_STATE_DIR, die_with_parent: bool = False) -> None:
        self.folder = Path(state_dir).resolve() / self.name
        self.die_with_parent = die_with_parent
        self._proc: subprocess.Popen[bytes] | None = None
        self._state: dict[str, Any] = read_state(self.folder) or {}

    # -- what a subclass provides ------------------------------------------------------------
    def _ready(self) -> bool:
        raise NotImplementedError

    def _launch(self, previous: dict[str, Any]) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
        raise NotImplementedError

    def _logs(self) -> list[Path]:
        raise NotImplementedError

    def _after_start(self) -> None:
        """Work once the service answers (MinIO creates the lake bucket)."""

    #: seconds a start may take before it counts as failed
    start_timeout: ClassVar[float] = 90.0

    # -- lifecycle ---------------------------------------------------------------------------
    @property
    def pid_path(self) -> Path:
        return self.folder / f"{self.name}.pid"

    @property
    def pid(self) -> int | None:
        pid = self._state.get("pid")
        return int(pid) if pid else None

    def running(self) -> bool:
        """Whether the process recorded in the state file is alive (not whether it answers)."""
        self._state = read_state(self.folder) or {}
        pid = self.pid
        return pid is not None and pid_is_running(pid, marker=str(self.folder))

    def start(self, *, timeout: float | None = None) -> bool:
        """Start the service, or reuse the one running in this folder; ``True`` when started here."""
        with locked(self.folder):
            if self.running():
                if self._ready():
                    logger.info("%s already running (pid %s), reusing it", self.name, self.pid)
                    self._after_start()
                    return False
                logger.warning("%s pid %s runs but does not answer; restarting it", self.name, self.pid)
                self._stop_locked(hard=True)
            began = time.monotonic()
            try:
                self._proc, self._state = self._launch(dict(self._state))
            except (
                kafka.KafkaSetupError,
                minio.MinioSetupError,
                postgres.PostgresSetupError,
                redis.RedisSetupError,
            ) as exc:
                raise ServiceError(self.name, str(exc)) from exc
            write_state(self.folder, self._state)
            try:
                wait_ready(
                    self.name,
                    self._ready,
                    proc=self._proc,
                    logs=self._logs(),
                    timeout=timeout or self.start_timeout,
                )
                self._after_start()
            except BaseException:
                self._stop_locked(hard=True)
                raise
            self._state["start_seconds"] = round(time.monotonic() - began, 2)
            write_state(self.folder, self._state)
            logger.info("%s ready in %.1f s (pid %s)", self.name, self._state["start_seconds"], self.pid)
            return True

    def stop(self, *, hard: bool = False, timeout: float = 60.0) -> None:
        """Stop the service (SIGTERM, or SIGKILL when ``hard``); its data stays for the next start."""
        with locked(self.folder):
            self._stop_locked(hard=hard, timeout=timeout)

    def _stop_locked(self, *, hard: bool = False, timeout: float = 60.0) -> None:
        self._state = read_state(self.folder) or self._state
        pid = self.pid
        if pid is not None:
            stop_pid(pid, marker=str(self.folder), proc=self._proc, timeout=timeout, hard=hard)
            logger.info("%s stopped (pid %d%s)", self.name, pid, ", killed" if hard else "")
        self._proc = None
        self._state["pid"] = None
        write_state(self.folder, self._state)
        remove_quietly(self.pid_path)

    def restart(self, *, hard: bool = False, timeout: float | None = None) -> None:
        """Stop and start again on the same storage and ports (``hard``: SIGKILL, no clean shutdown)."""
        self.stop(hard=hard)
        self.start(timeout=timeout)

    def status(self) -> dict[str, Any]:
        """The state file plus whether the process runs and answers."""
        running = self.running()
        info = {k: v for k, v in self._state.items() if k not in ("secret_key", "password")}
        info.update({"service": self.name, "folder": str(self.folder), "running": running})
        info["ready"] = running and self._ready()
        return info

    def _spawn(
        self, command: list[str], *, log_name: str, env: dict[str, str] | None = None, user: str | None = None
    ) -> Any:
        return spawn(
            command,
            log_path=self.folder / log_name,
            pid_path=self.pid_path,
            env=env,
            cwd=self.folder,
            die_with_parent=self.die_with_parent,
            user=user,
        )


def _port(previous: dict[str, Any], key: str) -> int:
    """The port used last time when it is still free (stable endpoints), else a fresh one."""
    old = previous.get(key)
    if isinstance(old, int) and port_is_free(old, HOST):
        return old
    if isinstance(old, int):
        logger.warning("port %d (%s) is taken now; choosing another", old, key)
    return free_port(HOST)


class KafkaService(_Service):
    """A single-node Kafka 4.x (KRaft, broker+controller) on 127.0.0.1.

    ``bootstrap`` is ``"127.0.0.1:<port>"``. Data lives in ``<folder>/data`` and survives
    :meth:`restart` and ``stop()``/``start()``.
    """

    name = "kafka"

    @property
    def bootstrap(self) -> str:
        bootstrap = self._state.get("bootstrap")
        if not bootstrap:
            raise ServiceError(self.name, f"not started (no state in {self.folder}): run `make infra-up`")
        return str(bootstrap)

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def _logs(self) -> list[Path]:
        return [self.folder / "logs" / "server.log", self.folder / "kafka.out"]

    def _ready(self) -> bool:
        bootstrap = self._state.get("bootstrap")
        expected = kafka.cluster_id(self.data_dir)
        return bool(bootstrap) and kafka.is_ready(str(bootstrap), expected_cluster_id=expected)

    def _launch(self, previous: dict[str, Any]) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
        port = _port(previous, "port")
        controller_port = _port(previous, "controller_port")
        if controller_port == port:
            controller_port = free_port(HOST)
        config = self.folder / "server.properties"
        logs_dir = self.folder / "logs"
        logs_dir.mkdir(parents=True, exist_ok=True)
        kafka.write_properties(
            config,
            kafka.server_properties(
                host=HOST, port=port, controller_port=controller_port, data_dir=self.data_dir
            ),
        )
        if not kafka.is_formatted(self.data_dir):
            self._format(config, logs_dir)
        proc = self._spawn(kafka.broker_command(config=config, logs_dir=logs_dir), log_name="kafka.out")
        state = {
            "pid": proc.pid,
            "host": HOST,
            "port": port,
            "controller_port": controller_port,
            "bootstrap": f"{HOST}:{port}",
            "data_dir": str(self.data_dir),
            "log": str(logs_dir / "server.log"),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return proc, state

    def _format(self, config: Path, logs_dir: Path) -> None:
        command = kafka.format_command(config=config, cluster_id=kafka.new_cluster_id(), logs_dir=logs_dir)
        out = self.folder / "format.out"
        with out.open("wb") as log:
            try:
                result = subprocess.run(
                    command, stdout=log, stderr=subprocess.STDOUT, timeout=120, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise ServiceError(self.name, f"storage format timed out\n{log_tails([out])}") from exc
        if result.returncode != 0:
            raise ServiceError(
                self.name, f"storage format failed with code {result.returncode}\n{log_tails([out])}"
            )
        logger.info("kafka storage formatted in %s", self.data_dir)


class MinioService(_Service):
    """MinIO on 127.0.0.1: ``endpoint`` (``http://127.0.0.1:<port>``), ``access_key``, ``secret_key``.

    ``credentials`` are used on the first start of a folder; without them they come from the
    environment (see :func:`infra.minio.credentials_from_env`) or are generated at random. They
    are kept in the state file so the folder's data stays readable after a restart.
    """

    name = "minio"

    def __init__(
        self,
        *,
        state_dir: Path = DEFAULT_STATE_DIR,
        die_with_parent: bool = False,
        credentials: minio.Credentials | None = None,
        bucket: str | None = minio.DEFAULT_BUCKET,
    ) -> None:
        super().__init__(state_dir=state_dir, die_with_parent=die_with_parent)
        self._credentials = credentials
        self.bucket = bucket

    @property
    def endpoint(self) -> str:
        endpoint = self._state.get("endpoint")
        if not endpoint:
            raise ServiceError(self.name, f"not started (no state in {self.folder}): run `make infra-up`")
        return str(endpoint)

    @property
    def access_key(self) -> str:
        return self.credentials.access_key

    @property
    def secret_key(self) -> str:
        return self.credentials.secret_key

    @property
    def credentials(self) -> minio.Credentials:
        key, secret = self._state.get("access_key"), self._state.get("secret_key")
        if key and secret:
            return minio.Credentials(access_key=str(key), secret_key=str(secret))
        if self._credentials is not None:
            return self._credentials
        raise ServiceError(self.name, f"no credentials recorded in {self.folder}: start it first")

    def s3_client(self) -> S3Client:
        """A boto3 S3 client for this MinIO (path-style, region us-east-1)."""
        return minio.s3_client(self.endpoint, self.credentials)

    def _logs(self) -> list[Path]:
        return [self.folder / "minio.log"]

    def _ready(self) -> bool:
        endpoint = self._state.get("endpoint")
        return bool(endpoint) and minio.is_live(str(endpoint))

    def _after_start(self) -> None:
        if self.bucket:
            try:
                minio.ensure_bucket(self.s3_client(), self.bucket)
            except Exception as exc:
                raise ServiceError(self.name, f"could not create bucket {self.bucket!r}: {exc}") from exc

    def _launch(self, previous: dict[str, Any]) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
        creds = self._choose_credentials(previous)
        port = _port(previous, "port")
        console_port = _port(previous, "console_port")
        if console_port == port:
            console_port = free_port(HOST)
        data_dir = self.folder / "data"
        certs_dir = self.folder / "certs"
        data_dir.mkdir(parents=True, exist_ok=True)
        certs_dir.mkdir(parents=True, exist_ok=True)
        command = minio.server_command(
            data_dir=data_dir, host=HOST, port=port, console_port=console_port, certs_dir=certs_dir
        )
        proc = self._spawn(command, log_name="minio.log", env=minio.server_env(creds))
        state = {
            "pid": proc.pid,
            "host": HOST,
            "port": port,
            "console_port": console_port,
            "endpoint": f"http://{HOST}:{port}",
            "console": f"http://{HOST}:{console_port}",
            "access_key": creds.access_key,
            "secret_key": creds.secret_key,
            "bucket": self.bucket,
            "data_dir": str(data_dir),
            "log": str(self.folder / "minio.log"),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        return proc, state

    def _choose_credentials(self, previous: dict[str, Any]) -> minio.Credentials:
        if self._credentials is not None:
            return minio.validate(self._credentials)
        from_env = minio.credentials_from_env()
        if from_env is not None:
            return from_env
        key, secret = previous.get("access_key"), previous.get("secret_key")
        if key and secret:
            return minio.Credentials(access_key=str(key), secret_key=str(secret))
        logger.info("no MinIO credentials in the environment; generated random ones (see status --json)")
        return minio.random_credentials()


class _PasswordService(_Service):
    """A server on 127.0.0.1 with one password: ``host``, ``port``, ``password``.

    The password is ``password=`` when given, else the environment variable :attr:`password_env`,
    else the one recorded on a previous start, else random; it is kept in the state file (0600).
    """

    password_env: ClassVar[str]

    def __init__(
        self,
        *,
        state_dir: Path = DEFAULT_STATE_DIR,
        die_with_parent: bool = False,
        password: str | None = None,
    ) -> None:
        super().__init__(state_dir=state_dir, die_with_parent=die_with_parent)
        self._password = password

    @property
    def host(self) -> str:
        return str(self._state.get("host") or HOST)

    @property
    def port(self) -> int:
        port = self._state.get("port")
        if not port:
            raise ServiceError(self.name, f"not started (no state in {self.folder}): run `make infra-up`")
        return int(port)

    @property
    def password(self) -> str:
        recorded = self._state.get("password")
        if recorded:
            return str(recorded)
        raise ServiceError(self.name, f"no password recorded in {self.folder}: start it first")

    def _choose_password(self, previous: dict[str, Any]) -> str:
        return str(
            self._password
            or os.environ.get(self.password_env)
            or previous.get("password")
            or secrets.token_urlsafe(18)
        )

    def _base_state(self, proc: subprocess.Popen[bytes], port: int, password: str) -> dict[str, Any]:
        return {
            "pid": proc.pid,
            "host": HOST,
            "port": port,
            "password": password,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


class PostgresService(_PasswordService):
    """PostgreSQL (Debian's binaries) on 127.0.0.1, superuser ``cryptolake``, database ``cryptolake``.

    Runs as the ``postgres`` OS user when started by root (see :mod:`infra.postgres`). Data lives in
    ``<folder>/data`` and survives ``stop()``/``start()``.
    """

    name = "postgres"
    password_env = "CRYPTOLAKE_STORES_POSTGRES_PASSWORD"
    start_timeout = 60.0

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def _logs(self) -> list[Path]:
        return [self.folder / "postgres.log", self.folder / "initdb.out"]

    def _ready(self) -> bool:
        port, password = self._state.get("port"), self._state.get("password")
        if not (port and password):
            return False
        return postgres.is_ready(host=HOST, port=int(port), password=str(password))

    def _after_start(self) -> None:
        postgres.ensure_database(host=HOST, port=self.port, password=self.password)

    def _launch(self, previous: dict[str, Any]) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
        password = self._choose_password(previous)
        user = postgres.run_as()
        if user:
            postgres.check_reachable(self.folder, user)
        if not (self.data_dir / "PG_VERSION").is_file():
            self._initdb(password, user)
        port = _port(previous, "port")
        command = postgres.server_command(data_dir=self.data_dir, host=HOST, port=port)
        proc = self._spawn(command, log_name="postgres.log", user=user)
        state = self._base_state(proc, port, password)
        state.update({"database": postgres.DATABASE, "user": postgres.USER, "data_dir": str(self.data_dir)})
        state["log"] = str(self.folder / "postgres.log")
        return proc, state

    def _initdb(self, password: str, user: str | None) -> None:
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True, mode=0o700)
        pwfile = self.folder / ".pwfile"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(password + "\n")
        if user:
            postgres.chown(self.data_dir, user)
            postgres.chown(pwfile, user)
        out = self.folder / "initdb.out"
        try:
            with out.open("wb") as log:
                command = postgres.initdb_command(data_dir=self.data_dir, password_file=pwfile)
                result = subprocess.run(
                    command, stdout=log, stderr=subprocess.STDOUT, timeout=120, check=False, user=user
                )
        finally:
            remove_quietly(pwfile)
        if result.returncode != 0:
            raise ServiceError(self.name, f"initdb failed with code {result.returncode}\n{log_tails([out])}")
        logger.info("postgres data folder initialised in %s", self.data_dir)


class RedisService(_PasswordService):
    """Redis (Debian's ``redis-server``) on 127.0.0.1 with a password; data in ``<folder>/data``."""

    name = "redis"
    password_env = "CRYPTOLAKE_STORES_REDIS_PASSWORD"
    start_timeout = 30.0

    def _logs(self) -> list[Path]:
        return [self.folder / "redis.log"]

    def _ready(self) -> bool:
        port, password = self._state.get("port"), self._state.get("password")
        if not (port and password):
            return False
        return redis.is_ready(host=HOST, port=int(port), password=str(password))

    def _launch(self, previous: dict[str, Any]) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
        password = self._choose_password(previous)
        port = _port(previous, "port")
        config = self.folder / "redis.conf"
        redis.write_config(config, host=HOST, port=port, data_dir=self.folder / "data", password=password)
        proc = self._spawn(redis.server_command(config=config), log_name="redis.log")
        state = self._base_state(proc, port, password)
        state.update({"data_dir": str(self.folder / "data"), "log": str(self.folder / "redis.log")})
        return proc, state


AnyService = KafkaService | MinioService | PostgresService | RedisService


def service(name: ServiceName, *, state_dir: Path = DEFAULT_STATE_DIR) -> AnyService:
    if name == "kafka":
        return KafkaService(state_dir=state_dir)
    if name == "minio":
        return MinioService(state_dir=state_dir)
    if name == "postgres":
        return PostgresService(state_dir=state_dir)
    if name == "redis":
        return RedisService(state_dir=state_dir)
    raise ValueError(f"unknown service {name!r}; known: {', '.join(SERVICE_NAMES)}")


def up(
    *, state_dir: Path = DEFAULT_STATE_DIR, only: tuple[ServiceName, ...] = DEFAULT_SERVICES
) -> dict[str, dict[str, Any]]:
    """Start (or reuse) the services in parallel; raise one :class:`ServiceError` naming each failure."""
    services = [service(name, state_dir=state_dir) for name in only]
    errors: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=len(services)) as pool:
        futures = {svc.name: pool.submit(svc.start) for svc in services}
    for name, future in futures.items():
        exc = future.exception()
        if exc is not None:
            errors[name] = str(exc) if isinstance(exc, ServiceError) else f"{name}: {exc!r}"
    if errors:
        raise ServiceError("+".join(errors), "failed to start:\n" + "\n".join(errors.values()))
    return {svc.name: svc.status() for svc in services}


def down(*, state_dir: Path = DEFAULT_STATE_DIR, only: tuple[ServiceName, ...] = SERVICE_NAMES) -> None:
    """Stop the services running from ``state_dir`` (their data stays)."""
    for name in only:
        svc = service(name, state_dir=state_dir)
        if svc.running():
            svc.stop()


def status(
    *, state_dir: Path = DEFAULT_STATE_DIR, only: tuple[ServiceName, ...] | None = None
) -> dict[str, dict[str, Any]]:
    """Each service's status; by default the default ones plus any optional one started here before."""
    if only is None:
        only = tuple(n for n in SERVICE_NAMES if n in DEFAULT_SERVICES or (Path(state_dir) / n).is_dir())
    return {name: service(name, state_dir=state_dir).status() for name in only}
