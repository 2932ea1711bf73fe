"""One model over several nodes: a LeaderWorkerSet of llama.cpp RPC workers and one llama-server.

A LeaderWorkerSet (``leaderworkerset.x-k8s.io/v1``, kubernetes-sigs/lws) labelled
``gpu-shard.io/enabled: "true"`` is planned and mutated *as an object*: both templates
are visible at once, so the decision is made once at apply time (``--dry-run=server``
shows it) and the pods LWS creates from the templates are already right. The pod
webhook leaves those pods alone (:func:`webhook.reading.group_member`); rejecting a pod LWS creates
would only produce endless FailedCreate events.

Group ``g`` of LeaderWorkerSet ``lws`` is the leader pod ``lws-g`` and the workers
``lws-g-1`` … ``lws-g-(S-1)``, each resolvable as ``<pod>.<subdomain>.<namespace>``
through the headless Service LWS creates (``lws`` with ``subdomainPolicy: Shared``,
the leader's own name with ``UniquePerReplica``), which publishes addresses before
readiness.

* **Workers** run llama.cpp's RPC server (``ggml-rpc-server``; ``rpc-server`` before
  the rename) bound to the pod IP on :data:`RPC_PORT`, with its file cache on an
  ``emptyDir``, exposing every GPU the pod holds; HTTP probes are dropped (the RPC
  port speaks no HTTP). A hostname anti-affinity within the group (``matchLabelKeys``
  on LWS's group key) makes the group really span nodes, and node affinity and
  tolerations follow the worker's GPU count as for single pods.
* **The leader** runs ``llama-server`` with ``--rpc`` naming its own group's workers
  (built from its pod name through the downward API, so every replica addresses its
  own group), ``--n-gpu-layers``, ``--split-mode layer`` (the only mode that works
  over RPC) and ``--tensor-split`` over every device in llama.cpp's order: the RPC
  servers' devices first, in ``--rpc`` order, then its own GPUs. An init container
  waits for the workers' ports and never exits non-zero: with LWS's default
  ``RecreateGroupOnPodRestart`` a failed start would recreate the whole group.

What is rejected, each with its fix, is listed in :data:`webhook.violation.CODES`
under the ``lws-`` and ``rpc-`` codes. The official llama.cpp images are built
without the RPC backend and their ``server`` images carry no RPC server, so they are
refused: a multi-node group needs an image built with ``-DGGML_RPC=ON``.
"""

from __future__ import annotations

import copy
import itertools
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from webhook.claims import NO_CLAIM_OBJECTS, ClaimObjects
from webhook.cluster import NO_CLUSTER, Cluster, judge_placement
from webhook.config import Config
from webhook.inventory import largest_node
from webhook.launch import Channel
from webhook.llamacpp import (
    DEVICE,
    GPU_LAYERS,
    MAX_TENSOR_SPLIT_VALUES,
    MODEL_KEYS,
    RPC,
    SPLIT_MODE,
    TENSOR_SPLIT,
    option_table,
    parse_options,
)
from webhook.mutation import inject_settings
from webhook.objects import absent_or, as_dict, as_list, labels_of
from webhook.patch import Operation, diff
from webhook.plan import GpuCount, decide_count, placement, read_annotations
from webhook.reading import LWS_NAME_LABEL, ContainerReading, PodReading, read_pod, reread_target, role_label
from webhook.report import Reported, reported_settings
from webhook.rules import RULES, Context, device_count, image_backend, split_mode, visible_devices
from webhook.scheduling import with_gpu_toleration, with_node_expressions
from webhook.violation import Violation
from webhook.workloads import template_at

KIND = "LeaderWorkerSet"
NAME_LABEL = LWS_NAME_LABEL
GROUP_KEY_LABEL = "leaderworkerset.sigs.k8s.io/group-key"
HOSTNAME = "kubernetes.io/hostname"
RPC_PORT = 50052  # ggml-rpc-server's default port
# ggml's scheduler takes at most 16 backends (GGML_SCHED_MAX_BACKENDS), the CPU's among them,
# and -ts at most 15 values: a group has at most 15 devices, RPC and local together.
MAX_DEVICES = MAX_TENSOR_SPLIT_VALUES
RPC_SERVERS = ("ggml-rpc-server", "rpc-server")  # the current name first; rpc-server before the 2025 rename
CACHE_VOLUME = "gpu-shard-rpc-cache"
CACHE_PATH = "/var/cache/gpu-shard-rpc"
GATE_CONTAINER = "gpu-shard-wait-for-workers"
POD_NAME_VAR = "GPU_SHARD_POD_NAME"
POD_NAMESPACE_VAR = "GPU_SHARD_POD_NAMESPACE"
POD_IP_VAR = "GPU_SHARD_POD_IP"
WORKER_MARK = "# gpu-shard-webhook: llama.cpp RPC worker"
LEADER_PATH = ("spec", "leaderWorkerTemplate", "leaderTemplate")
WORKER_PATH = ("spec", "leaderWorkerTemplate", "workerTemplate")
LEADER_FIELD = "spec.leaderWorkerTemplate.leaderTemplate"
WORKER_FIELD = "spec.leaderWorkerTemplate.workerTemplate"

# What the status annotation reports of the leader, as for single pods plus the RPC servers.
REPORTED_KEYS: tuple[tuple[str, str], ...] = (
    (RPC, "rpc"),
    (GPU_LAYERS, "gpuLayers"),
    (SPLIT_MODE, "splitMode"),
    (TENSOR_SPLIT, "tensorSplit"),
)
_LOOPBACK = ("127.0.0.1", "localhost", "::1")
# Options of ggml-rpc-server (and of the older rpc-server: --mem) that llama-server does not have.
RPC_ONLY_OPTIONS = frozenset({"-H", "-p", "-d", "--cache", "--mem"})


def opted_in(obj: Mapping[str, Any], config: Config) -> bool:
    """The LeaderWorkerSet's own label, or a template's (where a Deployment carries it)."""
    if labels_of(obj).get(config.enabled_label) == "true":
        return True
    return any(labels_of(template_at(obj, path) or {}).get(config.enabled_label) == "true" for path in (LEADER_PATH, WORKER_PATH))


# --- reading ---------------------------------------------------------------------------


def _as_pod(template: Mapping[str, Any], namespace: str, config: Config) -> dict[str, Any]:
    """A template as an opted-in pod for :func:`webhook.reading.read_pod` (the LeaderWorkerSet carries the opt-in)."""
    metadata = as_dict(template.get("metadata"))
    labels = {k: v for k, v in as_dict(metadata.get("labels")).items() if k != role_label(config)}
    metadata = {**metadata, "labels": {**labels, config.enabled_label: "true"}, "namespace": namespace}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": as_dict(template.get("spec"))}


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class Shape:
    """The LeaderWorkerSet fields the plan depends on."""

    name: str
    namespace: str
    size: int | None
    subdomain: str  # the DNS label between a pod's name and the namespace
    startup_policy: str
    host_network: bool
    leader_template: dict[str, Any] | None  # None: the leader uses the worker template
    worker_template: dict[str, Any] | None


def read_shape(obj: Mapping[str, Any], namespace: str) -> Shape:
    metadata = as_dict(obj.get("metadata"))
    spec = as_dict(obj.get("spec"))
    group = as_dict(spec.get("leaderWorkerTemplate"))
    size = group.get("size", 1)
    name = str(metadata.get("name") or "")
    policy = as_dict(spec.get("networkConfig")).get("subdomainPolicy") or "Shared"
    leader = template_at(obj, LEADER_PATH)
    worker = template_at(obj, WORKER_PATH)
    host_network = any(as_dict(as_dict(t).get("spec")).get("hostNetwork") is True for t in (leader, worker) if t)
    return Shape(
        name,
        str(metadata.get("namespace") or namespace or ""),
        size if isinstance(size, int) and not isinstance(size, bool) else None,
        f"$({POD_NAME_VAR})" if policy == "UniquePerReplica" else name,
        str(spec.get("startupPolicy") or "LeaderCreated"),
        host_network,
        leader,
        worker,
    )


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class WorkerLaunch:
    """How a worker container starts the RPC server: by the webhook's script, or the user's own argv."""

    ours: bool
    port: int = RPC_PORT
    host: str | None = None
    argv_field: str | None = None  # "command" or "args": where the user's RPC server argv is


def _rpc_program(token: Any) -> bool:
    return isinstance(token, str) and token.rsplit("/", 1)[-1] in RPC_SERVERS


def _rpc_server_options(args: list[Any]) -> bool:
    """Args only an RPC server takes, and no model: the image's entrypoint must be the RPC server."""
    tokens = [t for t in args if isinstance(t, str)]
    if not tokens or not any(t in RPC_ONLY_OPTIONS for t in tokens):
        return False
    table = option_table()
    return not any((spec := table.lookup(t)) is not None and spec.key in MODEL_KEYS for t in tokens)


def read_worker_launch(container: Mapping[str, Any]) -> WorkerLaunch | None:
    """The RPC server a worker container already starts; None when it starts something else (llama-server, nothing)."""
    command, args = as_list(container.get("command")), as_list(container.get("args"))
    if any(isinstance(t, str) and WORKER_MARK in t for t in [*command, *args]):
        return WorkerLaunch(ours=True)
    argv_field = "command" if command and _rpc_program(command[0]) else "args" if not command and args and _rpc_program(args[0]) else None
    if argv_field is None and not command and _rpc_server_options(args):
        argv_field = "args"  # the image's entrypoint is the RPC server (LWS's own llama.cpp example: /rpc-server)
    tokens: list[str]
    if argv_field is not None:
        tokens = [str(t) for t in [*command, *args]]
    else:
        script = next((str(t) for t in [*command, *args] if isinstance(t, str) and any(s in t for s in RPC_SERVERS)), None)
        if script is None:
            return None
        try:
            tokens = shlex.split(script)
        except ValueError:
            tokens = script.split()
    launch = WorkerLaunch(ours=False, argv_field=argv_field)
    for flag, value in itertools.pairwise(tokens):
        if flag in ("-p", "--port") and value.isdigit():
            launch.port = int(value)
        elif flag in ("-H", "--host"):
            launch.host = value
    return launch


# --- planning --------------------------------------------------------------------------


Placement = tuple[str | None, list[dict[str, Any]]]  # (taint to tolerate, required node expressions): plan.placement


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class GroupPlan:
    size: int
    leader: ContainerReading
    worker: ContainerReading
    leader_gpus: GpuCount
    worker_gpus: GpuCount
    port: int
    rpc: str
    channel: Channel  # where the leader's settings go
    gpu_layers: str | None
    tensor_split: str | None
    worker_launch: WorkerLaunch | None  # the RPC server the worker template already starts; None: the webhook writes it
    leader_placement: Placement
    worker_placement: Placement

    @property
    def workers(self) -> int:
        return self.size - 1

    @property
    def devices(self) -> int:
        """Every device llama.cpp splits the model over: each worker's GPUs, then the leader's."""
        return self.workers * (self.worker_gpus.count or 0) + (self.leader_gpus.count or 0)

    def leader_settings(self) -> list[tuple[str, str]]:
        ordered = [(RPC, self.rpc)]
        if self.gpu_layers is not None:
            ordered.append((GPU_LAYERS, self.gpu_layers))
        ordered.append((SPLIT_MODE, "layer"))
        if self.tensor_split is not None:
            ordered.append((TENSOR_SPLIT, self.tensor_split))
        return ordered


def rpc_servers(shape: Shape, workers: int, port: int) -> str:
    """Every worker of the leader's own group, by the stable DNS names LWS gives them."""
    return ",".join(f"$({POD_NAME_VAR})-{i}.{shape.subdomain}.$({POD_NAMESPACE_VAR}):{port}" for i in range(1, workers + 1))


def _prefixed(violations: list[Violation], prefix: str) -> list[Violation]:
    return [replace(v, field=f"{prefix}.{v.field}") for v in violations]


def _worker_target(reading: PodReading, config: Config) -> tuple[ContainerReading | None, list[Violation]]:
    named = reading.annotation(config, "container")
    containers = reading.containers
    if named is not None:
        chosen = [c for c in containers if c.name == named]
    else:
        chosen = [c for c in containers if c.gpus.any] or (list(containers) if len(containers) == 1 else [])
    if len(chosen) == 1:
        return chosen[0], []
    return None, [
        Violation(
            "rpc-worker-container",
            f"the worker template's llama.cpp container is not clear ({', '.join(c.name for c in containers) or 'no containers'}); "
            f"give exactly one container GPUs, or set {config.annotation('container')}",
            f"{WORKER_FIELD}.spec.containers",
        )
    ]


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class GroupPlanning:
    shape: Shape
    plan: GroupPlan | None
    leader: PodReading | None = None
    worker: PodReading | None = None
    problems: tuple[Violation, ...] = ()
    warnings: tuple[str, ...] = ()


def plan_group(obj: Mapping[str, Any], config: Config, namespace: str = "", claims: ClaimObjects = NO_CLAIM_OBJECTS) -> GroupPlanning:
    shape = read_shape(obj, namespace)
    problems: list[Violation] = []
    warnings: list[str] = []
    if shape.worker_template is None:
        return GroupPlanning(shape, None, problems=(Violation("lws-size", "has no workerTemplate; add one", WORKER_FIELD),))
    if shape.size is None or shape.size < 2:
        problems.append(
            Violation(
                "lws-size",
                f"size {shape.size} has no RPC workers; set size to 1 + the number of worker nodes, or use a Deployment",
                "spec.leaderWorkerTemplate.size",
            )
        )
    if shape.startup_policy == "LeaderReady":
        problems.append(
            Violation(
                "lws-startup-deadlock",
                "startupPolicy LeaderReady creates the workers only once the leader is ready, and the leader waits for the workers; "
                "use startupPolicy LeaderCreated",
                "spec.startupPolicy",
            )
        )
    if shape.host_network:
        problems.append(
            Violation(
                "rpc-host-network",
                "hostNetwork exposes the unauthenticated RPC port on the node's own address; remove hostNetwork: true",
                f"{LEADER_FIELD if shape.leader_template else WORKER_FIELD}.spec.hostNetwork",
            )
        )
    leader_field = LEADER_FIELD if shape.leader_template is not None else WORKER_FIELD
    leader = read_pod(_as_pod(shape.leader_template or shape.worker_template, shape.namespace, config), config, claims)
    worker = read_pod(_as_pod(shape.worker_template, shape.namespace, config), config, claims)
    if leader.target is None:
        problems += _prefixed(list(leader.problems), leader_field)
    if leader.target is not None and leader.target.router:
        problems.append(
            Violation(
                "rpc-router-leader",
                "the leader names no model, so llama-server starts as a router with one child per model over the same "
                "workers, and an RPC server serves one client at a time; set -m (one model per LeaderWorkerSet)",
                f"{leader_field}.spec.containers[{leader.target.index}]",
            )
        )
    worker_target, worker_problems = _worker_target(worker, config)
    problems += worker_problems
    if leader.target is None or worker_target is None or problems:
        return GroupPlanning(shape, None, leader, worker, tuple(problems), tuple(warnings))

    leader_count, leader_problems, leader_warnings = decide_count(leader, leader.target, config)
    worker_count, more_problems, worker_warnings = decide_count(worker, worker_target, config)
    problems += _prefixed(leader_problems, leader_field) + _prefixed(more_problems, WORKER_FIELD)
    warnings += leader_warnings + worker_warnings
    for count, reading, where in ((leader_count, leader.target, leader_field), (worker_count, worker_target, WORKER_FIELD)):
        if count is not None and count.count is not None and count.count > config.max_gpus_per_node:
            problems.append(
                Violation(
                    "too-many-gpus",
                    f"{count.count} GPUs asked per pod, at most {config.max_gpus_per_node} fit a node; use fewer GPUs per pod",
                    f"{where}.spec.containers[{reading.index}].resources",
                )
            )
    if worker_count is not None and worker_count.count == 0:
        problems.append(
            Violation(
                "rpc-worker-without-gpus",
                f"the worker container {worker_target.name} asks for no GPU; "
                f"add resources.limits[{config.gpu_resources[0]}] (or a DRA claim) to the worker template",
                f"{WORKER_FIELD}.spec.containers[{worker_target.index}].resources",
            )
        )
    if worker_count is not None and worker_count.count is None:
        problems.append(
            Violation(
                "rpc-worker-count-unknown",
                f"the worker's GPU count is unknown until the scheduler allocates ({worker_count.unknown_reason}), "
                "so the split cannot be planned; ask for an exact count, or set gpu-count on the worker template",
                f"{WORKER_FIELD}.spec.containers[{worker_target.index}].resources",
            )
        )
    if leader_count is not None and leader_count.count is None:
        problems.append(
            Violation(
                "rpc-worker-count-unknown",
                f"the leader's GPU count is unknown until the scheduler allocates ({leader_count.unknown_reason}); ask for an exact count",
                f"{leader_field}.spec.containers[{leader.target.index}].resources",
            )
        )
    if problems or leader_count is None or worker_count is None or shape.size is None:
        return GroupPlanning(shape, None, leader, worker, tuple(problems), tuple(warnings))

    worker_launch = read_worker_launch(worker_target.container)
    port = worker_launch.port if worker_launch is not None else RPC_PORT
    workers = shape.size - 1
    devices = workers * (worker_count.count or 0) + (leader_count.count or 0)
    if devices > MAX_DEVICES:
        problem = Violation(
            "rpc-too-many-devices",
            f"{workers} workers x {worker_count.count} GPUs + {leader_count.count or 0} on the leader make {devices} devices, and "
            f"llama.cpp schedules at most {MAX_DEVICES} besides the CPU; use fewer workers or fewer GPUs per pod",
            "spec.leaderWorkerTemplate.size",
        )
        return GroupPlanning(shape, None, leader, worker, (problem,), tuple(warnings))
    # The leader template's sharding annotations, as for a pod of all the group's devices.
    asked, annotation_problems = read_annotations(leader, config, devices)
    problems = _prefixed(annotation_problems, leader_field)
    if asked.split_mode is not None and asked.split_mode != "layer":
        problems.append(
            Violation(
                "rpc-conflict",
                f"split-mode {asked.split_mode} does not work over RPC; use layer (or drop the annotation)",
                f"{leader_field}.metadata.annotations[{config.annotation('split-mode')}]",
            )
        )
    if problems:
        return GroupPlanning(shape, None, leader, worker, tuple(problems), tuple(warnings))
    tensor_split = asked.tensor_split or (",".join(["1"] * devices) if devices >= 2 else None)
    plan = GroupPlan(
        shape.size,
        leader.target,
        worker_target,
        leader_count,
        worker_count,
        port,
        rpc_servers(shape, workers, port),
        "env" if leader.target.router or leader.target.launch is None else leader.target.launch.channel,
        asked.gpu_layers,
        tensor_split,
        worker_launch,
        placement(leader_count, leader.target, (), config),
        placement(worker_count, worker_target, (), config),
    )
    return GroupPlanning(shape, plan, leader, worker, (), tuple(warnings))


# --- mutation --------------------------------------------------------------------------


def _env(name: str, field_path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}


def _with_env(container: dict[str, Any], variables: list[dict[str, Any]]) -> None:
    """Variables the webhook's values refer to, before every later use (the kubelet expands in order)."""
    if not absent_or(container.get("env"), list):
        return
    current = as_list(container.get("env"))
    names = {as_dict(v).get("name") for v in current}
    missing = [v for v in variables if v["name"] not in names]
    if missing:
        container["env"] = [*missing, *current]


def _anti_affinity(shape: Shape, roles: tuple[str, ...], config: Config) -> dict[str, Any]:
    """No two of these group members on one node; other groups may share it (matchLabelKeys: the group's own key)."""
    return {
        "labelSelector": {
            "matchLabels": {NAME_LABEL: shape.name},
            "matchExpressions": [{"key": role_label(config), "operator": "In", "values": list(roles)}],
        },
        "matchLabelKeys": [GROUP_KEY_LABEL],
        "topologyKey": HOSTNAME,
    }


def _with_anti_affinity(affinity: Any, term: dict[str, Any]) -> Any:
    if affinity is not None and not isinstance(affinity, dict):
        return affinity
    anti = as_dict(as_dict(affinity).get("podAntiAffinity"))
    required = anti.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is not None and not isinstance(required, list):
        return affinity
    if term in (required or []):
        return affinity
    return {**as_dict(affinity), "podAntiAffinity": {**anti, "requiredDuringSchedulingIgnoredDuringExecution": [*(required or []), term]}}


def _placed(spec: dict[str, Any], where: Placement) -> None:
    """Node affinity and toleration by this pod's own GPU count, as for a single pod."""
    toleration, expressions = where
    tolerations = with_gpu_toleration(spec.get("tolerations"), toleration)
    if tolerations is not spec.get("tolerations"):
        spec["tolerations"] = tolerations
    affinity = with_node_expressions(spec.get("affinity"), expressions)
    if affinity is not spec.get("affinity"):
        spec["affinity"] = affinity


def _labelled(template: dict[str, Any], role: str, config: Config, status: str) -> dict[str, Any]:
    metadata = dict(as_dict(template.get("metadata")))
    metadata["labels"] = {**as_dict(metadata.get("labels")), role_label(config): role}
    metadata["annotations"] = {**as_dict(metadata.get("annotations")), config.annotation("status"): status}
    return metadata


def worker_script(port: int) -> str:
    """The worker's command: whichever RPC server the image has, on the pod IP, with its cache; a clear line if none."""
    candidates = " ".join([*RPC_SERVERS, *(f"/app/{s}" for s in RPC_SERVERS)])
    return (
        f"{WORKER_MARK} (the RPC protocol is version-checked: same image as the leader)\n"
        f"for server in {candidates}; do\n"
        f'  if command -v "$server" >/dev/null 2>&1; then exec "$server" -H "${POD_IP_VAR}" -p {port} -c; fi\n'
        "done\n"
        'echo "gpu-shard: neither ggml-rpc-server nor rpc-server is in this image; build llama.cpp with -DGGML_RPC=ON" >&2\n'
        "exit 1\n"
    )


def gate_script(workers: int, subdomain: str, port: int) -> str:
    """Wait for every worker's RPC port; never exit non-zero (a failed start would recreate the whole group)."""
    host = subdomain.replace(f"$({POD_NAME_VAR})", f"${{{POD_NAME_VAR}}}")
    return (
        "# gpu-shard-webhook: wait until every RPC worker of this group listens, then let llama-server start\n"
        "reachable() {\n"
        '  if command -v bash >/dev/null 2>&1; then bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null\n'
        '  elif command -v nc >/dev/null 2>&1; then nc -z -w 2 "$1" "$2"\n'
        "  else return 0; fi\n"
        "}\n"
        f"for i in {' '.join(str(i) for i in range(1, workers + 1))}; do\n"
        f'  worker="${{{POD_NAME_VAR}}}-$i.{host}.${{{POD_NAMESPACE_VAR}}}"\n'
        "  waited=0\n"
        f'  until reachable "$worker" {port}; do\n'
        '    [ $((waited % 30)) -eq 0 ] && echo "gpu-shard: waiting for RPC worker $worker:' + str(port) + ' (${waited}s)"\n'
        "    sleep 2; waited=$((waited + 2))\n"
        "  done\n"
        '  echo "gpu-shard: RPC worker $worker is up"\n'
        "done\n"
        "exit 0\n"
    )


def _leader_container(container: dict[str, Any], plan: GroupPlan) -> None:
    # The names the settings refer to come first: the kubelet expands $(VAR) from variables defined before.
    _with_env(container, [_env(POD_NAME_VAR, "metadata.name"), _env(POD_NAMESPACE_VAR, "metadata.namespace")])
    inject_settings(container, plan.leader_settings(), plan.channel, plan.leader)


def _gate(leader: dict[str, Any], plan: GroupPlan, shape: Shape) -> dict[str, Any]:
    return {
        "name": GATE_CONTAINER,
        "image": leader.get("image"),
        "command": ["sh", "-c", gate_script(plan.workers, shape.subdomain, plan.port)],
        "env": [_env(POD_NAME_VAR, "metadata.name"), _env(POD_NAMESPACE_VAR, "metadata.namespace")],
        "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}},
    }


def _worker_container(container: dict[str, Any], plan: GroupPlan) -> None:
    launch = plan.worker_launch
    if launch is None:
        container["command"] = ["sh", "-c", worker_script(plan.port)]
        container.pop("args", None)
    elif not launch.ours and launch.host is None and launch.argv_field is not None:
        container["args"] = [*as_list(container.get("args")), "-H", f"$({POD_IP_VAR})"]
    _with_env(container, [_env(POD_IP_VAR, "status.podIP"), {"name": "LLAMA_CACHE", "value": CACHE_PATH}])
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        if "httpGet" in as_dict(container.get(probe)):
            container.pop(probe)
    ports = container.get("ports")
    if absent_or(ports, list) and not any(as_dict(p).get("containerPort") == plan.port for p in as_list(ports)):
        kept = [p for p in as_list(ports) if as_dict(p).get("name") != "rpc"]
        container["ports"] = [*kept, {"name": "rpc", "containerPort": plan.port, "protocol": "TCP"}]
    mounts = container.get("volumeMounts")
    if absent_or(mounts, list) and not any(as_dict(m).get("name") == CACHE_VOLUME for m in as_list(mounts)):
        container["volumeMounts"] = [*as_list(mounts), {"name": CACHE_VOLUME, "mountPath": CACHE_PATH}]


def _planned_spec(template: dict[str, Any], plan: GroupPlan, role: str, shape: Shape, config: Config) -> dict[str, Any]:
    """A template's spec as the plan makes it; the input is never modified."""
    spec = copy.deepcopy(as_dict(template.get("spec")))
    leader_has_gpus = bool(plan.leader_gpus.count)
    reading = plan.leader if role == "leader" else plan.worker
    container = as_dict(as_list(spec.get("containers"))[reading.index])
    if role == "leader":
        _leader_container(container, plan)
        init = as_list(spec.get("initContainers"))
        if absent_or(spec.get("initContainers"), list) and not any(as_dict(c).get("name") == GATE_CONTAINER for c in init):
            spec["initContainers"] = [*init, _gate(container, plan, shape)]
        _placed(spec, plan.leader_placement)
        if leader_has_gpus:
            spec["affinity"] = _with_anti_affinity(spec.get("affinity"), _anti_affinity(shape, ("leader", "worker"), config))
    else:
        _worker_container(container, plan)
        volumes = spec.get("volumes")
        if absent_or(volumes, list) and not any(as_dict(v).get("name") == CACHE_VOLUME for v in as_list(volumes)):
            spec["volumes"] = [*as_list(volumes), {"name": CACHE_VOLUME, "emptyDir": {}}]
        _placed(spec, plan.worker_placement)
        roles = ("leader", "worker") if leader_has_gpus else ("worker",)
        spec["affinity"] = _with_anti_affinity(spec.get("affinity"), _anti_affinity(shape, roles, config))
    return spec


# --- the report ------------------------------------------------------------------------


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class GroupReport:
    """The group as it will run, read off the final leader template (never from what was meant)."""

    plan: GroupPlan
    settings: tuple[Reported, ...]
    group_name: str  # the LeaderWorkerSet's: its pods are <name>-<group>[-<worker>]

    def get(self, key: str) -> Reported:
        return next(r for r in self.settings if r.key == key)

    def status(self) -> str:
        plan = self.plan
        record: dict[str, Any] = {
            "kind": KIND,
            "size": plan.size,
            "devices": plan.devices,
            "leader": {"container": plan.leader.name, "gpus": plan.leader_gpus.count, "resource": plan.leader_gpus.resource},
            "workers": {
                "count": plan.workers,
                "container": plan.worker.name,
                "gpusEach": plan.worker_gpus.count,
                "resource": plan.worker_gpus.resource,
                "port": plan.port,
            },
            "channel": plan.channel,
        }
        origins = {}
        for reported, (_, name) in zip(self.settings, REPORTED_KEYS, strict=True):
            record[name] = "unknown" if reported.origin == "unknown" else reported.value
            origins[name] = reported.origin_text()
        record["origin"] = origins
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()

    def worker_status(self) -> str:
        plan = self.plan
        record = {"role": "worker", "container": plan.worker.name, "gpus": plan.worker_gpus.count, "port": plan.port}
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()

    def lines(self) -> list[str]:
        """What a person reads in kubectl's warnings: several short lines rather than one cut off."""
        plan = self.plan
        leader = f"{plan.leader_gpus.count} local GPU{'s' if plan.leader_gpus.count != 1 else ''}" if plan.leader_gpus.count else "no GPU"
        rendered = [text for text in (r.render() for r in self.settings if r.key != RPC) if text]
        rpc = self.get(RPC)
        return [
            f"gpu-shard: {plan.size} pods per group: leader ({leader}) + {plan.workers} RPC workers x {plan.worker_gpus.describe()}",
            f"gpu-shard: {plan.devices} devices, RPC first: {' '.join(rendered) or 'no flags'}",
            f"gpu-shard: --rpc {self._servers(rpc.value)}" + (" (yours)" if rpc.origin == "user" else ""),
            f"gpu-shard: workers run the RPC server on port {plan.port}, one per node",
            *(
                []
                if plan.leader.launch is not None and plan.leader.launch.recognised
                else ["gpu-shard: the leader's command is not llama-server itself: it must pass LLAMA_ARG_* on and set no --rpc"]
            ),
        ]

    def _servers(self, value: str | None) -> str:
        """``--rpc`` as a person reads it: each pod's name for group <group>, first and last of a long list."""
        if value is None:
            return "unknown"
        servers = [
            s.replace(f"$({POD_NAME_VAR})", f"{self.group_name}-<group>").replace(f"$({POD_NAMESPACE_VAR})", "<namespace>")
            for s in value.split(",")
        ]
        return ",".join(servers) if len(servers) <= 2 else f"{servers[0]},…,{servers[-1]}"

    def summary(self) -> str:
        return "; ".join(line.removeprefix("gpu-shard: ") for line in self.lines())


def rpc_text(key: str, reading: ContainerReading) -> str | None:
    """``--rpc`` as the container spec writes it when only the pod's own name is filled in per pod
    (``$(GPU_SHARD_POD_NAME)-1.…``): a template that can be stated and compared; None otherwise."""
    if key != RPC:
        return None
    text = None
    if reading.launch is not None:
        values = [o.values[0] for o in parse_options(reading.launch.option_tokens) if o.key == RPC and o.values]
        text = str(values[-1]) if values else None
    if text is None and reading.environment.values.get(RPC) is not None:
        text = str(reading.environment.values[RPC])
    return text if text is not None and POD_NAME_VAR in text else None


# --- the rules -------------------------------------------------------------------------


def _conflicts(plan: GroupPlan, leader_field: str) -> list[Violation]:
    """User settings that contradict a plan over RPC."""
    found = []
    settings = plan.leader.settings
    where = f"{leader_field}.spec.containers[{plan.leader.index}]"
    rpc = settings.effective(RPC)
    text = None if rpc is None else rpc.value if rpc.value is not None else rpc_text(RPC, plan.leader)
    if rpc is not None and text is not None and text != plan.rpc:
        found.append(
            Violation(
                "rpc-conflict",
                f"{rpc.spelling} '{text}' is not this group's workers; remove it (the webhook lists them: {plan.rpc})",
                where,
            )
        )
    device = settings.effective(DEVICE)
    if device is not None and device.value is not None:
        found.append(
            Violation(
                "rpc-conflict", f"{device.spelling} '{device.value}' would leave RPC or local devices out of the split; remove it", where
            )
        )
    mode = settings.effective(SPLIT_MODE)
    if mode is not None and mode.value is not None and mode.value.strip().lower() != "layer":
        found.append(
            Violation("rpc-conflict", f"{mode.spelling} {mode.value} does not work over RPC; use --split-mode layer (or remove it)", where)
        )
    return found


def _images(plan: GroupPlan, leader_field: str, config: Config) -> list[Violation]:
    found = []
    leader_image, worker_image = plan.leader.image, plan.worker.image
    if leader_image.reference != worker_image.reference:
        found.append(
            Violation(
                "rpc-image-mismatch",
                f"the leader runs {leader_image.reference or '(no image)'} and the workers {worker_image.reference or '(no image)'}; "
                "the RPC protocol is version-checked, so use the same image in both templates",
                f"{WORKER_FIELD}.spec.containers[{plan.worker.index}].image",
            )
        )
    for image, where in ((leader_image, leader_field), (worker_image, WORKER_FIELD)):
        if image.official:
            found.append(
                Violation(
                    "rpc-image-without-rpc",
                    f"{image.reference} is an official llama.cpp image, built without the RPC backend (and its server images have no "
                    "RPC server); use an image built with -DGGML_RPC=ON that has llama-server and ggml-rpc-server",
                    f"{where}.spec.containers[{(plan.leader if where == leader_field else plan.worker).index}].image",
                )
            )
            break
    launch = plan.worker_launch
    if launch is not None and not launch.ours and launch.host in _LOOPBACK:
        found.append(
            Violation(
                "rpc-conflict",
                f"the worker's RPC server binds {launch.host}, which the leader cannot reach; use -H $({POD_IP_VAR}) or drop -H",
                f"{WORKER_FIELD}.spec.containers[{plan.worker.index}]",
            )
        )
    return found


def _capacity(plan: GroupPlan, cluster: Cluster, claims: ClaimObjects, config: Config) -> tuple[list[Violation], list[str]]:
    """Workers must fit a node, as any pod (:func:`webhook.cluster.judge_placement`); the whole group must not: one node
    would be faster, with no network in the way."""
    worker_where = f"{WORKER_FIELD}.spec.containers[{plan.worker.index}].resources"
    found, warnings = judge_placement(plan.worker_gpus, plan.worker_placement[1], worker_where, claims, cluster, config)
    if found or warnings or cluster.nodes is None or plan.worker_gpus.source == "claim":
        return found, warnings
    resource = plan.worker_gpus.resource or ""
    largest = largest_node(cluster.nodes(), resource)
    total = plan.devices
    one_resource = not plan.leader_gpus.count or (plan.leader_gpus.resource or resource) == resource
    if largest is not None and one_resource and total <= largest.gpus[resource] and total <= config.max_gpus_per_node:
        found.append(
            Violation(
                "lws-fits-one-node",
                f"the group's {total} GPUs fit on one node ({largest.name} has {largest.gpus[resource]} {resource}); "
                f"use a Deployment with {total} GPUs: faster, and no network in the inference path",
                "spec.leaderWorkerTemplate.size",
            )
        )
    return found, warnings


def _network_policy_warnings(shape: Shape, port: int, config: Config, cluster: Cluster) -> list[str]:
    policies = cluster.network_policies
    if policies is None:
        return []
    snapshot = policies()
    if not snapshot.synced:
        return []
    worker_labels = {
        **{str(k): str(v) for k, v in labels_of(shape.worker_template or {}).items()},
        NAME_LABEL: shape.name,
        role_label(config): "worker",
    }
    if snapshot.selects(shape.namespace, worker_labels):
        return []
    return [
        f"gpu-shard: no NetworkPolicy in {shape.namespace} selects the workers: their RPC port {port} (unauthenticated) "
        "is open to every pod; apply the chart's rpcNetworkPolicy or manifests/examples/multinode/networkpolicy.yaml"
    ]


# --- one call ---------------------------------------------------------------------------


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class GroupReview:
    obj: dict[str, Any]  # the LeaderWorkerSet as it would be admitted
    patch: list[Operation]
    violations: list[Violation]
    planning: GroupPlanning
    report: GroupReport | None
    warnings: list[str] = field(default_factory=list)

    @property
    def allowed(self) -> bool:
        return not self.violations

    def summary(self) -> str | None:
        return self.report.summary() if self.report else None


def _rules(planning: GroupPlanning, final_leader: PodReading, config: Config) -> list[Violation]:
    plan = planning.plan
    assert plan is not None and final_leader.target is not None and planning.worker is not None
    leader_field = LEADER_FIELD if planning.shape.leader_template is not None else WORKER_FIELD
    found = _conflicts(plan, leader_field) + _images(plan, leader_field, config)
    # The leader's options are judged as for a pod with every device of the group (the split covers them all);
    # its image and device visibility against its own GPUs; the split mode and --device by _conflicts.
    total = replace(plan.leader_gpus, count=plan.devices, source="limits", resource=plan.worker_gpus.resource)
    group_ctx = Context(final_leader, final_leader.target, total, config)
    local_ctx = Context(final_leader, final_leader.target, plan.leader_gpus, config)
    for rule in RULES:
        if rule in (visible_devices, image_backend):
            found += _prefixed(rule(local_ctx), leader_field)
        elif rule not in (device_count, split_mode):
            found += _prefixed(rule(group_ctx), leader_field)
    # The worker's environment is the user's: the webhook adds no visibility variable to it.
    worker_ctx = Context(planning.worker, plan.worker, plan.worker_gpus, config)
    found += _prefixed(image_backend(worker_ctx) + visible_devices(worker_ctx), WORKER_FIELD)
    return list(dict.fromkeys(found))


def review_group(obj: dict[str, Any], config: Config, namespace: str = "", cluster: Cluster = NO_CLUSTER) -> GroupReview:
    """The LeaderWorkerSet as admitted, its patch, what is wrong with it, and its report."""
    claims = cluster.claims()
    planning = plan_group(obj, config, namespace, claims)
    plan = planning.plan
    if plan is None:
        return GroupReview(obj, [], list(planning.problems), planning, None, list(planning.warnings))
    assert planning.leader is not None
    shape = planning.shape
    leader_template = shape.leader_template or shape.worker_template
    assert leader_template is not None and shape.worker_template is not None
    leader_spec = _planned_spec(leader_template, plan, "leader", shape, config)
    worker_spec = _planned_spec(shape.worker_template, plan, "worker", shape, config)

    # The report is read off the leader as it will run (only its llama.cpp container changed), as for a pod.
    final_leader = reread_target(
        planning.leader, _as_pod({**leader_template, "spec": leader_spec}, shape.namespace, config), config, claims
    )
    assert final_leader.target is not None
    previous = as_dict(as_dict(leader_template.get("metadata")).get("annotations")).get(config.annotation("status"))
    report = GroupReport(plan, tuple(reported_settings(plan.leader, final_leader.target, previous, REPORTED_KEYS, rpc_text)), shape.name)

    status = report.status()
    group = dict(as_dict(as_dict(obj.get("spec")).get("leaderWorkerTemplate")))
    group["leaderTemplate"] = {**leader_template, "metadata": _labelled(leader_template, "leader", config, status), "spec": leader_spec}
    worker_metadata = _labelled(shape.worker_template, "worker", config, report.worker_status())
    group["workerTemplate"] = {**shape.worker_template, "metadata": worker_metadata, "spec": worker_spec}
    metadata = dict(as_dict(obj.get("metadata")))
    if absent_or(metadata.get("annotations"), dict):
        metadata["annotations"] = {**as_dict(metadata.get("annotations")), config.annotation("status"): status}
    admitted = {**obj, "metadata": metadata, "spec": {**as_dict(obj.get("spec")), "leaderWorkerTemplate": group}}

    found = _rules(planning, final_leader, config)
    more, warnings = _capacity(plan, cluster, claims, config)
    warnings = [*planning.warnings, *warnings, *_network_policy_warnings(shape, plan.port, config, cluster)]
    return GroupReview(admitted, diff(obj, admitted), [*found, *more], planning, report, warnings)
