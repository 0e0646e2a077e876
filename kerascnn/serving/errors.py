"""One error type for both APIs: a gRPC status code plus TF Serving's message.

REST turns it into ``{"error": message}`` with the HTTP code TF Serving's ``ToHTTPStatusCode``
gives that status (serving-protocol.md §1.5); gRPC aborts the call with the code itself.
"""

from __future__ import annotations

import grpc

__all__ = ["ServingError", "http_status", "invalid", "not_found", "failed_precondition"]

_HTTP = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.CANCELLED: 499,
}


class ServingError(Exception):
    """A request TF Serving would fail, with its status ``code`` and ``message``."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return http_status(self.code)

    @property
    def code_name(self) -> str:
        """The absl spelling used as a message prefix and metric label (``INVALID_ARGUMENT``)."""
        return self.code.name


def http_status(code: grpc.StatusCode) -> int:
    """HTTP status for a status code, as ``http_server.cc`` maps it (everything else is 500)."""
    return _HTTP.get(code, 500)


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)
