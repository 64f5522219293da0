"""The authorization policy on its own: parsing (gRFC A43, strictly) and the pure decision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.api.policy import Pattern, PolicyError, load_policy, parse_policy

EXAMPLE = Path(__file__).parents[2] / "deploy" / "authz-policy.json"
SVC = "/users.v1.UserService"
OPS = "spiffe://users.example/ns/ops/sa/admin"
INTERN = "spiffe://users.example/ns/ops/sa/intern"
WEB = "spiffe://users.example/ns/web/sa/frontend"
BILLING = "spiffe://users.example/ns/payments/sa/billing"


def policy(**document: object) -> str:
    document.setdefault("name", "test")
    document.setdefault("allow_rules", [])
    return json.dumps(document)


@pytest.mark.parametrize(
    ("pattern", "value", "matches"),
    [
        ("abc", "abc", True),
        ("abc", "abcd", False),
        ("abc", "xabc", False),
        ("abc*", "abc", True),  # A43: a prefix matches itself
        ("abc*", "abcd", True),
        ("abc*", "xabc", False),
        ("*abc", "abc", True),
        ("*abc", "xabc", True),
        ("*abc", "abcx", False),
        ("*", "anything", True),
        ("*", "", False),  # presence: never an empty value
        ("spiffe://td/ns/ops/*", "spiffe://td/ns/ops", False),
        ("spiffe://td/ns/ops/*", "spiffe://td/ns/ops/sa/x", True),
        ("spiffe://td/ns/ops/*", "spiffe://td/ns/opsx/sa/x", False),
        ("Abc", "abc", False),  # case-sensitive
    ],
)
def test_patterns_match_exactly_by_prefix_by_suffix_or_any_value(pattern, value, matches):
    assert Pattern(pattern).matches(value) is matches


def test_the_example_policy_decides_as_its_rule_names_say():
    example = load_policy(EXAMPLE)
    decide = example.decide
    assert decide(OPS, f"{SVC}/DeleteUser").allowed
    assert decide(OPS, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo").allowed
    assert decide(INTERN, f"{SVC}/GetUser").allowed
    assert decide(INTERN, f"{SVC}/DeleteUser").rule == "interns-never-delete"
    assert not decide(INTERN, f"{SVC}/DeleteUser").allowed
    assert decide(WEB, f"{SVC}/CreateUser").allowed
    assert decide(WEB, f"{SVC}/GetUser").rule == "every-known-caller-reads-a-user"
    assert not decide(WEB, f"{SVC}/DeleteUser").allowed
    assert decide(WEB, f"{SVC}/DeleteUser").rule == ""
    assert not decide(WEB, "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo").allowed
    assert decide(BILLING, f"{SVC}/TransferFunds").allowed
    assert not decide(BILLING, f"{SVC}/UpdateUser").allowed
    # A method nobody wrote a rule for is denied to everyone.
    for who in (OPS, WEB, BILLING):
        assert not decide(who, "/users.v1.OtherService/Anything").allowed


def test_a_deny_rule_beats_an_allow_rule_whatever_the_order():
    text = policy(
        allow_rules=[{"name": "all", "source": {"principals": ["*"]}}],
        deny_rules=[{"name": "no", "request": {"paths": ["*/DeleteUser"]}}],
    )
    decision = parse_policy(text).decide(OPS, f"{SVC}/DeleteUser")
    assert (decision.allowed, decision.rule) == (False, "no")
    assert parse_policy(text).decide(OPS, f"{SVC}/GetUser").allowed


def test_a_rule_without_source_or_request_or_with_empty_lists_matches_anything():
    for rule in (
        {"name": "open"},
        {"name": "open", "source": {}, "request": {}},
        {"name": "open", "source": {"principals": []}, "request": {"paths": []}},
    ):
        assert parse_policy(policy(allow_rules=[rule])).decide(WEB, f"{SVC}/X").allowed


def test_a_rule_needs_its_principal_and_its_path_to_match():
    text = policy(
        allow_rules=[{"name": "r", "source": {"principals": [WEB]}, "request": {"paths": ["*/A"]}}]
    )
    decide = parse_policy(text).decide
    assert decide(WEB, f"{SVC}/A").allowed
    assert not decide(WEB, f"{SVC}/B").allowed
    assert not decide(OPS, f"{SVC}/A").allowed


def test_empty_allow_rules_deny_every_call():
    assert not parse_policy(policy()).decide(OPS, f"{SVC}/GetUser").allowed


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not valid JSON"),
        ("[]", "must be a JSON object"),
        (json.dumps({"allow_rules": []}), '"name" is required'),
        (json.dumps({"name": "x"}), '"allow_rules" is required'),
        (json.dumps({"name": "", "allow_rules": []}), "non-empty string"),
        (policy(extra=1), 'unknown field "extra"'),
        (policy(allow_rules={}), "must be a list of rules"),
        (policy(allow_rules=[{}]), 'allow_rules[0]: "name" is required'),
        (policy(allow_rules=[{"name": "r", "when": {}}]), 'unknown field "when"'),
        (
            policy(allow_rules=[{"name": "r", "source": {"namespaces": ["x"]}}]),
            'unknown field "namespaces"',
        ),
        (
            policy(deny_rules=[{"name": "r", "request": {"headers": [{"key": "x-user"}]}}]),
            "header rules are not supported",
        ),
        (policy(allow_rules=[{"name": "r", "source": {"principals": [""]}}]), "empty principal"),
        (policy(allow_rules=[{"name": "r", "source": {"principals": "*"}}]), "list of strings"),
        (policy(allow_rules=[{"name": "r", "source": {"principals": [1]}}]), "list of strings"),
        (policy(allow_rules=[{"name": "r", "source": {"principals": ["a*b"]}}]), "not a pattern"),
        (policy(allow_rules=[{"name": "r", "source": {"principals": ["*a*"]}}]), "not a pattern"),
        (policy(allow_rules=[{"name": "r", "source": {"principals": ["**"]}}]), "not a pattern"),
        (
            policy(allow_rules=[{"name": "r", "request": {"paths": ["users.v1.UserService/X"]}}]),
            'must start with "/"',
        ),
        (policy(allow_rules=[{"name": "r", "request": "x"}]), "must be a JSON object"),
    ],
)
def test_a_bad_policy_is_refused_with_one_line_naming_the_problem(text, problem):
    with pytest.raises(PolicyError) as refused:
        parse_policy(text)
    message = str(refused.value)
    assert problem in message
    assert "\n" not in message


def test_a_policy_file_error_names_the_file(tmp_path):
    missing = tmp_path / "missing.json"
    with pytest.raises(PolicyError, match=r"missing\.json: cannot read it"):
        load_policy(missing)
    bad = tmp_path / "bad.json"
    bad.write_text('{"name": "x", "allow_rules": [], "deny": []}')
    with pytest.raises(PolicyError, match=r'bad\.json: the policy: unknown field "deny"'):
        load_policy(bad)
