"""Reading Kubernetes objects that arrive as untrusted JSON.

An AdmissionReview carries whatever the API server was sent: a field may be
missing, null, or of the wrong type (the API server validates after mutating
webhooks run). Every reader in this package goes through these helpers, so a
malformed object degrades to "absent" instead of raising.
"""

from __future__ import annotations

from typing import Any


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def absent_or(value: Any, kind: type) -> bool:
    """A field the webhook may write: absent, or of its schema type (a malformed one is the API server's to refuse)."""
    return value is None or isinstance(value, kind)


def is_whole_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts '²' and other characters int() refuses."""
    return text.isascii() and text.isdigit()


def parse_quantity(value: Any) -> int | None:
    """A whole-number extended-resource quantity; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and is_whole_number(value.strip()):
        return int(value.strip())
    return None


def container_field(index: int, *path: str) -> str:
    return ".".join([f"spec.containers[{index}]", *path])


def labels_of(obj: Any) -> dict[str, Any]:
    return as_dict(as_dict(as_dict(obj).get("metadata")).get("labels"))


def annotations_of(obj: Any) -> dict[str, Any]:
    return as_dict(as_dict(as_dict(obj).get("metadata")).get("annotations"))
