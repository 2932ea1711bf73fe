"""Keep an :class:`Inventory` of the cluster's Nodes current with list + watch.

The admission path never makes a network call: it reads :meth:`NodeWatcher.snapshot`,
an immutable value this thread replaces whole after every change.

* List, then watch from the list's resourceVersion; every event moves it on
  (bookmarks included), so a watch that times out resumes where it stopped.
* 410 Gone (the version fell out of etcd's window): list again at once.
* Any other error (API server down, connection dropped): the snapshot is
  marked not synced -- the cluster checks are then skipped with a warning,
  fail open -- and the watcher retries with capped exponential back-off.

One watcher per gunicorn worker, started after the fork (threads do not
survive it): 2 workers x 2 replicas is 4 watches of Nodes per cluster, which
the API server serves from its watch cache at no real cost, and it keeps every
worker independent -- a shared watcher would need cross-process state for a
few kilobytes of node facts.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
from pathlib import Path
from typing import Any

from webhook.config import Config
from webhook.inventory import Inventory, NodeFacts, node_facts

log = logging.getLogger("gpu_shard_webhook.nodes")


def load_client(kubeconfig: Path | None) -> Any:
    """A CoreV1Api from in-cluster config, else the kubeconfig; None when neither exists."""
    from kubernetes import client, config

    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.CoreV1Api()
    path = kubeconfig or Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
    if not Path(path).exists():
        return None
    # Load first: ApiClient builds its connection pool (CA, client certificate) from the
    # configuration it is given, so loading into it afterwards would be ignored.
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)
    return client.CoreV1Api(client.ApiClient(configuration=configuration))


class NodeWatcher:
    def __init__(self, api: Any, config: Config, watch_timeout: int = 300, max_backoff: float = 30.0) -> None:
        self.api = api
        self.config = config
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        self._snapshot = Inventory()
        self._nodes: dict[str, NodeFacts] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None

    def snapshot(self) -> Inventory:
        return self._snapshot

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="node-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()

    def _publish(self, synced: bool) -> None:
        self._snapshot = Inventory(dict(self._nodes), synced)

    def _relist(self) -> str:
        response = self.api.list_node(_preload_content=False)
        body = json.loads(response.data)
        self._nodes = {f.name: f for f in (node_facts(n, self.config) for n in body.get("items") or []) if f is not None}
        self._publish(synced=True)
        log.info(json.dumps({"nodes": "listed", "count": len(self._nodes)}))
        return str(body.get("metadata", {}).get("resourceVersion", ""))

    def _apply(self, event: dict[str, Any]) -> str | None:
        kind, obj = event.get("type"), event.get("object") or {}
        version = (obj.get("metadata") or {}).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            facts = node_facts(obj, self.config)
            if facts is not None:
                self._nodes[facts.name] = facts
        elif kind == "DELETED":
            self._nodes.pop((obj.get("metadata") or {}).get("name"), None)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._publish(synced=True)
        return version

    def _watch_from(self, version: str) -> str:
        from kubernetes import watch

        self._watch = watch.Watch()
        for event in self._watch.stream(
            self.api.list_node, resource_version=version, timeout_seconds=self.watch_timeout, allow_watch_bookmarks=True, deserialize=False
        ):
            version = self._apply(event) or version
            if self._stop.is_set():
                break
        return version

    def _run(self) -> None:
        from kubernetes.client.exceptions import ApiException

        backoff = 0.5
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._relist()
                version = self._watch_from(version)
                backoff = 0.5
            except ApiException as error:
                if error.status == 410:
                    log.info(json.dumps({"nodes": "resourceVersion expired, listing again"}))
                    version = None
                    continue
                version = self._failed(error, backoff)
                backoff = min(backoff * 2, self.max_backoff)
            except Exception as error:  # connection refused, reset, timeouts, bad JSON
                version = self._failed(error, backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def _failed(self, error: Exception, backoff: float) -> None:
        self._publish(synced=False)
        log.warning(json.dumps({"nodes": "watch failed", "error": str(error)[:200], "retryIn": round(backoff, 2)}))
        self._stop.wait(backoff * (0.5 + random.random()))
        return None
