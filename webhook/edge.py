"""The HTTP edge: a gunicorn worker that serves HTTPS from an event loop.

Why not a thread per connection: with ``failurePolicy: Fail``, a webhook that
cannot answer blocks every opted-in rollout, and any pod that reaches the Service
can open connections and stall them. A thread pool is exhausted by as many stalled
sockets as it has threads (measured: 50 stalled connections took normal clients of
the gthread server from about 1,100 to 2 requests/s). Here a stalled connection
costs a file descriptor and a few kilobytes, and every phase has a deadline the loop
enforces (:class:`Limits`):

* TLS handshake (``handshake_timeout``, asyncio's ``ssl_handshake_timeout``);
* request headers, from the request's first byte (``header_timeout``): a client
  trickling a byte every few seconds still loses its connection on time;
* request body (``body_timeout``);
* a response the client does not read (``write_timeout``);
* keep-alive idle (``keepalive``, 95 s: longer than the API server's 90 s, so the
  client closes first and never writes into a socket being closed).

And why not uvicorn's worker, the conventional pairing: measured with gunicorn +
``uvicorn_worker.UvicornWorker``, connections stalled mid-handshake, mid-headers and
mid-body were all still open after 20 s (it has no header or body timeout, and the
handshake is left at asyncio's 60 s), it builds its own SSLContext (no certificate
rotation without a restart), and it offers no way to balance connections across
workers (bench/RESULTS.md).

Balance: all workers share gunicorn's listening socket, and each accepts one
connection per wake-up, then waits a moment that grows with the connections it already
holds, so the next one goes to a less busy worker. (A worker that accepts until the
queue is empty takes a whole burst of keep-alive connections, and throughput halves.)
``SO_REUSEPORT`` sockets per worker would balance too, but reset the connections
queued on a worker's socket when it stops (every SIGHUP).

Past ``max_connections`` a worker accepts and closes at once: refused fast, nothing
held. ``/mutate`` and ``/validate`` are answered in the loop (:class:`webhook.server.Admissions`,
the decision is CPU work of a few hundred microseconds); every other path goes to the
Flask app on a small thread pool, so a slow ``/metrics`` never stalls the loop.

Certificates: each accepted connection is wrapped with the current SSLContext of the
:class:`webhook.certs.CertWatcher`, rebuilt when the files change (a handshake in
progress keeps the old one), so a rotation needs no restart and fails no handshake.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import io
import json
import logging
import math
import os
import signal
import socket
import struct
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import httptools
from gunicorn.workers.base import Worker

from webhook import metrics
from webhook.certs import CertWatcher
from webhook.server import Admissions, reason

log = logging.getLogger("gpu_shard_webhook.edge")

# Bounds on what a request line and headers may take: a Pod's AdmissionReview needs a
# few hundred bytes of headers; 64 KiB is kube-apiserver's own limit for them.
MAX_URL = 8 * 1024
MAX_HEADER_BYTES = 64 * 1024
# Beyond the body limit the rest of an oversized body is read and dropped (so the client
# gets the 413 instead of a reset) up to this much; past it the connection is closed.
DRAIN_LIMIT = 64 * 1024 * 1024
HIGH_WATER = 256 * 1024  # bytes of unsent response after which writing counts as stalled
SWEEP = 0.1  # seconds between deadline checks: a stalled connection closes at most this late


@dataclass(frozen=True)
class Limits:
    handshake_timeout: float = 5.0
    header_timeout: float = 5.0
    body_timeout: float = 10.0
    write_timeout: float = 10.0
    keepalive: float = 95.0
    max_connections: int = 1000
    body_limit: int = 4 * 1024 * 1024
    graceful_timeout: float = 25.0


@dataclass(frozen=True)
class Application:
    """What gunicorn loads and forks: the endpoints, the Flask app for every other path, TLS, limits."""

    admissions: Admissions
    wsgi: Callable[..., Any]
    certificates: CertWatcher
    limits: Limits
    wsgi_threads: int = 2
    after_fork: Callable[[], None] | None = None
    # /readyz's check, also run at every heartbeat so gpu_shard_ready is fresh in every worker
    # (a probe reaches one worker at a time).
    readiness: Callable[[], tuple[bool, str]] | None = None


_JSON_OK = {
    True: b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: keep-alive\r\n\r\n",
    False: b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
}


def response_bytes(status: int, body: bytes, content_type: str, keep_alive: bool, headers: Iterable[tuple[str, str]] = ()) -> bytes:
    if status == 200 and content_type == "application/json" and not headers:
        return _JSON_OK[keep_alive] % len(body) + body  # every admission answer
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers if k.lower() not in ("content-length", "connection", "content-type")]
    lines.append("Connection: keep-alive" if keep_alive else "Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Connection(asyncio.Protocol):
    """One client connection: httptools parses, timers bound each phase, responses go out in order."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge
        self.loop = edge.loop
        self.limits = edge.limits
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        # One deadline for the phase the connection is in, checked by the edge's sweep (a
        # timer per phase would be armed and cancelled several times per request).
        self.phase = "headers"
        self.deadline = math.inf
        self.write_deadline = math.inf
        self.pending: deque[asyncio.Future[bytes]] = deque()
        self.in_request = False
        self.last_active = self.loop.time()
        self._reset_request()

    def _reset_request(self) -> None:
        self.url = b""
        self.header_bytes = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.declared: int | None = None
        self.body: bytearray | None = bytearray()
        self.dropped = 0

    # --- connection lifetime -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=HIGH_WATER)  # type: ignore[union-attr]
        self.edge.connections.add(self)
        self._arm(self.limits.header_timeout, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        for future in self.pending:
            future.cancel()
        self.edge.connections.discard(self)
        self.transport = None

    def pause_writing(self) -> None:
        self.write_deadline = self.loop.time() + self.limits.write_timeout

    def resume_writing(self) -> None:
        self.write_deadline = math.inf

    def _arm(self, seconds: float, phase: str) -> None:
        self.phase, self.deadline = phase, self.loop.time() + seconds

    def _disarm(self) -> None:
        self.deadline = math.inf

    def expire_if_due(self, now: float) -> None:
        if now >= self.write_deadline:
            self._expire("write")
        elif now >= self.deadline:
            self._expire(self.phase)

    def _expire(self, phase: str) -> None:
        self.deadline = self.write_deadline = math.inf
        metrics.CONNECTIONS_CLOSED.labels(phase).inc()
        if self.transport is not None:
            if phase == "idle":
                self.transport.close()
            else:
                self.transport.abort()  # a stalled client gets no more of our time

    @property
    def idle(self) -> bool:
        return not self.in_request and not self.pending

    def close_if_idle(self, quiet_for: float) -> None:
        """Close when no request is in flight and none has started for ``quiet_for`` seconds.

        A connection is not closed the moment it falls idle: its client may be writing the
        next request into it right now and would see the connection reset. While the
        server drains, every response says ``Connection: close`` instead.
        """
        if self.idle and self.transport is not None and self.loop.time() - self.last_active >= quiet_for:
            self.transport.close()

    # --- bytes in ----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        self.last_active = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(400, "connection upgrades are not served")
        except httptools.HttpParserError:
            self._refuse(400, "malformed HTTP request")

    def _refuse(self, status: int, text: str) -> None:
        """An answer to a request that cannot be read on, then the connection closes."""
        answer = reason(status, text)
        self._send(response_bytes(answer.status, answer.body, answer.content_type, keep_alive=False))
        if self.transport is not None:
            self.transport.pause_reading()
        self.in_request = False

    def on_message_begin(self) -> None:
        self.in_request = True
        self._reset_request()
        self._arm(self.limits.header_timeout, "headers")

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_URL:
            self._refuse(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > MAX_HEADER_BYTES:
            self._refuse(431, "request headers too large")
            return
        self.headers.append((name, value))
        if name.lower() == b"content-length":
            with contextlib.suppress(ValueError):
                self.declared = int(value)

    def on_headers_complete(self) -> None:
        if self.declared is not None and self.declared > self.limits.body_limit:
            self.body = None  # not kept: answered 413 once it has been read and dropped
            if self.declared > DRAIN_LIMIT:
                self._refuse(413, f"request body above the limit of {self.limits.body_limit} bytes")
                return
        self._arm(self.limits.body_timeout, "body")

    def on_body(self, chunk: bytes) -> None:
        if self.body is None:
            self.dropped += len(chunk)
            if self.dropped > DRAIN_LIMIT:
                self._refuse(413, f"request body above the limit of {self.limits.body_limit} bytes")
            return
        self.body += chunk
        if len(self.body) > self.limits.body_limit:
            self.body = None

    def on_message_complete(self) -> None:
        self._disarm()
        keep_alive = self.parser.should_keep_alive() and not self.edge.stopping
        method = self.parser.get_method().decode("latin-1")
        parsed = httptools.parse_url(self.url or b"/")
        path = (parsed.path or b"/").decode("latin-1")
        if self.edge.admissions.handles(path):
            answer = self.edge.admissions.answer(path, method, bytes(self.body) if self.body is not None else None, self.declared)
            payload = response_bytes(answer.status, answer.body, answer.content_type, keep_alive)
            self.in_request = False
            if not self.pending:  # the usual case: answered in place, in order
                self._deliver(payload)
                return
            future: asyncio.Future[bytes] = self.loop.create_future()
            future.set_result(payload)
        else:
            environ = self.edge.environ(method, path, parsed.query, self.headers, bytes(self.body or b""), self.transport)
            future = self.edge.call_wsgi(environ, keep_alive)
            self.in_request = False
        self.pending.append(future)
        future.add_done_callback(self._flush)
        if not keep_alive and self.transport is not None:
            self.transport.pause_reading()  # nothing more is read from a connection that closes

    # --- bytes out ---------------------------------------------------------------

    def _flush(self, _: object = None) -> None:
        while self.pending and self.pending[0].done():
            future = self.pending.popleft()
            if not future.cancelled() and not self._deliver(future.result()):
                return

    def _deliver(self, payload: bytes) -> bool:
        """Write one response; False when it closes the connection."""
        self._send(payload)
        if payload.find(b"Connection: close", 0, payload.find(b"\r\n\r\n")) >= 0:
            self.pending.clear()
            if self.transport is not None:
                self.transport.close()  # after the buffered response is written
            return False
        self.last_active = self.loop.time()
        if self.idle and self.transport is not None:
            self._arm(self.limits.keepalive, "idle")
        return True

    def _send(self, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(payload)


class Edge:
    """One worker's server: accepting, connections, the Flask thread pool, graceful stop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, application: Application) -> None:
        self.loop = loop
        self.admissions = application.admissions
        self.wsgi = application.wsgi
        self.limits = application.limits
        self.certificates = application.certificates
        self.connections: set[Connection] = set()
        self.handshaking = 0
        self.stopping = False
        self.listeners: list[socket.socket] = []
        self.loop.call_later(SWEEP, self._sweep)
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, application.wsgi_threads), thread_name_prefix="wsgi")

    def _sweep(self) -> None:
        now = self.loop.time()
        for connection in list(self.connections):
            connection.expire_if_due(now)
        if not self.loop.is_closed():
            self.loop.call_later(SWEEP, self._sweep)

    # --- accepting -----------------------------------------------------------------

    def listen(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.listeners.append(sock)
        self.loop.add_reader(sock.fileno(), self._accept, sock)

    def _accept(self, sock: socket.socket) -> None:
        try:
            client, _ = sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as error:  # EMFILE and friends: stop accepting for a moment, never spin
            log.warning(json.dumps({"edge": "accept failed", "error": str(error)}))
            self._pause_accepting(sock, 0.1)
            return
        held = len(self.connections) + self.handshaking
        if held >= self.limits.max_connections:
            metrics.CONNECTIONS_CLOSED.labels("refused").inc()
            with contextlib.suppress(OSError):
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST: nothing lingers
                client.close()
            return
        client.setblocking(False)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.certificates.refresh()  # two stat() calls, next to a handshake's cost: a rotation applies to this connection
        self.handshaking += 1
        task = self.loop.create_task(
            self.loop.connect_accepted_socket(
                lambda: Connection(self),
                client,
                ssl=self.certificates.context(),
                ssl_handshake_timeout=self.limits.handshake_timeout,
                ssl_shutdown_timeout=1.0,
            )
        )
        task.add_done_callback(functools.partial(self._handshake_done, self.loop.time()))
        if held:
            # Let a less busy worker take the next connection: wait longer the more we hold.
            self._pause_accepting(sock, min(0.0005 * (held + 1), 0.005))

    def _pause_accepting(self, sock: socket.socket, seconds: float) -> None:
        self.loop.remove_reader(sock.fileno())
        self.loop.call_later(seconds, self._resume_accepting, sock)

    def _resume_accepting(self, sock: socket.socket) -> None:
        if not self.stopping and sock in self.listeners:
            self.loop.add_reader(sock.fileno(), self._accept, sock)

    def _handshake_done(self, started: float, task: asyncio.Task[Any]) -> None:
        self.handshaking -= 1
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:  # stalled (timed out), not TLS, or gone: the socket is closed already
            # uvloop reports the deadline as ConnectionAbortedError("... taking longer than ..."): tell by the clock.
            timed_out = self.loop.time() - started >= self.limits.handshake_timeout - SWEEP
            metrics.CONNECTIONS_CLOSED.labels("handshake" if timed_out else "tls-error").inc()

    # --- every other path: the Flask app -----------------------------------------

    def environ(
        self, method: str, path: str, query: bytes | None, headers: list[tuple[bytes, bytes]], body: bytes, transport: Any
    ) -> dict[str, Any]:
        server = transport.get_extra_info("sockname") if transport else None
        peer = transport.get_extra_info("peername") if transport else None
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": (query or b"").decode("latin-1"),
            "SERVER_NAME": str(server[0]) if server else "localhost",
            "SERVER_PORT": str(server[1]) if server else "8443",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": str(peer[0]) if peer else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https",
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "CONTENT_LENGTH": str(len(body)),
        }
        for name, value in headers:
            key = name.decode("latin-1").upper().replace("-", "_")
            if key == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value.decode("latin-1")
            elif key != "CONTENT_LENGTH":
                environ[f"HTTP_{key}"] = value.decode("latin-1")
        return environ

    def call_wsgi(self, environ: dict[str, Any], keep_alive: bool) -> asyncio.Future[bytes]:
        def run() -> bytes:
            outcome: dict[str, Any] = {}

            def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
                outcome["status"], outcome["headers"] = int(status.split(" ", 1)[0]), headers

            chunks = self.wsgi(environ, start_response)
            try:
                body = b"".join(chunks)
            finally:
                if hasattr(chunks, "close"):
                    chunks.close()
            headers = outcome["headers"]
            content_type = next((v for k, v in headers if k.lower() == "content-type"), "text/plain")
            return response_bytes(outcome["status"], body, content_type, keep_alive, headers)

        return asyncio.wrap_future(self.pool.submit(run), loop=self.loop)

    # --- stopping ------------------------------------------------------------------

    def stop_accepting(self) -> None:
        self.stopping = True
        for sock in self.listeners:
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(sock.fileno())
        self.listeners.clear()

    async def drain(self, timeout: float) -> None:
        """Finish what is in flight (up to ``timeout``): each next response closes its connection,
        and connections that stay quiet for a second are closed."""
        self.stop_accepting()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for connection in list(self.connections):
                connection.close_if_idle(quiet_for=1.0)
            if not self.connections:
                break
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        self.pool.shutdown(wait=False, cancel_futures=True)


class EdgeWorker(Worker):  # type: ignore[misc]
    """gunicorn's worker API (heartbeat, signals, graceful stop) around an :class:`Edge`."""

    def init_signals(self) -> None:
        # The loop installs its own handlers in run(); gunicorn's would write to a pipe nobody reads.
        for sig in self.SIGNALS:
            signal.signal(sig, signal.SIG_DFL)

    def run(self) -> None:
        import uvloop

        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(loop))
        finally:
            loop.close()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        application: Application = self.wsgi
        if application.after_fork is not None:
            application.after_fork()
        edge = Edge(loop, application)
        stopped = asyncio.Event()

        def graceful() -> None:
            self.alive = False
            stopped.set()

        def immediate() -> None:
            self.alive = False
            edge.stopping = True
            stopped.set()
            for connection in list(edge.connections):
                if connection.transport is not None:
                    connection.transport.abort()

        loop.add_signal_handler(signal.SIGTERM, graceful)
        loop.add_signal_handler(signal.SIGQUIT, immediate)
        loop.add_signal_handler(signal.SIGINT, immediate)
        loop.add_signal_handler(signal.SIGUSR1, self.log.reopen_files)
        loop.add_signal_handler(signal.SIGABRT, immediate)
        for listener in self.sockets:
            edge.listen(listener.sock)
        heartbeat = max(0.5, min(self.timeout / 4, 2.0)) if self.timeout else 1.0
        while self.alive:
            self.notify()
            application.certificates.refresh()
            if application.certificates.not_after is not None:
                metrics.CERTIFICATE_EXPIRY.set(application.certificates.not_after)
            if application.readiness is not None:
                metrics.READY.set(1 if application.readiness()[0] else 0)
            if self.ppid != os.getppid():
                log.warning(json.dumps({"edge": "parent changed, stopping"}))
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stopped.wait(), heartbeat)
        if edge.stopping:  # SIGQUIT/SIGINT: connections already aborted
            return
        drain = asyncio.ensure_future(edge.drain(application.limits.graceful_timeout))
        while not drain.done():
            self.notify()
            await asyncio.sleep(0.2)
