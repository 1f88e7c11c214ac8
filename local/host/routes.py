r"""Route templates as the Functions host reads them: ASP.NET Core templates compiled to regexes.

The host (v2 and later) maps every HTTP trigger through ASP.NET Core routing: the template is
`<routePrefix>/<route>`, parsed by ASP.NET Core's template parser, with inline constraints such
as `{id:int}`, and the binding's `methods` added as one more route constraint. This module keeps
the parts of that behaviour an app can observe:

- literal segments match case-insensitively; a trailing `/` in the request path is ignored;
- `{name}`, optional `{name?}`, default `{name=value}`, catch-all `{*name}` / `{**name}`,
  complex segments such as `{file}.{ext?}`, and `{{` / `}}` as escaped braces;
- constraints `int`, `long`, `bool`, `alpha`, `guid`, `decimal`, `double`, `float`,
  `datetime`, `min()`, `max()`, `range()`, `length()`, `minlength()`, `maxlength()`,
  `required` and `regex()`, chained as `{id:int:min(1)}`. A `regex()` is *not* anchored: ASP.NET
  Core calls `Regex.IsMatch`, case-insensitively, so `regex(\d{{3}})` accepts `a1234`; write
  `^...$` to match the whole value, as the ASP.NET Core docs advise;
- precedence: routes are tried in the host's order (literal before parameter segment by
  segment, more constraints first, longer templates first), and the first route whose template,
  constraints and method all match wins.

Example:
    >>> route = compile_route("products/{category:alpha}/{id:int?}", prefix="api")
    >>> route.match("/API/products/tools/42")
    {'category': 'tools', 'id': '42'}
    >>> route.match("/api/products/tools") == {"category": "tools"}
    True
    >>> route.match("/api/products/42") is None
    True
"""

from __future__ import annotations

import functools
import itertools
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar
from urllib.parse import unquote

__all__ = [
    "Literal",
    "Parameter",
    "RouteTemplate",
    "RouteTemplateError",
    "compile_route",
    "sort_routes",
]

Predicate = Callable[[str], bool]
T = TypeVar("T")

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_INTEGER = re.compile(r"[+-]?\d+")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_GUID = re.compile(
    r"(?:[0-9a-f]{32}"
    r"|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
    r"|\{[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\}"
    r"|\([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\))",
    re.IGNORECASE,
)


class RouteTemplateError(ValueError):
    """A route template the host would refuse; the message names the template and the fault."""


@dataclass(frozen=True, slots=True)
class Literal:
    """Literal text in a segment, matched case-insensitively."""

    text: str


@dataclass(frozen=True, slots=True)
class Parameter:
    """A `{...}` part: its name, constraints (source text) and kind."""

    name: str
    constraints: tuple[str, ...] = ()
    optional: bool = False
    catch_all: bool = False
    default: str | None = None
    checks: tuple[Predicate, ...] = field(default=(), compare=False, repr=False)

    @property
    def omittable(self) -> bool:
        """Whether the request may leave this parameter out."""
        return self.optional or self.catch_all or self.default is not None

    def accepts(self, value: str) -> bool:
        """Whether `value` passes every constraint."""
        return all(check(value) for check in self.checks)


Part = Literal | Parameter
Segment = tuple[Part, ...]


@dataclass(frozen=True)
class RouteTemplate:
    """A compiled route template: `match()` a request path, read `template` to show it."""

    template: str
    segments: tuple[Segment, ...]
    _regex: re.Pattern[str] = field(repr=False, compare=False)
    _groups: tuple[tuple[str, Parameter], ...] = field(repr=False, compare=False)

    @property
    def parameters(self) -> tuple[Parameter, ...]:
        """Every parameter, in template order."""
        return tuple(p for _, p in self._groups)

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for a request path (still percent-encoded), or None when it does not match.

        Optional parameters the request left out are absent from the result; a parameter with a
        default gets its default. A value that fails its constraints makes the route not match,
        so a less specific route can still take the request, as in ASP.NET Core.
        """
        found = self._regex.fullmatch(_normalise_path(path))
        if found is None:
            return None
        values: dict[str, str] = {}
        for group, param in self._groups:
            value = found.group(group)
            if value is None or (value == "" and param.catch_all):
                if param.default is None:
                    continue
                value = param.default
            if not param.accepts(value):
                return None
            values[param.name] = value
        return values


def compile_route(route: str, *, prefix: str = "") -> RouteTemplate:
    """Compile a function's route under the host's route prefix, as the host builds it.

    Args:
        route: The binding's `route` (or, when it has none, the function's name).
        prefix: `extensions.http.routePrefix` from host.json; empty for no prefix.

    Raises:
        RouteTemplateError: For a template ASP.NET Core would reject, or an unknown constraint.
    """
    template = f"{prefix}/{route}" if prefix else route
    # ASP.NET Core trims one leading "~/" or "/" from the whole template.
    if template.startswith("~/"):
        template = template[2:]
    elif template.startswith("/"):
        template = template[1:]
    segments = _parse(template) if template else ()
    regex, groups = _to_regex(template, segments)
    return RouteTemplate(template, segments, regex, groups)


def sort_routes(items: Iterable[T], route_of: Callable[[T], RouteTemplate]) -> list[T]:
    """Order items by their route the way the host orders function routes before matching.

    The host's comparison, segment by segment on each segment's first part: a literal comes
    before a parameter; of two parameters, the one with more constraints comes first; literals
    compare alphabetically, ignoring case; when one template is a prefix of the other, the
    longer comes first. Ties keep the input order (the host's sort leaves them unspecified).
    """

    def compare(x: T, y: T) -> int:
        return _compare(route_of(x).segments, route_of(y).segments)

    return sorted(items, key=functools.cmp_to_key(compare))


def _compare(xs: Sequence[Segment], ys: Sequence[Segment]) -> int:
    for i, x_segment in enumerate(xs):
        if i >= len(ys):
            return -1
        x, y = x_segment[0], ys[i][0]
        if isinstance(x, Literal) and isinstance(y, Parameter):
            return -1
        if isinstance(x, Parameter) and isinstance(y, Literal):
            return 1
        if isinstance(x, Parameter) and isinstance(y, Parameter):
            if len(x.constraints) != len(y.constraints):
                return -1 if len(x.constraints) > len(y.constraints) else 1
        elif isinstance(x, Literal) and isinstance(y, Literal):
            a, b = x.text.lower(), y.text.lower()
            if a != b:
                return -1 if a < b else 1
    return 1 if len(ys) > len(xs) else 0


def _normalise_path(path: str) -> str:
    """`/a/b%20c/` -> `/a/b c`: decoded per segment, `%2F` kept encoded, no trailing slash."""
    path = path.rstrip("/")
    if not path:
        return ""
    if not path.startswith("/"):
        path = "/" + path
    return "/".join(unquote(re.sub("%2[fF]", "%252F", s)) for s in path.split("/"))


# --- parsing ---------------------------------------------------------------------------------


def _parse(template: str) -> tuple[Segment, ...]:
    segments = []
    names: set[str] = set()
    raw_segments = _split_segments(template)
    for index, raw in enumerate(raw_segments):
        if raw == "":
            raise RouteTemplateError(f"route '{template}': consecutive '/' separators")
        parts = _parse_segment(template, raw, names)
        for position, part in enumerate(parts):
            if not isinstance(part, Parameter):
                continue
            last_segment = index == len(raw_segments) - 1
            if part.catch_all and (len(parts) > 1 or not last_segment):
                raise RouteTemplateError(
                    f"route '{template}': a catch-all parameter must be the whole last segment"
                )
            after_period = position == len(parts) - 1 and parts[position - 1] == Literal(".")
            if part.optional and len(parts) > 1 and not after_period:
                raise RouteTemplateError(
                    f"route '{template}': in a segment with several parts, only a last "
                    "parameter preceded by '.' can be optional"
                )
        for a, b in itertools.pairwise(parts):
            if isinstance(a, Parameter) and isinstance(b, Parameter):
                raise RouteTemplateError(f"route '{template}': two parameters side by side")
        segments.append(parts)
    return tuple(segments)


def _split_segments(template: str) -> list[str]:
    """Split on `/` outside `{...}`: a regex constraint may hold a `/`."""
    out, depth, start, i = [], 0, 0, 0
    while i < len(template):
        ch = template[i]
        if ch in "{}" and template[i : i + 2] == ch * 2:
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(depth - 1, 0)
        elif ch == "/" and depth == 0:
            out.append(template[start:i])
            start = i + 1
        i += 1
    out.append(template[start:])
    return out


def _parse_segment(template: str, raw: str, names: set[str]) -> Segment:
    parts: list[Part] = []
    literal: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch in "{}" and raw[i : i + 2] == ch * 2:
            literal.append(ch)
            i += 2
            continue
        if ch == "}":
            raise RouteTemplateError(f"route '{template}': unbalanced '}}'")
        if ch != "{":
            literal.append(ch)
            i += 1
            continue
        if literal:
            parts.append(Literal("".join(literal)))
            literal = []
        end = _parameter_end(template, raw, i)
        inside = raw[i + 1 : end].replace("}}", "}").replace("{{", "{")
        param = _parse_parameter(template, inside)
        if param.name.lower() in names:
            raise RouteTemplateError(f"route '{template}': parameter '{param.name}' repeated")
        names.add(param.name.lower())
        parts.append(param)
        i = end + 1
    if literal:
        parts.append(Literal("".join(literal)))
    return tuple(parts)


def _parameter_end(template: str, raw: str, start: int) -> int:
    """Index of the `}` closing the parameter opened at `start`; `{{`/`}}` inside are escapes."""
    i = start + 1
    while i < len(raw):
        if raw[i] == "{":
            if raw[i : i + 2] != "{{":
                raise RouteTemplateError(f"route '{template}': unescaped '{{' in a parameter")
            i += 2
            continue
        if raw[i] == "}":
            if raw[i : i + 2] == "}}":
                i += 2
                continue
            return i
        i += 1
    raise RouteTemplateError(f"route '{template}': '{{' without its '}}'")


def _parse_parameter(template: str, text: str) -> Parameter:
    """Parse `name[:constraint[(args)]]*[=default][?]` like ASP.NET Core's parameter parser."""
    catch_all = False
    if text.startswith("**"):
        text, catch_all = text[2:], True
    elif text.startswith("*"):
        text, catch_all = text[1:], True
    optional = text.endswith("?")
    if optional:
        text = text[:-1]
    if catch_all and optional:
        raise RouteTemplateError(f"route '{template}': a catch-all parameter cannot be optional")
    cut = next((k for k, ch in enumerate(text) if ch in ":=" and k > 0), len(text))
    name, rest = text[:cut], text[cut:]
    if not name or any(ch in "/{}?*" for ch in name):
        raise RouteTemplateError(f"route '{template}': invalid parameter name '{name}'")
    constraints, default = _split_constraints(rest)
    if optional and default is not None:
        raise RouteTemplateError(
            f"route '{template}': parameter '{name}' cannot be optional and have a default"
        )
    checks = tuple(_resolve(template, c) for c in constraints)
    return Parameter(name, constraints, optional, catch_all, default, checks)


def _split_constraints(text: str) -> tuple[tuple[str, ...], str | None]:
    """`:int:regex(^(a|b)$)=x` -> (("int", "regex(^(a|b)$)"), "x").

    Inside parentheses a `)` closes the argument only when it ends the text or is followed by
    `:` or `=`, so a regex may hold parentheses, `|` and `:`.
    """
    constraints: list[str] = []
    i = 0
    while i < len(text) and text[i] == ":":
        start = i + 1
        i = start
        while i < len(text) and text[i] not in ":=(":
            i += 1
        if i < len(text) and text[i] == "(":
            i += 1
            while i < len(text):
                if text[i] == ")" and (i + 1 == len(text) or text[i + 1] in ":="):
                    i += 1
                    break
                i += 1
        if text[start:i]:
            constraints.append(text[start:i])
    default = text[i + 1 :] if i < len(text) and text[i] == "=" else None
    return tuple(constraints), default


def _resolve(template: str, constraint: str) -> Predicate:
    name, _, args = constraint.partition("(")
    key = name.strip().lower()
    if args:
        if not args.endswith(")"):
            raise RouteTemplateError(f"route '{template}': constraint '{constraint}' not closed")
        args = args[:-1]
    try:
        factory = _CONSTRAINTS[key]
    except KeyError:
        raise RouteTemplateError(
            f"route '{template}': the constraint reference '{name}' could not be resolved"
        ) from None
    try:
        return factory(args)
    except (ValueError, re.error) as exc:
        raise RouteTemplateError(
            f"route '{template}': bad argument in constraint '{constraint}': {exc}"
        ) from exc


# --- constraints (ASP.NET Core's default constraint map) -------------------------------------


def _integer_in(bounds: tuple[int, int]) -> Predicate:
    return lambda v: bool(_INTEGER.fullmatch(v)) and bounds[0] <= int(v) <= bounds[1]


def _number(v: str) -> bool:
    return bool(_NUMBER.fullmatch(v.replace(",", "")))


def _datetime(v: str) -> bool:
    try:
        datetime.fromisoformat(v)
    except ValueError:
        return False
    return True


def _guid(v: str) -> bool:
    if not _GUID.fullmatch(v):
        return False
    uuid.UUID(v.strip("{}()"))
    return True


def _ints(args: str, count: int) -> list[int]:
    values = [int(a.strip()) for a in args.split(",")]
    if len(values) != count:
        raise ValueError(f"expected {count} integer argument(s), got {len(values)}")
    return values


def _length(args: str) -> Predicate:
    values = [int(a.strip()) for a in args.split(",")]
    if len(values) == 1:
        return lambda v: len(v) == values[0]
    if len(values) == 2:
        return lambda v: values[0] <= len(v) <= values[1]
    raise ValueError("length takes one or two integers")


def _regex(args: str) -> Predicate:
    pattern = re.compile(args, re.IGNORECASE)
    return lambda v: pattern.search(v) is not None


def _min(args: str) -> Predicate:
    (low,) = _ints(args, 1)
    return lambda v: _integer_in(_INT64)(v) and int(v) >= low


def _max(args: str) -> Predicate:
    (high,) = _ints(args, 1)
    return lambda v: _integer_in(_INT64)(v) and int(v) <= high


def _range(args: str) -> Predicate:
    low, high = _ints(args, 2)
    return lambda v: _integer_in(_INT64)(v) and low <= int(v) <= high


def _minlength(args: str) -> Predicate:
    (low,) = _ints(args, 1)
    return lambda v: len(v) >= low


def _maxlength(args: str) -> Predicate:
    (high,) = _ints(args, 1)
    return lambda v: len(v) <= high


_CONSTRAINTS: dict[str, Callable[[str], Predicate]] = {
    "int": lambda _: _integer_in(_INT32),
    "long": lambda _: _integer_in(_INT64),
    "bool": lambda _: lambda v: v.lower() in ("true", "false"),
    "alpha": lambda _: lambda v: re.fullmatch("[A-Za-z]*", v) is not None,
    "guid": lambda _: _guid,
    "decimal": lambda _: _number,
    "double": lambda _: _number,
    "float": lambda _: _number,
    "datetime": lambda _: _datetime,
    "required": lambda _: lambda v: v != "",
    "min": _min,
    "max": _max,
    "range": _range,
    "length": _length,
    "minlength": _minlength,
    "maxlength": _maxlength,
    "regex": _regex,
}


# --- regex generation ------------------------------------------------------------------------


def _to_regex(
    template: str, segments: Sequence[Segment]
) -> tuple[re.Pattern[str], tuple[tuple[str, Parameter], ...]]:
    """One regex for the whole normalised path (`/seg/seg`, no trailing slash).

    Trailing segments that are a single omittable parameter nest as optional groups, so
    `a/{b?}/{c?}` matches `/a`, `/a/x` and `/a/x/y` but never leaves `b` out while giving `c`.
    """
    groups: list[tuple[str, Parameter]] = []
    pieces = [_segment_regex(seg, groups) for seg in segments]
    tail, omittable = "", True
    for seg, piece in zip(reversed(segments), reversed(pieces), strict=True):
        single = len(seg) == 1 and isinstance(seg[0], Parameter) and seg[0].omittable
        if omittable and single:
            tail = f"(?:/{piece}{tail})?"
        else:
            tail = f"/{piece}{tail}"
            omittable = False
    try:
        return re.compile(tail, re.IGNORECASE | re.DOTALL), tuple(groups)
    except re.error as exc:  # pragma: no cover - pieces are escaped or fixed
        raise RouteTemplateError(f"route '{template}': {exc}") from exc


def _segment_regex(segment: Segment, groups: list[tuple[str, Parameter]]) -> str:
    """A segment's regex, its parameters' groups appended to `groups`.

    In a complex segment ASP.NET Core matches each literal at its last occurrence, so a
    parameter that follows a literal never contains that literal.
    """
    out = []
    previous: Literal | None = None
    for index, part in enumerate(segment):
        if isinstance(part, Literal):
            previous = part
            nxt = segment[index + 1] if index + 1 < len(segment) else None
            if isinstance(nxt, Parameter) and nxt.optional and len(segment) > 1:
                continue  # emitted with the optional parameter it separates
            out.append(re.escape(part.text))
            continue
        group = f"p{len(groups)}"
        groups.append((group, part))
        if part.catch_all:
            out.append(f"(?P<{group}>.*)")
        elif len(segment) == 1:
            out.append(f"(?P<{group}>[^/]+)")
        elif previous is None:
            out.append(f"(?P<{group}>[^/]+?)")
        else:
            body = f"(?P<{group}>(?:(?!{re.escape(previous.text)})[^/])+)"
            if part.optional:
                out.append(f"(?:{re.escape(previous.text)}{body})?")
            else:
                out.append(body)
    return "".join(out)
