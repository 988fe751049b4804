"""Answers shared by every API: the error shape and a plain ``ok``."""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

import msgspec


class Error(TypedDict):
    """Every API error: `{"error": message, "status": "KO"}`."""

    error: Annotated[str, msgspec.Meta(description="What went wrong, for a person.")]
    status: Literal["KO"]


class StatusOk(TypedDict):
    status: Literal["ok"]
