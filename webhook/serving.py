"""gunicorn wiring: TLS from a :class:`CertWatcher`, gthread workers, graceful shutdown.

Why these defaults (all overridable from ``serve``'s flags):

* ``gthread`` workers: sync workers close the connection after each request,
  but the API server keeps connections to webhooks alive and reuses them; the
  TLS handshake would otherwise dominate each admission.
* ``keepalive`` 95 s: the API server's HTTP client drops idle connections after
  90 s. Keeping ours open a little longer means the client, not the server,
  closes an idle connection, so it never writes a request into a socket the
  server is closing at that moment.
* 4 workers x 2 threads on 2 cores: admissions are CPU-bound Python, so one
  worker process uses at most one core whatever its threads. A kept-alive
  connection stays with the worker that accepted it, and which worker accepts
  is a race: with 2 workers, a pool of 8 connections often landed on one, and
  throughput halved (about 1,100 instead of 2,700 admissions/s in 2 of 5 runs).
  With 4 workers two busy ones are enough to fill both cores; measured 2,800 to
  3,300/s in 5 of 5 runs (bench/RESULTS.md), for about 37 MiB per worker.
* ``graceful_timeout`` 25 s: under the pod's 30 s termination grace period, so
  in-flight admissions finish after SIGTERM before the kubelet kills the pod.
* ``io_timeout`` 10 s per blocking read or write (see ``certs.DeadlineSSLSocket``):
  a client that stalls mid-handshake or mid-request loses its thread after 10 s
  instead of holding it for ever. The API server sends a whole request at once.
"""

from __future__ import annotations

import logging
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gunicorn.app.base import BaseApplication

from webhook.certs import TLS_CERT, TLS_KEY, CertWatcher
from webhook.config import Config
from webhook.review import review_pod


@dataclass(frozen=True)
class ServeOptions:
    host: str = "0.0.0.0"
    port: int = 8443
    workers: int = 4
    threads: int = 2
    keepalive: int = 95
    timeout: int = 30
    graceful_timeout: int = 25
    log_level: str = "info"


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


# gunicorn's gthread worker gives each new connection a pool thread that waits up to
# 5 s for its first byte before parking it in the event loop. A client that connects
# and sends nothing therefore holds a thread for 5 s, and a couple of them stall a
# 2-thread worker (seen in the fault tier). A real client's TLS ClientHello arrives
# within milliseconds of the connect, so half a second is plenty.
FIRST_BYTE_WAIT = 0.5


def limit_first_byte_wait() -> None:
    from gunicorn.workers import gthread

    if hasattr(gthread, "DEFAULT_WORKER_DATA_TIMEOUT"):
        gthread.DEFAULT_WORKER_DATA_TIMEOUT = min(gthread.DEFAULT_WORKER_DATA_TIMEOUT, FIRST_BYTE_WAIT)


class WebhookServer(BaseApplication):  # type: ignore[misc]
    """gunicorn with the Flask app built once in the master (preload) and forked."""

    def __init__(self, app: Any, watcher: CertWatcher, options: ServeOptions, hooks: dict[str, Any] | None = None) -> None:
        limit_first_byte_wait()  # in the master, before the workers fork
        self.application = app
        self.watcher = watcher
        self.options = options
        self.hooks = hooks or {}
        super().__init__()

    def load_config(self) -> None:
        options = self.options
        watcher = self.watcher

        def ssl_context(config: Any, default_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            return watcher.context()

        settings: dict[str, Any] = {
            "bind": [f"{options.host}:{options.port}"],
            "workers": options.workers,
            "threads": options.threads,
            "worker_class": "gthread",
            "keepalive": options.keepalive,
            "timeout": options.timeout,
            "graceful_timeout": options.graceful_timeout,
            "certfile": str(watcher.cert_path),
            "keyfile": str(watcher.key_path),
            "ssl_context": ssl_context,
            "preload_app": True,
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


def cert_watcher(cert_dir: Path, io_timeout: float = 10.0) -> CertWatcher:
    watcher = CertWatcher(cert_dir / TLS_CERT, cert_dir / TLS_KEY, io_timeout)
    watcher.context()  # fail at start, not at the first handshake
    return watcher


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("gpu_shard_webhook")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    root.propagate = False
