"""The TCP forwarder that cuts the broker off in the Publisher's outage tests."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

import pytest

from loopline.devstack import free_port
from tests.forwarder import Forwarder


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A server that sends back what it receives."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    done = threading.Event()

    def echo(conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data)

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            conn.settimeout(None)
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1])
    done.set()
    thread.join(2)
    server.close()


def roundtrip(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    received = b""
    while len(received) < len(data):
        chunk = sock.recv(4096)
        if not chunk:
            break
        received += chunk
    return received


def test_cut_drops_open_connections_and_refuses_new_ones_until_restored(echo_port: int) -> None:
    with Forwarder.start(free_port(), "127.0.0.1", echo_port) as fwd:
        client = socket.create_connection(("127.0.0.1", fwd.port), timeout=5)
        assert roundtrip(client, b"x" * 100_000) == b"x" * 100_000

        fwd.cut()
        with contextlib.suppress(ConnectionResetError):  # closed under the client
            assert client.recv(1) == b""
        client.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", fwd.port), timeout=5)

        fwd.restore()
        with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as again:
            assert roundtrip(again, b"back") == b"back"
        assert fwd.accepted == 2


def test_a_new_target_takes_new_connections(echo_port: int) -> None:
    with Forwarder.start(free_port(), "127.0.0.1", free_port()) as fwd:
        with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as nothing_behind:
            assert nothing_behind.recv(1) == b""  # no target: dropped at once
        fwd.target = ("127.0.0.1", echo_port)
        with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as client:
            assert roundtrip(client, b"hello") == b"hello"
