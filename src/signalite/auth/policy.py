"""IAM-style policy evaluation: may this caller perform this action on this resource?

Theory of operation
-------------------
A policy document is ``{"Version": "...", "Statement": [...]}``; each statement has ``Effect``
(``Allow`` or ``Deny``), ``Action`` (a string or list: ``kinesisvideo:ConnectAsMaster``,
``kinesisvideo:Get*``, ``*``), optionally ``NotAction``, and ``Resource`` (a string or list of ARNs
with ``*`` and ``?`` wildcards; missing means ``*``). As in IAM: an explicit Deny that matches wins;
otherwise an Allow that matches allows; otherwise the request is implicitly denied. Matching is
case-insensitive for actions (IAM's rule) and case-sensitive for resources.

A credential with no policy at all may do everything within its own account — account isolation is
enforced separately, by scoping every lookup to the caller's account.

Policies are compiled once (when the credentials file is read) into regular expressions, so the
per-request check is a few regex matches.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

SERVICE_PREFIX = "kinesisvideo"

# IAM action for each operation that is not named after itself (the WebSocket's two connect actions).
CONNECT_AS_MASTER = "ConnectAsMaster"
CONNECT_AS_VIEWER = "ConnectAsViewer"


class PolicyError(ValueError):
    """The policy document is not one we can evaluate."""


def _glob(pattern: str, *, ignore_case: bool) -> re.Pattern[str]:
    parts = []
    for ch in pattern:
        if ch == "*":
            parts.append(".*")
        elif ch == "?":
            parts.append(".")
        else:
            parts.append(re.escape(ch))
    return re.compile("".join(parts), re.IGNORECASE | re.DOTALL if ignore_case else re.DOTALL)


def _strings(value: Any, field: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise PolicyError(f"{field} must be a string or a non-empty list of strings")


@dataclass(frozen=True, slots=True)
class _Statement:
    allow: bool
    actions: tuple[re.Pattern[str], ...]
    negate_actions: bool
    resources: tuple[re.Pattern[str], ...]

    def covers(self, action: str) -> bool:
        """Whether the statement's Action (or NotAction) takes in `action`."""
        return any(p.fullmatch(action) for p in self.actions) != self.negate_actions

    def matches(self, action: str, resource: str) -> bool:
        return self.covers(action) and any(p.fullmatch(resource) for p in self.resources)


# Per policy, the actions whose relevant statements are remembered; past this, it starts over.
_MAX_ACTIONS = 256


@dataclass(frozen=True, slots=True)
class Policy:
    """A compiled policy document."""

    statements: tuple[_Statement, ...]
    # action -> (allow, resource patterns) of the statements that cover it. The action part of a
    # check depends on the action alone, and a server asks about a few dozen actions, so it is
    # worked out once per action; each check then only matches the resource.
    _by_action: dict[str, tuple[tuple[bool, tuple[re.Pattern[str], ...]], ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def allows(self, action: str, resource: str) -> bool:
        """Whether `action` (e.g. "kinesisvideo:ConnectAsMaster") on `resource` (an ARN or "*") is allowed."""
        relevant = self._by_action.get(action)
        if relevant is None:
            relevant = tuple((st.allow, st.resources) for st in self.statements if st.covers(action))
            if len(self._by_action) >= _MAX_ACTIONS:
                self._by_action.clear()
            self._by_action[action] = relevant
        allowed = False
        for allow, resources in relevant:
            if any(p.fullmatch(resource) for p in resources):
                if not allow:
                    return False  # an explicit Deny always wins
                allowed = True
        return allowed


def compile_policy(document: Mapping[str, Any]) -> Policy:
    """Compile a policy document; PolicyError when it is malformed."""
    if not isinstance(document, Mapping):
        raise PolicyError("a policy must be a JSON object")
    raw = document.get("Statement")
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise PolicyError("a policy needs a Statement list")
    statements = []
    for i, st in enumerate(raw, start=1):
        if not isinstance(st, Mapping):
            raise PolicyError(f"statement {i} must be an object")
        effect = st.get("Effect")
        if effect not in ("Allow", "Deny"):
            raise PolicyError(f"statement {i}: Effect must be Allow or Deny")
        if ("Action" in st) == ("NotAction" in st):
            raise PolicyError(f"statement {i}: exactly one of Action or NotAction")
        negate = "NotAction" in st
        actions = _strings(st["NotAction" if negate else "Action"], f"statement {i} Action")
        resources = _strings(st.get("Resource", "*"), f"statement {i} Resource")
        statements.append(
            _Statement(
                allow=effect == "Allow",
                actions=tuple(_glob(a, ignore_case=True) for a in actions),
                negate_actions=negate,
                resources=tuple(_glob(r, ignore_case=False) for r in resources),
            )
        )
    return Policy(tuple(statements))


def action_name(operation: str) -> str:
    """The IAM action of an operation: `kinesisvideo:<Operation>` (all KVS actions follow that rule)."""
    return f"{SERVICE_PREFIX}:{operation}"


def evaluate(policy: Policy | None, action: str, resources: Sequence[str]) -> bool:
    """Allowed on every one of `resources`? No policy means full access within the account."""
    if policy is None:
        return True
    return all(policy.allows(action, r) for r in resources)
