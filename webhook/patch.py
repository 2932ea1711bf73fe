"""Turn "object before, object after" into an RFC 6902 JSON Patch.

Deciders edit a copy and never hand-craft patch paths (the controller-runtime
habit). The mutation copies only what it changes and shares every other
subtree with the original, so the diff skips shared subtrees by identity and
costs about the size of the change, not the size of the pod.
"""

from __future__ import annotations

from typing import Any

Operation = dict[str, Any]


def escape(token: str) -> str:
    """RFC 6901: '~' is '~0' and '/' is '~1' (so nvidia.com/gpu is nvidia.com~1gpu)."""
    return token.replace("~", "~0").replace("/", "~1")


def diff(before: Any, after: Any, path: str = "") -> list[Operation]:
    """Operations that turn ``before`` into ``after`` (both JSON values)."""
    operations: list[Operation] = []
    _diff(before, after, path, operations)
    return operations


def _diff(before: Any, after: Any, path: str, out: list[Operation]) -> None:
    if before is after:
        return
    if isinstance(before, dict) and isinstance(after, dict):
        for key in before:
            if key not in after:
                out.append({"op": "remove", "path": f"{path}/{escape(key)}"})
        missing = object()
        for key, value in after.items():
            old = before.get(key, missing)
            if old is value:
                continue  # a shared subtree: unchanged, and not walked
            child = f"{path}/{escape(key)}"
            if old is missing:
                out.append({"op": "add", "path": child, "value": value})
            else:
                _diff(old, value, child, out)
        return
    if isinstance(before, list) and isinstance(after, list):
        if len(before) == len(after):
            for index, (old, new) in enumerate(zip(before, after, strict=True)):
                if old is not new:
                    _diff(old, new, f"{path}/{index}", out)
            return
        common = len(before)
        if len(after) > common and all(before[i] is after[i] or _equal_json(before[i], after[i]) for i in range(common)):
            for index in range(common, len(after)):
                out.append({"op": "add", "path": f"{path}/{index}", "value": after[index]})
            return
        out.append({"op": "replace", "path": path, "value": after})
        return
    if not _equal_json(before, after):
        out.append({"op": "replace", "path": path, "value": after})


def _equal_json(a: Any, b: Any) -> bool:
    # 1 == True and 1 == 1.0 in Python, not in JSON: compare types too.
    if a is b:
        return True
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
