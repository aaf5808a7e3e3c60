"""Kubernetes ``Status`` error bodies and the API error type that carries them."""

from __future__ import annotations

from typing import Any

from kedge.errors import PeerError

_REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    406: "NotAcceptable", 409: "Conflict", 410: "Expired", 413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
    503: "ServiceUnavailable",
}


class ApiError(PeerError):
    """An error answered to the client as a ``Status`` with a Kubernetes reason."""

    code = "api_error"

    def __init__(self, status: int, message: str, *, reason: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message, code=(reason or _REASONS.get(status, "Unknown")))
        self.status = status
        self.reason = reason or _REASONS.get(status, "Unknown")
        self.message = message
        self.details = details

    def body(self) -> dict[str, Any]:
        return status_body(self.status, self.reason, self.message, self.details)


def status_body(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Success" if code < 300 else "Failure", "message": message,
                           "reason": reason if code >= 300 else "", "code": code}
    if details:
        out["details"] = details
    return out


def not_found(resource: str, name: str, group: str = "") -> ApiError:
    qual = f"{resource}.{group}" if group else resource
    return ApiError(404, f'{qual} "{name}" not found',
                    details={"name": name, "group": group, "kind": resource})


def already_exists(resource: str, name: str, group: str = "") -> ApiError:
    qual = f"{resource}.{group}" if group else resource
    return ApiError(409, f'{qual} "{name}" already exists', reason="AlreadyExists",
                    details={"name": name, "group": group, "kind": resource})


def conflict(resource: str, name: str, group: str = "") -> ApiError:
    qual = f"{resource}.{group}" if group else resource
    return ApiError(409, f'Operation cannot be fulfilled on {qual} "{name}": the object has been modified; '
                    "please apply your changes to the latest version and try again",
                    details={"name": name, "group": group, "kind": resource})


def invalid(kind: str, name: str, message: str, group: str = "") -> ApiError:
    field = message.split(":", 1)[0] if ":" in message and " " not in message.split(":", 1)[0] else ""
    return ApiError(422, f'{kind} "{name}" is invalid: {message}', details={
        "name": name, "group": group, "kind": kind,
        "causes": [{"reason": "FieldValueInvalid", "message": message, "field": field}]})
