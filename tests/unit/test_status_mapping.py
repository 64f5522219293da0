"""The one table from domain errors to gRPC statuses (service.api.status)."""

from __future__ import annotations

import importlib
import pkgutil

import grpc
import pytest
from google.rpc import code_pb2, error_details_pb2, status_pb2

from service.api.status import DOMAIN, code_for, internal_status, to_status
from service.domain import errors
from service.domain.errors import FieldViolation, UsersError


def import_service_modules() -> None:
    """Import every service module, so that errors defined anywhere join the walk."""
    import service

    for module in pkgutil.walk_packages(service.__path__, "service."):
        if not module.name.endswith("__main__"):
            importlib.import_module(module.name)


import_service_modules()


def every_subclass(cls: type[UsersError]) -> list[type[UsersError]]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(every_subclass(sub))
    return found


def service_errors() -> list[type[UsersError]]:
    # Test modules define their own subclasses; only the service's count here.
    return [c for c in every_subclass(UsersError) if c.__module__.startswith("service.")]


def unpacked(status: grpc.Status) -> tuple[status_pb2.Status, dict[str, object]]:
    """The google.rpc.Status in the trailers, and its details by type name."""
    trailers = dict(status.trailing_metadata)
    rich = status_pb2.Status.FromString(trailers["grpc-status-details-bin"])
    details: dict[str, object] = {}
    for any_ in rich.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.BadRequest,
            error_details_pb2.RetryInfo,
        ):
            if any_.Is(kind.DESCRIPTOR):
                message = kind()
                any_.Unpack(message)
                details[kind.__name__] = message
    return rich, details


# --- the table ---------------------------------------------------------------------


def test_the_walk_finds_the_documented_errors():
    names = {c.__name__ for c in service_errors()}
    assert {
        "InvalidArgument",
        "RequestIdReused",
        "UserNotFound",
        "UsernameTaken",
        "EmailTaken",
        "BalanceNotZero",
        "InsufficientFunds",
        "InvalidCredentials",
        "ConcurrencyConflict",
        "DatabaseUnavailable",
    } <= names


@pytest.mark.parametrize("error_type", service_errors(), ids=lambda c: c.__name__)
def test_every_service_error_has_a_status_code(error_type):
    code = code_for(error_type)
    assert isinstance(code, grpc.StatusCode)
    assert code not in {grpc.StatusCode.OK, grpc.StatusCode.UNKNOWN}


@pytest.mark.parametrize(
    ("error_type", "code"),
    [
        (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.RequestIdReused, grpc.StatusCode.INVALID_ARGUMENT),
        (errors.UserNotFound, grpc.StatusCode.NOT_FOUND),
        (errors.UsernameTaken, grpc.StatusCode.ALREADY_EXISTS),
        (errors.EmailTaken, grpc.StatusCode.ALREADY_EXISTS),
        (errors.BalanceNotZero, grpc.StatusCode.FAILED_PRECONDITION),
        (errors.InsufficientFunds, grpc.StatusCode.FAILED_PRECONDITION),
        (errors.InvalidCredentials, grpc.StatusCode.UNAUTHENTICATED),
        (errors.ConcurrencyConflict, grpc.StatusCode.ABORTED),
        (errors.DatabaseUnavailable, grpc.StatusCode.UNAVAILABLE),
        (errors.CursorExpired, grpc.StatusCode.OUT_OF_RANGE),
        (errors.ServerShuttingDown, grpc.StatusCode.UNAVAILABLE),
    ],
    ids=lambda v: getattr(v, "__name__", ""),
)
def test_documented_errors_map_to_their_codes(error_type, code):
    assert code_for(error_type) == code


def test_a_subclass_of_a_mapped_error_inherits_its_code():
    class PostNotFound(errors.NotFound):
        reason = "POST_NOT_FOUND"

    assert code_for(PostNotFound) == grpc.StatusCode.NOT_FOUND


def test_an_unmapped_direct_subclass_of_users_error_raises_lookup_error():
    class Unmapped(UsersError):
        reason = "UNMAPPED"

    with pytest.raises(LookupError, match="Unmapped"):
        code_for(Unmapped)
    with pytest.raises(LookupError):
        to_status(Unmapped("Something new went wrong."))


def test_every_service_reason_is_distinct_and_upper_snake_case():
    reasons = [c.reason for c in service_errors()]
    assert all(r.isupper() and " " not in r for r in reasons)
    leaves = [c for c in service_errors() if not c.__subclasses__()]
    leaf_reasons = [c.reason for c in leaves]
    assert len(leaf_reasons) == len(set(leaf_reasons)), leaf_reasons


# --- the details -------------------------------------------------------------------


def test_invalid_argument_carries_error_info_and_bad_request_naming_each_field():
    error = errors.InvalidArgument(
        [
            FieldViolation("username", "Username is too short."),
            FieldViolation("email", "Email is not a valid address."),
        ]
    )
    status = to_status(error)
    rich, details = unpacked(status)

    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert rich.code == code_pb2.INVALID_ARGUMENT
    assert rich.message == status.details == error.message
    info = details["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert DOMAIN == "users.v1"
    assert (info.domain, info.reason) == ("users.v1", "INVALID_ARGUMENT")
    bad = details["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("username", "Username is too short."),
        ("email", "Email is not a valid address."),
    ]


def test_a_single_violation_is_the_message():
    status = to_status(errors.InvalidArgument.field("ids", "Give at least one id."))
    assert status.details == "Give at least one id."


def test_not_found_carries_reason_and_metadata_but_no_bad_request():
    status = to_status(errors.UserNotFound(42))
    rich, details = unpacked(status)
    assert status.code == grpc.StatusCode.NOT_FOUND
    assert rich.message == "User 42 does not exist."
    info = details["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.domain, info.reason) == ("users.v1", "USER_NOT_FOUND")
    assert dict(info.metadata) == {"user_ids": "42"}
    assert "BadRequest" not in details


@pytest.mark.parametrize(
    ("error", "code", "reason"),
    [
        (errors.UsernameTaken(), grpc.StatusCode.ALREADY_EXISTS, "USERNAME_TAKEN"),
        (errors.EmailTaken(), grpc.StatusCode.ALREADY_EXISTS, "EMAIL_TAKEN"),
        (errors.InvalidCredentials(), grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS"),
        (errors.BalanceNotZero(3), grpc.StatusCode.FAILED_PRECONDITION, "BALANCE_NOT_ZERO"),
        (errors.RequestIdReused(), grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED"),
    ],
    ids=lambda v: getattr(v, "reason", ""),
)
def test_specific_reasons_reach_the_error_info(error, code, reason):
    status = to_status(error)
    _, details = unpacked(status)
    info = details["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert status.code == code
    assert (info.domain, info.reason) == ("users.v1", reason)


def test_request_id_reused_is_invalid_argument_with_a_bad_request():
    _, details = unpacked(to_status(errors.RequestIdReused()))
    bad = details["BadRequest"]
    assert isinstance(bad, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["request_id"]


@pytest.mark.parametrize(
    "error", [errors.DatabaseUnavailable(), errors.ConcurrencyConflict()], ids=lambda e: e.reason
)
def test_retryable_errors_say_when_to_retry(error):
    _, details = unpacked(to_status(error))
    assert "RetryInfo" in details


def test_permanent_errors_carry_no_retry_info():
    _, details = unpacked(to_status(errors.UserNotFound(1)))
    assert "RetryInfo" not in details


def test_internal_status_is_generic():
    status = internal_status()
    rich, details = unpacked(status)
    assert status.code == grpc.StatusCode.INTERNAL
    assert rich.code == code_pb2.INTERNAL
    info = details["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.domain, info.reason) == ("users.v1", "INTERNAL")
    assert "Traceback" not in status.details
