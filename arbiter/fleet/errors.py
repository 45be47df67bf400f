"""The fleet API's errors: the node API's shape, `{"error": {"code", "message"}}`, with stable
codes and the HTTP status each maps to."""

from __future__ import annotations

from typing import Any

from arbiter.errors import ArbiterError

HTTP_STATUS: dict[str, int] = {
    "BAD_REQUEST": 400,
    "BAD_ARGUMENTS": 400,
    "UNAUTHORIZED": 401,
    "FORBIDDEN": 403,
    "CSRF_FAILED": 403,
    "NOT_FOUND": 404,
    "BAD_NAME": 404,
    "METHOD_NOT_ALLOWED": 405,
    "ALREADY_STARTED": 409,
    "NOT_RUNNING": 409,
    "DEPLOY_RUNNING": 409,
    "ALREADY_EXISTS": 409,
    "TOO_MANY_ATTEMPTS": 429,
    "SPAWN_ERROR": 500,
    "RELOAD_FAILED": 500,
    "FAILED": 500,
    "NODE_UNREACHABLE": 502,
    "NODE_AUTH_FAILED": 502,
    "NODE_ERROR": 502,
    "NOT_SUPPORTED": 501,
    "NO_ACCOUNT": 503,
}


class FleetError(ArbiterError):
    """An error for an API client (or, from the CLI, for a person): a stable code and a sentence."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code, self.message = code, message
        self.http_status = status or HTTP_STATUS.get(code, 500)

    def as_json(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}}
