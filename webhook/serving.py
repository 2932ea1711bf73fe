"""gunicorn wiring: the event-loop workers of :mod:`webhook.edge`, readiness, logging.

gunicorn stays the process manager (workers, respawn, SIGHUP reload, SIGTERM drain);
the HTTP work is :class:`webhook.edge.EdgeWorker`'s. Why these defaults (all
overridable from ``serve``'s flags):

* 2 workers on 2 cores: admissions are CPU-bound Python, and one event-loop worker
  keeps one core busy however many connections it holds, so more workers than cores
  only add memory (about 40 MiB each) and watches. The edge spreads connections across
  workers itself (bench/RESULTS.md, *Worker model*).
* ``keepalive`` 95 s: the API server's HTTP client drops idle connections after 90 s;
  keeping ours open a little longer means the client, not the server, closes an idle
  connection, so it never writes a request into a socket the server is closing.
* ``graceful_timeout`` 25 s: under the pod's 30 s termination grace period, so in-flight
  admissions finish after SIGTERM before the kubelet kills the pod.
* the phase timeouts (:class:`webhook.edge.Limits`): the API server sends a whole
  request at once and its own webhook timeout is at most 30 s (``timeoutSeconds``, 5 s
  in the shipped configurations), so 5 s for a TLS handshake or a request's headers and
  10 s for its body cost a legitimate client nothing and a stalled one its connection.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from webhook.certs import TLS_CERT, TLS_KEY, CertWatcher
from webhook.config import Config
from webhook.edge import Application, Limits
from webhook.logsink import BatchedStreamHandler
from webhook.review import review_pod


@dataclass(frozen=True)
class ServeOptions:
    host: str = "0.0.0.0"
    port: int = 8443
    workers: int = 2
    timeout: int = 30
    log_level: str = "info"
    limits: Limits = field(default_factory=Limits)


def canary_pod(config: Config) -> tuple[dict[str, Any], int]:
    """A pod the configured webhook must shard, and its GPU count: built from the configuration
    (the first counted GPU resource, at most the per-node maximum), so readiness follows it.
    The Vulkan image drives every vendor's GPUs."""
    gpus = min(2, config.max_gpus_per_node)
    container = {
        "name": "llama",
        "image": "ghcr.io/ggml-org/llama.cpp:server-vulkan",
        "args": ["-m", "/models/canary.gguf"],
        "resources": {"limits": {config.gpu_resources[0]: str(gpus)}},
    }
    return {"metadata": {"labels": {config.enabled_label: "true"}}, "spec": {"containers": [container]}}, gpus


def rules_answer(config: Config) -> bool:
    """The rules engine plans the canary pod as expected."""
    pod, gpus = canary_pod(config)
    review = review_pod(pod, config)
    return review.plan is not None and review.plan.gpus.count == gpus and not review.violations


def readiness(watcher: CertWatcher, config: Config) -> Callable[[], tuple[bool, str]]:
    def check() -> tuple[bool, str]:
        ready, reason = watcher.check()
        if not ready:
            return False, reason
        if not rules_answer(config):
            return False, "rules engine did not plan the canary pod"
        return True, reason

    return check


class WebhookServer(BaseApplication):  # type: ignore[misc]
    """gunicorn with the application built once in the master (preload) and forked."""

    def __init__(self, application: Application, options: ServeOptions, hooks: dict[str, Any] | None = None) -> None:
        self.application = application
        self.options = options
        self.hooks = hooks or {}
        super().__init__()

    def load_config(self) -> None:
        options = self.options
        settings: dict[str, Any] = {
            "bind": [f"{options.host}:{options.port}"],
            "workers": options.workers,
            "worker_class": "webhook.edge.EdgeWorker",
            "keepalive": int(options.limits.keepalive),
            "timeout": options.timeout,
            "graceful_timeout": int(options.limits.graceful_timeout),
            "preload_app": True,
            # The edge does TLS itself; these only make gunicorn say https in its log.
            "certfile": str(self.application.certificates.cert_path),
            "keyfile": str(self.application.certificates.key_path),
            "accesslog": None,
            "errorlog": "-",
            "loglevel": options.log_level,
            "worker_tmp_dir": tempfile.gettempdir(),
            "proc_name": "gpu-shard-webhook",
            **self.hooks,
        }
        if "control_socket_disable" in self.cfg.settings:
            # gunicorn >= 24 opens a control socket under $HOME: unused here, and
            # unwritable with a read-only root filesystem.
            settings["control_socket_disable"] = True
        for key, value in settings.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.application


def cert_watcher(cert_dir: Path) -> CertWatcher:
    watcher = CertWatcher(cert_dir / TLS_CERT, cert_dir / TLS_KEY)
    watcher.context()  # fail at start, not at the first handshake
    return watcher


def configure_logging(level: str) -> BatchedStreamHandler:
    """The webhook's lines are their message (one JSON object each), batched onto stderr.

    Record attributes no format of this process prints are not collected: the logging
    HOWTO's *Optimization* switches for the caller's frame and thread and
    multiprocessing names. (These are process-wide; the process id stays, as gunicorn's
    own log format prints it.)
    """
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logMultiprocessing = False
    handler = BatchedStreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("gpu_shard_webhook")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
    return handler
