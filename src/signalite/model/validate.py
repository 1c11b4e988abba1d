"""Generic request validation against a botocore service model.

Clients validate almost nothing (botocore checks only `required`, types and `min`; JS v3 nothing),
so the server enforces every constraint the model states: required members, JSON types, min/max
(lengths, values, list/map sizes), patterns and enums. Messages follow the wording AWS's Coral
services use ("1 validation error detected: Value 'x' at 'channelName' failed to satisfy
constraint: ...") so people recognise them; the error is always InvalidArgumentException.

Each shape's checks are compiled once into a small closure tree, so validating a request is a walk
over pre-built checkers rather than a re-interpretation of the model on every call. Each shape also
gets a second, leaner closure tree that only answers "is this valid?" (no member paths, no
violation list): the hot path runs that, and only a request it rejects is walked again by the
checkers to word the error. `operation_validator(op)` binds both for one operation, once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar, cast

import regex

from signalite.model.errors import InvalidArgumentException
from signalite.model.service import Operation, Shapes

# (path, value, constraint) triples; path like "singleMasterConfiguration.messageTtlSeconds".
Violation = tuple[str, Any, str]
Checker = Callable[[Any, str, list[Violation]], None]
# True when a value breaks none of its shape's constraints (exactly when a Checker reports nothing).
Predicate = Callable[[Any], bool]
Validator = Callable[[dict[str, Any]], None]

_MAX_REPORTED = 3


def validate_input(op: Operation, params: dict[str, Any]) -> None:
    """Raise InvalidArgumentException if `params` breaks any constraint of the operation's input."""
    operation_validator(op)(params)


def validate_input_generic(op: Operation, params: dict[str, Any]) -> None:
    """`validate_input` through the violation-collecting checkers alone (the reference the fast path must match)."""
    if op.input_shape is None:
        return
    _raise_violations(_checker(op.shapes, op.input_shape), params)


def _raise_violations(checker: Checker, params: dict[str, Any]) -> None:
    violations: list[Violation] = []
    checker(params, "", violations)
    if violations:
        raise InvalidArgumentException(_message(violations))


def _accept(params: dict[str, Any]) -> None:
    return None


_VALIDATORS: dict[tuple[int, str | None], Validator] = {}


def operation_validator(op: Operation) -> Validator:
    """The validator of one operation's input, built once and kept: call it per request."""
    key = (id(op.shapes), op.input_shape)
    found = _VALIDATORS.get(key)
    if found is not None:
        return found
    if op.input_shape is None:
        validator: Validator = _accept
    else:
        valid = _predicate(op.shapes, op.input_shape)
        checker = _checker(op.shapes, op.input_shape)

        def validator(params: dict[str, Any]) -> None:
            # The predicate settles the common case (a valid request) without building a member
            # path or a violation; the checkers then word the refusal exactly as before.
            if not valid(params):
                _raise_violations(checker, params)

    _VALIDATORS[key] = validator
    return validator


def _message(violations: list[Violation]) -> str:
    n = len(violations)
    parts = []
    for path, value, constraint in violations[:_MAX_REPORTED]:
        shown = "null" if value is None else f"'{_short(value)}'"
        parts.append(f"Value {shown} at '{path}' failed to satisfy constraint: {constraint}")
    noun = "error" if n == 1 else "errors"
    return f"{n} validation {noun} detected: " + "; ".join(parts)


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 64 else text[:61] + "..."


def _member_path(parent: str, member: str) -> str:
    # Coral names members in lower camel case in its messages: ChannelARN -> channelARN.
    name = member[:1].lower() + member[1:]
    return f"{parent}.{name}" if parent else name


_CACHE: dict[tuple[int, str], Checker] = {}


_F = TypeVar("_F", bound=Callable[..., Any])


def _memoized(cache: dict[tuple[int, str], _F], shapes: Shapes, shape_name: str, build: Callable[[], _F]) -> _F:
    """The function `build()` makes for a shape, made once per model and shape name."""
    key = (id(shapes), shape_name)
    found = cache.get(key)
    if found is None:
        # A trampoline stands in while the shape is built, so that recursive shapes terminate.
        slot: list[_F] = []
        cache[key] = cast(_F, lambda *args: slot[0](*args))
        found = build()
        slot.append(found)
        cache[key] = found
    return found


def _checker(shapes: Shapes, shape_name: str) -> Checker:
    return _memoized(_CACHE, shapes, shape_name, lambda: _build(shapes, shapes[shape_name]))


def _build(shapes: Shapes, shape: Any) -> Checker:
    kind = shape["type"]
    if kind == "structure":
        return _build_structure(shapes, shape)
    if kind == "string":
        return _build_string(shape)
    if kind in ("integer", "long"):
        return _build_number(shape, integral=True)
    if kind in ("float", "double"):
        return _build_number(shape, integral=False)
    if kind == "boolean":
        return _type_check(lambda v: isinstance(v, bool), "Member must be a boolean")
    if kind == "timestamp":
        return _type_check(
            lambda v: isinstance(v, (int, float, str)) and not isinstance(v, bool),
            "Member must be a timestamp",
        )
    if kind == "list":
        return _build_list(shapes, shape)
    if kind == "map":
        return _build_map(shapes, shape)
    if kind == "blob":
        return _type_check(lambda v: isinstance(v, str), "Member must be a base64 string")
    return lambda v, p, out: None  # pragma: no cover - shape types the models do not use


def _type_check(ok: Callable[[Any], bool], constraint: str) -> Checker:
    def check(value: Any, path: str, out: list[Violation]) -> None:
        if not ok(value):
            out.append((path, value, constraint))

    return check


def _build_structure(shapes: Shapes, shape: Any) -> Checker:
    required = tuple(shape.get("required", ()))
    member_shapes = {name: member["shape"] for name, member in shape["members"].items()}
    resolved: dict[str, Checker] = {}  # filled on first use: shapes may refer to themselves

    def check(value: Any, path: str, out: list[Violation]) -> None:
        if not isinstance(value, dict):
            out.append((path or "body", value, "Member must be a structure"))
            return
        for name in required:
            if value.get(name) is None:
                out.append((_member_path(path, name), None, "Member must not be null"))
        # Unknown members are ignored, as AWS's JSON services do: newer SDKs may send members an
        # older model lacks.
        for name, member_value in value.items():
            checker = resolved.get(name)
            if checker is None:
                member_shape = member_shapes.get(name)
                if member_shape is None:
                    continue
                checker = resolved[name] = _checker(shapes, member_shape)
            if member_value is not None:
                checker(member_value, _member_path(path, name), out)

    return check


def _build_string(shape: Any) -> Checker:
    lo = shape.get("min")
    hi = shape.get("max")
    enum = frozenset(shape["enum"]) if "enum" in shape else None
    pattern_text = shape.get("pattern")
    # `re` is faster; only the tag patterns need `regex` (for \p{L}-style classes).
    pattern: Any = None
    if pattern_text:
        pattern = regex.compile(pattern_text) if "\\p{" in pattern_text else re.compile(pattern_text)

    def check(value: Any, path: str, out: list[Violation]) -> None:
        if not isinstance(value, str):
            out.append((path, value, "Member must be a string"))
            return
        n = len(value)
        if lo is not None and n < lo:
            out.append((path, value, f"Member must have length greater than or equal to {lo}"))
        elif hi is not None and n > hi:
            out.append((path, value, f"Member must have length less than or equal to {hi}"))
        elif enum is not None and value not in enum:
            out.append((path, value, f"Member must satisfy enum value set: [{', '.join(sorted(enum))}]"))
        elif pattern is not None and pattern.fullmatch(value) is None:
            out.append((path, value, f"Member must satisfy regular expression pattern: {pattern_text}"))

    return check


def _build_number(shape: Any, *, integral: bool) -> Checker:
    lo = shape.get("min")
    hi = shape.get("max")

    def check(value: Any, path: str, out: list[Violation]) -> None:
        ok_type = isinstance(value, int) if integral else isinstance(value, (int, float))
        if not ok_type or isinstance(value, bool):
            out.append((path, value, "Member must be an integer" if integral else "Member must be a number"))
            return
        if lo is not None and value < lo:
            out.append((path, value, f"Member must have value greater than or equal to {lo}"))
        elif hi is not None and value > hi:
            out.append((path, value, f"Member must have value less than or equal to {hi}"))

    return check


def _build_list(shapes: Shapes, shape: Any) -> Checker:
    lo = shape.get("min")
    hi = shape.get("max")
    member_shape = shape["member"]["shape"]

    def check(value: Any, path: str, out: list[Violation]) -> None:
        if not isinstance(value, list):
            out.append((path, value, "Member must be a list"))
            return
        n = len(value)
        if lo is not None and n < lo:
            out.append((path, value, f"Member must have length greater than or equal to {lo}"))
        elif hi is not None and n > hi:
            out.append((path, value, f"Member must have length less than or equal to {hi}"))
        inner = _checker(shapes, member_shape)
        for i, item in enumerate(value, start=1):
            if item is None:
                out.append((f"{path}.{i}.member", None, "Member must not be null"))
            else:
                inner(item, f"{path}.{i}.member", out)

    return check


def _build_map(shapes: Shapes, shape: Any) -> Checker:
    lo = shape.get("min")
    hi = shape.get("max")
    key_shape = shape["key"]["shape"]
    value_shape = shape["value"]["shape"]

    def check(value: Any, path: str, out: list[Violation]) -> None:
        if not isinstance(value, dict):
            out.append((path, value, "Member must be a map"))
            return
        n = len(value)
        if lo is not None and n < lo:
            out.append((path, value, f"Member must have length greater than or equal to {lo}"))
        elif hi is not None and n > hi:
            out.append((path, value, f"Member must have length less than or equal to {hi}"))
        check_key = _checker(shapes, key_shape)
        check_value = _checker(shapes, value_shape)
        for k, v in value.items():
            check_key(k, f"{path}.key", out)
            if v is None:
                out.append((f"{path}.{k}", None, "Member must not be null"))
            else:
                check_value(v, f"{path}.{k}", out)

    return check


# -- predicates: the same constraints as the checkers above, answering only valid / not valid ------------


_PREDICATES: dict[tuple[int, str], Predicate] = {}


def _predicate(shapes: Shapes, shape_name: str) -> Predicate:
    return _memoized(_PREDICATES, shapes, shape_name, lambda: _build_predicate(shapes, shapes[shape_name]))


def _build_predicate(shapes: Shapes, shape: Any) -> Predicate:
    kind = shape["type"]
    if kind == "structure":
        return _structure_predicate(shapes, shape)
    if kind == "string":
        return _string_predicate(shape)
    if kind in ("integer", "long"):
        return _number_predicate(shape, integral=True)
    if kind in ("float", "double"):
        return _number_predicate(shape, integral=False)
    if kind == "boolean":
        return lambda v: isinstance(v, bool)
    if kind == "timestamp":
        return lambda v: isinstance(v, (int, float, str)) and not isinstance(v, bool)
    if kind == "list":
        return _list_predicate(shapes, shape)
    if kind == "map":
        return _map_predicate(shapes, shape)
    if kind == "blob":
        return lambda v: isinstance(v, str)
    return lambda v: True  # pragma: no cover - shape types the models do not use


def _structure_predicate(shapes: Shapes, shape: Any) -> Predicate:
    required = frozenset(shape.get("required", ()))
    # (member, predicate, required?) for every member the model lists. Recursive shapes resolve
    # through _predicate's trampoline.
    members = tuple(
        (name, _predicate(shapes, member["shape"]), name in required) for name, member in shape["members"].items()
    )
    # A required name the model does not list as a member still has to be present (the checker says so).
    unlisted = tuple(name for name in shape.get("required", ()) if name not in shape["members"])

    def valid(value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        # Walk the model's members, not the request's: unknown members are ignored anyway, and a
        # request cannot make this loop longer. A member set to null counts as absent.
        for name, ok, needed in members:
            member_value = value.get(name)
            if member_value is None:
                if needed:
                    return False
            elif not ok(member_value):
                return False
        for name in unlisted:  # noqa: SIM110 - a plain loop is faster than all() over a generator
            if value.get(name) is None:
                return False
        return True

    return valid


def _string_predicate(shape: Any) -> Predicate:
    lo = shape.get("min", 0)
    hi = shape.get("max")
    enum = frozenset(shape["enum"]) if "enum" in shape else None
    pattern_text = shape.get("pattern")
    match: Callable[[str], Any] | None = None
    if pattern_text:
        match = (regex.compile(pattern_text) if "\\p{" in pattern_text else re.compile(pattern_text)).fullmatch

    def valid(v: Any) -> bool:
        if not isinstance(v, str):
            return False
        n = len(v)
        if n < lo or (hi is not None and n > hi):
            return False
        if enum is not None and v not in enum:
            return False
        return match is None or match(v) is not None

    return valid


def _number_predicate(shape: Any, *, integral: bool) -> Predicate:
    lo = shape.get("min")
    hi = shape.get("max")
    types: tuple[type, ...] = (int,) if integral else (int, float)

    def valid(v: Any) -> bool:
        if not isinstance(v, types) or isinstance(v, bool):
            return False
        # Spelled as the checker's tests (not `lo <= v`), so that NaN is treated identically.
        return not ((lo is not None and v < lo) or (hi is not None and v > hi))

    return valid


def _list_predicate(shapes: Shapes, shape: Any) -> Predicate:
    lo = shape.get("min", 0)
    hi = shape.get("max")
    inner = _predicate(shapes, shape["member"]["shape"])

    def valid(v: Any) -> bool:
        if not isinstance(v, list):
            return False
        n = len(v)
        if n < lo or (hi is not None and n > hi):
            return False
        for item in v:  # noqa: SIM110 - a plain loop is faster than all() over a generator
            if item is None or not inner(item):
                return False
        return True

    return valid


def _map_predicate(shapes: Shapes, shape: Any) -> Predicate:
    lo = shape.get("min", 0)
    hi = shape.get("max")
    valid_key = _predicate(shapes, shape["key"]["shape"])
    valid_value = _predicate(shapes, shape["value"]["shape"])

    def valid(v: Any) -> bool:
        if not isinstance(v, dict):
            return False
        n = len(v)
        if n < lo or (hi is not None and n > hi):
            return False
        for key, item in v.items():  # noqa: SIM110 - a plain loop is faster than all() over a generator
            if not valid_key(key) or item is None or not valid_value(item):
                return False
        return True

    return valid
