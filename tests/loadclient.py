"""A steady request stream over keep-alive HTTPS connections that counts every response.

It behaves like the API server's HTTP client where it matters for the fault tests:
it reuses connections, honours ``Connection: close``, and before reusing an idle
connection it checks whether the server closed it (a pending EOF), reconnecting
instead of writing into a dead socket. A request counts as **failed** when it was
written and no valid answer came back; a connection the server refuses to open
(it stopped listening) counts as **refused**, not failed.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Tally:
    ok: int = 0
    failed: int = 0
    refused: int = 0
    timings: list[tuple[float, float]] = field(default_factory=list)  # (sent at, latency)
    failures: list[tuple[float, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_ok(self, sent: float, latency: float) -> None:
        with self.lock:
            self.ok += 1
            self.timings.append((sent, latency))

    def add_failure(self, when: float, reason: str) -> None:
        with self.lock:
            self.failed += 1
            self.failures.append((when, reason))

    def add_refused(self) -> None:
        with self.lock:
            self.refused += 1

    def ok_between(self, start: float, end: float) -> int:
        with self.lock:
            return sum(1 for sent, _ in self.timings if start <= sent < end)


def dropped(sock: socket.socket | None) -> bool:
    """True when an idle connection has anything to read: the peer closed it (or, for TLS,
    sent a record such as a session ticket). urllib3 and Go's HTTP client treat a
    readable idle connection the same way: not worth reusing."""
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


BodyFactory = Callable[[str], bytes]


class LoadClient:
    def __init__(
        self, port: int, ca: str, path: str, body: Callable[[str], bytes], connections: int = 8, pause: float = 0.0, timeout: float = 10.0
    ) -> None:
        self.port, self.path, self.body = port, path, body
        self.connections, self.pause, self.timeout = connections, pause, timeout
        self.context = ssl.create_default_context(cafile=ca)
        self.tally = Tally()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.peer_certificates: set[bytes] = set()

    def _connect(self) -> http.client.HTTPSConnection | None:
        connection = http.client.HTTPSConnection("localhost", self.port, context=self.context, timeout=self.timeout)
        try:
            connection.connect()
        except (ConnectionRefusedError, ConnectionResetError, ssl.SSLError, OSError):
            self.tally.add_refused()
            connection.close()
            time.sleep(0.05)
            return None
        certificate = connection.sock.getpeercert(binary_form=True) if connection.sock else None
        if certificate:
            with self.tally.lock:
                self.peer_certificates.add(certificate)
        return connection

    def _run(self) -> None:
        connection: http.client.HTTPSConnection | None = None
        while not self._stop.is_set():
            if connection is not None and dropped(connection.sock):
                connection.close()
                connection = None
            if connection is None:
                connection = self._connect()
                if connection is None:
                    continue
            uid = str(uuid.uuid4())
            sent = time.monotonic()
            try:
                connection.request("POST", self.path, body=self.body(uid), headers={"Content-Type": "application/json"})
                response = connection.getresponse()
                payload = response.read()
                latency = time.monotonic() - sent
                answer: dict[str, Any] = json.loads(payload) if response.status == 200 else {}
                if response.status == 200 and answer.get("response", {}).get("uid") == uid:
                    self.tally.add_ok(sent, latency)
                else:
                    self.tally.add_failure(sent, f"HTTP {response.status}")
                if response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException, ValueError) as error:
                self.tally.add_failure(sent, f"{type(error).__name__}: {error}")
                connection.close()
                connection = None
            if self.pause:
                time.sleep(self.pause)
        if connection is not None:
            connection.close()

    def start(self) -> LoadClient:
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(self.connections)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> Tally:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        return self.tally
