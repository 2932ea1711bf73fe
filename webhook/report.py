"""What the pod will run with, told truthfully: the status annotation, the summary, the warnings.

Every report is rendered from the reading of the *final* container (after the
mutation), never from what the plan meant to inject: a value the user set is
reported as theirs, a value the webhook added as the webhook's, a value the kubelet
fills in from a Secret or ConfigMap as unknown, and an option nobody set as
llama.cpp's default.

Telling the webhook's values from the user's needs the pod before the mutation:
what the final container sets and the original did not, the webhook added. When
the API server calls the webhook again (reinvocation, or ``/validate`` after
``/mutate``), the incoming pod already carries those values; the status annotation
it carries says which of them the webhook wrote, so the report comes out the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from webhook.llamacpp import FIT, GPU_LAYERS, INJECTED_SPELLING, MAX_TENSOR_SPLIT_VALUES, SPLIT_MODE, TENSOR_SPLIT
from webhook.plan import ShardingPlan
from webhook.reading import ContainerReading

Origin = Literal["webhook", "user", "unknown", "default"]

# Option key -> field of the status annotation.
REPORTED: tuple[tuple[str, str], ...] = ((GPU_LAYERS, "gpuLayers"), (SPLIT_MODE, "splitMode"), (TENSOR_SPLIT, "tensorSplit"), (FIT, "fit"))
DEFAULTS = {GPU_LAYERS: "auto"}  # what llama.cpp uses when nobody sets the option (null: not applicable)


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class Reported:
    key: str
    value: str | None  # the value the process gets; None for an unset option or a hidden value
    origin: Origin
    where: str  # the flag or variable that sets it; for a hidden value, where it comes from
    source: Literal["args", "env", ""] = ""

    def origin_text(self) -> str:
        return self.origin if self.origin == "default" else f"{self.origin}:{self.where}"

    def render(self) -> str | None:
        """As a person reads it on one line; None for an unset option."""
        if self.origin == "default":
            return None
        if self.origin == "unknown":
            return f"{self.where_flag()} unknown (from {self.where})"
        text = f"{self.where}={self.value}" if self.source == "env" else f"{self.where} {self.value}"
        return text + (" (yours)" if self.origin == "user" else "")

    def where_flag(self) -> str:
        return INJECTED_SPELLING.get(self.key, self.key)


def previous_origins(status: Any) -> dict[str, tuple[str, Any]]:
    """field -> (origin text, value) from a status annotation this webhook wrote before."""
    try:
        record = orjson.loads(status) if isinstance(status, str) else None
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(record, dict) or not isinstance(record.get("origin"), dict):
        return {}
    return {name: (str(text), record.get(name)) for name, text in record["origin"].items()}


# For a value the kubelet fills in per pod but whose template admission can state
# (``--rpc $(GPU_SHARD_POD_NAME)-1.…``): that text, else None (unknown).
Shown = Callable[[str, ContainerReading], str | None]


def reported_settings(
    before: ContainerReading,
    after: ContainerReading,
    previous_status: Any,
    keys: tuple[tuple[str, str], ...] = REPORTED,
    shown: Shown | None = None,
) -> list[Reported]:
    previous = previous_origins(previous_status)
    found = []
    for key, name in keys:
        setting = after.settings.effective(key)
        if setting is None:
            found.append(Reported(key, DEFAULTS.get(key), "default", ""))
            continue
        value = setting.value if setting.value is not None or shown is None else shown(key, after)
        if value is None:
            found.append(Reported(key, None, "unknown", setting.hidden_in or "valueFrom", setting.source))
            continue
        earlier = before.settings.effective(key)
        written = previous.get(name)
        ours = earlier is None or (
            written is not None and written[0] == f"webhook:{setting.spelling}" and written[1] == value and earlier == setting
        )
        found.append(Reported(key, value, "webhook" if ours else "user", setting.spelling, setting.source))
    return found


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class Report:
    """The container as it will run, for the status annotation, the summary line and warnings."""

    plan: ShardingPlan
    settings: tuple[Reported, ...]

    def get(self, key: str) -> Reported:
        return next(r for r in self.settings if r.key == key)

    @property
    def gpus(self) -> int | None:
        return self.plan.gpus.count

    def status(self) -> str:
        """The compact JSON record written to the status annotation."""
        gpus = self.plan.gpus
        record: dict[str, Any] = {
            "container": self.plan.container,
            "gpus": gpus.count,
            "resource": gpus.resource,
            "channel": self.plan.channel,
        }
        origins = {}
        for reported, (_, name) in zip(self.settings, REPORTED, strict=True):
            if reported.key == FIT and reported.origin == "default":
                continue
            record[name] = "unknown" if reported.origin == "unknown" else reported.value
            origins[name] = reported.origin_text()
        record["origin"] = origins
        if gpus.source == "claim":
            record["gpuSource"] = gpus.describe()
        if self.plan.router:
            record["router"] = True
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS).decode()

    def flags(self) -> str:
        """The settings as the process gets them: flags or LLAMA_ARG_* assignments, each saying whose it is."""
        rendered = [text for text in (r.render() for r in self.settings) if text]
        return " ".join(rendered) or "no flags"

    def notes(self) -> str:
        plan, text = self.plan, ""
        gpus = plan.gpus.count
        if gpus is not None and gpus > MAX_TENSOR_SPLIT_VALUES and self.get(TENSOR_SPLIT).origin == "default":
            text += f" (over {MAX_TENSOR_SPLIT_VALUES} GPUs: split left to llama.cpp)"
        if self.get(GPU_LAYERS).origin == "default":
            text += " (layers: llama.cpp --fit decides)"
        if not plan.argv_understood:
            text += " (its command is not llama-server itself: it must pass LLAMA_ARG_* through)"
        if plan.router:
            text += " (router mode: a model's preset overrides these)"
        return text

    def summary(self) -> str:
        """One line for a person: what llama.cpp will be started with."""
        return f"container {self.plan.container} gets {self.plan.gpus.describe()}: {self.flags()}{self.notes()}"


def build_report(
    plan: ShardingPlan, before: ContainerReading, after: ContainerReading, annotations: Mapping[str, Any], status_key: str
) -> Report:
    return Report(plan, tuple(reported_settings(before, after, annotations.get(status_key))))
