"""AdmissionReview v1: decode the request, decide, build the response.

Two error families, never mixed (the kopf habit):

* :class:`MalformedRequest` -- the request itself is broken (not JSON, not an
  AdmissionReview v1, a field of the wrong type, a kind this endpoint does not
  serve). The server answers HTTP 400 with the reason, which lets the API
  server apply the webhook's ``failurePolicy``; we never answer
  ``allowed: false`` for our own or the caller's bug.
* violations -- the object is not acceptable: ``allowed: false`` with a 403
  status and a message listing every violation with its fix.

Nothing here knows about HTTP; :mod:`webhook.server` only translates.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from webhook import multinode
from webhook.cluster import NO_CLUSTER, Cluster
from webhook.config import Config
from webhook.objects import as_dict, as_list
from webhook.patch import Operation
from webhook.plan import ClaimLookup
from webhook.report import Report
from webhook.review import Review, as_pod, mutate_pod, review_object
from webhook.violation import Violation, bounded
from webhook.workloads import TEMPLATE_PATHS

API_VERSION = "admission.k8s.io/v1"
MAX_WARNING_LENGTH = 120
OPERATIONS = ("CREATE", "UPDATE", "DELETE", "CONNECT")


class MalformedRequest(ValueError):
    """The request is not a usable AdmissionReview; answered with HTTP 400."""


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class Request:
    """The fields of an AdmissionReview v1 ``request`` this webhook reads, checked."""

    uid: str
    kind: str
    operation: str
    namespace: str
    name: str
    object: dict[str, Any]
    old_object: dict[str, Any] | None
    dry_run: bool


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class Response:
    uid: str
    allowed: bool
    patch: list[Operation] | None = None
    message: str | None = None
    warnings: tuple[str, ...] = ()

    def wire(self) -> dict[str, Any]:
        response: dict[str, Any] = {"uid": self.uid, "allowed": self.allowed}
        if self.patch:
            response["patchType"] = "JSONPatch"
            response["patch"] = base64.b64encode(orjson.dumps(self.patch)).decode()
        if not self.allowed:
            response["status"] = {"code": 403, "reason": "Forbidden", "message": self.message or "denied"}
        if self.warnings:
            response["warnings"] = list(self.warnings)
        return {"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": response}


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class Decision:
    """A response plus what the edges log and count (from the report of the final pod)."""

    response: Response
    result: Literal["allowed", "patched", "denied"]
    violations: tuple[Violation, ...] = ()
    report: Report | None = None
    claim_lookup: ClaimLookup = "none"
    group: multinode.GroupReport | None = None  # a LeaderWorkerSet's plan, read off the admitted object

    @property
    def gpus(self) -> int | None:
        """GPUs the pod gets; for a LeaderWorkerSet, every device of one group."""
        if self.group is not None:
            return self.group.plan.devices
        return self.report.gpus if self.report else 0

    @property
    def sharded(self) -> bool:
        return self.result == "patched" and (self.report is not None or self.group is not None)


# --- response constructors: every exit of a handler reads as a sentence ---------------


def allowed(uid: str, warnings: Sequence[str] = ()) -> Response:
    return Response(uid, True, warnings=tuple(_warning(w) for w in warnings))


def patched(uid: str, patch: list[Operation], warnings: Sequence[str] = ()) -> Response:
    return Response(uid, True, patch=patch, warnings=tuple(_warning(w) for w in warnings))


def denied(uid: str, message: str, warnings: Sequence[str] = ()) -> Response:
    return Response(uid, False, message=message, warnings=tuple(_warning(w) for w in warnings))


def _warning(text: str) -> str:
    return text if len(text) <= MAX_WARNING_LENGTH else text[: MAX_WARNING_LENGTH - 1] + "…"


# --- decoding ---------------------------------------------------------------------------


def _short(value: Any) -> str:
    """A value for an error message: never the request echoed back (a 64 KiB 'kind' stays out)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _field(request: dict[str, Any], name: str, kind: type | tuple[type, ...], required: bool = True) -> Any:
    value = request.get(name)
    if value is None:
        if required:
            raise MalformedRequest(f"request.{name} is missing")
        return None
    if not isinstance(value, kind):
        raise MalformedRequest(f"request.{name} must be {getattr(kind, '__name__', kind)}, got {type(value).__name__}")
    return value


def decode(body: bytes | str) -> Request:
    """Parse and check an AdmissionReview v1 body; raise MalformedRequest with the reason."""
    try:
        review = orjson.loads(body)
    except orjson.JSONDecodeError as error:  # also: nested deeper than 1024 levels, which no Pod is
        raise MalformedRequest(f"body is not JSON: {str(error)[:120]}") from None
    if not isinstance(review, dict):
        raise MalformedRequest("body is not a JSON object")
    if review.get("apiVersion") != API_VERSION or review.get("kind") != "AdmissionReview":
        raise MalformedRequest(
            f"expected apiVersion {API_VERSION} kind AdmissionReview, got {_short(review.get('apiVersion'))} {_short(review.get('kind'))}"
        )
    request = review.get("request")
    if not isinstance(request, dict):
        raise MalformedRequest("request is missing or not an object")
    uid = _field(request, "uid", str)
    if not uid:
        raise MalformedRequest("request.uid is empty")
    kind = _field(request, "kind", dict)
    kind_name = kind.get("kind")
    if not isinstance(kind_name, str) or not kind_name:
        raise MalformedRequest("request.kind.kind is missing")
    operation = _field(request, "operation", str)
    if operation not in OPERATIONS:
        raise MalformedRequest(f"request.operation {_short(operation)} is not one of {', '.join(OPERATIONS)}")
    namespace = _field(request, "namespace", str, required=False) or ""
    name = _field(request, "name", str, required=False) or ""
    needs_object = operation in ("CREATE", "UPDATE")
    obj = _field(request, "object", dict, required=needs_object) or {}
    old = _field(request, "oldObject", dict, required=operation == "UPDATE")
    dry_run = _field(request, "dryRun", bool, required=False) or False
    for key in ("metadata", "spec"):
        if obj.get(key) is not None and not isinstance(obj.get(key), dict):
            raise MalformedRequest(f"request.object.{key} must be an object")
    return Request(uid, kind_name, operation, namespace, name, obj, old, dry_run)


def encode(response: Response) -> bytes:
    return orjson.dumps(response.wire())


# --- deciding ---------------------------------------------------------------------------


def object_name(request: Request) -> str:
    metadata = as_dict(request.object.get("metadata"))
    return request.name or str(metadata.get("name") or metadata.get("generateName") or "")


def preview_warnings(review: Review, config: Config, subject: str) -> list[str]:
    """What pods will get, in lines short enough for kubectl's warning display, read off the final pod."""
    report = review.report
    if report is None:
        return []
    plan = report.plan
    lines = [f"gpu-shard: {subject} get {plan.gpus.describe()}: {report.flags()}{report.notes()}"]
    if plan.gpus.set_count:
        lines.append(f"gpu-shard: {subject} get {plan.gpus.resource} limit {plan.gpus.count} (from annotation)")
    terms = as_dict(as_dict(as_dict(review.pod.get("spec")).get("affinity")).get("nodeAffinity"))
    required = as_dict(terms.get("requiredDuringSchedulingIgnoredDuringExecution"))
    for term in as_list(required.get("nodeSelectorTerms"))[:1]:
        for expression in as_list(as_dict(term).get("matchExpressions")):
            expression = as_dict(expression)
            if expression.get("key") in (config.gpu_count_label, config.cuda_driver_label) and expression.get("operator") == "Gt":
                lines.append(
                    f"gpu-shard: {subject} only schedule on nodes with {expression['key']} > {as_list(expression.get('values'))[0]}"
                )
    return lines


def render_denial(kind: str, name: str, violations: Sequence[Violation]) -> str:
    shown = bounded(name, 100) if name else "(unnamed)"
    head = f"gpu-shard-webhook denied {bounded(kind, 100)} {shown}: {len(violations)} problem{'s' if len(violations) != 1 else ''}"
    return "\n".join([head, *(f"- {v.render()}" for v in violations)])


def mutate(request: Request, config: Config, cluster: Cluster = NO_CLUSTER) -> Decision:
    """The mutating webhook: Pods and LeaderWorkerSets; always allows (the validating webhook denies)."""
    if request.kind == multinode.KIND:
        return _mutate_group(request, config, cluster)
    if request.kind != "Pod":
        raise MalformedRequest(f"/mutate serves Pods and LeaderWorkerSets, not {_short(request.kind)}")
    if request.operation != "CREATE":
        return Decision(allowed(request.uid), "allowed")
    patch, report, planning = mutate_pod(as_pod(request.object, "Pod", request.namespace) or {}, config, cluster)
    if not patch:
        return Decision(allowed(request.uid, planning.warnings), "allowed", report=report, claim_lookup=planning.claim_lookup)
    warnings = [f"gpu-shard: {report.summary()}"] if report else []
    return Decision(
        patched(request.uid, patch, [*warnings, *planning.warnings]), "patched", report=report, claim_lookup=planning.claim_lookup
    )


def validate(request: Request, config: Config, cluster: Cluster = NO_CLUSTER) -> Decision:
    """The validating webhook: Pods and workload templates.

    Templates are judged as the pods they will produce (mutated in memory). On
    UPDATE only violations the update introduces count: refusing a label change
    on a running pod, or a scale-up of a Deployment admitted before this
    webhook existed, would break the controllers that manage them.
    """
    if request.kind != "Pod" and request.kind not in TEMPLATE_PATHS and request.kind != multinode.KIND:
        raise MalformedRequest(f"/validate serves Pods, workloads and LeaderWorkerSets, not {_short(request.kind)}")
    if request.operation not in ("CREATE", "UPDATE"):
        return Decision(allowed(request.uid), "allowed")
    if request.kind == multinode.KIND:
        return _validate_group(request, config, cluster)
    review = review_object(request.object, request.kind, config, request.namespace, cluster)
    if review is None:
        return Decision(allowed(request.uid), "allowed")
    found = review.violations
    if found and request.operation == "UPDATE" and request.old_object is not None:
        before = review_object(request.old_object, request.kind, config, request.namespace, cluster)
        seen = {(v.code, v.field) for v in (before.violations if before else ())}
        found = [v for v in found if (v.code, v.field) not in seen]
    lookup = review.planning.claim_lookup
    if found:
        message = render_denial(request.kind, object_name(request), found)
        return Decision(denied(request.uid, message, review.warnings), "denied", violations=tuple(found), claim_lookup=lookup)
    warnings = review.warnings
    if request.kind != "Pod":
        warnings = [*preview_warnings(review, config, "pods"), *warnings]
    return Decision(allowed(request.uid, warnings), "allowed", report=review.report, claim_lookup=lookup)


# --- LeaderWorkerSets: planned and mutated as one object (webhook.multinode) -----------


def _group_review(obj: dict[str, Any], request: Request, config: Config, cluster: Cluster) -> multinode.GroupReview | None:
    if not multinode.opted_in(obj, config):
        return None
    return multinode.review_group(obj, config, request.namespace, cluster)


def _mutate_group(request: Request, config: Config, cluster: Cluster) -> Decision:
    """CREATE and UPDATE: an apply that rewrites a template must get the plan again (idempotent)."""
    if request.operation not in ("CREATE", "UPDATE"):
        return Decision(allowed(request.uid), "allowed")
    review = _group_review(request.object, request, config, cluster)
    if review is None or not review.patch:
        return Decision(allowed(request.uid, review.warnings if review else ()), "allowed", group=review.report if review else None)
    lines = review.report.lines() if review.report else []
    return Decision(patched(request.uid, review.patch, [*lines, *review.warnings]), "patched", group=review.report)


def _validate_group(request: Request, config: Config, cluster: Cluster) -> Decision:
    review = _group_review(request.object, request, config, cluster)
    if review is None:
        return Decision(allowed(request.uid), "allowed")
    found = review.violations
    if found and request.operation == "UPDATE" and request.old_object is not None:
        before = _group_review(request.old_object, request, config, cluster)
        seen = {(v.code, v.field) for v in (before.violations if before else ())}
        found = [v for v in found if (v.code, v.field) not in seen]
    if found:
        message = render_denial(request.kind, object_name(request), found)
        return Decision(denied(request.uid, message, review.warnings), "denied", violations=tuple(found))
    lines = review.report.lines() if review.report else []
    return Decision(allowed(request.uid, [*lines, *review.warnings]), "allowed", group=review.report)
