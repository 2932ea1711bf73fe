"""GPUs from Dynamic Resource Allocation: how many a container gets from its ResourceClaims.

A container lists ``resources.claims[]`` (a pod-level claim name, optionally one
``request`` of it); the pod's ``spec.resourceClaims[]`` points each name at a
``ResourceClaimTemplate`` or a ``ResourceClaim`` in the pod's namespace; each claim
has device requests (``resource.k8s.io/v1``: ``exactly`` or ``firstAvailable``;
``v1beta1``: the fields inline). A request counts as GPUs when its
``deviceClassName`` is one of the configured GPU device classes:

* ``allocationMode: ExactCount`` (the default) with ``count`` (default 1): that many;
* ``allocationMode: All``, or ``firstAvailable`` alternatives that ask for different
  counts: unknown until the scheduler allocates -- llama.cpp gets ``--n-gpu-layers``
  and no split, and the reason is a warning.

Everything here is pure: the objects come from a :class:`ClaimObjects` snapshot that
the watch (:mod:`webhook.watch`) or ``preview`` (the manifest and ``--cluster-objects``)
builds. Capacity comes from ``ResourceSlices``: the most devices one node publishes
for the driver behind a GPU class.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from webhook.objects import as_dict, as_list, parse_quantity
from webhook.violation import Violation

GROUP = "resource.k8s.io"
_DRIVER = re.compile(r"device\.driver\s*==\s*[\"']([^\"']+)[\"']")


@dataclass(frozen=True)
class Alternative:
    device_class: str
    all_devices: bool
    count: int


@dataclass(frozen=True)
class DeviceRequest:
    name: str
    alternatives: tuple[Alternative, ...]  # one for ``exactly``; several for ``firstAvailable``
    subrequests: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeviceClassFacts:
    name: str
    driver: str
    extended_resource: str | None = None


@dataclass(frozen=True)
class ClaimObjects:
    """The DRA objects admission may consult, keyed by (namespace, name) or name."""

    templates: Mapping[tuple[str, str], tuple[DeviceRequest, ...]] = field(default_factory=dict)
    claims: Mapping[tuple[str, str], tuple[DeviceRequest, ...]] = field(default_factory=dict)
    device_classes: Mapping[str, DeviceClassFacts] = field(default_factory=dict)
    devices_per_node: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # driver -> node -> devices
    synced: bool = False

    def driver_of(self, device_class: str) -> str:
        facts = self.device_classes.get(device_class)
        return facts.driver if facts else device_class


NO_CLAIM_OBJECTS = ClaimObjects()


def _alternative(spec: Mapping[str, Any]) -> Alternative:
    mode = spec.get("allocationMode") or "ExactCount"
    count = parse_quantity(spec.get("count"))
    return Alternative(str(spec.get("deviceClassName") or ""), mode == "All", 1 if count is None else count)


def device_requests(claim_spec: Any) -> tuple[DeviceRequest, ...]:
    """The requests of a ResourceClaim ``spec`` (v1 or v1beta1 shape)."""
    requests = []
    for request in as_list(as_dict(as_dict(claim_spec).get("devices")).get("requests")):
        request = as_dict(request)
        name = str(request.get("name") or "")
        if "firstAvailable" in request:
            subs = [as_dict(s) for s in as_list(request.get("firstAvailable"))]
            requests.append(DeviceRequest(name, tuple(_alternative(s) for s in subs), tuple(str(s.get("name") or "") for s in subs)))
        elif "exactly" in request:
            requests.append(DeviceRequest(name, (_alternative(as_dict(request.get("exactly"))),)))
        else:  # v1beta1: the exact request's fields inline
            requests.append(DeviceRequest(name, (_alternative(request),)))
    return tuple(requests)


def device_class_facts(obj: Any) -> DeviceClassFacts | None:
    metadata = as_dict(as_dict(obj).get("metadata"))
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        return None
    spec = as_dict(as_dict(obj).get("spec"))
    driver = name
    for selector in as_list(spec.get("selectors")):
        match = _DRIVER.search(str(as_dict(as_dict(selector).get("cel")).get("expression") or ""))
        if match:
            driver = match.group(1)
            break
    extended = spec.get("extendedResourceName")
    return DeviceClassFacts(name, driver, extended if isinstance(extended, str) else None)


def _counts_as_gpu(device: Any) -> bool:
    """Devices that declare a ``type`` other than ``gpu`` (NVIDIA's MIG slices, say) are not whole GPUs."""
    kind = as_dict(as_dict(as_dict(device).get("attributes")).get("type"))
    value = kind.get("string", kind.get("stringValue"))
    return value is None or str(value).lower() == "gpu"


def devices_per_node(slices: Iterable[Any]) -> dict[str, dict[str, int]]:
    """driver -> node -> devices, from ResourceSlices (only the newest generation of each pool counts)."""
    newest: dict[tuple[str, str], int] = {}
    parsed = []
    for obj in slices:
        spec = as_dict(as_dict(obj).get("spec"))
        driver, node = spec.get("driver"), spec.get("nodeName")
        if not isinstance(driver, str) or not isinstance(node, str) or not node:
            continue  # network-attached pools (allNodes, nodeSelector) are not one node's GPUs
        pool = as_dict(spec.get("pool"))
        key = (driver, str(pool.get("name") or node))
        generation = parse_quantity(pool.get("generation")) or 0
        newest[key] = max(newest.get(key, 0), generation)
        parsed.append((key, generation, driver, node, sum(1 for d in as_list(spec.get("devices")) if _counts_as_gpu(d))))
    counts: dict[str, dict[str, int]] = {}
    for key, generation, driver, node, devices in parsed:
        if generation == newest[key]:
            per_node = counts.setdefault(driver, {})
            per_node[node] = per_node.get(node, 0) + devices
    return counts


def claim_objects_from(objects: Iterable[Any], default_namespace: str = "default") -> ClaimObjects:
    """A snapshot from plain objects: a manifest, or ``kubectl get ... -o yaml`` output."""
    templates: dict[tuple[str, str], tuple[DeviceRequest, ...]] = {}
    claims: dict[tuple[str, str], tuple[DeviceRequest, ...]] = {}
    classes: dict[str, DeviceClassFacts] = {}
    slices = []
    for obj in objects:
        obj = as_dict(obj)
        kind = obj.get("kind")
        if not str(obj.get("apiVersion") or "").startswith(GROUP + "/"):
            continue
        metadata = as_dict(obj.get("metadata"))
        key = (str(metadata.get("namespace") or default_namespace), str(metadata.get("name") or ""))
        if kind == "ResourceClaimTemplate":
            templates[key] = device_requests(as_dict(as_dict(obj.get("spec")).get("spec")))
        elif kind == "ResourceClaim":
            claims[key] = device_requests(obj.get("spec"))
        elif kind == "DeviceClass":
            facts = device_class_facts(obj)
            if facts is not None:
                classes[facts.name] = facts
        elif kind == "ResourceSlice":
            slices.append(obj)
    return ClaimObjects(templates, claims, classes, devices_per_node(slices), synced=True)


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class ClaimGpus:
    """What a container's claims give it in GPUs."""

    claims: tuple[str, ...] = ()  # the pod-level claim names that hold GPUs
    objects: tuple[str, ...] = ()  # e.g. "ResourceClaimTemplate llama-gpus"
    device_classes: tuple[str, ...] = ()
    count: int | None = 0  # None: unknown at admission
    unknown_reason: str | None = None
    missing: tuple[str, ...] = ()  # claim objects not (yet) known
    lookalikes: tuple[str, ...] = ()  # device classes not configured as GPUs that look like GPUs

    @property
    def has_gpus(self) -> bool:
        return bool(self.claims) and self.count != 0


def looks_like_gpu(name: str) -> bool:
    """A resource or device class name that is probably a GPU (``*gpu*``, NVIDIA MIG slices)."""
    lowered = name.lower()
    return "gpu" in lowered or lowered.startswith("nvidia.com/mig-") or lowered.startswith("mig.nvidia.com")


def container_claim_gpus(
    pod_spec: Mapping[str, Any], container: Mapping[str, Any], namespace: str, objects: ClaimObjects, gpu_classes: tuple[str, ...]
) -> ClaimGpus:
    references = [as_dict(r) for r in as_list(as_dict(container.get("resources")).get("claims"))]
    if not references:
        return ClaimGpus()
    pod_claims = {str(as_dict(c).get("name")): as_dict(c) for c in as_list(pod_spec.get("resourceClaims"))}
    holding: list[str] = []
    described: list[str] = []
    classes: list[str] = []
    missing: list[str] = []
    lookalikes: list[str] = []
    total: int | None = 0
    reasons: list[str] = []
    seen: set[tuple[str, str | None]] = set()
    for reference in references:
        name = str(reference.get("name") or "")
        only = reference.get("request") if isinstance(reference.get("request"), str) else None
        if (name, only) in seen or name not in pod_claims:
            continue
        seen.add((name, only))
        pod_claim = pod_claims[name]
        if isinstance(pod_claim.get("resourceClaimTemplateName"), str):
            kind, object_name, table = "ResourceClaimTemplate", pod_claim["resourceClaimTemplateName"], objects.templates
        elif isinstance(pod_claim.get("resourceClaimName"), str):
            kind, object_name, table = "ResourceClaim", pod_claim["resourceClaimName"], objects.claims
        else:
            continue
        requests = table.get((namespace, object_name))
        if requests is None:
            missing.append(f"{kind} {namespace}/{object_name}")
            continue
        wanted = [r for r in requests if only is None or r.name == only.split("/")[0]]
        gpu_here = False
        for request in wanted:
            alternatives = request.alternatives
            if only is not None and "/" in only:
                alternatives = tuple(a for a, sub in zip(alternatives, request.subrequests, strict=False) if sub == only.split("/", 1)[1])
            gpu_alternatives = [a for a in alternatives if a.device_class in gpu_classes]
            lookalikes += [a.device_class for a in alternatives if a.device_class not in gpu_classes and looks_like_gpu(a.device_class)]
            if not gpu_alternatives:
                continue
            gpu_here = True
            classes += [a.device_class for a in gpu_alternatives]
            counts = {a.count for a in gpu_alternatives}
            if any(a.all_devices for a in gpu_alternatives):
                reasons.append(f"request {request.name} of {kind} {object_name} asks for all matching devices")
                total = None
            elif len(counts) > 1 or len(gpu_alternatives) != len(alternatives):
                reasons.append(f"request {request.name} of {kind} {object_name} has firstAvailable alternatives with different GPU counts")
                total = None
            elif total is not None:
                total += counts.pop()
        if gpu_here:
            holding.append(name)
            described.append(f"{kind} {object_name}")
    return ClaimGpus(
        tuple(holding),
        tuple(described),
        tuple(dict.fromkeys(classes)),
        total,
        "; ".join(reasons) or None,
        tuple(missing),
        tuple(dict.fromkeys(lookalikes)),
    )


def judge_capacity(count: int, device_classes: tuple[str, ...], objects: ClaimObjects, where: str) -> tuple[list[Violation], list[str]]:
    """Whether any node publishes ``count`` devices of the claim's GPU class (ResourceSlices)."""
    drivers = {objects.driver_of(c) for c in device_classes}
    per_node: dict[str, int] = {}
    for driver in drivers:
        for node, devices in objects.devices_per_node.get(driver, {}).items():
            per_node[node] = per_node.get(node, 0) + devices
    classes = ", ".join(device_classes)
    if not per_node:
        return [], [f"gpu-shard: no ResourceSlice publishes {classes} devices now; capacity not checked (an autoscaler may add nodes)"]
    largest, most = max(per_node.items(), key=lambda item: (item[1], item[0]))
    if count <= most:
        return [], []
    return [
        Violation(
            "exceeds-cluster-capacity",
            f"{count} {classes} devices claimed but the largest node ({largest}) publishes {most}; "
            f"claim at most {most} or add bigger GPU nodes",
            where,
        )
    ], []
