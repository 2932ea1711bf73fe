"""Property tests over generated pods and argv (hypothesis).

Whatever shape a pod has -- missing spec, null containers, non-string args,
huge counts, random llama.cpp flags -- the core must not raise, its patch must
apply with jsonpatch, mutating twice must change nothing, it must touch only
what it injects, and a clean GPU pod must always come out admissible.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import kubernetes_validate
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.cases import claim_template
from tests.expectations import check_status_is_what_runs
from webhook.claims import claim_objects_from
from webhook.cluster import Cluster
from webhook.config import Config
from webhook.llamacpp import option_table
from webhook.review import review_pod

SPELLINGS = sorted({s for spec in option_table().specs for s in spec.spellings})
GPU_SPELLINGS = ["-ngl", "--n-gpu-layers", "-sm", "--split-mode", "-ts", "--tensor-split", "-mg", "-dev", "-fit", "-fa", "--tensor_split"]
ANNOTATION_NAMES = ["gpu-count", "tensor-split", "split-mode", "n-gpu-layers", "container", "gpu-product", "status"]
IMAGES = [
    "ghcr.io/ggml-org/llama.cpp:server-cuda",
    "ghcr.io/ggml-org/llama.cpp:server-vulkan-b9000",
    "ghcr.io/ggml-org/llama.cpp:server",
    "ghcr.io/ggml-org/llama.cpp:server-rocm",
    "ghcr.io/ggml-org/llama.cpp:full",
    "busybox:1.36",
    "example.com/x:1",
]
# DRA objects the generated pods' claims may name; "missing" is never created.
CLUSTER = Cluster(claims=lambda: CLAIMS)
CLAIMS = claim_objects_from([claim_template("one", 1), claim_template("two", 2), claim_template("all", mode="All")])
CONFIGS = [Config(), Config(precedence="annotation"), Config(inject_affinity=False), Config(max_gpus_per_node=32)]

values = st.one_of(
    st.sampled_from(
        ["0", "1", "2", "99", "999", "all", "auto", "layer", "row", "none", "tensor", "1,1", "3,1", "1/1", "-1", "on", "off", "CUDA0"]
    ),
    st.text(max_size=8),
)
tokens = st.one_of(
    st.sampled_from(GPU_SPELLINGS), st.sampled_from(SPELLINGS), values, st.sampled_from(GPU_SPELLINGS).map(lambda s: s + "=1,1")
)
argv = st.lists(tokens, max_size=12)
quantities = st.one_of(
    st.none(), st.integers(-3, 40), st.sampled_from(["0", "1", "2", "4", "8", "16", "1.5", "abc", "100000000000000000000"])
)
env_vars = st.lists(
    st.fixed_dictionaries(
        {
            "name": st.sampled_from(
                [
                    "LLAMA_ARG_N_GPU_LAYERS",
                    "LLAMA_ARG_TENSOR_SPLIT",
                    "LLAMA_ARG_SPLIT_MODE",
                    "CUDA_VISIBLE_DEVICES",
                    "HIP_VISIBLE_DEVICES",
                    "GGML_VK_VISIBLE_DEVICES",
                    "NGL",
                    "OTHER",
                ]
            )
        },
        optional={"value": st.one_of(values, st.just("$(NGL)"), st.just("$$(NGL)"))},
    ),
    max_size=3,
)


@st.composite
def containers(draw: st.DrawFn) -> dict[str, Any]:
    container: dict[str, Any] = {"name": draw(st.sampled_from(["llama", "sidecar", "model", "x"])), "image": draw(st.sampled_from(IMAGES))}
    launch = draw(st.sampled_from(["image", "command", "shell", "wrapper", "args-program", "none"]))
    if launch == "command":
        container["command"] = ["llama-server", *draw(argv)]
    elif launch == "shell":
        container["command"] = ["sh", "-c", "exec llama-server " + " ".join(draw(argv))]
    elif launch == "wrapper":
        container["command"] = ["tini", "--", "/app/llama-server", *draw(argv)]
    if launch == "args-program":
        container["args"] = ["/app/llama-server", *draw(argv)]
    elif draw(st.booleans()):
        container["args"] = draw(argv)
    if draw(st.booleans()):
        container["env"] = draw(env_vars)
    if draw(st.booleans()):
        container["envFrom"] = [{"configMapRef": {"name": "llama-config"}}]
    limit, request = draw(quantities), draw(quantities)
    resources: dict[str, Any] = {}
    if limit is not None:
        resources["limits"] = {draw(st.sampled_from(["nvidia.com/gpu", "amd.com/gpu"])): limit}
    if request is not None:
        resources["requests"] = {"nvidia.com/gpu": request}
    if draw(st.booleans()):
        resources["claims"] = [{"name": draw(st.sampled_from(["gpu", "other"]))}]
    if resources:
        container["resources"] = resources
    return container


node_terms = st.lists(
    st.fixed_dictionaries(
        {
            "matchExpressions": st.lists(
                st.fixed_dictionaries({"key": st.sampled_from(["a", "nvidia.com/gpu.count"]), "operator": st.just("Exists")}), max_size=2
            )
        }
    ),
    max_size=3,
)


@st.composite
def pods(draw: st.DrawFn) -> dict[str, Any]:
    annotations = draw(st.dictionaries(st.sampled_from(ANNOTATION_NAMES).map(lambda n: f"gpu-shard.io/{n}"), values, max_size=4))
    labels = {"gpu-shard.io/enabled": draw(st.sampled_from(["true", "true", "false"]))}
    spec: dict[str, Any] = {"containers": draw(st.lists(containers(), min_size=1, max_size=3))}
    if draw(st.booleans()):
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": draw(node_terms)}}}
    if draw(st.booleans()):
        spec["tolerations"] = [{"key": draw(st.sampled_from(["nvidia.com/gpu", "other", ""])), "operator": "Exists"}]
    if draw(st.booleans()):
        spec["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": draw(st.sampled_from(["one", "two", "all", "missing"]))}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "p-", "labels": labels, "annotations": annotations},
        "spec": spec,
    }


garbage = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=5)),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(
            st.sampled_from(["spec", "containers", "args", "metadata", "labels", "resources", "limits", "name", "command", "env"]),
            children,
            max_size=3,
        ),
    ),
    max_leaves=20,
)


@st.composite
def malformed_pods(draw: st.DrawFn) -> dict[str, Any]:
    pod = draw(pods())
    path = draw(st.sampled_from(["spec", "containers", "container", "args", "command", "env", "resources", "metadata", "annotations"]))
    junk = draw(garbage)
    container = pod["spec"]["containers"][0]
    if path == "spec":
        pod["spec"] = junk
    elif path == "containers":
        pod["spec"]["containers"] = junk
    elif path == "container":
        pod["spec"]["containers"][0] = junk
    elif path in ("args", "command", "env", "resources"):
        container[path] = junk
    elif path == "metadata":
        pod["metadata"] = {"labels": {"gpu-shard.io/enabled": "true"}, "annotations": junk}
    else:
        pod["metadata"]["annotations"] = junk
    return pod


ALLOWED = ("/spec/containers/", "/spec/tolerations", "/spec/affinity", "/metadata/annotations")


def _api_server_accepts(pod: dict[str, Any]) -> bool:
    """The pod passes the Kubernetes schema and has unique container names: what the API server admits."""
    try:
        kubernetes_validate.validate(pod, "1.30.0", strict=True)
    except kubernetes_validate.ValidationError:
        return False
    containers = pod["spec"]["containers"]
    return len({c.get("name") for c in containers}) == len(containers)


def check_core_invariants(pod: dict[str, Any], config: Config) -> None:
    original = copy.deepcopy(pod)
    review = review_pod(pod, config, CLUSTER)
    assert pod == original
    assert jsonpatch.apply_patch(copy.deepcopy(original), review.patch) == review.pod
    again = review_pod(review.pod, config, CLUSTER)
    assert again.patch == [], "mutating twice changes nothing"
    assert again.violations == review.violations, "the admitted pod is judged as the first review judged it"
    for operation in review.patch:
        assert operation["path"].startswith(ALLOWED), operation
        if operation["path"].startswith("/spec/containers/"):
            index = int(operation["path"].split("/")[3])
            assert review.plan is not None and index == review.plan.index
    if review.plan is None:
        assert review.patch == [], "without a plan nothing changes"
    elif review.allowed and _api_server_accepts(review.pod):
        # (the status is checked against what runs: for pods the API server goes on to store)
        event("admitted with a plan: status checked against the process")
        status = check_status_is_what_runs(original, review.pod)
        assert json.loads(review.pod["metadata"]["annotations"]["gpu-shard.io/status"]) == status


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pods(), st.sampled_from(CONFIGS))
def test_generated_pods_keep_the_invariants(pod: dict[str, Any], config: Config) -> None:
    check_core_invariants(pod, config)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(malformed_pods(), st.sampled_from(CONFIGS))
def test_malformed_shapes_never_raise(pod: dict[str, Any], config: Config) -> None:
    check_core_invariants(pod, config)


@settings(max_examples=200, deadline=None)
@given(garbage)
def test_any_json_value_as_a_pod_never_raises(value: Any) -> None:
    if isinstance(value, dict):
        value = {**value, "metadata": {"labels": {"gpu-shard.io/enabled": "true"}}}
        check_core_invariants(value, Config())


@st.composite
def clean_gpu_pods(draw: st.DrawFn) -> dict[str, Any]:
    """Pods with no GPU option of their own: the mutation alone must make them admissible."""
    gpus = draw(st.integers(0, 8))
    groups = draw(st.lists(st.sampled_from([["--metrics"], ["--jinja"], ["-c", "4096"], ["--port", "8080"], ["-fa", "on"]]), max_size=4))
    args = ["-m", "/models/m.gguf", *(token for group in groups for token in group)]
    container = {"name": "llama", "image": "ghcr.io/ggml-org/llama.cpp:server-cuda", "args": args}
    if gpus or draw(st.booleans()):
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    annotations = {}
    if draw(st.booleans()):
        annotations["gpu-shard.io/split-mode"] = draw(st.sampled_from(["layer", "row", "tensor"]))
    if draw(st.booleans()):
        annotations["gpu-shard.io/n-gpu-layers"] = draw(st.sampled_from(["all", "auto", "0", "40", "999"]))
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "llama-0", "namespace": "default", "labels": {"gpu-shard.io/enabled": "true"}, "annotations": annotations},
        "spec": {"containers": [container]},
    }
    if draw(st.booleans()):
        pod["spec"]["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]},
                        {"matchExpressions": []},
                    ]
                }
            }
        }
    return pod


@settings(max_examples=150, deadline=None)
@given(clean_gpu_pods())
def test_clean_pods_come_out_admissible_and_schema_valid(pod: dict[str, Any]) -> None:
    review = review_pod(pod, Config())
    assert review.violations == []
    kubernetes_validate.validate(review.pod, "1.30.0", strict=True)


@st.composite
def admissible_pods(draw: st.DrawFn) -> dict[str, Any]:
    """Pods the webhook admits, written every way people write them: flags the user set (in argv,
    in LLAMA_ARG_* env, through $(VAR)), a shell or a wrapper, a router, GPUs from limits or a claim."""
    gpus = draw(st.integers(1, 4))
    env: list[dict[str, Any]] = []
    options: list[str] = ["-m", "/models/m.gguf"]
    launch = draw(st.sampled_from(["image", "args-program", "command", "shell", "wrapper", "router"]))
    if launch == "router":
        options = ["--models-preset", "/config/presets.ini"]
    layers = draw(st.sampled_from([None, "argv", "env", "var", "hidden"]))
    value = draw(st.sampled_from(["0", "20", "99", "all", "auto", "-1"]))
    if layers == "argv":
        options += [draw(st.sampled_from(["-ngl", "--gpu-layers", "--n-gpu-layers", "--n_gpu_layers"])), value]
    elif layers == "env":
        env.append({"name": "LLAMA_ARG_N_GPU_LAYERS", "value": value})
    elif layers == "var":
        env.append({"name": "LAYERS", "value": value})
        options += ["-ngl", "$(LAYERS)"]
    elif layers == "hidden":
        env.append({"name": "LLAMA_ARG_N_GPU_LAYERS", "valueFrom": {"configMapKeyRef": {"name": "llama", "key": "ngl"}}})
    if gpus > 1 and draw(st.booleans()):
        options += [draw(st.sampled_from(["-sm", "--split-mode"])), draw(st.sampled_from(["layer", "row"]))]
    if gpus > 1 and draw(st.booleans()):
        split = ",".join(str(draw(st.integers(1, 5))) for _ in range(gpus))
        if draw(st.booleans()):
            options += ["-ts", split]
        else:
            env.append({"name": "LLAMA_ARG_TENSOR_SPLIT", "value": split})
    for group in draw(st.lists(st.sampled_from([["--metrics"], ["--jinja"], ["-fa", "on"], ["-c", "4096"]]), max_size=3)):
        options += group
    container: dict[str, Any] = {"name": "llama", "image": "ghcr.io/ggml-org/llama.cpp:server-vulkan"}
    if launch in ("image", "router"):
        container["args"] = options
    elif launch == "args-program":
        container["image"] = "example.com/llama:1"
        container["args"] = ["/app/llama-server", *options]
    elif launch == "command":
        container["command"] = ["llama-server"]
        container["args"] = options
    elif launch == "shell":
        container["command"] = ["/bin/sh", "-c", "exec /app/llama-server " + " ".join(options)]
    else:
        container["command"] = ["tini", "--", "llama-server", *options]
    if env:
        container["env"] = env
    spec: dict[str, Any] = {"containers": [container]}
    if draw(st.booleans()):
        container["resources"] = {"limits": {draw(st.sampled_from(["nvidia.com/gpu", "amd.com/gpu", "gpu.intel.com/xe"])): str(gpus)}}
    else:
        container["resources"] = {"claims": [{"name": "gpu"}]}
        spec["resourceClaims"] = [{"name": "gpu", "resourceClaimTemplateName": {1: "one", 2: "two"}.get(gpus, "all")}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "llama-", "namespace": "default", "labels": {"gpu-shard.io/enabled": "true"}},
        "spec": spec,
    }


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(admissible_pods())
def test_reports_state_what_the_kubelet_will_exec(pod: dict[str, Any]) -> None:
    review = review_pod(copy.deepcopy(pod), Config(), CLUSTER)
    assert review.violations == [], review.violations
    assert review.report is not None
    check_status_is_what_runs(pod, review.pod)
    again = review_pod(review.pod, Config(), CLUSTER)
    assert again.pod["metadata"]["annotations"] == review.pod["metadata"]["annotations"], "reinvocation reports the same"
    assert again.summary() == review.summary()
