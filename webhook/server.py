"""The HTTP edge: HTTP in, :mod:`webhook.admission` decides, HTTP out.

This module only translates. Status codes: 200 with an AdmissionReview for
every request that could be read, 400 with a one-line reason for a malformed
one, 413 above the body limit, 404/405 for wrong paths and methods, 500 (with
the request uid in the log) for our own bug. Every admission is logged once as
one JSON line, without bodies or env values.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from webhook import admission, metrics
from webhook.cluster import NO_CLUSTER, Cluster
from webhook.config import Config

log = logging.getLogger("gpu_shard_webhook.admission")

Readiness = Callable[[], tuple[bool, str]]


DRAIN_LIMIT = 64 * 1024 * 1024


def _drain(stream: Any, length: int) -> None:
    """Read and drop an oversized body so the client gets our 413 instead of a reset.

    Closing a socket with unread data makes the kernel send RST, and the client
    then sees a broken connection rather than the answer. Bodies beyond
    DRAIN_LIMIT are not worth reading: the connection is closed instead.
    """
    if stream is None or length > DRAIN_LIMIT:
        return
    remaining = length
    while remaining > 0:
        chunk = stream.read(min(remaining, 1 << 16))
        if not chunk:
            return
        remaining -= len(chunk)


Answer = tuple[int, bytes, str]  # status, body, content type


def _reason(status: int, reason: str) -> Answer:
    """A one-line plain-text answer (never a traceback, never two lines)."""
    return status, (reason.replace("\n", " ") + "\n").encode(), "text/plain; charset=utf-8"


def _text(status: int, reason: str) -> Response:
    code, body, content_type = _reason(status, reason)
    return Response(body, status=code, content_type=content_type)


class AdmissionEndpoints:
    """``/mutate`` and ``/validate`` as a bare WSGI layer in front of the Flask app.

    These paths see thousands of requests a second, and Flask's per-request
    machinery (request context, routing, Response objects) cost 136-187 us of the
    roughly 650 us of CPU an admission takes end to end, more than the decision
    itself (measured in-process; see bench/RESULTS.md). So they are answered
    here; health, readiness, metrics and every other path stay in Flask.
    """

    def __init__(self, flask_wsgi: Callable[..., Any], config: Config, cluster: Cluster, allow_endpoint: bool) -> None:
        self.flask_wsgi = flask_wsgi
        self.config = config
        self.routes: dict[str, tuple[str, Callable[[admission.Request], admission.Decision]]] = {
            "/mutate": ("mutate", lambda review: admission.mutate(review, config, cluster)),
            "/validate": ("validate", lambda review: admission.validate(review, config, cluster)),
        }
        if allow_endpoint:  # benchmark baseline: the same HTTP, TLS, JSON, log and metrics work, no decision
            self.routes["/allow"] = ("allow", lambda review: admission.Decision(admission.allowed(review.uid), "allowed"))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        route = self.routes.get(path)
        if route is None:
            return self.flask_wsgi(environ, start_response)
        method = environ.get("REQUEST_METHOD", "")
        if method != "POST":
            status, body, content_type = _reason(405, f"{method} is not allowed on {path}")
        else:
            try:
                status, body, content_type = self.admit(route[0], route[1], environ)
            except Exception:  # a bug of ours outside the decision: still an answer, never a dead worker
                log.exception(json.dumps({"webhook": route[0], "decision": "error"}))
                status, body, content_type = _reason(500, "internal error; see the webhook's log")
        start_response(
            f"{status} {HTTPStatus(status).phrase}",
            [("Content-Type", content_type), ("Content-Length", str(len(body)))],
        )
        return [body]

    def _read_body(self, webhook: str, environ: dict[str, Any]) -> bytes | Answer:
        limit = self.config.body_limit
        stream = environ.get("wsgi.input")
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            return _reason(400, "Content-Length is not a number")
        if length > limit:
            _drain(stream, length)
            metrics.ADMISSIONS.labels(webhook, "unknown", "too_large").inc()
            log.warning(json.dumps({"webhook": webhook, "decision": "too_large", "bytes": length}))
            return _reason(413, f"request body of {length} bytes is above the limit of {limit} bytes")
        try:
            body = stream.read(length if length >= 0 else limit + 1) if stream is not None else b""
        except (OSError, ValueError):  # the I/O deadline fired, or the client went away
            body = b""
        if length < 0 and len(body) > limit:
            return _reason(413, f"request body above the limit of {limit} bytes")
        if length > 0 and len(body) < length:
            metrics.ADMISSIONS.labels(webhook, "unknown", "bad_request").inc()
            log.warning(json.dumps({"webhook": webhook, "decision": "bad_request", "reason": "incomplete body"}))
            return _reason(400, f"request body ended after {len(body)} of {length} bytes (client stalled or disconnected)")
        return bytes(body)

    def admit(self, webhook: str, decide: Callable[[admission.Request], admission.Decision], environ: dict[str, Any]) -> Answer:
        started = time.perf_counter()
        body = self._read_body(webhook, environ)
        if isinstance(body, tuple):
            return body
        try:
            review = admission.decode(body)
        except admission.MalformedRequest as error:
            metrics.ADMISSIONS.labels(webhook, "unknown", "bad_request").inc()
            log.warning(json.dumps({"webhook": webhook, "decision": "bad_request", "reason": str(error)}))
            return _reason(400, f"bad AdmissionReview: {error}")
        try:
            decision = decide(review)
        except admission.MalformedRequest as error:
            metrics.ADMISSIONS.labels(webhook, review.operation, "bad_request").inc()
            log.warning(json.dumps({"webhook": webhook, "uid": review.uid, "decision": "bad_request", "reason": str(error)}))
            return _reason(400, f"bad AdmissionReview: {error}")
        except Exception:
            metrics.ADMISSIONS.labels(webhook, review.operation, "error").inc()
            log.exception(json.dumps({"webhook": webhook, "uid": review.uid, "decision": "error"}))
            return _reason(500, f"internal error answering {review.uid}; see the webhook's log")
        payload = admission.encode(decision.response)
        _record(webhook, review, decision, time.perf_counter() - started)
        return 200, payload, "application/json"


def create_app(
    config: Config,
    readiness: Readiness | None = None,
    cluster: Cluster = NO_CLUSTER,
    allow_endpoint: bool = False,
) -> Flask:
    app = Flask("gpu_shard_webhook")
    app.wsgi_app = AdmissionEndpoints(app.wsgi_app, config, cluster, allow_endpoint)  # type: ignore[method-assign]

    @app.get("/healthz")
    def healthz() -> Response:
        return _text(200, "ok")

    @app.get("/readyz")
    def readyz() -> Response:
        ready, reason = readiness() if readiness else (True, "ready")
        return _text(200 if ready else 503, reason)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, status=200, content_type=content_type)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        reasons = {
            404: f"no such path {request.path}; the webhook serves /mutate, /validate, /healthz, /readyz, /metrics",
            405: f"{request.method} is not allowed on {request.path}",
        }
        code = error.code or 500
        return _text(code, reasons.get(code, error.description or error.name))

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception(json.dumps({"path": request.path, "decision": "error"}))
        return _text(500, "internal error; see the webhook's log")

    return app


def _record(webhook: str, review: admission.Request, decision: admission.Decision, elapsed: float) -> None:
    metrics.ADMISSIONS.labels(webhook, review.operation, decision.result).inc()
    metrics.LATENCY.labels(webhook).observe(elapsed)
    for violation in decision.violations:
        metrics.REJECTIONS.labels(violation.code).inc()
    gpus = decision.gpus
    if decision.result == "patched" and decision.report is not None:
        metrics.SHARDED.labels("unknown" if gpus is None else str(gpus)).inc()
    if decision.claim_lookup != "none":
        metrics.CLAIM_LOOKUPS.labels(webhook, decision.claim_lookup).inc()
    line: dict[str, Any] = {
        "webhook": webhook,
        "uid": review.uid,
        "namespace": review.namespace,
        "kind": review.kind,
        "name": admission.object_name(review),
        "operation": review.operation,
        "dryRun": review.dry_run,
        "decision": decision.result,
        "codes": [v.code for v in decision.violations],
        "gpus": gpus,
        "durationMs": round(elapsed * 1000, 3),
    }
    log.info(json.dumps(line, separators=(",", ":")))
