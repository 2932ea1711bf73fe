"""What a container's process really receives: its environment and ``$(VAR)``-expanded argv.

The kubelet builds a container's environment from ``envFrom`` first, then ``env`` in
order, expanding ``$(NAME)`` inside each ``env`` value with the variables defined
before it; then it expands ``$(NAME)`` in ``command`` and ``args`` with the result
(``k8s.io/kubernetes/third_party/forked/golang/expansion``). ``$$`` is an escaped
``$``, and a reference to an undefined variable stays in the string literally.

At admission only literal ``value``\\ s are visible. A variable from ``valueFrom``
(a Secret, a ConfigMap key, the downward API) or possibly from an ``envFrom`` source
is *opaque*: a token that depends on one is an :class:`Opaque` string that carries
where its value comes from, and no rule ever judges its content.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from webhook.objects import as_dict, as_list


class Opaque(str):
    """A token (or value) whose content the kubelet fills in from something admission cannot see.

    The string itself is the text as written (``$(N_GPU_LAYERS)``), for messages;
    ``source`` says where the real value comes from (``configMap/llama-config``).
    """

    source: str

    def __new__(cls, text: str, source: str) -> Opaque:
        token = super().__new__(cls, text)
        token.source = source
        return token


def is_opaque(value: object) -> bool:
    return isinstance(value, Opaque)


def _value_source(variable: Mapping[str, Any]) -> str:
    reference = as_dict(variable.get("valueFrom"))
    for kind, label in (("configMapKeyRef", "configMap"), ("secretKeyRef", "secret")):
        ref = as_dict(reference.get(kind))
        if ref:
            return f"{label}/{ref.get('name', '?')}"
    if "fieldRef" in reference:
        return f"fieldRef {as_dict(reference.get('fieldRef')).get('fieldPath', '?')}"
    if "resourceFieldRef" in reference:
        return f"resourceFieldRef {as_dict(reference.get('resourceFieldRef')).get('resource', '?')}"
    return "valueFrom"


def _env_from_sources(env_from: Any) -> tuple[str, ...]:
    sources = []
    for source in as_list(env_from):
        source = as_dict(source)
        for kind, label in (("configMapRef", "configMap"), ("secretRef", "secret")):
            ref = as_dict(source.get(kind))
            if ref:
                sources.append(f"{label}/{ref.get('name', '?')}")
    return tuple(sources)


class Environment:
    """A container's environment as far as admission can see it, read when first asked.

    ``values`` maps each name defined in ``env`` to its literal value (already
    expanded) or an :class:`Opaque`; ``env_from`` names the ``envFrom`` sources, any
    of which may define a name that ``env`` does not. Most containers of a pod never
    need theirs (no ``$(VAR)``, not the llama.cpp one), so nothing is read until then.
    """

    __slots__ = ("_container", "_values", "env_from")

    def __init__(self, container: Mapping[str, Any] | None = None, values: Mapping[str, str] | None = None) -> None:
        self._container = container or {}
        self._values = values
        self.env_from = _env_from_sources(self._container.get("envFrom"))

    @property
    def values(self) -> Mapping[str, str]:
        if self._values is None:
            self._values = {}
            self._read(self._values)
        return self._values

    def _read(self, values: dict[str, str]) -> None:
        for variable in as_list(self._container.get("env")):
            variable = as_dict(variable)
            name = variable.get("name")
            if not isinstance(name, str) or not name:
                continue
            if variable.get("valueFrom") is not None:
                values[name] = Opaque(f"$({name})", _value_source(variable))
                continue
            raw = variable.get("value")
            # Expanded with what is defined so far: ``values`` is filled in order.
            values[name] = expand("" if raw is None else str(raw), self)

    def lookup(self, name: str) -> str | None:
        """The value of ``name``; an Opaque when it is not visible; None when nothing defines it."""
        values = self._values if self._values is not None else self.values
        if name in values:
            return values[name]
        if self.env_from:
            return Opaque(f"$({name})", ", ".join(self.env_from))
        return None

    def literal(self, name: str) -> str | None:
        """The value of ``name`` when it is set in ``env`` and visible, else None."""
        value = self.values.get(name)
        return None if value is None or is_opaque(value) else value

    def names(self) -> Iterable[str]:
        return self.values.keys()


def read_environment(container: Mapping[str, Any]) -> Environment:
    return Environment(container)


def expand(text: str, environment: Environment) -> str:
    """The kubelet's ``$(NAME)`` expansion of one string; an Opaque when any reference is."""
    if "$" not in text:
        return text
    out: list[str] = []
    sources: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            advance = 1
            if following == "$":
                out.append("$")
            elif following == "(":
                close = text.find(")", cursor + 2)
                if close < 0:
                    out.append("$(")
                else:
                    name = text[cursor + 2 : close]
                    value = environment.lookup(name)
                    if value is None:
                        out.append(f"$({name})")
                    else:
                        out.append(value)
                        if is_opaque(value):
                            sources.append(value.source)
                    advance = close - cursor
            else:
                out.append("$" + following)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    result = "".join(out) + text[checkpoint:]
    return Opaque(text, ", ".join(dict.fromkeys(sources))) if sources else result


def expand_all(tokens: Iterable[Any], environment: Environment) -> list[str] | None:
    """``expand`` over a command or args list; None when it is not a list of strings."""
    expanded = []
    for token in tokens:
        if not isinstance(token, str):
            return None
        expanded.append(expand(token, environment) if "$" in token else token)
    return expanded


_SHELL_REFERENCE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<rest>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


def expand_shell_word(word: str, environment: Environment) -> str:
    """A shell word with ``$NAME`` / ``${NAME}`` filled in from the container's environment.

    Best effort, and honest about it: a name the container's ``env`` does not set may be
    set by the script itself or the image, so such a word is opaque, as is any word
    with a command substitution or an operator inside ``${...}``.
    """
    if "$" not in word:
        return word
    unknown: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("plain")
        value = environment.values.get(name)
        if isinstance(value, Opaque):
            unknown.append(value.source)
        elif value is None or match.group("rest"):
            unknown.append("the script or the image")
        else:
            return value
        return match.group(0)

    text = _SHELL_REFERENCE.sub(substitute, word)
    if unknown or "$(" in text or "`" in text:
        return Opaque(word, ", ".join(dict.fromkeys(unknown)) or "the script")
    return text
