"""The admission endpoints and the Flask app, independent of the HTTP server under them.

:class:`Admissions` answers ``/mutate`` and ``/validate``: a request body in, an
:class:`Answer` out. Status codes: 200 with an AdmissionReview for every request
that could be read, 400 with a one-line reason for a malformed one (JSON nested
deeper than any Pod, a wrong field type, a stalled body), 413 above the body limit,
405 for another method, 500 (with the request uid in the log) for our own bug.
Every exit -- early ones included -- is observed in one place
(:meth:`Admissions.observe`): one metrics update and one JSON log line, without
bodies or env values. Error bodies are short and never echo the request back.

:mod:`webhook.edge` serves :class:`Admissions` directly from its event loop; every
other path goes to the Flask app (health, readiness, metrics). :class:`AdmissionEndpoints`
puts the same :class:`Admissions` in front of Flask as WSGI, for Flask's test client.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from webhook import admission, metrics
from webhook.cluster import NO_CLUSTER, Cluster
from webhook.config import Config

log = logging.getLogger("gpu_shard_webhook.admission")

Readiness = Callable[[], tuple[bool, str]]

# Error answers are one line and at most this long: a reason a person reads, never the request echoed back.
MAX_REASON = 512


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class Answer:
    status: int
    body: bytes
    content_type: str = "application/json"


def reason(status: int, text: str) -> Answer:
    """A one-line plain-text answer (never a traceback, never two lines, never long)."""
    line = text.replace("\n", " ").replace("\r", " ")
    if len(line) > MAX_REASON:
        line = line[: MAX_REASON - 1] + "…"
    return Answer(status, (line + "\n").encode(), "text/plain; charset=utf-8")


@dataclass(slots=True)  # built per request
class Outcome:
    """What one admission request came to, filled in as it goes and observed once."""

    webhook: str
    operation: str = "unknown"
    result: str = "error"
    review: admission.Request | None = None
    decision: admission.Decision | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class Admissions:
    """``/mutate`` and ``/validate`` (and the benchmark's ``/allow``), for any HTTP server in front."""

    def __init__(
        self, config: Config, cluster: Cluster = NO_CLUSTER, allow_endpoint: bool = False, info_line: Callable[[str], None] | None = None
    ) -> None:
        self.config = config
        # Where an admission's info line goes: the logger, or (serve) straight into its batching
        # handler, which skips building a LogRecord the format would throw away.
        self.info_line = info_line or log.info
        self.routes: dict[str, tuple[str, Callable[[admission.Request], admission.Decision]]] = {
            "/mutate": ("mutate", lambda review: admission.mutate(review, config, cluster)),
            "/validate": ("validate", lambda review: admission.validate(review, config, cluster)),
        }
        if allow_endpoint:  # benchmark baseline: the same HTTP, TLS, JSON, log and metrics work, no decision
            self.routes["/allow"] = ("allow", lambda review: admission.Decision(admission.allowed(review.uid), "allowed"))

    def handles(self, path: str) -> bool:
        return path in self.routes

    def answer(self, path: str, method: str, body: bytes | None, declared_length: int | None) -> Answer:
        """The answer to one request. ``body`` None: it was not read (over the limit, or it stalled)."""
        webhook, decide = self.routes[path]
        outcome = Outcome(webhook)
        started = time.perf_counter()
        try:
            answer = self._answer(outcome, decide, method, body, declared_length)
        except Exception:  # a bug of ours: still an answer, never a dead worker
            outcome.result = "error"
            log.exception(json.dumps({"webhook": webhook, "uid": outcome.review.uid if outcome.review else None, "decision": "error"}))
            uid = outcome.review.uid if outcome.review else "the request"
            answer = reason(500, f"internal error answering {uid}; see the webhook's log")
        self.observe(outcome, time.perf_counter() - started)
        return answer

    def _answer(
        self,
        outcome: Outcome,
        decide: Callable[[admission.Request], admission.Decision],
        method: str,
        body: bytes | None,
        declared_length: int | None,
    ) -> Answer:
        limit = self.config.body_limit
        if method != "POST":
            outcome.result = "bad_method"
            return reason(405, f"{method} is not allowed; the webhook answers POST")
        if body is None or (declared_length is not None and declared_length > limit):
            outcome.result = "too_large"
            outcome.detail["bytes"] = declared_length
            return reason(413, f"request body above the limit of {limit} bytes")
        if declared_length is not None and len(body) < declared_length:
            outcome.result = "bad_request"
            outcome.detail["reason"] = "incomplete body"
            return reason(400, f"request body ended after {len(body)} of {declared_length} bytes (client stalled or disconnected)")
        try:
            review = admission.decode(body)
            outcome.review, outcome.operation = review, review.operation
            decision = decide(review)
        except admission.MalformedRequest as error:
            outcome.result = "bad_request"
            outcome.detail["reason"] = str(error)[:200]
            return reason(400, f"bad AdmissionReview: {error}")
        except RecursionError:
            outcome.result = "bad_request"
            outcome.detail["reason"] = "nested too deep"
            return reason(400, "bad AdmissionReview: the object nests deeper than any Pod does")
        outcome.decision, outcome.result = decision, decision.result
        return Answer(200, admission.encode(decision.response))

    def observe(self, outcome: Outcome, elapsed: float) -> None:
        """Every exit, once: request count by result, latency, rejections, sharded pods, claim lookups, one log line."""
        tally = metrics.TALLY
        tally.inc(metrics.ADMISSIONS, outcome.webhook, outcome.operation, outcome.result)
        tally.observe(metrics.LATENCY, elapsed, outcome.webhook)
        decision, review = outcome.decision, outcome.review
        line: dict[str, Any] = {"webhook": outcome.webhook, "decision": outcome.result, "durationMs": round(elapsed * 1000, 3)}
        if review is not None:
            line |= {
                "uid": review.uid,
                "namespace": review.namespace,
                "kind": review.kind,
                "name": admission.object_name(review),
                "operation": review.operation,
                "dryRun": review.dry_run,
            }
        if decision is not None:
            for violation in decision.violations:
                tally.inc(metrics.REJECTIONS, violation.code)
            gpus = decision.gpus
            if decision.sharded:
                tally.inc(metrics.SHARDED, "unknown" if gpus is None else str(gpus))
            if decision.claim_lookup != "none":
                tally.inc(metrics.CLAIM_LOOKUPS, outcome.webhook, decision.claim_lookup)
            line |= {"codes": [v.code for v in decision.violations], "gpus": gpus}
        line |= outcome.detail
        if outcome.result in ("allowed", "patched", "denied"):
            if log.isEnabledFor(logging.INFO):
                self.info_line(orjson.dumps(line).decode())
        elif outcome.result != "error":  # errors were logged with their traceback
            log.warning(orjson.dumps(line).decode())


class AdmissionEndpoints:
    """:class:`Admissions` as a WSGI layer in front of the Flask app (Flask's test client, the fuzz tier)."""

    def __init__(self, flask_wsgi: Callable[..., Any], admissions: Admissions) -> None:
        self.flask_wsgi = flask_wsgi
        self.admissions = admissions

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if not self.admissions.handles(path):
            return self.flask_wsgi(environ, start_response)
        try:
            declared = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            declared = -1
        limit = self.admissions.config.body_limit
        body: bytes | None = None
        if declared <= limit:
            stream = environ.get("wsgi.input")
            body = stream.read(declared if declared >= 0 else limit + 1) if stream is not None else b""
            if len(body) > limit:
                body = None
        answer = self.admissions.answer(path, environ.get("REQUEST_METHOD", ""), body, declared if declared >= 0 else None)
        start_response(
            f"{answer.status} {HTTPStatus(answer.status).phrase}",
            [("Content-Type", answer.content_type), ("Content-Length", str(len(answer.body)))],
        )
        return [answer.body]


def _text(status: int, text: str) -> Response:
    answer = reason(status, text)
    return Response(answer.body, status=answer.status, content_type=answer.content_type)


def create_app(
    config: Config,
    readiness: Readiness | None = None,
    cluster: Cluster = NO_CLUSTER,
    allow_endpoint: bool = False,
    info_line: Callable[[str], None] | None = None,
) -> Flask:
    """The Flask app (health, readiness, metrics, every unknown path), with :class:`Admissions`
    in front as WSGI; ``app.admissions`` is the same object for :mod:`webhook.edge`."""
    app = Flask("gpu_shard_webhook")
    admissions = Admissions(config, cluster, allow_endpoint, info_line)
    app.admissions = admissions  # type: ignore[attr-defined]
    app.wsgi_app = AdmissionEndpoints(app.wsgi_app, admissions)  # type: ignore[method-assign]

    @app.get("/healthz")
    def healthz() -> Response:
        return _text(200, "ok")

    @app.get("/readyz")
    def readyz() -> Response:
        ready, why = readiness() if readiness else (True, "ready")
        metrics.READY.set(1 if ready else 0)
        return _text(200 if ready else 503, why)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, status=200, content_type=content_type)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        reasons = {
            404: f"no such path {request.path[:100]}; the webhook serves /mutate, /validate, /healthz, /readyz, /metrics",
            405: f"{request.method} is not allowed on {request.path[:100]}",
        }
        code = error.code or 500
        return _text(code, reasons.get(code, error.name))

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception(json.dumps({"path": request.path[:100], "decision": "error"}))
        return _text(500, "internal error; see the webhook's log")

    return app
