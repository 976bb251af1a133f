"""A TCP forwarder a test can cut, to make a real server (PostgreSQL) unreachable for a while without
stopping it for everyone else on the machine."""

from __future__ import annotations

import socket
import threading
from types import TracebackType


class Proxy:
    """Listens on 127.0.0.1:<port> and forwards to ``target``; ``cut()`` drops every connection and
    refuses new ones until ``restore()``."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = int(self.server.getsockname()[1])
        self._up = threading.Event()
        self._up.set()
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self._up.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)  # the 5 s bound the connect only: a slow answer is not a cut
            with self._lock:
                if not self._up.is_set():  # cut while this one connected: it must not outlive the cut
                    _shut(client)
                    _shut(upstream)
                    continue
                self._open |= {client, upstream}
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            # shutdown, not only close: on Linux a close does not wake the other direction's thread
            # blocked in recv, which then keeps the socket open, and its client waits for ever.
            for s in (a, b):
                _shut(s)

    def cut(self) -> None:
        self._up.clear()
        with self._lock:
            socks, self._open = self._open, set()
        for s in socks:
            _shut(s)

    def restore(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.server.close()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object | TracebackType | None) -> None:
        self.close()


def _shut(s: socket.socket) -> None:
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    s.close()
