"""Tracing follows the standard OTEL_* variables; it is off unless they name an exporter."""

from __future__ import annotations

import pytest

from service.api.tracing import Tracing, TracingConfigError
from service.db.tracing import describe


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"OTEL_TRACES_EXPORTER": ""},
        {"OTEL_TRACES_EXPORTER": "none"},
        {"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"},
        {"OTEL_SERVICE_NAME": "users"},
    ],
)
def test_tracing_is_off_without_an_exporter(environ):
    assert Tracing.from_environment(environ) is None


def test_an_exporter_turns_it_on_with_the_default_service_name(monkeypatch):
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    tracing = Tracing.from_environment({"OTEL_TRACES_EXPORTER": "console"})
    assert tracing is not None
    assert tracing.provider.resource.attributes["service.name"] == "users-service"
    tracing.close()


def test_otel_service_name_wins(monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "users-eu")
    tracing = Tracing.from_environment({"OTEL_TRACES_EXPORTER": "otlp,console"})
    assert tracing is not None
    assert tracing.provider.resource.attributes["service.name"] == "users-eu"
    tracing.close()


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin-ish"}, "'zipkin-ish'"),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            "'otlp_proto_http'",
        ),
    ],
)
def test_an_unknown_exporter_refuses_to_start_naming_it(environ, named):
    with pytest.raises(TracingConfigError, match=named):
        Tracing.from_environment(environ)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('SELECT "id","username" FROM "users" WHERE "id"=$1', ("SELECT", "users")),
        ('  insert into "ledger" ("amount") values (?)', ("INSERT", "ledger")),
        ('UPDATE "users" SET "balance"="balance"+$1', ("UPDATE", "users")),
        ("SELECT 1", ("SELECT", "")),
        ("", ("", "")),
    ],
)
def test_a_statement_is_described_by_operation_and_table(query, expected):
    assert describe(query) == expected
