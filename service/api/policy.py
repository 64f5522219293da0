"""gRPC authorization policies (gRFC A43) and the pure decision: (principal, method) -> allow?

A policy is JSON::

    {"name": "users",
     "deny_rules":  [{"name": "...", "source": {"principals": [...]},
                      "request": {"paths": [...]}}],
     "allow_rules": [...]}

Each pattern is exact (``abc``), a prefix (``abc*``, matches ``abc`` too), a
suffix (``*abc``) or ``*`` (any non-empty value). A rule matches when one of
its principals and one of its paths match; a missing ``source`` or ``request``
(or an empty list) matches anything. Deny rules are read first: one that
matches denies; then an allow rule that matches allows; anything else is
denied.

Stricter than A43 where A43 leaves room for mistakes: unknown fields are
refused, and so are ``request.headers`` rules (client-set metadata is no
identity), an empty principal (a call without a verified principal never
reaches the policy: it is refused as unauthenticated first), a ``*`` inside
a pattern, and a path that does not start with ``/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["Decision", "Pattern", "Policy", "PolicyError", "Rule", "load_policy", "parse_policy"]


class PolicyError(ValueError):
    """A policy that cannot be used; the message is one line naming the problem."""


@dataclass(frozen=True, slots=True)
class Pattern:
    """One A43 string match: exact, ``prefix*``, ``*suffix`` or ``*``."""

    text: str

    def matches(self, value: str) -> bool:
        text = self.text
        if text == "*":
            return bool(value)
        if text.endswith("*"):
            return value.startswith(text[:-1])
        if text.startswith("*"):
            return value.endswith(text[1:])
        return value == text


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    # None: the rule does not look at that side of the call (matches anything).
    principals: tuple[Pattern, ...] | None
    paths: tuple[Pattern, ...] | None

    def matches(self, principal: str, method: str) -> bool:
        return _any_matches(self.principals, principal) and _any_matches(self.paths, method)


def _any_matches(patterns: tuple[Pattern, ...] | None, value: str) -> bool:
    return patterns is None or any(pattern.matches(value) for pattern in patterns)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    # The rule that decided; empty when nothing matched (denied by default).
    rule: str


@dataclass(frozen=True, slots=True)
class Policy:
    name: str
    deny_rules: tuple[Rule, ...]
    allow_rules: tuple[Rule, ...]

    def decide(self, principal: str, method: str) -> Decision:
        """Deny rules first, then allow rules, else deny. ``method`` is ``/pkg.Service/Method``."""
        for rule in self.deny_rules:
            if rule.matches(principal, method):
                return Decision(False, rule.name)
        for rule in self.allow_rules:
            if rule.matches(principal, method):
                return Decision(True, rule.name)
        return Decision(False, "")

    def exact_paths(self) -> set[str]:
        """Every path the policy names exactly (to warn about ones no method has)."""
        rules = self.deny_rules + self.allow_rules
        return {p.text for rule in rules for p in rule.paths or () if "*" not in p.text and p.text}


def load_policy(path: str | Path) -> Policy:
    """Read and parse the policy file; PolicyError names the file and the problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise PolicyError(f"authorization policy {path}: cannot read it ({error})") from None
    try:
        return parse_policy(text)
    except PolicyError as error:
        raise PolicyError(f"authorization policy {path}: {error}") from None


def parse_policy(text: str) -> Policy:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise PolicyError(f"not valid JSON ({error})") from None
    _object(document, "the policy", {"name", "deny_rules", "allow_rules"}, required={"name"})
    if "allow_rules" not in document:
        raise PolicyError('"allow_rules" is required (an empty list denies every call)')
    return Policy(
        name=_name(document, "the policy"),
        deny_rules=_rules(document.get("deny_rules", []), "deny_rules"),
        allow_rules=_rules(document["allow_rules"], "allow_rules"),
    )


def _rules(value: Any, where: str) -> tuple[Rule, ...]:
    if not isinstance(value, list):
        raise PolicyError(f'"{where}" must be a list of rules')
    return tuple(_rule(item, f"{where}[{index}]") for index, item in enumerate(value))


def _rule(value: Any, where: str) -> Rule:
    _object(value, where, {"name", "source", "request"}, required={"name"})
    name = _name(value, where)
    where = f'{where} ("{name}")'
    principals: tuple[Pattern, ...] | None = None
    paths: tuple[Pattern, ...] | None = None
    if "source" in value:
        source = value["source"]
        _object(source, f"{where}.source", {"principals"})
        principals = _patterns(source.get("principals"), f"{where}.source.principals")
        if principals is not None and any(not p.text for p in principals):
            raise PolicyError(
                f"{where}.source.principals: an empty principal would match only callers "
                "without a verified identity, and those are always refused"
            )
    if "request" in value:
        request = value["request"]
        if isinstance(request, dict) and "headers" in request:
            raise PolicyError(
                f"{where}.request.headers: header rules are not supported "
                "(metadata a client sets is no identity)"
            )
        _object(request, f"{where}.request", {"paths"})
        paths = _patterns(request.get("paths"), f"{where}.request.paths")
        for path in paths or ():
            if path.text != "*" and not path.text.startswith(("/", "*")):
                raise PolicyError(
                    f'{where}.request.paths: "{path.text}" must start with "/" '
                    '(paths look like "/users.v1.UserService/GetUser")'
                )
    return Rule(name, principals, paths)


def _patterns(value: Any, where: str) -> tuple[Pattern, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PolicyError(f"{where} must be a list of strings")
    if not value:
        return None  # A43: an empty list does not restrict the rule.
    for item in value:
        inner = item[1:] if item.startswith("*") else item
        inner = inner[:-1] if inner.endswith("*") else inner
        if "*" in inner or (item.startswith("*") and item.endswith("*") and item != "*"):
            raise PolicyError(
                f'{where}: "{item}" is not a pattern: use "exact", "prefix*", "*suffix" or "*"'
            )
    return tuple(Pattern(item) for item in value)


def _object(value: Any, where: str, known: Iterable[str], required: Iterable[str] = ()) -> None:
    if not isinstance(value, dict):
        raise PolicyError(f"{where} must be a JSON object")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise PolicyError(f'{where}: unknown field "{unknown[0]}"')
    for field in required:
        if field not in value:
            raise PolicyError(f'{where}: "{field}" is required')


def _name(value: dict[str, Any], where: str) -> str:
    name = value["name"]
    if not isinstance(name, str) or not name.strip():
        raise PolicyError(f'{where}: "name" must be a non-empty string')
    return name
