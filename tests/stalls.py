"""Connections that stall the way a hostile or broken client does, and when the server closed each.

Each kind stops in one phase of a request, so the server's deadline for that phase
(:class:`webhook.edge.Limits`) is the one that must close it:

* ``silent``: TCP open, nothing sent (handshake);
* ``partial-hello``: the first bytes of a real TLS ClientHello (handshake);
* ``partial-headers``: TLS done, half a request head (headers, from its first byte);
* ``trickle``: TLS done, one byte of a request head every two seconds (headers: the
  deadline counts from the first byte, not from the last);
* ``partial-body``: the whole head, ten bytes of a longer body (body).
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from webhook.edge import Limits

KINDS = ("silent", "partial-hello", "partial-headers", "trickle", "partial-body")
TRICKLE_EVERY = 2.0
HEAD = b"POST /mutate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"


def client_hello(context: ssl.SSLContext) -> bytes:
    """The bytes a TLS client sends first, made by the ssl module itself."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the ServerHello: the ClientHello is out
        tls.do_handshake()
    return outgoing.read()


@dataclass
class Stalled:
    kind: str
    sock: socket.socket
    timeout: float  # the deadline of the phase it stalls in
    phase_started: float  # when that phase began, as this side sees it
    sent: int = 0  # trickle: bytes of HEAD sent so far
    next_send: float = 0.0
    closed_after: float | None = None  # seconds from phase_started to the server closing it
    answer: bytes = b""  # anything the server wrote before closing


def phase_timeout(kind: str, limits: Limits) -> float:
    return {
        "silent": limits.handshake_timeout,
        "partial-hello": limits.handshake_timeout,
        "partial-headers": limits.header_timeout,
        "trickle": limits.header_timeout,
        "partial-body": limits.body_timeout,
    }[kind]


def open_stalled(kind: str, port: int, context: ssl.SSLContext, limits: Limits) -> Stalled:
    raw = socket.create_connection(("localhost", port), timeout=10)
    timeout = phase_timeout(kind, limits)
    if kind == "silent":
        return Stalled(kind, raw, timeout, time.monotonic())
    if kind == "partial-hello":
        started = time.monotonic()
        raw.sendall(client_hello(context)[:60])
        return Stalled(kind, raw, timeout, started)
    tls = context.wrap_socket(raw, server_hostname="localhost")
    started = time.monotonic()
    if kind == "partial-headers":
        tls.sendall(HEAD[:40])
    elif kind == "trickle":
        tls.sendall(HEAD[:1])
        return Stalled(kind, tls, timeout, started, sent=1, next_send=started + TRICKLE_EVERY)
    else:
        tls.sendall(HEAD + b'{"apiVersi')
        started = time.monotonic()
    return Stalled(kind, tls, timeout, started)


class StallWatch:
    """Watches every stalled connection from one thread: records when each is closed, keeps the trickles trickling."""

    def __init__(self, stalled: list[Stalled]) -> None:
        self.stalled = stalled
        self.selector = selectors.DefaultSelector()
        for item in stalled:
            item.sock.setblocking(False)
            self.selector.register(item.sock, selectors.EVENT_READ, item)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def open(self) -> int:
        return sum(1 for s in self.stalled if s.closed_after is None)

    def wait(self, timeout: float) -> None:
        self.thread.join(timeout)

    def _closed(self, item: Stalled) -> None:
        item.closed_after = time.monotonic() - item.phase_started
        self.selector.unregister(item.sock)
        item.sock.close()

    def _run(self) -> None:
        while self.open:
            for key, _ in self.selector.select(timeout=0.05):
                item: Stalled = key.data
                try:
                    data = item.sock.recv(4096)
                except (ssl.SSLWantReadError, BlockingIOError):
                    continue  # a TLS 1.3 session ticket, not the end
                except (OSError, ssl.SSLError):
                    data = b""
                if data:
                    item.answer += data
                else:
                    self._closed(item)
            now = time.monotonic()
            for item in self.stalled:
                if item.kind == "trickle" and item.closed_after is None and now >= item.next_send and item.sent < len(HEAD) - 4:
                    try:
                        item.sock.send(HEAD[item.sent : item.sent + 1])
                        item.sent += 1
                    except (ssl.SSLWantWriteError, BlockingIOError):
                        pass
                    except (OSError, ssl.SSLError):
                        pass  # closed: the read side will say so
                    item.next_send = now + TRICKLE_EVERY
