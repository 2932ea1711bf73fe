"""Keep in-memory snapshots of cluster objects current with list + watch.

The admission path never makes a network call: it reads snapshots, immutable
values a watch thread replaces whole after every change.

* List, then watch from the list's resourceVersion; every event moves it on
  (bookmarks included), so a watch that times out resumes where it stopped.
* 410 Gone (the version fell out of etcd's window): list again at once.
* 404 (the API is not served, e.g. ``resource.k8s.io/v1`` before Kubernetes 1.34):
  the snapshot is synced and empty, and the list is retried at the back-off ceiling.
* Any other error (API server down, connection dropped): the snapshot is marked not
  synced -- the checks that need it are then skipped with a warning, fail open --
  and the watcher retries with capped exponential back-off.

:class:`ClusterWatch` runs one watcher per resource the webhook reads: Nodes (the
capacity checks), and the DRA objects that say how many GPUs a claim holds
(ResourceClaimTemplates, ResourceClaims, DeviceClasses, ResourceSlices). One set per
gunicorn worker, started after the fork (threads do not survive it): every worker
stays independent, and the API server serves the watches from its watch cache.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from webhook import metrics
from webhook.claims import GROUP, ClaimObjects, DeviceClassFacts, DeviceRequest, device_class_facts, device_requests, devices_per_node
from webhook.config import Config
from webhook.inventory import Inventory, NodeFacts, node_facts
from webhook.networkpolicy import PolicySnapshot, policy_entry, snapshot_of
from webhook.objects import as_dict

log = logging.getLogger("gpu_shard_webhook.watch")

DRA_VERSION = "v1"
# What --dra watches; manifests/base/rbac.yaml grants get/list/watch on exactly these (tests hold the two together).
DRA_RESOURCES = ("resourceclaimtemplates", "resourceclaims", "deviceclasses", "resourceslices")


def load_api_client(kubeconfig: Path | None) -> Any:
    """An ApiClient from in-cluster config, else the kubeconfig; None when neither exists."""
    from kubernetes import client, config

    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        config.load_incluster_config()
        return client.ApiClient()
    path = kubeconfig or Path(os.environ.get("KUBECONFIG", Path.home() / ".kube" / "config"))
    if not Path(path).exists():
        return None
    # Load first: ApiClient builds its connection pool (CA, client certificate) from the
    # configuration it is given, so loading into it afterwards would be ignored.
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(path), client_configuration=configuration)
    return client.ApiClient(configuration=configuration)


@dataclass(frozen=True)
class Snapshot:
    items: Mapping[Any, Any]
    synced: bool


class ListWatch:
    """One resource, listed and watched; ``transform`` turns an object into (key, value) or None."""

    def __init__(
        self,
        name: str,
        list_function: Callable[..., Any],
        transform: Callable[[dict[str, Any]], tuple[Any, Any] | None],
        watch_timeout: int = 300,
        max_backoff: float = 30.0,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self.list_function = list_function
        self.transform = transform
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        self.on_change = on_change
        self._items: dict[Any, Any] = {}
        self._keys: dict[tuple[str, str], Any] = {}  # (namespace, name) -> key, for DELETED events
        self._snapshot = Snapshot(MappingProxyType({}), False)
        self._reported = False  # whether gpu_shard_watch_synced has a value for this resource yet
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watch: Any = None

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"watch-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        response = self._watch
        sock = getattr(getattr(response, "connection", None), "sock", None)
        if sock is not None:
            # Shut the socket down rather than close the response: close() waits for the lock
            # the watch thread's blocking read holds; a shutdown makes that read return at once.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _publish(self, synced: bool) -> None:
        if synced != self._snapshot.synced or not self._reported:
            metrics.WATCH_SYNCED.labels(self.name).set(1 if synced else 0)
            self._reported = True
        self._snapshot = Snapshot(MappingProxyType(dict(self._items)), synced)
        if self.on_change is not None:
            self.on_change()

    @staticmethod
    def _identity(obj: Mapping[str, Any]) -> tuple[str, str]:
        metadata = as_dict(obj.get("metadata"))
        return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")

    def _store(self, obj: dict[str, Any]) -> None:
        identity = self._identity(obj)
        self._items.pop(self._keys.pop(identity, None), None)
        entry = self.transform(obj)
        if entry is not None:
            self._items[entry[0]] = entry[1]
            self._keys[identity] = entry[0]

    def _relist(self) -> str:
        response = self.list_function(_preload_content=False)
        body = json.loads(response.data)
        self._items, self._keys = {}, {}
        for obj in body.get("items") or []:
            if isinstance(obj, dict):
                self._store(obj)
        self._publish(synced=True)
        log.info(json.dumps({"watch": self.name, "event": "listed", "count": len(self._items)}))
        return str(as_dict(body.get("metadata")).get("resourceVersion", ""))

    def _apply(self, event: dict[str, Any]) -> str | None:
        kind, obj = event.get("type"), as_dict(event.get("object"))
        version = as_dict(obj.get("metadata")).get("resourceVersion")
        if kind in ("ADDED", "MODIFIED"):
            self._store(obj)
        elif kind == "DELETED":
            self._items.pop(self._keys.pop(self._identity(obj), None), None)
        if kind in ("ADDED", "MODIFIED", "DELETED"):
            self._publish(synced=True)
        return version

    def _watch_from(self, version: str) -> str:
        """Stream watch events from ``version``; an ERROR event raises ApiException with its code.

        Read line by line here rather than through ``kubernetes.watch``: with
        ``deserialize=False`` its ERROR handling looks for a key it never sets.
        """
        from kubernetes.client.exceptions import ApiException

        response = self.list_function(
            watch=True, resource_version=version, timeout_seconds=self.watch_timeout, allow_watch_bookmarks=True, _preload_content=False
        )
        self._watch = response
        try:
            for line in response:
                if self._stop.is_set():
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = as_dict(event.get("object"))
                    raise ApiException(status=int(status.get("code") or 500), reason=str(status.get("message") or status.get("reason")))
                version = self._apply(event) or version
        finally:
            response.release_conn()
            self._watch = None
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
                    log.info(json.dumps({"watch": self.name, "event": "resourceVersion expired, listing again"}))
                    version = None
                    continue
                if error.status == 404:
                    self._items, self._keys = {}, {}
                    self._publish(synced=True)
                    log.warning(json.dumps({"watch": self.name, "event": "not served by this API server", "retryIn": self.max_backoff}))
                    version = None
                    self._stop.wait(self.max_backoff)
                    continue
                version = self._failed(error, backoff)
                backoff = min(backoff * 2, self.max_backoff)
            except Exception as error:  # connection refused, reset, timeouts, bad JSON
                version = self._failed(error, backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def _failed(self, error: Exception, backoff: float) -> None:
        self._publish(synced=False)
        log.warning(json.dumps({"watch": self.name, "event": "failed", "error": str(error)[:200], "retryIn": round(backoff, 2)}))
        self._stop.wait(backoff * (0.5 + random.random()))
        return None


def _namespaced(transform: Callable[[dict[str, Any]], Any]) -> Callable[[dict[str, Any]], tuple[Any, Any] | None]:
    def entry(obj: dict[str, Any]) -> tuple[Any, Any] | None:
        metadata = as_dict(obj.get("metadata"))
        return (str(metadata.get("namespace") or ""), str(metadata.get("name") or "")), transform(obj)

    return entry


def _node_entry(config: Config) -> Callable[[dict[str, Any]], tuple[str, NodeFacts] | None]:
    def entry(obj: dict[str, Any]) -> tuple[str, NodeFacts] | None:
        facts = node_facts(obj, config)
        return None if facts is None else (facts.name, facts)

    return entry


def _class_entry(obj: dict[str, Any]) -> tuple[str, DeviceClassFacts] | None:
    facts = device_class_facts(obj)
    return None if facts is None else (facts.name, facts)


def _slice_entry(obj: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    spec = as_dict(obj.get("spec"))
    devices = [{"attributes": {"type": as_dict(as_dict(d).get("attributes")).get("type")}} for d in spec.get("devices") or []]
    name = str(as_dict(obj.get("metadata")).get("name") or "")
    kept = {k: spec.get(k) for k in ("driver", "nodeName", "pool")}
    return name, {"spec": {**kept, "devices": devices}}


def _policy_entry(obj: dict[str, Any]) -> tuple[tuple[str, str], tuple[str, Mapping[str, Any]]] | None:
    """Only what the warning needs: the namespace and pod selector of a policy that restricts ingress."""
    entry = policy_entry(obj)
    return None if entry is None else ((entry[0], str(as_dict(obj.get("metadata")).get("name") or "")), entry)


class ClusterWatch:
    """The watches the webhook runs, and the snapshots admission reads from them."""

    def __init__(
        self, api_client: Any, config: Config, nodes: bool, dra: bool, watch_timeout: int = 300, max_backoff: float = 30.0
    ) -> None:
        from kubernetes import client

        self.watches: dict[str, ListWatch] = {}
        self._claims = ClaimObjects()
        self._policies = PolicySnapshot()
        self._lock = threading.Lock()
        if nodes:
            core = client.CoreV1Api(api_client)
            self.watches["nodes"] = ListWatch("nodes", core.list_node, _node_entry(config), watch_timeout, max_backoff)
            # Whether a LeaderWorkerSet's RPC workers are fenced in (webhook.multinode warns when not).
            networking = client.NetworkingV1Api(api_client)
            self.watches["networkpolicies"] = ListWatch(
                "networkpolicies",
                networking.list_network_policy_for_all_namespaces,
                _policy_entry,
                watch_timeout,
                max_backoff,
                self._rebuild_policies,
            )
        if dra:
            custom = client.CustomObjectsApi(api_client)

            def lister(plural: str) -> Callable[..., Any]:
                def list_function(**kwargs: Any) -> Any:
                    return custom.list_cluster_custom_object(GROUP, DRA_VERSION, plural, **kwargs)

                list_function.__doc__ = ":return: object"  # kubernetes.watch reads the return type from here
                return list_function

            def claim_requests(obj: dict[str, Any]) -> tuple[DeviceRequest, ...]:
                return device_requests(as_dict(obj.get("spec")))

            def template_requests(obj: dict[str, Any]) -> tuple[DeviceRequest, ...]:
                return device_requests(as_dict(as_dict(obj.get("spec")).get("spec")))

            transforms = {
                "resourceclaimtemplates": _namespaced(template_requests),
                "resourceclaims": _namespaced(claim_requests),
                "deviceclasses": _class_entry,
                "resourceslices": _slice_entry,
            }
            for plural in DRA_RESOURCES:
                transform = transforms[plural]
                self.watches[plural] = ListWatch(plural, lister(plural), transform, watch_timeout, max_backoff, self._rebuild_claims)

    def start(self) -> None:
        for watcher in self.watches.values():
            watcher.start()

    def stop(self) -> None:
        for watcher in self.watches.values():
            watcher.stop()

    def nodes(self) -> Inventory:
        snapshot = self.watches["nodes"].snapshot()
        return Inventory(snapshot.items, snapshot.synced)

    def claims(self) -> ClaimObjects:
        return self._claims

    def network_policies(self) -> PolicySnapshot:
        return self._policies

    def _rebuild_policies(self) -> None:
        """Once per change, as for the claims: admission only reads the result."""
        snapshot = self.watches["networkpolicies"].snapshot()
        self._policies = snapshot_of(snapshot.items.values(), snapshot.synced)

    def _rebuild_claims(self) -> None:
        with self._lock:
            parts = {name: self.watches[name].snapshot() for name in DRA_RESOURCES}
            self._claims = ClaimObjects(
                templates=parts["resourceclaimtemplates"].items,
                claims=parts["resourceclaims"].items,
                device_classes=parts["deviceclasses"].items,
                devices_per_node=devices_per_node(parts["resourceslices"].items.values()),
                synced=all(p.synced for p in parts.values()),
            )
