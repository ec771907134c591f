"""The TCP proxy of the fault tests (``aiocoord.testing.TcpProxy``) leaves no socket behind when it
closes while clients keep connecting: a leaked socket surfaces later, in whatever test the
garbage collector runs in, as an unclosed-socket ResourceWarning (an error in this suite)."""

from __future__ import annotations

import contextlib
import gc
import socket
import threading
import time

from aiocoord.testing import TcpProxy


def _connect(port: int, stop: threading.Event, clients: list[socket.socket]) -> None:
    while not stop.is_set():
        with contextlib.suppress(OSError):  # refused once the proxy has closed
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=0.2))


def test_closing_while_clients_connect_leaves_no_socket_behind() -> None:
    upstream = socket.create_server(("127.0.0.1", 0), backlog=1000)
    accepted: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                accepted.append(upstream.accept()[0])
            except OSError:
                return  # closed

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        for _ in range(6):
            proxy = TcpProxy("127.0.0.1", upstream.getsockname()[1]).start()
            stop = threading.Event()
            clients: list[socket.socket] = []

            threads = [
                threading.Thread(target=_connect, args=(proxy.port, stop, clients))
                for _ in range(3)
            ]
            for t in threads:
                t.start()
            time.sleep(0.05)  # connections flowing when the proxy closes
            proxy.close()
            stop.set()
            for t in threads:
                t.join(timeout=10)
            for c in clients:
                c.close()
            # a socket of the proxy's left unclosed warns here (the suite makes that an error)
            gc.collect()
    finally:
        upstream.close()
        server.join(timeout=10)
        for c in accepted:
            c.close()
