"""Running serving and the pusher inside a test, feeding them records, hanging Redis."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TypeVar

import uvicorn
from confluent_kafka import Producer

from loopline.checkpoints import CheckpointStore, manifest_sha256
from loopline.contracts import CheckpointManifest, Example, utcnow
from loopline.devstack import Managed, free_port, start_redis
from loopline.errors import CheckpointError
from loopline.kafka import producer_config
from loopline.routing import RoutingStore
from loopline.settings import Settings
from loopline.signing import private_key, sign_verdict
from loopline.spec import Spec
from pusher.worker import Pusher
from serving.app import Service, build_service, create_app

T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def store_of(settings: Settings) -> CheckpointStore:
    """The checkpoint store, signing with the trainer's (development) key."""
    return CheckpointStore.of(settings, signing=True)


def record_qualified(settings: Settings, routing: RoutingStore, checkpoint_id: str) -> None:
    """Record the pusher's signed verdict that a stored checkpoint qualified, as the
    pusher does (with its development key); a checkpoint not stored gets one on no
    manifest, which qualifies nothing."""
    try:
        digest = manifest_sha256(store_of(settings).manifest(checkpoint_id))
    except CheckpointError:
        digest = "no manifest"
    document = {
        "checkpoint_id": checkpoint_id,
        "manifest_sha256": digest,
        "verdict": "qualified",
        "decided_at": utcnow().isoformat(),
    }
    routing.record_verdict(checkpoint_id, sign_verdict(document, private_key(settings, "pusher")))


def produce(settings: Settings, topic: str, records: Sequence[tuple[str, bytes]]) -> None:
    producer = Producer(producer_config(settings))
    for key, value in records:
        producer.produce(settings.topic(topic), value, key.encode())
    assert producer.flush(20) == 0


def publish_examples(settings: Settings, rows: Sequence[Example]) -> None:
    produce(settings, "examples", [(r.entity_id, r.to_json()) for r in rows])


def announce(settings: Settings, *manifests: CheckpointManifest) -> None:
    produce(settings, "checkpoints", [(m.model_name, m.to_json()) for m in manifests])


@contextmanager
def serving(settings: Settings, spec: Spec) -> Iterator[tuple[str, Service]]:
    """Serving under uvicorn on a free port; yields its base URL and the service."""
    service = build_service(settings, spec)
    port = free_port()
    config = uvicorn.Config(
        create_app(service),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        ws="none",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, "serving to start")
    try:
        yield f"http://127.0.0.1:{port}", service
    finally:
        server.should_exit = True
        thread.join(15)


@contextmanager
def pusher(settings: Settings, spec: Spec) -> Iterator[Pusher]:
    worker = Pusher(settings, spec, tick_seconds=0.1)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(15)


@contextmanager
def private_redis(settings: Settings, directory: Path) -> Iterator[tuple[Settings, Managed]]:
    """A redis-server of the test's own (free to hang), and settings pointing at it."""
    server = start_redis("127.0.0.1", free_port(), directory)
    try:
        yield settings.replace(redis_url=f"redis://127.0.0.1:{server.port}/0"), server
    finally:
        resume(server)
        server.stop()


def hang(server: Managed) -> None:
    """SIGSTOP the server: it keeps accepting connections and answers nothing."""
    pid = server.pid()
    assert pid is not None, "the private Redis is not running"
    os.kill(pid, signal.SIGSTOP)


def resume(server: Managed) -> None:
    """SIGCONT the server (harmless if it runs)."""
    pid = server.pid()
    if pid is not None:
        os.kill(pid, signal.SIGCONT)


ROOT = Path(__file__).resolve().parents[3]


@contextmanager
def serving_process(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``loopline run serving`` as a real process with the test's settings, stopped after."""
    env = settings.process_env()
    env["PYTHONPATH"] = str(ROOT)
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", "from loopline.cli import main; main()", "run", "serving"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def peak_rss_kib(pid: int) -> int:
    """The process's peak resident set (``VmHWM``), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmHWM in /proc/{pid}/status")


def offer_body(
    port: int,
    chunks: Iterable[bytes],
    *,
    content_length: int | None,
    headers: Sequence[str] = (),
) -> tuple[bytes, int]:
    """POST ``chunks`` to ``/predict`` on a raw socket, reading while sending.

    Returns the response's status line and how many body bytes were sent. The answer is
    read as soon as it arrives: a server that refuses a body early closes the
    connection, and a client that only reads once it has sent everything (most do)
    would see the reset instead of the answer.
    """
    framing = (
        "Transfer-Encoding: chunked"
        if content_length is None
        else f"Content-Length: {content_length}"
    )
    head = "\r\n".join(
        ["POST /predict HTTP/1.1", f"Host: 127.0.0.1:{port}", framing, *headers, "", ""]
    )
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        for chunk in chunks:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            data = chunk if content_length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk)
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        else:
            if content_length is None:
                sock.sendall(b"0\r\n\r\n")
        answer = b""
        with suppress(ConnectionResetError):
            while b"\r\n" not in answer and (part := sock.recv(4096)):
                answer += part
    return answer.split(b"\r\n", 1)[0], sent
