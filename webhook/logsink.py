"""Where the log lines go: stderr, written in batches.

Each admission logs one JSON line. Written one ``write()`` per line, the system
call cost more than the admission's decision (measured in bench/RESULTS.md,
*Log lines and metrics*); so lines are formatted at once, kept in memory, and
written together every :data:`FLUSH_INTERVAL` seconds, as soon as
:data:`MAX_BUFFERED` bytes wait, and at once for a warning or worse (so an error
is never behind a batch). What a SIGKILL can lose is at most the last
``FLUSH_INTERVAL`` of info lines; a normal exit (SIGTERM, SIGHUP, interpreter
shutdown) writes everything, as :func:`logging.shutdown` flushes every handler.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import TextIO

FLUSH_INTERVAL = 0.2
MAX_BUFFERED = 64 * 1024


class BatchedStreamHandler(logging.Handler):
    """A :class:`logging.StreamHandler` that writes whole batches of lines."""

    def __init__(self, stream: TextIO | None = None, interval: float = FLUSH_INTERVAL, max_buffered: int = MAX_BUFFERED) -> None:
        super().__init__()
        self.stream = stream or sys.stderr
        self.interval = interval
        self.max_buffered = max_buffered
        self._lines: list[str] = []
        self._buffered = 0
        self._flusher: threading.Thread | None = None  # a thread: a forked child starts its own
        os.register_at_fork(after_in_child=self._forget_after_fork)

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held (Handler.handle)
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._add(line, record.levelno >= logging.WARNING)

    def write_line(self, line: str) -> None:
        """One preformatted info line, without a LogRecord (the admission log's hot path)."""
        with self.lock:
            self._add(line, False)

    def _add(self, line: str, urgent: bool) -> None:
        self._lines.append(line)
        self._buffered += len(line) + 1
        if urgent or self._buffered >= self.max_buffered:
            self._write()
        elif self._flusher is None:
            self._flusher = threading.Thread(target=self._flush_periodically, name="log-flusher", daemon=True)
            self._flusher.start()

    def flush(self) -> None:
        with self.lock:
            self._write()

    def _write(self) -> None:
        if not self._lines:
            return
        text = "\n".join(self._lines) + "\n"
        self._lines.clear()
        self._buffered = 0
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed or full: the lines are lost, the admission is not
            pass

    def _forget_after_fork(self) -> None:
        self._lines.clear()  # the parent's lines: the parent writes them
        self._buffered = 0
        self._flusher = None  # threads do not survive fork

    def _flush_periodically(self) -> None:
        me = threading.current_thread()
        wait = threading.Event().wait
        while not wait(self.interval) and self._flusher is me:
            self.flush()
