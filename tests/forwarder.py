"""A TCP forwarder a test owns, to cut a server off from its clients and restore it.

Clients connect to the forwarder; it connects each of them to the target and copies
bytes both ways. ``cut()`` drops every open connection and refuses new ones (the
clients see a reset connection, then "connection refused", as when a broker dies or
a network partition starts); ``restore()`` accepts and forwards again on the same
port::

    with Forwarder.start(free_port(), "127.0.0.1", redis_port) as fwd:
        client = redis.Redis(port=fwd.port)
        fwd.cut()      # returns once every connection is closed and the port refuses
        ...
        fwd.restore()  # returns once the port accepts again

Kafka clients connect to the addresses the broker advertises, not to the bootstrap
address, so a forwarder in front of a shared broker would be bypassed.
:func:`broker_behind_forwarder` starts an embedded broker of the test's own that
advertises the forwarder, so every connection to it goes through the forwarder::

    with broker_behind_forwarder(tmp_path) as (fwd, bootstrap):
        settings = settings.replace(kafka_bootstrap=bootstrap)
        fwd.cut()
        ...

Threads, not asyncio, so a test needs no event loop; every thread is a daemon and
``stop()`` (or leaving the ``with`` block) joins them.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from loopline.devstack import Managed, free_port, tansu_binary
from loopline.kafka import wait_for_broker
from loopline.settings import Settings

_TICK = 0.02


class Forwarder:
    """Forwards ``listen_host:listen_port`` to ``target_host:target_port`` until cut."""

    def __init__(
        self, listen_port: int, target_host: str, target_port: int, listen_host: str = "127.0.0.1"
    ) -> None:
        self.listen_host, self.port = listen_host, listen_port
        #: Where new connections go; reassign it to point the forwarder at a restarted server.
        self.target = (target_host, target_port)
        #: Connections accepted and forwarded since the start (a test can check traffic went through).
        self.accepted = 0
        self._want_listening = False
        self._listening = False
        self._stopped = False
        self._state = threading.Condition()
        self._pipes: dict[threading.Thread, tuple[socket.socket, socket.socket]] = {}
        self._acceptor = threading.Thread(target=self._accept_loop, name="forwarder", daemon=True)

    @classmethod
    def start(
        cls, listen_port: int, target_host: str, target_port: int, listen_host: str = "127.0.0.1"
    ) -> Forwarder:
        """Listen and forward; returns once the port accepts connections."""
        fwd = cls(listen_port, target_host, target_port, listen_host)
        fwd._acceptor.start()
        fwd.restore()
        return fwd

    @property
    def address(self) -> str:
        return f"{self.listen_host}:{self.port}"

    def cut(self, timeout: float = 5.0) -> None:
        """Refuse new connections, then drop every open one; returns when both are done."""
        self._set_listening(False, timeout)
        with self._state:
            pipes = list(self._pipes.items())
        for _, (client, upstream) in pipes:
            for sock in (client, upstream):
                # shutdown wakes the pipe's thread, which closes the sockets it owns.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        for thread, _ in pipes:
            thread.join(timeout)

    def restore(self, timeout: float = 5.0) -> None:
        """Accept and forward again on the same port; returns once it listens."""
        self._set_listening(True, timeout)

    def stop(self) -> None:
        """Cut, then end every thread."""
        self.cut()
        with self._state:
            self._stopped = True
            self._state.notify_all()
        self._acceptor.join(5.0)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _set_listening(self, on: bool, timeout: float) -> None:
        with self._state:
            self._want_listening = on
            self._state.notify_all()
            if not self._state.wait_for(lambda: self._listening == on, timeout):
                raise TimeoutError(
                    f"forwarder on {self.address} did not {'listen' if on else 'stop'}"
                )

    def _accept_loop(self) -> None:
        # Only this thread opens and closes the listening socket, so no other thread
        # can close it under a pending accept().
        listener: socket.socket | None = None
        while True:
            with self._state:
                if self._stopped:
                    break
                want = self._want_listening
            if want and listener is None:
                listener = socket.socket()
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                listener.bind((self.listen_host, self.port))
                listener.listen(64)
                listener.settimeout(_TICK)
                self._announce(listening=True)
            elif not want and listener is not None:
                listener.close()
                listener = None
                self._announce(listening=False)
            if listener is None:
                with self._state:
                    self._state.wait(_TICK)
                continue
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            self._connect(client)
        if listener is not None:
            listener.close()
        self._announce(listening=False)

    def _announce(self, *, listening: bool) -> None:
        with self._state:
            self._listening = listening
            self._state.notify_all()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            client.close()  # the target is down: the client sees the connection drop
            return
        for sock in (client, upstream):
            sock.setblocking(True)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        thread = threading.Thread(target=self._pipe, args=(client, upstream), daemon=True)
        with self._state:
            self._pipes[thread] = (client, upstream)
            self.accepted += 1
        thread.start()

    def _pipe(self, client: socket.socket, upstream: socket.socket) -> None:
        peer = {client: upstream, upstream: client}
        with selectors.DefaultSelector() as sel:
            sel.register(client, selectors.EVENT_READ)
            sel.register(upstream, selectors.EVENT_READ)
            try:
                while True:
                    for key, _ in sel.select():
                        sock: socket.socket = key.fileobj  # type: ignore[assignment]
                        data = sock.recv(65536)
                        if not data:
                            return
                        peer[sock].sendall(data)
            except OSError:
                return
            finally:
                client.close()
                upstream.close()
                with self._state:
                    self._pipes.pop(threading.current_thread(), None)


@contextlib.contextmanager
def broker_behind_forwarder(directory: Path) -> Iterator[tuple[Forwarder, str]]:
    """An embedded broker of its own, reachable only through a forwarder.

    Yields the forwarder and the bootstrap address to give clients. The broker keeps
    its records in memory for as long as the block runs, across cuts.
    """
    broker_port = free_port()
    fwd = Forwarder.start(free_port(), "127.0.0.1", broker_port)
    broker = Managed("kafka", "127.0.0.1", broker_port, directory)
    try:
        broker.spawn(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{broker_port}",
                "--advertised-listener-url",
                f"tcp://{fwd.address}",
                "--storage-engine",
                "memory://tansu/",
            ]
        )
        wait_for_broker(Settings.from_env({}, kafka_bootstrap=fwd.address), timeout=20)
        yield fwd, fwd.address
    finally:
        fwd.stop()
        broker.stop()
