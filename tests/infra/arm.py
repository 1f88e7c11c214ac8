"""A small evaluator for the ARM template expressions infra/azuredeploy.json uses.

Enough of the language (literals, function calls, `.property`, `[index]`) to compute what the
deployment would set, from given parameters, without Azure: app settings, resource names and
conditions. Values only the deployment knows (`reference`, `listKeys`) evaluate to `RUNTIME`.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["RUNTIME", "Template"]

_TOKEN = re.compile(r"\s*(?:('(?:[^']|'')*')|(-?\d+)|([A-Za-z_][A-Za-z0-9_]*)|(\S))")


class _Runtime(str):
    """A value only a real deployment knows; any property or index of it is one too."""

    __slots__ = ()


RUNTIME = _Runtime("<runtime>")


class Template:
    """An ARM template with parameter values, evaluated the way ARM would."""

    def __init__(
        self, template: Mapping[str, Any], parameters: Mapping[str, Any], *, rg_id: str
    ) -> None:
        self.template = template
        self.rg_id = rg_id
        self.params = {
            name: parameters[name] if name in parameters else self._default(spec)
            for name, spec in template["parameters"].items()
        }
        self._copy_index: int | None = None

    def _default(self, spec: Mapping[str, Any]) -> Any:
        if "defaultValue" not in spec:
            return None
        return self.value(spec["defaultValue"])

    def variable(self, name: str) -> Any:
        """A variable, evaluated (nested objects and arrays included)."""
        return self.value(self.template["variables"][name])

    def value(self, raw: Any, *, copy_index: int | None = None) -> Any:
        """Evaluate a template value: strings in [brackets] are expressions."""
        if copy_index is not None:
            self._copy_index = copy_index
        if isinstance(raw, dict):
            return {k: self.value(v) for k, v in raw.items()}
        if isinstance(raw, list):
            return [self.value(v) for v in raw]
        if isinstance(raw, str) and raw.startswith("[") and not raw.startswith("[["):
            return self.expression(raw[1:-1])
        return raw

    def expression(self, text: str) -> Any:
        """Evaluate one expression (the text between the brackets)."""
        tokens = [t for t in _TOKEN.findall(text) if any(t)]
        pos, result = self._parse(tokens, 0)
        if pos != len(tokens):
            raise ValueError(f"trailing tokens in {text!r}")
        return result

    def _parse(self, tokens: list[tuple[str, ...]], pos: int) -> tuple[int, Any]:
        string, number, name, punct = tokens[pos]
        pos += 1
        if string:
            value: Any = string[1:-1].replace("''", "'")
        elif number:
            value = int(number)
        elif name:
            if name in ("true", "false"):
                value = name == "true"
            else:
                if tokens[pos][3] != "(":
                    raise ValueError(f"{name} is not a call")
                args: list[Any] = []
                pos += 1
                while tokens[pos][3] != ")":
                    pos, arg = self._parse(tokens, pos)
                    args.append(arg)
                    if tokens[pos][3] == ",":
                        pos += 1
                pos += 1
                value = self._call(name, args)
        else:
            raise ValueError(f"unexpected {punct!r}")
        while pos < len(tokens) and tokens[pos][3] in (".", "["):
            if tokens[pos][3] == ".":
                prop = tokens[pos + 1][2]
                value = RUNTIME if isinstance(value, _Runtime) else value[prop]
                pos += 2
            else:
                pos, index = self._parse(tokens, pos + 1)
                value = value if isinstance(value, _Runtime) else value[index]
                pos += 1
        return pos, value

    def _call(self, name: str, args: list[Any]) -> Any:
        functions: dict[str, Callable[..., Any]] = {
            "parameters": lambda n: self.params[n],
            "variables": self.variable,
            "format": lambda f, *a: re.sub(r"\{(\d+)\}", lambda m: str(a[int(m.group(1))]), f),
            "if": lambda c, a, b: a if c else b,
            "empty": lambda v: not v,
            "not": lambda v: not v,
            "or": lambda *v: any(v),
            "equals": lambda a, b: a == b,
            "take": lambda v, n: v[:n],
            "toLower": str.lower,
            "length": len,
            "copyIndex": lambda: self._copy_index,
            "null": lambda: None,
            "createObject": lambda *kv: dict(zip(kv[::2], kv[1::2], strict=True)),
            "createArray": lambda *v: list(v),
            "union": _union,
            # 13 lowercase letters and digits, as ARM's uniqueString returns.
            "uniqueString": lambda *v: _unique(*v),
            "guid": lambda *v: str(uuid.uuid5(uuid.NAMESPACE_URL, "|".join(map(str, v)))),
            "resourceGroup": lambda: {"id": self.rg_id, "location": "westeurope"},
            "subscription": lambda: {"tenantId": RUNTIME},
            "environment": lambda: {"suffixes": {"storage": "core.windows.net"}},
            "resourceId": lambda t, *n: f"{self.rg_id}/providers/{t}/{'/'.join(n)}",
            "subscriptionResourceId": lambda t, *n: f"/providers/{t}/{'/'.join(n)}",
            "extensionResourceId": lambda s, t, *n: f"{s}/providers/{t}/{'/'.join(n)}",
            "reference": lambda *a: RUNTIME,
            "listKeys": lambda *a: RUNTIME,
        }
        return functions[name](*args)


def _union(*objects: Any) -> Any:
    merged: dict[str, Any] = {}
    for obj in objects:
        merged.update(obj)
    return merged


def _unique(*values: Any) -> str:
    digest = hashlib.sha256("|".join(map(str, values)).encode()).digest()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(alphabet[b % 36] for b in digest[:13])
