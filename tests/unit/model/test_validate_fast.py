"""The precompiled validators (`operation_validator`) against the generic checkers they shortcut.

The fast path answers "valid?" with lean predicates and lets the checkers word a refusal; it must
accept exactly what the checkers accept, for every operation of every served model. Inputs are
generated from each operation's own input shape: half of them valid, the others valid with some
members bent (wrong type, null, missing, out of range, off-pattern, off-enum, unknown members, too
many items), so both outcomes are well covered.
"""

from __future__ import annotations

import math
import string
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from signalite.model.errors import InvalidArgumentException
from signalite.model.service import SERVICES, Operation, Shapes, load_service, route_table
from signalite.model.validate import _checker, _predicate, operation_validator, validate_input, validate_input_generic

OPERATIONS = [op for service in SERVICES for op in load_service(service).operations.values()]
ROUTES = route_table()
ARN = "arn:aws:kinesisvideo:us-east-1:000000000000:channel/bench-00042/1700000000042"

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
)


def outcome(fn: Callable[[Operation, dict[str, Any]], None], op: Operation, params: Any) -> str | None:
    """None if accepted, else the refusal message."""
    try:
        fn(op, params)
    except InvalidArgumentException as e:
        return e.message
    return None


def fast(op: Operation, params: dict[str, Any]) -> None:
    operation_validator(op)(params)


def assert_same(op: Operation, params: Any) -> None:
    reference = outcome(validate_input_generic, op, params)
    assert outcome(fast, op, params) == reference, (op.name, params)
    # The predicate alone must agree too: one that is merely too strict still gives the right
    # answer (the checkers have the last word) but sends valid requests down the slow path.
    assert op.input_shape is not None
    assert _predicate(op.shapes, op.input_shape)(params) is (reference is None), (op.name, params)


def _valid_strings(shape: dict[str, Any]) -> st.SearchStrategy[str]:
    lo, hi = shape.get("min", 0), shape.get("max", 40)
    if "enum" in shape:
        return st.sampled_from(shape["enum"])
    pattern = shape.get("pattern")
    if pattern and "\\p{" not in pattern:
        return st.from_regex(pattern, fullmatch=True).filter(lambda s: lo <= len(s) <= hi)
    alphabet = string.ascii_letters + string.digits + "_.-" + ("é名 :/=+@" if pattern else "")
    return st.text(alphabet=alphabet, min_size=lo, max_size=max(lo, min(hi, 40)))


def _bent_strings(shape: dict[str, Any]) -> st.SearchStrategy[Any]:
    lo, hi = shape.get("min", 0), shape.get("max", 300)
    options: list[st.SearchStrategy[Any]] = [st.text(max_size=min(hi + 2, 40)), st.just(ARN), JUNK]
    if "enum" in shape:
        options.append(st.sampled_from([e.lower() for e in shape["enum"]]))
    # Lengths right at and just past the bounds.
    options.extend(st.just("a" * n) for n in sorted({max(lo - 1, 0), lo, min(hi, 2000), min(hi + 1, 2001)}))
    return st.one_of(options)


def values(shapes: Shapes, name: str, *, bend: bool) -> st.SearchStrategy[Any]:
    """Valid values of shape `name`; with `bend`, valid values but for exactly one bent place.

    One bend at a time matters: a value broken in two places is refused whatever either validator
    thinks of each break alone, so it would hide a predicate that is too lenient on one of them.
    """
    shape: dict[str, Any] = dict(shapes[name])
    kind = shape["type"]
    if kind == "structure":
        required = set(shape.get("required", ()))
        members = {m: s["shape"] for m, s in shape["members"].items()}

        def body(bent: str | None, how: str) -> st.SearchStrategy[dict[str, Any]]:
            fixed = {m: values(shapes, s, bend=False) for m, s in members.items() if m in required and m != bent}
            optional = {m: values(shapes, s, bend=False) for m, s in members.items() if m not in required and m != bent}
            if bent is not None and how == "bend":
                fixed[bent] = values(shapes, members[bent], bend=True)
            elif bent is not None and how == "null":
                fixed[bent] = st.none()
            elif bent is not None and how == "unknown":
                fixed["UnknownMember"] = JUNK
            return st.fixed_dictionaries(fixed, optional=optional)

        if not bend:
            return body(None, "")
        choices = [(m, "bend") for m in members] + [(m, "null") for m in required] + [(m, "drop") for m in required]
        choices.append(("UnknownMember", "unknown"))
        return st.one_of(st.sampled_from(choices).flatmap(lambda c: body(*c)), JUNK)
    if kind == "string":
        return _bent_strings(shape) if bend else _valid_strings(shape)
    if kind in ("integer", "long"):
        lo, hi = shape.get("min", -(2**31)), shape.get("max", 2**31)
        if not bend:
            return st.integers(min_value=lo, max_value=hi)
        return st.one_of(
            st.sampled_from([lo - 1, hi + 1, float(lo), float(hi), True, False, str(lo), math.nan, math.inf]), JUNK
        )
    if kind == "list":
        lo, hi = shape.get("min", 0), shape.get("max", 4)
        member = shape["member"]["shape"]
        valid = st.lists(values(shapes, member, bend=False), min_size=lo, max_size=max(lo, min(hi, 4)))
        if not bend:
            return valid
        one_bent = st.tuples(valid, values(shapes, member, bend=True), st.integers(0, 4)).map(
            lambda t: [*t[0][: t[2]], t[1], *t[0][t[2] :]][: max(hi, 1)]
        )
        with_null = valid.map(lambda items: [*items[: max(hi - 1, 0)], None])
        too_many = (
            st.lists(values(shapes, member, bend=False), min_size=hi + 1, max_size=hi + 1) if hi <= 60 else st.nothing()
        )
        too_few: st.SearchStrategy[list[Any]] = st.just([]) if lo > 0 else st.nothing()
        return st.one_of(one_bent, with_null, too_many, too_few, JUNK)
    if kind == "map":
        lo, hi = shape.get("min", 0), shape.get("max", 3)
        key_shape = dict(shapes[shape["key"]["shape"]])
        value_shape = shape["value"]["shape"]
        valid_map = st.dictionaries(
            _valid_strings(key_shape),
            values(shapes, value_shape, bend=False),
            min_size=lo,
            max_size=max(lo, min(hi, 3)),
        )
        if not bend:
            return valid_map
        bent_key = st.tuples(valid_map, _bent_strings(key_shape).filter(lambda k: isinstance(k, str))).map(
            lambda t: {**t[0], t[1]: "v"}
        )
        bent_value = st.tuples(
            valid_map, _valid_strings(key_shape), st.one_of(values(shapes, value_shape, bend=True))
        ).map(lambda t: {**t[0], t[1]: t[2]})
        return st.one_of(bent_key, bent_value, JUNK)
    if kind == "boolean":
        return st.one_of(st.integers(0, 1), JUNK) if bend else st.booleans()
    if kind == "timestamp":
        valid_ts = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=5))
        return st.one_of(st.booleans(), JUNK) if bend else valid_ts
    return JUNK


@pytest.mark.parametrize("op", [op for op in OPERATIONS if op.input_shape], ids=lambda op: f"{op.service}.{op.name}")
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_fast_validator_matches_the_generic_one(op: Operation, data: st.DataObject) -> None:
    assert op.input_shape is not None
    params = data.draw(
        st.one_of(values(op.shapes, op.input_shape, bend=False), values(op.shapes, op.input_shape, bend=True))
    )
    assert_same(op, params)


GET_ENDPOINT = ROUTES["/getSignalingChannelEndpoint"]
DESCRIBE = ROUTES["/describeSignalingChannel"]
CREATE = ROUTES["/createSignalingChannel"]
CREATE_STREAM = ROUTES["/createStream"]
TAG = ROUTES["/TagResource"]


@pytest.mark.parametrize(
    ("op", "params"),
    [
        (GET_ENDPOINT, {"ChannelARN": ARN}),
        (
            GET_ENDPOINT,
            {
                "ChannelARN": ARN,
                "SingleMasterChannelEndpointConfiguration": {"Protocols": ["WSS", "HTTPS"], "Role": "MASTER"},
            },
        ),
        (GET_ENDPOINT, {"ChannelARN": ARN, "SingleMasterChannelEndpointConfiguration": {"Protocols": ["WSS", "FTP"]}}),
        (GET_ENDPOINT, {"ChannelARN": ARN, "SingleMasterChannelEndpointConfiguration": {"Protocols": []}}),
        (GET_ENDPOINT, {"ChannelARN": ARN, "SingleMasterChannelEndpointConfiguration": {"Protocols": ["WSS"] * 6}}),
        (GET_ENDPOINT, {"ChannelARN": ARN, "SingleMasterChannelEndpointConfiguration": {"Protocols": [None]}}),
        (GET_ENDPOINT, {"ChannelARN": ARN, "SingleMasterChannelEndpointConfiguration": {"Role": "master"}}),
        (GET_ENDPOINT, {"ChannelARN": ARN, "SingleMasterChannelEndpointConfiguration": []}),
        (GET_ENDPOINT, {"ChannelARN": ARN + " "}),
        (GET_ENDPOINT, {"ChannelARN": ""}),
        (GET_ENDPOINT, {"ChannelARN": None}),
        (GET_ENDPOINT, {}),
        (GET_ENDPOINT, {"channelARN": ARN}),
        (DESCRIBE, {"ChannelName": "bench-00042"}),
        (DESCRIBE, {"ChannelName": "bench 00042"}),
        (DESCRIBE, {"ChannelName": "x" * 256}),
        (DESCRIBE, {"ChannelName": "x" * 257}),
        (DESCRIBE, {"ChannelARN": ARN, "ChannelName": 7}),
        (DESCRIBE, {}),
        (DESCRIBE, []),
        (DESCRIBE, "ChannelName"),
        (CREATE, {"ChannelName": "x", "SingleMasterConfiguration": {"MessageTtlSeconds": 5}}),
        (CREATE, {"ChannelName": "x", "SingleMasterConfiguration": {"MessageTtlSeconds": 120}}),
        (CREATE, {"ChannelName": "x", "SingleMasterConfiguration": {"MessageTtlSeconds": 4}}),
        (CREATE, {"ChannelName": "x", "SingleMasterConfiguration": {"MessageTtlSeconds": True}}),
        (CREATE, {"ChannelName": "x", "SingleMasterConfiguration": {"MessageTtlSeconds": 60.0}}),
        (CREATE, {"ChannelName": "x", "SingleMasterConfiguration": {"MessageTtlSeconds": math.nan}}),
        (CREATE, {"ChannelName": "x", "Tags": [{"Key": "k", "Value": "v"}] * 50}),
        (CREATE, {"ChannelName": "x", "Tags": [{"Key": "k", "Value": "v"}] * 51}),
        (CREATE, {"ChannelName": "x", "Tags": [{"Key": "<", "Value": "v"}]}),
        (CREATE, {"ChannelName": "x", "Tags": [{"Value": "v"}]}),
        (CREATE, {"ChannelName": "x", "Tags": [None]}),
        (CREATE, {"ChannelName": "x", "Tags": ({"Key": "k", "Value": "v"},)}),
        (
            CREATE,
            {"ChannelName": "", "ChannelType": "X", "Tags": 3, "SingleMasterConfiguration": {"MessageTtlSeconds": 1}},
        ),
        (CREATE_STREAM, {"StreamName": "s", "Tags": {"ok": "fine"}}),
        (CREATE_STREAM, {"StreamName": "s", "Tags": {"ok": "<bad>"}}),
        (CREATE_STREAM, {"StreamName": "s", "Tags": {"": "v"}}),
        (CREATE_STREAM, {"StreamName": "s", "Tags": {"k": None}}),
        (CREATE_STREAM, {"StreamName": "s", "DataRetentionInHours": -1}),
        (CREATE_STREAM, {"StreamName": "s", "DataRetentionInHours": False}),
        (CREATE_STREAM, {"StreamName": "s", "DataRetentionInHours": 0.0}),
        (ROUTES["/listSignalingChannels"], {"MaxResults": True}),
        (TAG, {"ResourceARN": ARN, "Tags": [{"Key": "étiquette 名前", "Value": "ça va=+-@:/"}]}),
        (TAG, {"ResourceARN": ARN, "Tags": [{"Key": "a\x00b", "Value": "v"}]}),
    ],
)
def test_chosen_cases_agree(op: Operation, params: Any) -> None:
    assert_same(op, params)


def test_validator_is_built_once_per_operation() -> None:
    assert operation_validator(GET_ENDPOINT) is operation_validator(GET_ENDPOINT)
    assert operation_validator(GET_ENDPOINT) is not operation_validator(DESCRIBE)


def test_validate_input_uses_the_fast_path_and_words_errors_the_same() -> None:
    params = {"ChannelARN": "nope", "SingleMasterChannelEndpointConfiguration": {"Protocols": ["FTP"]}}
    with pytest.raises(InvalidArgumentException) as fast_error:
        validate_input(GET_ENDPOINT, params)
    with pytest.raises(InvalidArgumentException) as generic_error:
        validate_input_generic(GET_ENDPOINT, params)
    assert fast_error.value.message == generic_error.value.message
    assert fast_error.value.message.startswith("2 validation errors detected: ")


# -- every place of every input bent every way, one at a time (deterministic) ---------------------------

_CANDIDATE_STRINGS = (
    "a", "abc-123", ARN, ARN.replace(":channel/", ":stream/"), "arn:aws:kms:us-east-1:000000000000:key/k",
    "arn:aws:iot:us-east-1:000000000000:thing/hub", "arn:aws:secretsmanager:us-east-1:000000000000:secret:s",
    "MASTER", "0", "1", "us-east-1", "ab.c", "wss://a", "a" * 64, "AKIAIOSFODNN7EXAMPLE",
)  # fmt: skip
_BAD: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    1,
    -1,
    1.5,
    math.nan,
    math.inf,
    "",
    "x",
    "<bad>",
    " ",
    [],
    [None],
    {},
    {"x": 1},
)


def _generic_ok(shapes: Shapes, name: str, value: Any) -> bool:
    violations: list[Any] = []
    _checker(shapes, name)(value, "", violations)
    return not violations


def _base(shapes: Shapes, name: str, depth: int = 0) -> Any:
    """A valid value of shape `name` with every member present that can be (None if none found)."""
    shape = shapes[name]
    kind = shape["type"]
    found: Any = None
    if kind == "structure":
        found = {}
        for member, spec in shape["members"].items():
            value = _base(shapes, spec["shape"], depth + 1) if depth < 6 else None
            if value is not None:
                found[member] = value
    elif kind == "string":
        lo = shape.get("min", 0)
        candidates = [*shape.get("enum", ()), *_CANDIDATE_STRINGS, "a" * max(lo, 1), "1" * max(lo, 1)]
        found = next((c for c in candidates if _generic_ok(shapes, name, c)), None)
    elif kind in ("integer", "long"):
        found = shape.get("min", 0)
    elif kind == "list":
        item = _base(shapes, shape["member"]["shape"], depth + 1)
        found = [] if item is None else [item] * max(shape.get("min", 1), 1)
    elif kind == "map":
        key = _base(shapes, shape["key"]["shape"], depth + 1)
        value = _base(shapes, shape["value"]["shape"], depth + 1)
        found = {} if key is None or value is None else {key: value}
    elif kind == "boolean":
        found = True
    elif kind == "timestamp":
        found = 1700000000
    return found if found is not None and _generic_ok(shapes, name, found) else None


def _places(shapes: Shapes, name: str, value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], str]]:
    """(path, shape name) of every place in `value`, itself included."""
    shape = shapes[name]
    out = [(path, name)]
    if shape["type"] == "structure" and isinstance(value, dict):
        for member, spec in shape["members"].items():
            if member in value:
                out += _places(shapes, spec["shape"], value[member], (*path, member))
    elif shape["type"] == "list" and isinstance(value, list) and value:
        out += _places(shapes, shape["member"]["shape"], value[0], (*path, 0))
    elif shape["type"] == "map" and isinstance(value, dict) and value:
        key = next(iter(value))
        out += _places(shapes, shape["value"]["shape"], value[key], (*path, key))
    return out


def _bent_ways(shapes: Shapes, name: str, value: Any) -> list[Any]:
    shape = shapes[name]
    kind = shape["type"]
    ways: list[Any] = list(_BAD)
    lo, hi = shape.get("min"), shape.get("max")
    if kind == "string":
        ways += [value + " ", value.lower(), value.upper(), value + "\n", "a" * (lo or 1)]
        ways += ["a" * n for n in (lo - 1 if lo else None, hi, hi + 1 if hi else None) if n is not None and n >= 0]
    elif kind in ("integer", "long"):
        ways += [n for n in (lo, hi) if n is not None] + [n + d for n in (lo, hi) if n is not None for d in (-1, 1)]
        ways += [float(value), str(value)]
    elif kind == "list":
        ways += [value * 2, [*value, None], [None, *value], (value[0],) if value else ()]
        ways += [[value[0]] * n for n in (hi, (hi or 0) + 1) if value and n is not None and n <= 200]
    elif kind == "map":
        key = next(iter(value), "k")
        ways += [{**value, "<bad key>": value.get(key)}, {**value, "": value.get(key)}, {**value, key: None}]
        ways += [{f"k{i}": value[key] for i in range(n)} for n in (hi, (hi or 0) + 1) if value and n and n <= 200]
    elif kind == "structure":
        ways += [{**value, "UnknownMember": [1]}]
        ways += [{k: v for k, v in value.items() if k != member} for member in value]
        ways += [{**value, member: None} for member in value]
    return ways


def _replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, list):
        return [_replaced(v, rest, new) if i == head else v for i, v in enumerate(value)]
    return {**value, head: _replaced(value[head], rest, new)}


@pytest.mark.parametrize("op", [op for op in OPERATIONS if op.input_shape], ids=lambda op: f"{op.service}.{op.name}")
def test_every_place_bent_every_way_agrees(op: Operation) -> None:
    assert op.input_shape is not None
    base = _base(op.shapes, op.input_shape)
    assert base is not None, f"no valid {op.input_shape} could be built"
    assert_same(op, base)
    checked = 0
    for path, name in _places(op.shapes, op.input_shape, base):
        at = base
        for key in path:
            at = at[key]
        for bent in _bent_ways(op.shapes, name, at):
            assert_same(op, _replaced(base, path, bent))
            checked += 1
    assert checked >= len(_BAD)
