"""The Flask app: HTTP in, :mod:`webhook.admission` decides, HTTP out.

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
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import ClientDisconnected, HTTPException

from webhook import admission, metrics
from webhook.config import Config
from webhook.review import ExtraRules, no_extra_rules

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


def _text(status: int, reason: str) -> Response:
    return Response(reason.replace("\n", " ") + "\n", status=status, mimetype="text/plain")


def create_app(
    config: Config,
    readiness: Readiness | None = None,
    extra_rules: ExtraRules | None = None,
    allow_endpoint: bool = False,
) -> Flask:
    app = Flask("gpu_shard_webhook")
    app.config["MAX_CONTENT_LENGTH"] = config.body_limit
    extra = extra_rules or no_extra_rules

    def admit(webhook: str, decide: Callable[[admission.Request], admission.Decision]) -> Response:
        started = time.perf_counter()
        if (request.content_length or 0) > config.body_limit:
            _drain(request.environ.get("wsgi.input"), request.content_length or 0)
            metrics.ADMISSIONS.labels(webhook, "unknown", "too_large").inc()
            log.warning(json.dumps({"webhook": webhook, "decision": "too_large", "bytes": request.content_length}))
            return _text(413, f"request body of {request.content_length} bytes is above the limit of {config.body_limit} bytes")
        try:
            body = request.get_data(cache=False)
        except ClientDisconnected:
            body = b""
        if request.content_length and len(body) < request.content_length:
            metrics.ADMISSIONS.labels(webhook, "unknown", "bad_request").inc()
            log.warning(json.dumps({"webhook": webhook, "decision": "bad_request", "reason": "incomplete body"}))
            return _text(400, f"request body ended after {len(body)} of {request.content_length} bytes (client stalled or disconnected)")
        try:
            review = admission.decode(body)
        except admission.MalformedRequest as error:
            metrics.ADMISSIONS.labels(webhook, "unknown", "bad_request").inc()
            log.warning(json.dumps({"webhook": webhook, "decision": "bad_request", "reason": str(error)}))
            return _text(400, f"bad AdmissionReview: {error}")
        try:
            decision = decide(review)
        except admission.MalformedRequest as error:
            metrics.ADMISSIONS.labels(webhook, review.operation, "bad_request").inc()
            log.warning(json.dumps({"webhook": webhook, "uid": review.uid, "decision": "bad_request", "reason": str(error)}))
            return _text(400, f"bad AdmissionReview: {error}")
        except Exception:
            metrics.ADMISSIONS.labels(webhook, review.operation, "error").inc()
            log.exception(json.dumps({"webhook": webhook, "uid": review.uid, "decision": "error"}))
            return _text(500, f"internal error answering {review.uid}; see the webhook's log")
        payload = admission.encode(decision.response)
        elapsed = time.perf_counter() - started
        _record(webhook, review, decision, elapsed)
        return Response(payload, status=200, mimetype="application/json")

    @app.post("/mutate")
    def mutate() -> Response:
        return admit("mutate", lambda review: admission.mutate(review, config))

    @app.post("/validate")
    def validate() -> Response:
        return admit("validate", lambda review: admission.validate(review, config, extra))

    if allow_endpoint:

        @app.post("/allow")
        def allow_everything() -> Response:
            """Benchmark baseline: the same HTTP, TLS and JSON work with no decision at all."""
            review = admission.decode(request.get_data(cache=False))
            return Response(admission.encode(admission.allowed(review.uid)), status=200, mimetype="application/json")

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
            413: f"request body above the limit of {config.body_limit} bytes",
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
    if decision.result == "patched" and decision.plan is not None:
        metrics.SHARDED.labels(str(decision.plan.gpus)).inc()
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
        "gpus": decision.plan.gpus if decision.plan else 0,
        "durationMs": round(elapsed * 1000, 3),
    }
    log.info(json.dumps(line, separators=(",", ":")))
