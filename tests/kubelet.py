"""An independent oracle of what a container's process receives, for checking the webhook's reports.

Written separately from :mod:`webhook.expansion` and :mod:`webhook.launch` on purpose:
it follows the kubelet (``envFrom`` then ``env`` in order, ``$(VAR)`` expanded with
what is defined so far, ``$$`` escaping; ``command`` or else the image entrypoint,
then ``args``) and llama-server's own precedence (the last repeated option wins, the
command line beats ``LLAMA_ARG_*``), so a report that disagrees with what would
really run is caught. ConfigMaps given to it stand in for the API server's.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from webhook.llamacpp import option_table

HIDDEN = object()  # a value the oracle cannot know either: a Secret, a ConfigMap it was not given
ENTRYPOINTS = {"server": ["/app/llama-server"], "full": ["/app/tools.sh"], "light": ["/app/llama-cli"]}
_REFERENCE = re.compile(r"\$\$|\$\(([^)]*)\)")


def official_flavour(image: str) -> str | None:
    name = image.split("@")[0]
    repository, _, tag = name.rpartition(":")
    if repository not in ("ghcr.io/ggml-org/llama.cpp", "ghcr.io/ggerganov/llama.cpp"):
        return None
    flavour = tag.split("-")[0]
    return flavour if flavour in ENTRYPOINTS else None


def kubelet_expand(text: str, env: dict[str, Any]) -> Any:
    hidden = False

    def replace(match: re.Match[str]) -> str:
        nonlocal hidden
        if match.group(0) == "$$":
            return "$"
        value = env.get(match.group(1))
        if value is HIDDEN:
            hidden = True
            return ""
        return match.group(0) if value is None else str(value)

    expanded = _REFERENCE.sub(replace, text)
    return HIDDEN if hidden else expanded


def environment(
    container: dict[str, Any], config_maps: dict[str, dict[str, str]] | None = None, fields: dict[str, str] | None = None
) -> tuple[dict[str, Any], bool]:
    """(name -> value or HIDDEN, whether an envFrom source the oracle cannot read may define more).

    ``fields``: the downward API's values for this pod (``metadata.name`` -> ``llama-70b-0``), as the kubelet fills them in.
    """
    env: dict[str, Any] = {}
    opaque_sources = False
    for source in container.get("envFrom") or []:
        name = (source.get("configMapRef") or {}).get("name")
        if config_maps is not None and name in config_maps:
            prefix = source.get("prefix", "")
            env.update({prefix + k: v for k, v in config_maps[name].items()})
        else:
            opaque_sources = True
    for variable in container.get("env") or []:
        if "valueFrom" in variable:
            path = (variable["valueFrom"].get("fieldRef") or {}).get("fieldPath")
            env[variable["name"]] = (fields or {}).get(path, HIDDEN)
        else:
            value = kubelet_expand(str(variable.get("value", "")), env)
            env[variable["name"]] = value
    return env, opaque_sources


@dataclass
class Process:
    argv: list[Any]  # strings, or HIDDEN for tokens the oracle cannot know
    env: dict[str, Any]
    server_options: list[Any] | None  # what llama-server parses, when the argv runs it visibly


def process(
    container: dict[str, Any], config_maps: dict[str, dict[str, str]] | None = None, fields: dict[str, str] | None = None
) -> Process:
    env, opaque_sources = environment(container, config_maps, fields)
    lookup = dict(env)
    if opaque_sources:
        # A name defined by an unreadable envFrom source hides the token that uses it.
        lookup = _HiddenDefault(env)
    command = [kubelet_expand(t, lookup) for t in container.get("command") or []]
    args = [kubelet_expand(t, lookup) for t in container.get("args") or []]
    flavour = official_flavour(str(container.get("image") or ""))
    argv = command + args if command else (ENTRYPOINTS[flavour] + args if flavour else args)
    return Process(argv, env, _server_options(argv, env))


class _HiddenDefault(dict):  # type: ignore[type-arg]
    def get(self, key: Any, default: Any = None) -> Any:
        return super().get(key, HIDDEN)


def _server_options(argv: list[Any], env: dict[str, Any]) -> list[Any] | None:
    words = list(argv)
    script = _shell_script(words)
    if script is not None:
        try:
            words = shlex.split(script.replace("\\\n", " "), comments=True)
        except ValueError:
            return None
        words = [_shell_word(w, env) for w in words]
        for separator in ("&&", "||", ";", "|"):
            words = words[: words.index(separator)] if separator in words else words
    for position, word in enumerate(words):
        if not isinstance(word, str):
            continue
        name = word.rsplit("/", 1)[-1]
        if name == "llama-server":
            return words[position + 1 :]
        if name == "tools.sh" and position + 1 < len(words) and words[position + 1] in ("--server", "-s"):
            return words[position + 2 :]
        if name == "llama" and position + 1 < len(words) and words[position + 1] == "serve":
            return words[position + 2 :]
    return None


def _shell_script(argv: list[Any]) -> str | None:
    if not argv or not isinstance(argv[0], str) or argv[0].rsplit("/", 1)[-1] not in ("sh", "bash", "ash", "dash"):
        return None
    position = 1
    while position < len(argv) and isinstance(argv[position], str) and argv[position].startswith("-"):
        position += 1
    flags = "".join(str(t) for t in argv[1:position])
    if "c" not in flags or position >= len(argv) or not isinstance(argv[position], str):
        return None
    return argv[position]


def _shell_word(word: str, env: dict[str, Any]) -> Any:
    if "$" not in word:
        return word
    names = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", word)
    if re.search(r"\$\{[A-Za-z_][A-Za-z0-9_]*[:#%/-]", word) or any(n not in env or env[n] is HIDDEN for n in names):
        return HIDDEN
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: str(env[m.group(1)]), word)


def setting(proc: Process, key: str) -> Any:
    """What llama-server ends up with for option ``key``: a string, HIDDEN, or None when nobody sets it."""
    table = option_table()
    value: Any = None
    options = proc.server_options or []
    index = 0
    while index < len(options):
        token = options[index]
        index += 1
        if not isinstance(token, str):
            continue
        spec = table.lookup(token)
        if spec is None:
            continue
        taken = options[index : index + spec.n_values]
        index += spec.n_values
        if spec.key == key and len(taken) == spec.n_values:
            value = taken[0] if taken else ""
    if value is not None:
        return value
    spec = table.by_key(key)
    if spec.env and spec.env in proc.env:
        return proc.env[spec.env]
    return None
