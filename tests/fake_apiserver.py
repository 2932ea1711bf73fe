"""A small real HTTP server that speaks the Nodes list/watch API, for the node-watch tests.

It serves ``GET /api/v1/nodes`` (a NodeList with a resourceVersion) and
``GET /api/v1/nodes?watch=true`` as a chunked stream of JSON events, the way
kube-apiserver does, and lets a test add, change and delete nodes, expire
resource versions (410 Gone) and drop every watch connection mid-stream.
The real ``kubernetes`` client talks to it through a kubeconfig.
"""

from __future__ import annotations

import copy
import json
import queue
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

DROP = object()
GONE = object()


def gpu_node(name: str, gpus: int, count_label: bool = True, product: str = "NVIDIA-L4", **labels: str) -> dict[str, Any]:
    node_labels = {"kubernetes.io/hostname": name, **labels}
    if count_label:
        node_labels["nvidia.com/gpu.count"] = str(gpus)
        node_labels["nvidia.com/gpu.product"] = product
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": node_labels},
        "spec": {},
        "status": {"allocatable": {"cpu": "16", "memory": "64Gi", "nvidia.com/gpu": str(gpus)}},
    }


class FakeCluster:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.version = 1
        self.oldest_valid = 0
        self.nodes: dict[str, dict[str, Any]] = {}
        self.watchers: list[queue.Queue[Any]] = []
        self.history: list[tuple[int, dict[str, Any]]] = []  # replayed to a watch that resumes
        self.requests: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> FakeCluster:
        self.thread.start()
        return self

    def close(self) -> None:
        self.drop_watches()
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, directory: Path) -> Path:
        path = directory / "kubeconfig"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "admin", "user": {"token": "test"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "admin"}}],
            "current-context": "fake",
        }
        path.write_text(json.dumps(config))
        return path

    def _event(self, kind: str, node: dict[str, Any]) -> None:
        with self.lock:
            self.version += 1
            node = copy.deepcopy(node)
            node["metadata"]["resourceVersion"] = str(self.version)
            if kind == "DELETED":
                self.nodes.pop(node["metadata"]["name"], None)
            else:
                self.nodes[node["metadata"]["name"]] = node
            event = {"type": kind, "object": node}
            self.history.append((self.version, event))
            for watcher in self.watchers:
                watcher.put(event)

    def add(self, node: dict[str, Any]) -> None:
        self._event("ADDED", node)

    def modify(self, node: dict[str, Any]) -> None:
        self._event("MODIFIED", node)

    def delete(self, name: str) -> None:
        self._event("DELETED", self.nodes[name])

    def expire(self) -> None:
        """Compact history: every version so far is gone; open watches get 410."""
        with self.lock:
            self.oldest_valid = self.version + 1
            for watcher in self.watchers:
                watcher.put(GONE)

    def drop_watches(self) -> None:
        with self.lock:
            for watcher in self.watchers:
                watcher.put(DROP)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _chunk(self, event: dict[str, Any]) -> None:
                data = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                cluster.requests.append(self.path)
                if url.path != "/api/v1/nodes":
                    self._json(404, {"kind": "Status", "code": 404})
                    return
                if query.get("watch") != "true":
                    with cluster.lock:
                        items = list(copy.deepcopy(cluster.nodes).values())
                        version = cluster.version
                    self._json(200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": str(version)}, "items": items})
                    return
                self._watch(int(query.get("resourceVersion") or 0))

            def _watch(self, since: int) -> None:
                events: queue.Queue[Any] = queue.Queue()
                with cluster.lock:
                    expired = since < cluster.oldest_valid
                    if not expired:
                        # Like kube-apiserver's watch cache: every event after `since`, then live ones.
                        for version, event in cluster.history:
                            if version > since:
                                events.put(event)
                        cluster.watchers.append(events)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    if expired:
                        self._chunk(
                            {
                                "type": "ERROR",
                                "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"},
                            }
                        )
                        self.wfile.write(b"0\r\n\r\n")
                        return
                    while True:
                        try:
                            item = events.get(timeout=30)
                        except queue.Empty:
                            self.wfile.write(b"0\r\n\r\n")  # the watch's timeout: end the stream cleanly
                            return
                        if item is DROP:
                            self.close_connection = True
                            self.connection.shutdown(2)
                            return
                        if item is GONE:
                            self._chunk(
                                {
                                    "type": "ERROR",
                                    "object": {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"},
                                }
                            )
                            self.wfile.write(b"0\r\n\r\n")
                            return
                        self._chunk(item)
                except OSError:
                    return
                finally:
                    with cluster.lock:
                        if events in cluster.watchers:
                            cluster.watchers.remove(events)

        return Handler
