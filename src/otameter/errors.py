"""The API's error shape: ``{"error": message, "status": "KO"}`` with a fitting status."""

from __future__ import annotations

from .models.common import Error


class ApiError(Exception):
    def __init__(
        self, status_code: int, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.headers = headers

    def body(self) -> Error:
        return {"error": self.message, "status": "KO"}


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(message: str) -> ApiError:
    return ApiError(404, message)


UNAUTHORIZED = "Missing or invalid API key"
TOO_MANY_FAILURES = "Too many failed authentications from this address"


# The API's words for a refused text field, wherever it is read (a JSON body, a form, a query).
def required_text(name: str) -> str:
    return f"'{name}' is required and must be a non-empty string"


def text_too_long(name: str, max_length: int | str) -> str:
    return f"'{name}' must be at most {max_length} characters"


def control_characters(name: str) -> str:
    return f"'{name}' must not contain control characters"
