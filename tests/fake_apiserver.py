"""A small real HTTP server that speaks the list/watch API, for the watch tests.

It serves ``GET /api/v1/nodes``, NetworkPolicies and the DRA collections under
``/apis/resource.k8s.io/v1/`` (a list with a resourceVersion) and ``?watch=true``
as a chunked stream of JSON events, the way kube-apiserver does, and lets a test
add, change and delete objects, expire resource versions (410 Gone) and drop every
watch connection mid-stream; any other path is 404, as an API server without that
API answers. The real ``kubernetes`` client talks to it through a kubeconfig.
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
NODES = "/api/v1/nodes"
DRA = "/apis/resource.k8s.io/v1/"
NETWORK_POLICIES = "/apis/networking.k8s.io/v1/networkpolicies"
COLLECTIONS = (
    NODES,
    *(DRA + plural for plural in ("resourceclaimtemplates", "resourceclaims", "deviceclasses", "resourceslices")),
    NETWORK_POLICIES,
)


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
        self.objects: dict[str, dict[str, dict[str, Any]]] = {path: {} for path in COLLECTIONS}
        self.watchers: list[tuple[str, queue.Queue[Any]]] = []
        self.history: list[tuple[int, str, dict[str, Any]]] = []  # replayed to a watch that resumes
        self.served = set(COLLECTIONS)  # a test can take the DRA API away
        self.requests: list[str] = []
        self.closed = False
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
        with self.lock:
            self.closed = True  # a watch that registers after this is dropped at once, as by a server gone away
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

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        return self.objects[NODES]

    @staticmethod
    def _key(obj: dict[str, Any]) -> str:
        return f"{obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}"

    def _event(self, kind: str, obj: dict[str, Any], path: str) -> None:
        with self.lock:
            self.version += 1
            obj = copy.deepcopy(obj)
            obj["metadata"]["resourceVersion"] = str(self.version)
            if kind == "DELETED":
                self.objects[path].pop(self._key(obj), None)
            else:
                self.objects[path][self._key(obj)] = obj
            event = {"type": kind, "object": obj}
            self.history.append((self.version, path, event))
            for watched, watcher in self.watchers:
                if watched == path:
                    watcher.put(event)

    def add(self, obj: dict[str, Any], path: str = NODES) -> None:
        self._event("ADDED", obj, path)

    def modify(self, obj: dict[str, Any], path: str = NODES) -> None:
        self._event("MODIFIED", obj, path)

    def delete(self, name: str, path: str = NODES) -> None:
        self._event("DELETED", self.objects[path][name if "/" in name else f"/{name}"], path)

    def expire(self) -> None:
        """Compact history: every version so far is gone; open watches get 410."""
        with self.lock:
            self.oldest_valid = self.version + 1
            for _, watcher in self.watchers:
                watcher.put(GONE)

    def drop_watches(self) -> None:
        with self.lock:
            for _, watcher in self.watchers:
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
                if url.path not in cluster.served:
                    self._json(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
                    return
                if query.get("watch") != "true":
                    with cluster.lock:
                        items = list(copy.deepcopy(cluster.objects[url.path]).values())
                        version = cluster.version
                    self._json(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": str(version)}, "items": items})
                    return
                self._watch(url.path, int(query.get("resourceVersion") or 0))

            def _watch(self, path: str, since: int) -> None:
                events: queue.Queue[Any] = queue.Queue()
                with cluster.lock:
                    expired = since < cluster.oldest_valid
                    if not expired:
                        # Like kube-apiserver's watch cache: every event after `since`, then live ones.
                        for version, watched, event in cluster.history:
                            if version > since and watched == path:
                                events.put(event)
                        cluster.watchers.append((path, events))
                        if cluster.closed:
                            events.put(DROP)
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
                        if (path, events) in cluster.watchers:
                            cluster.watchers.remove((path, events))

        return Handler
