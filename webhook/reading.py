"""The one reading of a pod: per container, what will run, with which settings and which GPUs.

Everything the webhook decides, judges and reports starts here, computed once per
pod (and, after the mutation, once more for the one container it changed):

* what the kubelet will exec, ``$(VAR)``-expanded, and how that reaches
  ``llama-server`` (:mod:`webhook.launch`);
* the llama-server settings it runs with and where each comes from: argv, a
  ``LLAMA_ARG_*`` variable, or something admission cannot see (:mod:`webhook.llamacpp`);
* its GPUs and where they come from: extended-resource limits, DRA claims
  (:mod:`webhook.claims`), and GPU-looking resources the configuration does not count;
* the image's backend (:mod:`webhook.images`), its device-visibility variables, and
  whether it reaches devices outside Kubernetes' accounting (privileged, ``/dev`` mounts).

New inputs (a vendor, a claim shape, a launcher) change the reading, and every
consumer follows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from webhook.claims import NO_CLAIM_OBJECTS, ClaimGpus, ClaimObjects, container_claim_gpus, looks_like_gpu
from webhook.config import Config
from webhook.expansion import Environment, read_environment
from webhook.images import Image, read_image
from webhook.launch import Launch, detect_launch
from webhook.llamacpp import MODEL_KEYS, ContainerSettings, read_settings
from webhook.objects import annotations_of, as_dict, as_list, parse_quantity
from webhook.violation import Violation

MIG_PREFIX = "nvidia.com/mig-"
DEVICE_PATHS = ("/dev/dri", "/dev/kfd", "/dev/nv")  # DRM render nodes, ROCm, NVIDIA and Jetson (nvgpu, nvhost, nvmap)

# Variables that choose which GPUs a backend's runtime shows, per vendor; Vulkan's
# applies whatever the vendor.
VISIBILITY_VARIABLES: dict[str, tuple[str, ...]] = {
    "nvidia": ("CUDA_VISIBLE_DEVICES",),
    "amd": ("HIP_VISIBLE_DEVICES", "ROCR_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"),
    "intel": ("ONEAPI_DEVICE_SELECTOR", "ZE_AFFINITY_MASK"),
}
ANY_VENDOR_VISIBILITY = ("GGML_VK_VISIBLE_DEVICES",)


def vendor_of(name: str | None) -> str | None:
    """The GPU vendor a resource or device class name belongs to, when it says."""
    lowered = (name or "").lower()
    for vendor in ("nvidia", "amd", "intel", "mthreads"):
        if vendor in lowered:
            return vendor
    return None


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class GpuAsk:
    """The GPUs a container asks for, as written."""

    resource: str | None = None  # the first configured GPU resource present in limits or requests
    limit_raw: Any = None
    request_raw: Any = None
    claims: ClaimGpus = field(default_factory=ClaimGpus)
    lookalikes: tuple[str, ...] = ()  # GPU-looking resources the configuration does not count
    mig: bool = False
    limit: int | None = None  # limit_raw and request_raw parsed (None: unset, or not a whole count)
    request: int | None = None

    @property
    def from_limits(self) -> int | None:
        """The extended-resource count (limit, else request); None when neither is set or parses."""
        return self.limit if self.limit is not None else self.request

    @property
    def any(self) -> bool:
        """Asks for GPUs the webhook counts, or may once a claim is known."""
        return bool(self.from_limits) or self.claims.has_gpus or bool(self.claims.missing)

    @property
    def vendor(self) -> str | None:
        if self.from_limits:
            return vendor_of(self.resource)
        vendors = {vendor_of(c) for c in self.claims.device_classes} - {None}
        return vendors.pop() if len(vendors) == 1 else None


@dataclass  # a value, never mutated (not frozen: built twice per admission, and settings is cached)
class ContainerReading:
    index: int
    name: str
    container: Mapping[str, Any]
    image: Image
    environment: Environment
    launch: Launch | None
    gpus: GpuAsk
    device_access: tuple[str, ...] = ()  # how it reaches devices without asking for them

    @cached_property
    def settings(self) -> ContainerSettings:
        """Read when first asked: the llama.cpp container's settings matter, a sidecar's never do."""
        return read_settings(self.launch.option_tokens if self.launch else (), self.environment)

    @property
    def router(self) -> bool:
        """llama-server without a model of its own: a router whose children inherit its settings."""
        if self.launch is None or not self.launch.recognised:
            return False
        return all(self.settings.effective(key) is None for key in MODEL_KEYS)

    def visibility(self) -> list[tuple[str, str]]:
        """(variable, literal value) of the device-visibility variables that apply to its GPUs."""
        vendor = self.gpus.vendor
        names = [*(VISIBILITY_VARIABLES.get(vendor, ()) if vendor else sorted({n for v in VISIBILITY_VARIABLES.values() for n in v}))]
        names += ANY_VENDOR_VISIBILITY
        found = []
        for name in dict.fromkeys(names):
            value = self.environment.literal(name)
            if value is not None:
                found.append((name, value))
        return found


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class PodReading:
    pod: dict[str, Any]
    opted_in: bool
    namespace: str
    annotations: Mapping[str, Any]
    containers: tuple[ContainerReading, ...] = ()
    target: ContainerReading | None = None
    problems: tuple[Violation, ...] = ()
    claims_synced: bool = False

    def annotation(self, config: Config, name: str) -> str | None:
        value = self.annotations.get(config.annotation(name))
        return None if value is None else str(value)


def _gpu_ask(container: Mapping[str, Any], spec: Mapping[str, Any], namespace: str, config: Config, claims: ClaimObjects) -> GpuAsk:
    resources = as_dict(container.get("resources"))
    limits = as_dict(resources.get("limits"))
    requests = as_dict(resources.get("requests"))
    names = [*limits, *(n for n in requests if n not in limits)]
    resource = next((r for r in config.gpu_resources if r in limits or r in requests), None)
    lookalikes = tuple(
        n for n in names if n not in config.gpu_resources and looks_like_gpu(n) and parse_quantity(limits.get(n, requests.get(n)))
    )
    claim_gpus = (
        container_claim_gpus(spec, container, namespace, claims, config.gpu_device_classes) if resources.get("claims") else ClaimGpus()
    )
    limit_raw = limits.get(resource) if resource else None
    request_raw = requests.get(resource) if resource else None
    return GpuAsk(
        resource,
        limit_raw,
        request_raw,
        claim_gpus,
        (*lookalikes, *claim_gpus.lookalikes),
        any(n.startswith(MIG_PREFIX) for n in names),
        parse_quantity(limit_raw),
        parse_quantity(request_raw),
    )


def _device_access(container: Mapping[str, Any], spec: Mapping[str, Any]) -> tuple[str, ...]:
    reasons = []
    if as_dict(container.get("securityContext")).get("privileged") is True:
        reasons.append("privileged")
    if not container.get("volumeMounts"):
        return tuple(reasons)
    host_paths = {
        str(as_dict(v).get("name")): str(as_dict(as_dict(v).get("hostPath")).get("path") or "")
        for v in as_list(spec.get("volumes"))
        if as_dict(v).get("hostPath")
    }
    for mount in as_list(container.get("volumeMounts")):
        path = host_paths.get(str(as_dict(mount).get("name")), "")
        if path.startswith(DEVICE_PATHS):
            reasons.append(f"hostPath {path}")
    return tuple(reasons)


def read_container(
    index: int, container: Any, spec: Mapping[str, Any], namespace: str, config: Config, claims: ClaimObjects, named: bool = False
) -> ContainerReading:
    container = as_dict(container)
    image = read_image(container.get("image"))
    environment = read_environment(container)
    launch = detect_launch(container, image, environment, named)
    return ContainerReading(
        index,
        str(container.get("name")),
        container,
        image,
        environment,
        launch,
        _gpu_ask(container, spec, namespace, config, claims),
        _device_access(container, spec),
    )


LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"


def role_label(config: Config) -> str:
    """The label the webhook writes on the templates of a LeaderWorkerSet it planned (:mod:`webhook.multinode`)."""
    return config.annotation("rpc-role")


def group_member(labels: Mapping[str, Any], config: Config) -> bool:
    """A pod LWS made from a template this webhook planned: already right, and judged at the LeaderWorkerSet."""
    return LWS_NAME_LABEL in labels and labels.get(role_label(config)) in ("leader", "worker")


def read_pod(pod: dict[str, Any], config: Config, claims: ClaimObjects = NO_CLAIM_OBJECTS) -> PodReading:
    """The reading of an opted-in pod; just the opt-in answer for any other (a planned group's pods included)."""
    metadata = as_dict(pod.get("metadata"))
    namespace = str(metadata.get("namespace") or "")
    labels = as_dict(metadata.get("labels"))
    if labels.get(config.enabled_label) != "true" or group_member(labels, config):
        return PodReading(pod, False, namespace, {})
    annotations = annotations_of(pod)
    spec = as_dict(pod.get("spec"))
    raw = as_list(spec.get("containers"))
    named = annotations.get(config.annotation("container"))
    readings = tuple(
        read_container(i, c, spec, namespace, config, claims, named=named is not None and as_dict(c).get("name") == named)
        for i, c in enumerate(raw)
    )
    target, problems = _choose_target(readings, named, config)
    return PodReading(pod, True, namespace, annotations, readings, target, tuple(problems), claims.synced)


def reread_target(reading: PodReading, pod: dict[str, Any], config: Config, claims: ClaimObjects) -> PodReading:
    """The reading of ``pod``, which differs from ``reading.pod`` only in the target container (the mutation's work).

    Each part of the container's reading is a function of some of its fields; a part
    whose fields are the very objects read before is taken over (the mutation shares
    what it does not change), the rest is read again from the new pod.
    """
    old = reading.target
    if old is None:
        return replace(reading, pod=pod)
    spec = as_dict(pod.get("spec"))
    container = as_dict(as_list(spec.get("containers"))[old.index])
    before = old.container
    same = container.get("env") is before.get("env") and container.get("envFrom") is before.get("envFrom")
    environment = old.environment if same else read_environment(container)
    image = old.image if container.get("image") == before.get("image") else read_image(container.get("image"))
    named = reading.annotations.get(config.annotation("container")) == old.name
    gpus = old.gpus
    if container.get("resources") is not before.get("resources"):
        gpus = _gpu_ask(container, spec, reading.namespace, config, claims)
    target = ContainerReading(
        old.index,
        old.name,
        container,
        image,
        environment,
        detect_launch(container, image, environment, named),
        gpus,
        old.device_access
        if container.get("volumeMounts") is before.get("volumeMounts") and container.get("securityContext") is before.get("securityContext")
        else _device_access(container, spec),
    )
    containers = tuple(target if c.index == old.index else c for c in reading.containers)
    return PodReading(pod, True, reading.namespace, annotations_of(pod), containers, target, reading.problems, reading.claims_synced)


def _choose_target(readings: tuple[ContainerReading, ...], named: Any, config: Config) -> tuple[ContainerReading | None, list[Violation]]:
    annotation = config.annotation("container")
    if named is not None:
        for reading in readings:
            if reading.name == named:
                return reading, []
        names = ", ".join(r.name for r in readings) or "none"
        return None, [
            Violation(
                "unknown-container",
                f"no container named '{named}' (containers: {names}); fix the annotation",
                f"metadata.annotations[{annotation}]",
            )
        ]
    gpu_containers = [r for r in readings if r.gpus.any]
    if len(gpu_containers) > 1:
        names = ", ".join(r.name for r in gpu_containers)
        return None, [
            Violation(
                "ambiguous-gpu-containers", f"containers {names} all ask for GPUs; set {annotation} to the llama.cpp one", "spec.containers"
            )
        ]
    candidates = [r for r in readings if r.launch is not None]
    if len(candidates) > 1:
        candidates = [r for r in candidates if r.gpus.any]
        if len(candidates) != 1:
            return None, [
                Violation(
                    "ambiguous-llama-containers",
                    f"several containers run llama-server; set {annotation} to the one to shard",
                    "spec.containers",
                )
            ]
    if not candidates:
        return None, [
            Violation(
                "no-llama-container",
                f"no container runs llama-server; set the annotation {annotation}: <container name>",
                "spec.containers",
            )
        ]
    return candidates[0], []
