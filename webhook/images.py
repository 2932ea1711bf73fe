"""What the official llama.cpp images are: which program they start, which GPUs they can drive.

The official images (``ghcr.io/ggml-org/llama.cpp``, formerly ``ghcr.io/ggerganov/llama.cpp``)
are tagged ``<flavour>[-<backend>][-b<build> | -v<version>]`` by llama.cpp's docker workflow
(``.github/workflows/docker.yml``; ``docs/docker.md`` lists them):

* flavour ``server`` starts ``/app/llama-server``, ``full`` starts ``/app/tools.sh``
  (``--server`` as its first argument runs llama-server), ``light`` starts ``/app/llama-cli``;
* no backend is the CPU build; ``cuda`` (= ``cuda12``), ``cuda13``, ``rocm``, ``vulkan``,
  ``intel`` (SYCL), ``musa``, ``openvino``; ``s390x`` is an alias of the CPU build.

Any other image (a fork, a mirror under another name, a home-made build) is not
guessed at: its entrypoint and backend are unknown, and no rule judges them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_REPOSITORIES = ("ghcr.io/ggml-org/llama.cpp", "ghcr.io/ggerganov/llama.cpp")
_TAG = re.compile(
    r"^(?P<flavour>server|full|light)(?:-(?P<backend>cuda12|cuda13|cuda|rocm|vulkan|intel|musa|openvino|s390x))?(?:-b\d+|-v\d+(?:\.\d+)*)?$"
)

ENTRYPOINTS = {"server": ("/app/llama-server",), "full": ("/app/tools.sh",), "light": ("/app/llama-cli",)}

# GPU vendors each backend drives. Vulkan runs on NVIDIA, AMD and Intel GPUs alike;
# OpenVINO's GPU plugin targets Intel GPUs.
BACKEND_VENDORS: dict[str, frozenset[str]] = {
    "cpu": frozenset(),
    "cuda": frozenset({"nvidia"}),
    "cuda13": frozenset({"nvidia"}),
    "rocm": frozenset({"amd"}),
    "vulkan": frozenset({"nvidia", "amd", "intel"}),
    "intel": frozenset({"intel"}),
    "musa": frozenset({"mthreads"}),
    "openvino": frozenset({"intel"}),
}

# The tag a person should use instead, per vendor (Vulkan is the other choice for all three).
SUGGESTED_BACKEND = {"nvidia": "cuda", "amd": "rocm", "intel": "intel", "mthreads": "musa"}


@dataclass(slots=True)  # a value, never mutated: slots because it is built per admission
class Image:
    """An official llama.cpp image's flavour and backend; ``None`` fields for any other image."""

    reference: str
    flavour: str | None = None
    backend: str | None = None

    @property
    def official(self) -> bool:
        return self.flavour is not None

    @property
    def entrypoint(self) -> tuple[str, ...] | None:
        return ENTRYPOINTS.get(self.flavour or "")

    @property
    def vendors(self) -> frozenset[str] | None:
        """The GPU vendors this build can use; None when the image is not an official one."""
        return BACKEND_VENDORS.get(self.backend or "") if self.official else None

    def suggestion(self, vendor: str) -> str:
        backend = SUGGESTED_BACKEND.get(vendor, "vulkan")
        return f"{self.flavour}-{backend}"


def read_image(reference: Any) -> Image:
    if not isinstance(reference, str):
        return Image("")
    name = reference.partition("@")[0]
    repository, colon, tag = name.rpartition(":")
    if not colon or "/" in tag:  # no tag: "latest", which llama.cpp does not publish
        return Image(reference)
    if repository not in _REPOSITORIES:
        return Image(reference)
    match = _TAG.match(tag)
    if match is None:
        return Image(reference)
    backend = match.group("backend") or "cpu"
    backend = {"cuda12": "cuda", "s390x": "cpu"}.get(backend, backend)
    return Image(reference, match.group("flavour"), backend)
