"""Exceptions of the HTTP layer: a bad request (answered with its status), a vanished client."""

from __future__ import annotations


class RequestError(Exception):
    """The client sent something we refuse; answered with `status` and the connection closed."""

    def __init__(self, status: int, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.status = status
        self.reason = reason
        self.detail = detail

    def __repr__(self) -> str:
        return f"RequestError({self.status}, {self.reason!r}, {self.detail!r})"


def bad_request(detail: str) -> RequestError:
    return RequestError(400, "Bad Request", detail)


class ClientDisconnected(OSError):
    """The peer went away (EOF, reset, or an I/O timeout) while we were reading or writing.

    An OSError, so application code that already copes with socket errors copes with this.
    """


class InvalidResponse(ValueError):
    """The application's status or headers cannot be sent safely (answered with a 500)."""
