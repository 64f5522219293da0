"""The one table from domain errors to gRPC status codes, and the aip.dev/193 details.

Lookup walks the error's class hierarchy, so the most specific entry wins and
a new error class cannot silently fall through: ``code_for`` raises on an
unmapped class, and a unit test walks every subclass of ``UsersError``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from service.domain import caller_errors, errors

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from google.protobuf.message import Message

__all__ = ["DOMAIN", "STATUS_CODES", "code_for", "internal_status", "to_status"]

DOMAIN = "users.v1"

STATUS_CODES: Mapping[type[errors.UsersError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.OutOfRange: grpc.StatusCode.OUT_OF_RANGE,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    caller_errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
}

# How long a client should wait before retrying errors that are worth a retry.
_RETRY_AFTER_SECONDS = {
    grpc.StatusCode.UNAVAILABLE: 1,
    grpc.StatusCode.ABORTED: 0,
}


def code_for(error_type: type[errors.UsersError]) -> grpc.StatusCode:
    for cls in error_type.__mro__:
        code = STATUS_CODES.get(cls)
        if code is not None:
            return code
    raise LookupError(f"{error_type.__name__} has no status code mapping")


def to_status(error: errors.UsersError) -> grpc.Status:
    code = code_for(type(error))
    details: list[Message] = [
        error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata)
    ]
    if isinstance(error, errors.InvalidArgument):
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in error.violations
                ]
            )
        )
    delay = error.retry_after if error.retry_after is not None else _RETRY_AFTER_SECONDS.get(code)
    if delay is not None and error.retry_as_is:
        retry_delay = duration_pb2.Duration()
        # Whole milliseconds, rounded up: retrying a moment early would be refused again.
        retry_delay.FromMilliseconds(math.ceil(delay * 1000))
        details.append(error_details_pb2.RetryInfo(retry_delay=retry_delay))
    return _status(code, error.message, details)


def internal_status() -> grpc.Status:
    """What a client sees of an unexpected fault: nothing of its cause."""
    info = error_details_pb2.ErrorInfo(reason="INTERNAL", domain=DOMAIN)
    return _status(grpc.StatusCode.INTERNAL, "Internal error; it has been logged.", [info])


def _status(code: grpc.StatusCode, message: str, details: Sequence[Message]) -> grpc.Status:
    packed = []
    for detail in details:
        holder = any_pb2.Any()
        holder.Pack(detail)
        packed.append(holder)
    number = getattr(code_pb2, code.name)
    return rpc_status.to_status(status_pb2.Status(code=number, message=message, details=packed))
