"""Errors the emulated Bot API answers with, worded and coded exactly as Telegram does."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A Bot API refusal: becomes `{"ok": false, "error_code", "description", "parameters"}`."""

    def __init__(
        self, error_code: int, description: str, parameters: dict[str, Any] | None = None
    ) -> None:
        super().__init__(description)
        self.error_code = error_code
        self.description = description
        self.parameters = parameters

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "ok": False,
            "error_code": self.error_code,
            "description": self.description,
        }
        if self.parameters:
            payload["parameters"] = self.parameters
        return payload


def bad_request(reason: str) -> ApiError:
    return ApiError(400, f"Bad Request: {reason}")


def forbidden(reason: str) -> ApiError:
    return ApiError(403, f"Forbidden: {reason}")


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized")


def not_found(reason: str = "method not found") -> ApiError:
    return ApiError(404, f"Not Found: {reason}")


def too_many_requests(retry_after: int) -> ApiError:
    return ApiError(
        429,
        f"Too Many Requests: retry after {retry_after}",
        {"retry_after": retry_after},
    )
