"""micropython-lib's ``umqtt.simple`` running on CPython: the simulator's MQTT client.

The node simulator runs the node's own code with the node's own MQTT client, so what the
bench measures is what a board sends. ``umqtt.simple`` (vendored unmodified, see
edge/fieldbus/vendor/README.md) reaches the network only through its module-level name
``socket``, and uses a MicroPython socket: a stream with ``read(n)`` that blocks until
``n`` bytes (or returns None when non-blocking with nothing to read) and ``write(buf, n)``.
CPython's sockets have neither, so this module binds that name to :data:`SOCKETS`, which
makes :class:`StreamSocket` objects: CPython sockets with MicroPython's stream methods,
counting the bytes they carry (MQTT bytes: TCP/IP headers are not counted).

:class:`HostClient` is ``umqtt.simple.MQTTClient`` with the bytes of all its connections
summed, and a file descriptor for ``select``.
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from edge.fieldbus.vendor.umqtt import simple


class StreamSocket:
    """A CPython socket with MicroPython's stream ``read``/``write``, counting bytes."""

    def __init__(self, sock: socket.socket) -> None:
        self.raw = sock
        self.sent = 0
        self.received = 0
        self._blocking = True

    def settimeout(self, timeout: float | None) -> None:
        self.raw.settimeout(timeout)
        self._blocking = timeout is None or timeout > 0

    def setblocking(self, flag: bool) -> None:
        self.raw.setblocking(flag)
        self._blocking = flag

    def connect(self, address: Any) -> None:
        self.raw.connect(address)

    def fileno(self) -> int:
        return self.raw.fileno()

    def close(self) -> None:
        self.raw.close()

    def read(self, n: int) -> bytes | None:
        if not self._blocking:
            try:
                data = self.raw.recv(n)
            except (BlockingIOError, ssl.SSLWantReadError):
                return None
            self.received += len(data)
            return data
        chunks = []
        want = n
        while want > 0:
            data = self.raw.recv(want)
            if not data:
                break
            chunks.append(data)
            want -= len(data)
        out = b"".join(chunks)
        self.received += len(out)
        return out

    def write(self, buf: Any, n: int | None = None) -> int:
        if isinstance(buf, str):  # MicroPython writes a str's UTF-8 bytes
            buf = buf.encode()
        data = bytes(buf) if n is None else bytes(buf[:n])
        self.raw.sendall(data)
        self.sent += len(data)
        return len(data)


class _Sockets:
    """The part of MicroPython's ``socket`` module that umqtt.simple uses."""

    getaddrinfo = staticmethod(socket.getaddrinfo)

    def socket(self) -> StreamSocket:
        sock = socket.socket()
        # umqtt writes a packet in several small writes (header, topic, payload); with
        # Nagle's algorithm each waits for the peer's delayed ACK (~40 ms on Linux),
        # which would make a hundred simulated nodes take seconds to subscribe.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return StreamSocket(sock)


class HostTLS:
    """An ``ssl`` argument for umqtt.simple on CPython: wraps with ``context``."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context

    def wrap_socket(self, sock: StreamSocket, server_hostname: str) -> StreamSocket:
        wrapped = StreamSocket(self.context.wrap_socket(sock.raw, server_hostname=server_hostname))
        wrapped.settimeout(sock.raw.gettimeout())
        return wrapped


SOCKETS = _Sockets()
simple.socket = SOCKETS


class HostClient(simple.MQTTClient):  # type: ignore[misc]
    """umqtt.simple's client, counting the bytes of all its connections."""

    sock: StreamSocket | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._past_sent = 0
        self._past_received = 0

    def connect(self, clean_session: bool = True, timeout: float | None = None) -> int:
        self._fold()
        result: int = super().connect(clean_session, timeout)
        return result

    def _fold(self) -> None:
        if self.sock is not None:
            self._past_sent += self.sock.sent
            self._past_received += self.sock.received
            self.sock.sent = self.sock.received = 0

    @property
    def bytes_sent(self) -> int:
        return self._past_sent + (self.sock.sent if self.sock is not None else 0)

    @property
    def bytes_received(self) -> int:
        return self._past_received + (self.sock.received if self.sock is not None else 0)

    def fileno(self) -> int:
        """The current connection's descriptor (-1 without one), for ``select``."""
        if self.sock is None:
            return -1
        try:
            return self.sock.fileno()
        except OSError:
            return -1
